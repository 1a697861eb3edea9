//! The class-prior estimate behind the classifier's pseudo-labels (protocon.md s.4.4, s.4.7).
//!
//! Debiasing (the script's default): `pw = softmax(p_w - m log pbar)`, and the strong logits
//! get the opposite margin `+ m' log pbar` in `Lu` (DebiasPL's adaptive marginal loss; `m' = m`
//! in the script, a separate number here so each half can be switched off on its own); `pbar`
//! follows an EMA of the batch-mean predictions *after* the step. Distribution alignment (the paper's wording):
//! `pw ∝ softmax(p_w) / pbar` with `pbar` the mean of the last `window` batch means, this
//! batch's included; no margin on the strong logits.

use super::{tensor_vec, ProtoConError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Which correction of the classifier's pseudo-labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriorCorrection {
    /// `margin` on the pseudo-label target, `strong_margin` on the strong logits in `Lu`.
    Debias { margin: f32, strong_margin: f32, momentum: f32 },
    DistributionAlignment { window: usize },
}

impl PriorCorrection {
    /// The paper script's debias margin and prior momentum (protocon.md s.5).
    pub const DEBIAS_MARGIN: f32 = 0.5;
    pub const PRIOR_MOMENTUM: f32 = 0.999;
}

impl Default for PriorCorrection {
    fn default() -> Self {
        PriorCorrection::Debias { margin: Self::DEBIAS_MARGIN, strong_margin: Self::DEBIAS_MARGIN, momentum: Self::PRIOR_MOMENTUM }
    }
}

/// Row-wise softmax of `n x c` values.
pub fn softmax_rows(x: &[f32], c: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_mut(c) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    out
}

