//! When refinement may start, judged without hidden labels (`protocon.refine_min_agreement`;
//! an option beyond the paper, which starts after a fixed 20 epochs).
//!
//! Refinement mixes each sample's cluster pseudo-label `z` into its target. That helps only once
//! the clusters are aligned with the classes; before, `z` is close to a random class and the mix
//! pulls every target towards it. The first study here refined from epoch 2 while the cluster
//! labels were at chance (9-14% on 10 classes; docs/results.md), because a fixed epoch count
//! says nothing about whether the projections have spread into class-shaped clusters yet.
//!
//! The labeled images are the one place where alignment can be checked honestly: each step,
//! their projections are assigned to clusters (the same `argmax q . c_k + rho_k` as the
//! unlabeled ones, without updating anything) and the cluster's pseudo-label is compared with
//! the image's label. Over an epoch that gives the *labeled agreement*; refinement is on during
//! an epoch when the previous epoch's agreement reached `min_agreement` (and the epoch is at
//! least `refine_after_epochs`). The gate is re-judged every epoch, so refinement stops again if
//! the clusters lose their alignment. `min_agreement = 0` is the paper's rule: the epoch alone.
//!
//! Known limitation: with an asynchronous cluster stage (`staleness >= 1`) the labeled images
//! are assigned with the k-means as it stands when the compute step runs, which depends on how
//! far the cluster stage has got; such a run with the gate on is not bit-reproducible.

use super::{tensor_vec, ProtoConError};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The labeled agreement of the current and the last finished epoch, and the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineGate {
    min_agreement: f32,
    hits: u64,
    seen: u64,
    /// The last finished epoch's agreement (none before an epoch with labeled cluster labels).
    last: Option<f64>,
}

impl RefineGate {
    /// A gate that opens once an epoch's labeled agreement is at least `min_agreement` (in
    /// `[0, 1]`; 0 leaves the decision to the epoch count alone).
    pub fn new(min_agreement: f32) -> Result<Self, ProtoConError> {
        if !(0.0..=1.0).contains(&min_agreement) {
            return Err(ProtoConError::Config(format!("refine_min_agreement must be in [0, 1], not {min_agreement}")));
        }
        Ok(RefineGate { min_agreement, hits: 0, seen: 0, last: None })
    }

    /// Count the labeled images whose cluster pseudo-label is their label.
    pub fn observe(&mut self, cluster_labels: &[u32], labels: &[u32]) {
        self.hits += cluster_labels.iter().zip(labels).filter(|(z, y)| z == y).count() as u64;
        self.seen += cluster_labels.len().min(labels.len()) as u64;
    }

    /// Close the epoch: its agreement becomes the one the gate judges by, until the next end.
    /// An epoch without observations keeps the previous value.
    pub fn end_epoch(&mut self) {
        if self.seen > 0 {
            self.last = Some(self.hits as f64 / self.seen as f64);
        }
        (self.hits, self.seen) = (0, 0);
    }

    /// Whether refinement may run (besides the epoch count).
    pub fn open(&self) -> bool {
        self.min_agreement <= 0.0 || self.last.is_some_and(|a| a >= self.min_agreement as f64)
    }

    /// The last finished epoch's labeled agreement.
    pub fn agreement(&self) -> Option<f64> {
        self.last
    }

    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let counts = [self.hits as i64, self.seen as i64];
        Ok(vec![
            (format!("{prefix}counts"), Tensor::new(&counts, &Device::Cpu)?),
            (format!("{prefix}last"), Tensor::new(&[self.last.unwrap_or(-1.0)], &Device::Cpu)?),
        ])
    }

    /// Restore [`state`](Self::state); a checkpoint from before the gate existed has none and
    /// starts it empty (as a run that never measured agreement).
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        if !tensors.contains_key(&format!("{prefix}counts")) {
            (self.hits, self.seen, self.last) = (0, 0, None);
            return Ok(());
        }
        let counts = tensor_vec::<i64>(tensors, &format!("{prefix}counts"), 2)?;
        let last = tensor_vec::<f64>(tensors, &format!("{prefix}last"), 1)?[0];
        (self.hits, self.seen) = (counts[0] as u64, counts[1] as u64);
        self.last = (last >= 0.0).then_some(last);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_the_last_epochs_agreement_and_closes_again() {
        let mut g = RefineGate::new(0.5).unwrap();
        assert!(!g.open(), "nothing measured yet");
        g.observe(&[0, 1, 2, 3], &[0, 0, 0, 0]); // 1 of 4
        assert!(!g.open(), "the epoch is not over");
        g.end_epoch();
        assert_eq!(g.agreement(), Some(0.25));
        assert!(!g.open());
        g.observe(&[0, 1], &[0, 1]);
        g.observe(&[2, 3], &[2, 0]); // 3 of 4
        g.end_epoch();
        assert_eq!(g.agreement(), Some(0.75));
        assert!(g.open());
        g.end_epoch(); // an epoch without labeled cluster labels keeps the value
        assert!(g.open());
        g.observe(&[1, 1], &[0, 0]);
        g.end_epoch();
        assert_eq!(g.agreement(), Some(0.0));
        assert!(!g.open(), "refinement stops when the alignment is lost");
    }

    #[test]
    fn zero_is_the_epoch_rule_alone_and_out_of_range_is_refused() {
        assert!(RefineGate::new(0.0).unwrap().open());
        assert!(RefineGate::new(1.5).is_err());
        assert!(RefineGate::new(f32::NAN).is_err());
    }

    #[test]
    fn state_round_trip_and_old_checkpoints() {
        let mut g = RefineGate::new(0.5).unwrap();
        g.observe(&[0, 1, 2], &[0, 1, 0]);
        g.end_epoch();
        g.observe(&[4], &[4]);
        let saved: HashMap<String, Tensor> = g.state("g.").unwrap().into_iter().collect();
        let mut h = RefineGate::new(0.5).unwrap();
        h.load_state("g.", &saved).unwrap();
        assert_eq!(g, h);
        h.load_state("g.", &HashMap::new()).unwrap();
        assert_eq!(h, RefineGate::new(0.5).unwrap());
    }
}
