//! Learning-rate schedule: linear warm-up, then cosine decay over 7/16 of a period, as FixMatch
//! and USB (`get_cosine_schedule_with_warmup(num_cycles = 7/16)`) and ProtoCon's script use:
//!
//! ```text
//! lr(s) = base * s / warmup                                  for s < warmup
//! lr(s) = base * max(0, cos(pi * 7/16 * (s - warmup) / (total - warmup)))   afterwards
//! ```
//! so the rate ends at base * cos(7 pi / 16) ~= 0.195 * base, never at zero.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    /// Learning rate after warm-up.
    pub base_lr: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Total training steps.
    pub total_steps: u64,
    /// Fraction of a cosine period covered by the decay (7/16 in FixMatch).
    #[serde(default = "default_cycles")]
    pub cycles: f64,
}

fn default_cycles() -> f64 {
    7.0 / 16.0
}

impl CosineSchedule {
    pub fn new(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        CosineSchedule { base_lr, warmup_steps, total_steps, cycles: default_cycles() }
    }

    /// The learning rate for step `step` (0-based; the rate used by that step's update).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let progress = (step - self.warmup_steps) as f64 / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
        self.base_lr * (std::f64::consts::PI * self.cycles * progress).cos().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_hand() {
        let s = CosineSchedule::new(0.03, 10, 110);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.015).abs() < 1e-15);
        assert!((s.lr(10) - 0.03).abs() < 1e-15);
        // Halfway through the decay: cos(7 pi / 32) = 0.773010453...
        assert!((s.lr(60) - 0.03 * 0.773_010_453_362_736_9).abs() < 1e-12);
        // The end: cos(7 pi / 16) = 0.195090322...
        assert!((s.lr(110) - 0.03 * 0.195_090_322_016_128_3).abs() < 1e-12);
        let flat = CosineSchedule::new(0.1, 0, 0);
        assert_eq!(flat.lr(0), 0.1);
    }
}