fn batch_mean(probs: &[f32], c: usize) -> Vec<f32> {
    let n = (probs.len() / c).max(1) as f32;
    let mut mean = vec![0f32; c];
    for row in probs.chunks(c) {
        mean.iter_mut().zip(row).for_each(|(m, p)| *m += p);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPrior {
    correction: PriorCorrection,
    classes: usize,
    /// Debias: the EMA estimate, uniform at the start.
    pbar: Vec<f32>,
    /// Distribution alignment: the last batch means.
    recent: VecDeque<Vec<f32>>,
}

impl ClassPrior {
    pub fn new(correction: PriorCorrection, classes: usize) -> Self {
        ClassPrior { correction, classes, pbar: vec![1.0 / classes as f32; classes], recent: VecDeque::new() }
    }

    /// The classifier's pseudo-label distributions `pw` (`n x C`) from weak logits, and the
    /// margin to add to the strong logits in `Lu` (`None` for distribution alignment).
    pub fn pseudo_labels(&mut self, weak_logits: &[f32]) -> (Vec<f32>, Option<Vec<f32>>) {
        let c = self.classes;
        match self.correction {
            PriorCorrection::Debias { margin, strong_margin, .. } => {
                let log_prior: Vec<f32> = self.pbar.iter().map(|p| p.ln()).collect();
                let shifted: Vec<f32> = weak_logits.iter().enumerate().map(|(i, &x)| x - margin * log_prior[i % c]).collect();
                let strong_shift = log_prior.iter().map(|l| strong_margin * l).collect();
                (softmax_rows(&shifted, c), Some(strong_shift))
            }
            PriorCorrection::DistributionAlignment { window } => {
                let probs = softmax_rows(weak_logits, c);
                self.recent.push_back(batch_mean(&probs, c));
                while self.recent.len() > window.max(1) {
                    self.recent.pop_front();
                }
                let prior = self.estimate();
                let mut pw = probs;
                for row in pw.chunks_mut(c) {
                    row.iter_mut().zip(&prior).for_each(|(v, p)| *v /= p);
                    let s: f32 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= s);
                }
                (pw, None)
            }
        }
    }

    /// After the step: the debiasing EMA takes this batch's mean raw prediction.
    pub fn update(&mut self, weak_logits: &[f32]) {
        if let PriorCorrection::Debias { momentum, .. } = self.correction {
            let mean = batch_mean(&softmax_rows(weak_logits, self.classes), self.classes);
            self.pbar.iter_mut().zip(mean).for_each(|(p, m)| *p = momentum * *p + (1.0 - momentum) * m);
        }
    }

    /// The current estimate (debias) or the mean of the recent batch means (alignment).
    pub fn estimate(&self) -> Vec<f32> {
        match self.correction {
            PriorCorrection::Debias { .. } => self.pbar.clone(),
            PriorCorrection::DistributionAlignment { .. } if self.recent.is_empty() => vec![1.0 / self.classes as f32; self.classes],
            PriorCorrection::DistributionAlignment { .. } => {
                let mut p = vec![0f32; self.classes];
                for m in &self.recent {
                    p.iter_mut().zip(m).for_each(|(p, v)| *p += v);
                }
                p.iter_mut().for_each(|p| *p /= self.recent.len() as f32);
                p
            }
        }
    }

    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let dev = &Device::Cpu;
        let recent: Vec<f32> = self.recent.iter().flatten().copied().collect();
        Ok(vec![
            (format!("{prefix}pbar"), Tensor::from_slice(&self.pbar, self.classes, dev)?),
            (format!("{prefix}recent"), Tensor::from_vec(recent, (self.recent.len(), self.classes), dev)?),
        ])
    }

    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        self.pbar = tensor_vec::<f32>(tensors, &format!("{prefix}pbar"), self.classes)?;
        let name = format!("{prefix}recent");
        let rows = tensors.get(&name).map(|t| t.dims().first().copied().unwrap_or(0)).unwrap_or(0);
        let recent = tensor_vec::<f32>(tensors, &name, rows * self.classes)?;
        self.recent = recent.chunks(self.classes).map(|r| r.to_vec()).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debias_by_hand() {
        let mut prior = ClassPrior::new(PriorCorrection::default(), 2);
        // Uniform prior: the shift is the same for both classes, pw = softmax.
        let (pw, margin) = prior.pseudo_labels(&[0.0, 3f32.ln()]);
        assert!((pw[0] - 0.25).abs() < 1e-6 && (pw[1] - 0.75).abs() < 1e-6);
        assert!(margin.unwrap().iter().all(|&m| (m - 0.5 * 0.5f32.ln()).abs() < 1e-7));
        prior.update(&[0.0, 3f32.ln()]);
        // pbar = 0.999 * 0.5 + 0.001 * (0.25, 0.75).
        let p = prior.estimate();
        assert!((p[0] - (0.4995 + 0.00025)).abs() < 1e-7 && (p[1] - (0.4995 + 0.00075)).abs() < 1e-7);
    }

    #[test]
    fn the_target_and_strong_margins_are_separate() {
        let correction = PriorCorrection::Debias { margin: 0.0, strong_margin: 1.0, momentum: 0.5 };
        let mut prior = ClassPrior::new(correction, 2);
        // pbar after one update with p = (1/4, 3/4): 0.5 * 0.5 + 0.5 * p = (3/8, 5/8).
        prior.update(&[0.0, 3f32.ln()]);
        // Margin 0 on the target: pw is the plain softmax; margin 1 on the strong logits: log pbar.
        let (pw, strong) = prior.pseudo_labels(&[0.0, 0.0]);
        assert!((pw[0] - 0.5).abs() < 1e-7 && (pw[1] - 0.5).abs() < 1e-7, "{pw:?}");
        let strong = strong.unwrap();
        assert!((strong[0] - 0.375f32.ln()).abs() < 1e-6 && (strong[1] - 0.625f32.ln()).abs() < 1e-6, "{strong:?}");
        // The other way round: the target is debiased, pw ∝ (1, 1) / sqrt(pbar), the strong logits are not shifted.
        let mut prior = ClassPrior::new(PriorCorrection::Debias { margin: 0.5, strong_margin: 0.0, momentum: 0.5 }, 2);
        prior.update(&[0.0, 3f32.ln()]);
        let (pw, strong) = prior.pseudo_labels(&[0.0, 0.0]);
        let (a, b) = (1.0 / 0.375f32.sqrt(), 1.0 / 0.625f32.sqrt());
        assert!((pw[0] - a / (a + b)).abs() < 1e-6, "{pw:?}");
        assert!(strong.unwrap().iter().all(|&m| m == 0.0));
    }

    #[test]
    fn alignment_divides_by_the_recent_mean() {
        let mut prior = ClassPrior::new(PriorCorrection::DistributionAlignment { window: 2 }, 2);
        // One row, p = (1/4, 3/4): the prior is that row, so pw = (1, 1) / 2.
        let (pw, margin) = prior.pseudo_labels(&[0.0, 3f32.ln()]);
        assert!(margin.is_none());
        assert!((pw[0] - 0.5).abs() < 1e-6);
        // Second batch p = (1/2, 1/2): prior (3/8, 5/8); pw ∝ (4/3, 4/5) = (5/8, 3/8).
        let (pw, _) = prior.pseudo_labels(&[0.0, 0.0]);
        assert!((pw[0] - 0.625).abs() < 1e-6, "{pw:?}");
        prior.pseudo_labels(&[0.0, 0.0]);
        assert_eq!(prior.recent.len(), 2, "the window holds the last 2 batch means");
    }
}
