//! The dual learning rate `lambda` of the constrained k-means (protocon.md s.4.2, s.6), and the
//! rule that carries the paper's value to other batch sizes and cluster counts.
//!
//! The dual update is `rho_k += lambda * (gamma/K - n_k/b)` with the similarities `q . c_k` in
//! [-1, 1]. What decides whether the duals or the similarities pick a sample's cluster is how
//! far one step moves a dual, measured against those similarities:
//!
//! - each sample assigned to `k` lowers `rho_k` by `lambda / b` (the per-sample jump);
//! - a cluster that gets nothing gains `lambda * gamma / K` (the empty-cluster drift);
//! - a cluster at its expected share `b / K` moves by the batch's sampling noise,
//!   `lambda * sqrt((1/K)(1 - 1/K) / b)`, about `lambda / sqrt(b K)`.
//!
//! The paper's `lambda = 20` was set at `b = 448` unlabeled per step and `K = 250`: a jump of
//! 0.045, a drift of 0.072 and noise of 0.060. At `b = 56`, `K = 29` the same `lambda` gives
//! 0.36, 0.62 and 0.50, half the similarity range per step, so the duals hand samples out
//! round-robin: the near-uniform, chance-level clusters this project measured (docs/results.md).
//! One number cannot hold both the jump (`lambda / b`) and the drift (`lambda / K`) at the
//! paper's values unless `b / K` is the paper's, so `auto` takes the largest `lambda` that
//! keeps *both* no larger than the paper's:
//!
//! `lambda = 20 * min(b / 448, K / 250)`
//!
//! which also keeps the noise, `lambda / sqrt(b K)`, no larger than the paper's (a minimum is at
//! most the geometric mean). It is exactly 20 at the paper's `b` and `K`. Nothing in it comes
//! from a data set's scores: only `b` and `K` enter.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The paper's dual learning rate.
pub const PAPER_DUAL_LR: f32 = 20.0;
/// Unlabeled samples per step the paper's `lambda` was set for (B = 64, mu = 7).
pub const PAPER_BATCH: usize = 448;
/// Clusters per head the paper's `lambda` was set for (CIFAR: 50,000 / 200).
pub const PAPER_CLUSTERS: usize = 250;

/// `protocon.dual_lr`: `"auto"` (the rule above) or a number `>= 0` used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawDualLr", into = "RawDualLr")]
pub enum DualLr {
    #[default]
    Auto,
    Fixed(f32),
}

impl DualLr {
    /// The rate a run with `batch` unlabeled samples per step and `clusters` per head uses.
    pub fn resolve(self, batch: usize, clusters: usize) -> f32 {
        match self {
            DualLr::Fixed(v) => v,
            DualLr::Auto => auto_dual_lr(batch, clusters),
        }
    }
}

impl fmt::Display for DualLr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DualLr::Auto => f.write_str("auto"),
            DualLr::Fixed(v) => write!(f, "{v}"),
        }
    }
}

/// `20 * min(batch / 448, clusters / 250)`: see the module documentation.
pub fn auto_dual_lr(batch: usize, clusters: usize) -> f32 {
    let by_batch = batch as f64 / PAPER_BATCH as f64;
    let by_clusters = clusters as f64 / PAPER_CLUSTERS as f64;
    (PAPER_DUAL_LR as f64 * by_batch.min(by_clusters)) as f32
}

/// How `dual_lr` is written in a config: a number or a word.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawDualLr {
    Number(f64),
    Word(String),
}

impl TryFrom<RawDualLr> for DualLr {
    type Error = String;
    fn try_from(raw: RawDualLr) -> Result<Self, String> {
        match raw {
            RawDualLr::Word(w) if w == "auto" => Ok(DualLr::Auto),
            RawDualLr::Word(w) => Err(format!("dual_lr: expected \"auto\" or a number >= 0, got \"{w}\"")),
            RawDualLr::Number(v) if v.is_finite() && v >= 0.0 => Ok(DualLr::Fixed(v as f32)),
            RawDualLr::Number(v) => Err(format!("dual_lr: expected \"auto\" or a finite number >= 0, got {v}")),
        }
    }
}

impl From<DualLr> for RawDualLr {
    fn from(d: DualLr) -> Self {
        match d {
            DualLr::Auto => RawDualLr::Word("auto".into()),
            DualLr::Fixed(v) => RawDualLr::Number(v as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-sample jump, the empty-cluster drift and the noise of one step, by hand.
    fn moves(lambda: f32, b: usize, k: usize) -> (f32, f32, f32) {
        (lambda / b as f32, lambda * 0.9 / k as f32, lambda / ((b * k) as f32).sqrt())
    }

    #[test]
    fn auto_is_the_papers_20_at_its_batch_and_k_and_scales_down_elsewhere() {
        assert_eq!(auto_dual_lr(448, 250), 20.0);
        // The study's batch and K: K is the tighter bound, 20 * 29 / 250.
        assert!((auto_dual_lr(56, 29) - 2.32).abs() < 1e-6);
        // A small batch with the paper's K: the batch is, 20 * 56 / 448.
        assert!((auto_dual_lr(56, 250) - 2.5).abs() < 1e-6);
        assert!((auto_dual_lr(112, 100) - 5.0).abs() < 1e-6);
        // Larger than the paper's on both: larger than 20, by the smaller factor.
        assert!((auto_dual_lr(896, 1000) - 40.0).abs() < 1e-5);
    }

    #[test]
    fn auto_never_moves_a_dual_faster_than_the_paper_does() {
        let paper = moves(20.0, 448, 250);
        for b in [8, 56, 112, 448, 1024] {
            for k in [2, 29, 100, 250, 1000] {
                let m = moves(auto_dual_lr(b, k), b, k);
                assert!(m.0 <= paper.0 + 1e-6 && m.1 <= paper.1 + 1e-6 && m.2 <= paper.2 + 1e-6, "b {b} K {k}: {m:?} vs {paper:?}");
                // And one of the first two is the paper's: the rate is as large as that allows.
                assert!((m.0 - paper.0).abs() < 1e-6 || (m.1 - paper.1).abs() < 1e-6, "b {b} K {k}: {m:?}");
            }
        }
    }

    #[test]
    fn a_config_value_is_auto_or_a_number_at_least_0() {
        #[derive(Deserialize, Serialize)]
        struct S {
            dual_lr: DualLr,
        }
        let parse = |t: &str| toml::from_str::<S>(t).map(|s| s.dual_lr).map_err(|e| e.to_string());
        assert_eq!(parse("dual_lr = \"auto\"").unwrap(), DualLr::Auto);
        assert_eq!(parse("dual_lr = 20").unwrap(), DualLr::Fixed(20.0));
        assert_eq!(parse("dual_lr = 2.5").unwrap(), DualLr::Fixed(2.5));
        assert_eq!(parse("dual_lr = 0").unwrap(), DualLr::Fixed(0.0));
        for bad in ["dual_lr = -1", "dual_lr = nan", "dual_lr = inf", "dual_lr = \"fast\""] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("dual_lr") && e.contains("auto"), "{bad}: {e}");
        }
        assert_eq!(DualLr::Fixed(20.0).resolve(56, 29), 20.0);
        assert_eq!(DualLr::Auto.resolve(448, 250), 20.0);
        // Written back as it was read.
        assert_eq!(toml::to_string(&S { dual_lr: DualLr::Auto }).unwrap().trim(), "dual_lr = \"auto\"");
        assert_eq!(toml::to_string(&S { dual_lr: DualLr::Fixed(2.5) }).unwrap().trim(), "dual_lr = 2.5");
    }
}
