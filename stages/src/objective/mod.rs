//! Objectives: what a training step minimises. The compute stage runs the forward pass over
//! `[labeled weak ; unlabeled weak ; unlabeled strong]` and hands the outputs to its
//! [`Objective`], which returns the loss to back-propagate and fills in the step's record (its
//! loss terms and pseudo-label statistics). Supervised-only, FixMatch and ProtoCon are three
//! objectives behind the same stage, so their runs differ only in what the objective does;
//! another objective is one more implementation of the trait.

mod fixmatch;
mod protocon;
mod supervised;

pub use self::fixmatch::FixMatch;
pub use self::protocon::{AsyncClustering, ProtoConObjective};
pub use self::supervised::Supervised;

use crate::record::{EpochRecord, TrainRecord};
use candle_core::Tensor;
use ::protocon::protocon::ProtoConConfig;
use ::protocon::{Control, StageError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The built-in objectives, by the name a config gives (`algorithm = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Cross-entropy on the labeled samples only ([`Supervised`]).
    Supervised,
    /// + FixMatch: hard pseudo-labels from the weak view above `threshold`, cross-entropy on the
    /// strong view ([`FixMatch`]).
    Fixmatch,
    /// ProtoCon (docs/protocon.md): online constrained clustering, memory bank, prototypes,
    /// refined soft pseudo-labels and the five loss terms ([`ProtoConObjective`]).
    Protocon,
}

impl std::fmt::Display for Algorithm {
    /// The name a config gives (`algorithm = "..."`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::Supervised => "supervised",
            Algorithm::Fixmatch => "fixmatch",
            Algorithm::Protocon => "protocon",
        })
    }
}

impl Algorithm {
    /// The objective of this algorithm: `threshold` and `lambda_u` are FixMatch's; ProtoCon needs
    /// its settings.
    pub fn objective(self, threshold: f64, lambda_u: f64, protocon: Option<ProtoConConfig>) -> Result<Box<dyn Objective>, StageError> {
        Ok(match (self, protocon) {
            (Algorithm::Supervised, _) => Box::new(Supervised),
            (Algorithm::Fixmatch, _) => Box::new(FixMatch { threshold, lambda_u }),
            (Algorithm::Protocon, Some(cfg)) => Box::new(ProtoConObjective::new(cfg)?),
            (Algorithm::Protocon, None) => return Err(StageError::msg("algorithm protocon needs its settings")),
        })
    }
}

/// What one step's forward pass gives the objective.
pub struct StepView<'a> {
    /// 0-based step and epoch.
    pub step: u64,
    pub epoch: u64,
    /// Logits of the `labeled + 2 x unlabeled` images, in the batch's order.
    pub logits: &'a Tensor,
    /// Projections of the same images, when the network has a projection head.
    pub projection: Option<&'a Tensor>,
    /// Number of labeled and of unlabeled samples.
    pub labeled: usize,
    pub unlabeled: usize,
    /// Labels of the labeled samples (u32, `labeled`).
    pub labels: &'a Tensor,
    /// Soft targets of the labeled samples (`labeled x classes`) when a batch stage made them.
    pub targets: Option<&'a Tensor>,
    /// The unlabeled samples' positions in the unlabeled list (ProtoCon's bank slots).
    pub slots: &'a [u32],
    /// True labels of the unlabeled samples: for the record's accuracies only, never a loss.
    pub hidden_labels: &'a [u32],
}

impl StepView<'_> {
    /// Logits of the labeled images, the unlabeled weak views and the strong views.
    pub fn logits_parts(&self) -> candle_core::Result<[Tensor; 3]> {
        let (b, u) = (self.labeled, self.unlabeled);
        Ok([self.logits.narrow(0, 0, b)?, self.logits.narrow(0, b, u)?, self.logits.narrow(0, b + u, u)?])
    }
}

/// What a step minimises (see the module documentation).
///
/// State an objective keeps between steps (ProtoCon's bank, prototypes and prior) is saved in
/// checkpoints through [`state`](Objective::state) and [`load_state`](Objective::load_state).
pub trait Objective: Send {
    /// The name in records and messages.
    fn name(&self) -> &str;

    /// The loss of one step, to back-propagate; fills in `record`'s loss terms and pseudo-label
    /// statistics. `control` is the pipeline's (`None` outside one, as in `bench step`).
    fn loss(&mut self, view: &StepView, control: Option<&Control>, record: &mut TrainRecord) -> Result<Tensor, StageError>;

    /// The end of an epoch after `step` (the compute stage calls it after the epoch's last step);
    /// a record to write, if the objective has one.
    fn end_epoch(&mut self, _step: u64, _epoch: u64, _control: &Control) -> Result<Option<EpochRecord>, StageError> {
        Ok(None)
    }

    /// Wait until work the objective runs elsewhere (ProtoCon's asynchronous clustering) has
    /// caught up with `steps` trained steps: before checkpoints and epoch ends.
    fn caught_up(&self, _steps: u64, _control: &Control) -> Result<(), StageError> {
        Ok(())
    }

    /// The objective's state to checkpoint, names prefixed with `prefix`.
    fn state(&self, _prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Restore what [`state`](Objective::state) saved.
    fn load_state(&mut self, _prefix: &str, _tensors: &HashMap<String, Tensor>) -> Result<(), StageError> {
        Ok(())
    }

    /// The run ended: release what links the objective to other stages.
    fn finish(&mut self) {}

    /// ProtoCon's objective, for wiring its clustering into a stage of its own.
    fn as_protocon(&mut self) -> Option<&mut ProtoConObjective> {
        None
    }
}

/// (mask rate, accuracy over the masked samples (0 when none), accuracy over all) of
/// pseudo-labels against the hidden true labels.
pub fn pseudo_label_stats(pseudo: &[u32], mask: &[bool], hidden: &[u32]) -> (f64, f64, f64) {
    let u = pseudo.len().max(1) as f64;
    let kept = mask.iter().filter(|&&m| m).count();
    let right_kept = pseudo.iter().zip(mask).zip(hidden).filter(|((p, &m), y)| m && p == y).count();
    let right_all = pseudo.iter().zip(hidden).filter(|(p, y)| p == y).count();
    (kept as f64 / u, if kept > 0 { right_kept as f64 / kept as f64 } else { 0.0 }, right_all as f64 / u)
}

/// A loss tensor's value, for the record.
pub(crate) fn value(what: &'static str, t: &Tensor) -> candle_core::Result<f64> {
    ::protocon::device::download_scalar(what, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-worked: 4 samples, 2 kept, 1 of them right; 2 right overall.
    #[test]
    fn pseudo_label_stats_by_hand() {
        let (rate, kept_acc, all_acc) = pseudo_label_stats(&[1, 2, 3, 4], &[true, false, true, false], &[1, 2, 0, 0]);
        assert_eq!((rate, kept_acc, all_acc), (0.5, 0.5, 0.5));
        assert_eq!(pseudo_label_stats(&[1], &[false], &[1]), (0.0, 0.0, 1.0));
    }

    /// What each objective's loss moves between host and device in a step (see
    /// `protocon::device`): on a CUDA device these are the only transfers of the step besides
    /// the compute stage's batch upload and loss download. A new one shows up here.
    #[test]
    fn host_device_crossings_of_a_step_are_the_listed_ones() {
        use candle_core::{Device, Tensor};
        use ::protocon::device::{record_crossings, Direction};
        use ::protocon::protocon::ProtoConConfig;
        let (b, u, c, d) = (2, 3, 4, 5);
        let dev = Device::Cpu;
        let values = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k) % 11) as f32 / 11.0 - 0.4).collect() };
        let logits = Tensor::from_vec(values((b + 2 * u) * c, 7), (b + 2 * u, c), &dev).unwrap();
        let projection = Tensor::from_vec(values((b + 2 * u) * d, 5), (b + 2 * u, d), &dev).unwrap();
        let labels = Tensor::new(&[1u32, 3], &dev).unwrap();
        let slots = [0u32, 1, 2];
        let view = StepView {
            step: 0,
            epoch: 0,
            logits: &logits,
            projection: Some(&projection),
            labeled: b,
            unlabeled: u,
            labels: &labels,
            targets: None,
            slots: &slots,
            hidden_labels: &[0, 1, 2],
        };
        let crossings = |objective: &mut dyn Objective| -> Vec<(&'static str, Direction)> {
            let mut record = TrainRecord::new(0, 0, 0.1);
            let (loss, list) = record_crossings(|| objective.loss(&view, None, &mut record));
            assert!(loss.unwrap().to_scalar::<f32>().unwrap().is_finite());
            list.into_iter().map(|x| (x.what, x.direction)).collect()
        };
        use Direction::{Down, Up};
        let mut fixmatch = FixMatch { threshold: 0.5, lambda_u: 1.0 };
        assert_eq!(
            crossings(&mut fixmatch),
            [("loss_x", Down), ("loss_u", Down), ("fixmatch pseudo-labels", Down), ("fixmatch mask", Down)]
        );
        let mut protocon = ProtoConObjective::new(ProtoConConfig::paper(c, d, 2, 1, 3)).unwrap();
        assert_eq!(
            crossings(&mut protocon),
            [
                ("weak-view projections", Down),
                ("prototypes", Up),
                ("weak-view logits", Down),
                ("strong debias margin", Up),
                ("unlabeled targets", Up),
                ("mask", Up),
                ("consistency targets", Up),
                ("inverse mask", Up),
                ("loss_x", Down),
                ("loss_px", Down),
                ("loss_u", Down),
                ("loss_pu", Down),
                ("loss_c", Down),
                ("labels", Down),
                ("labeled projections", Down),
            ]
        );
    }
}
