//! `protocon bench ...`: benchmarks that compare against a baseline measured in the same run.
//!
//! Convention: human-readable output by default; `--json` prints one JSON object with every
//! figure, keys named with their unit (`images_per_s`, `peak_rss_bytes`, `step_ms`, `bytes`).

mod augment;
mod bank;
mod dual_lr;
mod pipeline;
mod step;
mod training_pipeline;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Stage runtime: per-message overhead against raw channels, and bottleneck detection; with
    /// `--config`, the training pipeline end to end against compute alone.
    Pipeline(pipeline::Args),
    /// Augmentation throughput (weak/strong views, CIFAR-size or decoded JPEGs), per thread.
    Augment(augment::Args),
    /// Training step (forward, losses, backward, SGD): fused CPU kernels vs candle's stock ops,
    /// or ProtoCon's step vs FixMatch's (`--algorithm protocon`).
    Step(step::Args),
    /// ProtoCon's memory bank and clustering: bytes held and clustering time per step, against an
    /// embedding bank.
    Bank(bank::Args),
    /// ProtoCon's constrained k-means on a checkpoint's projections over a grid of batch sizes
    /// and cluster counts: the paper's dual learning rate against `dual_lr = "auto"`.
    DualLr(dual_lr::Args),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline(args) => pipeline::run(args),
        BenchCommand::Augment(args) => augment::run(args),
        BenchCommand::Step(args) => step::run(args),
        BenchCommand::Bank(args) => bank::run(args),
        BenchCommand::DualLr(args) => dual_lr::run(args),
    }
}

/// Median and spread of repeated timings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "at least one timed run");
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
        Spread { median, min: v[0], max: v[n - 1] }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        let s = super::Spread::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(super::Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }
}
