//! ProtoCon's objective (docs/protocon.md): clusters the weak projections (here, or in a
//! cluster stage of its own), refines the pseudo-labels with the clusters and computes the five
//! loss terms; owns the clustering, the memory bank, the prototypes and the prior.

use super::{pseudo_label_stats, Objective, StepView};
use crate::cluster::{ClusterJob, ClusterProgress};
use crate::record::{EpochRecord, TrainRecord};
use candle_core::Tensor;
use ::protocon::protocon::{Clustering, ProtoCon, ProtoConConfig, StepInputs};
use ::protocon::{device, Control, QueueSender, StageError};
use std::collections::HashMap;
use std::sync::Arc;

/// See the module documentation.
pub struct ProtoConObjective {
    pc: ProtoCon,
    /// Asynchronous clustering (see `crate::cluster`); `None`: clustered in [`loss`](Objective::loss).
    cluster_async: Option<AsyncClustering>,
}

/// The compute side of an asynchronous cluster stage: where to send each step's projections,
/// how far the stage has got, and how many steps it may lag.
pub struct AsyncClustering {
    pub jobs: QueueSender<ClusterJob>,
    pub progress: Arc<ClusterProgress>,
    pub staleness: u64,
}

impl ProtoConObjective {
    pub fn new(cfg: ProtoConConfig) -> Result<Self, StageError> {
        Ok(ProtoConObjective { pc: ProtoCon::new(cfg)?, cluster_async: None })
    }

    /// The clustering and bank, for a cluster stage to share.
    pub fn clustering(&self) -> Arc<Clustering> {
        self.pc.clustering()
    }

    /// Cluster asynchronously from now on: each step's weak projections go to `a.jobs` (read by
    /// a `ClusterStage` sharing [`clustering`](Self::clustering) and `a.progress`), and the
    /// clustering lags by at most `a.staleness >= 1` steps.
    pub fn cluster_asynchronously(&mut self, a: AsyncClustering) {
        self.cluster_async = Some(AsyncClustering { staleness: a.staleness.max(1), ..a });
    }
}

impl Objective for ProtoConObjective {
    fn name(&self) -> &str {
        "protocon"
    }

    fn loss(&mut self, view: &StepView, control: Option<&Control>, record: &mut TrainRecord) -> Result<Tensor, StageError> {
        let (b, u) = (view.labeled, view.unlabeled);
        let proj = view.projection.ok_or_else(|| StageError::msg("ProtoCon needs a network with a projection head"))?;
        let q_w = proj.narrow(0, b, u)?;
        let q_w_values: Vec<f32> = device::download("weak-view projections", &q_w.detach())?;
        let slots = view.slots;
        let clusters = match (&self.cluster_async, control) {
            (Some(a), Some(control)) => {
                // Read before sending: the stage may record this step's assignments any time after.
                let recorded = self.pc.recorded_clusters(slots);
                a.progress.wait_until((view.step + 1).saturating_sub(a.staleness), control)?;
                a.jobs.send(ClusterJob { step: view.step, slots: slots.to_vec(), q_w: q_w_values.clone() }, control)?;
                recorded
            }
            _ => self.pc.cluster(slots, &q_w_values)?,
        };
        let [logits_x, logits_w, logits_s] = view.logits_parts()?;
        let inputs = StepInputs {
            logits_x: &logits_x,
            logits_w: &logits_w,
            logits_s: &logits_s,
            q_x: &proj.narrow(0, 0, b)?,
            q_w: &q_w,
            q_w_host: Some(&q_w_values),
            q_s: &proj.narrow(0, b + u, u)?,
            labels: view.labels,
            targets_x: view.targets,
            slots,
            epoch: view.epoch,
        };
        let o = self.pc.step(&inputs, &clusters)?;
        let hidden = view.hidden_labels;
        (record.mask_rate, record.pseudo_label_acc, record.pseudo_label_acc_all) = pseudo_label_stats(&o.pseudo_labels, &o.mask, hidden);
        let accuracy = |pred: &[u32]| pred.iter().zip(hidden).filter(|(p, y)| p == y).count() as f64 / u.max(1) as f64;
        record.loss_x = o.terms.x;
        record.loss_u = o.terms.u;
        record.loss_px = Some(o.terms.px);
        record.loss_pu = Some(o.terms.pu);
        record.loss_c = Some(o.terms.c);
        record.refined = Some(o.refined);
        record.cluster_label_acc = o.cluster_labels.as_deref().map(accuracy);
        record.proto_label_acc = o.prototype_labels.as_deref().map(accuracy);
        record.reliable_fraction = Some(self.pc.bank().reliable_fraction());
        Ok(o.loss)
    }

    fn end_epoch(&mut self, step: u64, epoch: u64, control: &Control) -> Result<Option<EpochRecord>, StageError> {
        self.caught_up(step + 1, control)?;
        let sizes = self.pc.end_epoch();
        Ok(Some(EpochRecord {
            step,
            epoch,
            cluster_size_min: sizes.min,
            cluster_size_max: sizes.max,
            reliable_fraction: self.pc.bank().reliable_fraction(),
            labeled_agreement: self.pc.labeled_agreement(),
        }))
    }

    fn caught_up(&self, steps: u64, control: &Control) -> Result<(), StageError> {
        match &self.cluster_async {
            Some(a) => a.progress.wait_until(steps, control),
            None => Ok(()),
        }
    }

    fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        self.pc.state(prefix)
    }

    fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), StageError> {
        self.pc.load_state(prefix, tensors).map_err(|e| StageError::msg(format!("checkpoint ProtoCon state: {e}")))
    }

    /// Ends the cluster stage's input.
    fn finish(&mut self) {
        self.cluster_async = None;
    }

    fn as_protocon(&mut self) -> Option<&mut ProtoConObjective> {
        Some(self)
    }
}
