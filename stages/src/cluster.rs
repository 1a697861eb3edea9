//! The cluster stage: ProtoCon's online constrained k-means (protocon.md s.4.2) run off the
//! compute stage's critical path.
//!
//! Synchronous mode (`staleness = 0`, the default) needs no stage: the compute stage clusters
//! each step's weak projections itself, between the forward pass and the losses, exactly in the
//! order of s.4. Asynchronous mode (`staleness = S >= 1`): the compute stage sends the detached
//! weak projections of step `t` with their bank slots to this stage and goes on; the refinement
//! of step `t` uses each sample's cluster as recorded in the memory bank — its assignment when
//! it was last seen, one epoch earlier — instead of one computed this step. Clustering may lag
//! the compute stage by at most `S` steps (the compute stage waits beyond that), and the compute
//! stage waits for it to catch up before every epoch end and checkpoint, so cluster
//! pseudo-labels, bank and checkpoints always see every step. Within an epoch a sample appears
//! once, so the clusters a step reads were written before the epoch began: runs are
//! deterministic and identical for every `S >= 1`. The stage's busy time in the profiler table
//! is the time taken off the compute stage.

use protocon::protocon::Clustering;
use protocon::{Control, Message, Sink, StageError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One step's detached weak projections (`slots.len() x d` values).
pub struct ClusterJob {
    pub step: u64,
    pub slots: Vec<u32>,
    pub q_w: Vec<f32>,
}

impl Message for ClusterJob {
    fn bytes(&self) -> usize {
        4 * (self.slots.len() + self.q_w.len())
    }
}

/// How far the cluster stage has got: the number of the next step it will cluster.
pub struct ClusterProgress {
    next: Mutex<u64>,
    changed: Condvar,
}

impl ClusterProgress {
    /// Progress of a run starting (or resuming) at `start`.
    pub fn new(start: u64) -> Arc<Self> {
        Arc::new(ClusterProgress { next: Mutex::new(start), changed: Condvar::new() })
    }

    fn done(&self, step: u64) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = step + 1;
        self.changed.notify_all();
    }

    /// Block until every step before `step` has been clustered, or the pipeline is cancelled.
    pub fn wait_until(&self, step: u64, control: &Control) -> Result<(), StageError> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next < step {
            if control.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            next = self.changed.wait_timeout(next, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(())
    }
}

/// See the module documentation.
pub struct ClusterStage {
    clustering: Arc<Clustering>,
    progress: Arc<ClusterProgress>,
}

impl ClusterStage {
    pub fn new(clustering: Arc<Clustering>, progress: Arc<ClusterProgress>) -> Self {
        ClusterStage { clustering, progress }
    }
}

impl Sink for ClusterStage {
    type In = ClusterJob;

    fn consume(&mut self, job: ClusterJob, _: &Control) -> Result<(), StageError> {
        self.clustering.cluster(&job.slots, &job.q_w).map_err(|e| StageError::msg(format!("step {}: {e}", job.step)))?;
        self.progress.done(job.step);
        Ok(())
    }
}
