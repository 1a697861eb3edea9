//! The compute stage: owns the network, its EMA copy, the optimizer and the learning-rate
//! schedule; runs one forward over `[labeled weak ; unlabeled weak ; unlabeled strong]`, hands
//! the outputs to the run's [`Objective`] for the loss, then backward, the SGD step and the EMA
//! update; evaluates on the test split ([`TestSet`]) and writes checkpoints. It is the only stage
//! that touches the model.
//!
//! Batches may arrive out of order (the augmentation stages are worker pools); they are applied
//! in step order, so a run is the same whatever the number of augmentation workers.

use crate::batch::TrainBatch;
use crate::objective::{Objective, StepView};
use crate::record::{EvalRecord, Record, TrainRecord};
use crate::test_set::TestSet;
use candle_core::{Device, Tensor};
use protocon::checkpoint::Checkpoint;
use protocon::device;
use protocon::ema::Ema;
use protocon::model::{Mode, Network};
use protocon::optim::{Sgd, SgdConfig};
use protocon::schedule::CosineSchedule;
use protocon::{Control, Ctx, Stage, StageError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Settings of the compute stage (what the loss is, is its [`Objective`]).
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    pub sgd: SgdConfig,
    pub schedule: CosineSchedule,
    pub ema_decay: f64,
    /// Evaluate every this many steps (and after the last); 0 = only after the last.
    pub eval_every: u64,
    /// Log a training record every this many steps.
    pub log_every: u64,
    /// Checkpoint every this many steps (and after the last); 0 = only after the last.
    pub checkpoint_every: u64,
    /// Where checkpoints go (`None`: not written).
    pub checkpoint: Option<PathBuf>,
    /// Extra JSON saved in every checkpoint (the effective config, the data set, ...).
    pub checkpoint_meta: serde_json::Value,
    /// Fault injection for tests: make the loss NaN at this step.
    pub nan_at_step: Option<u64>,
    /// Steps per epoch (a pass over the unlabeled set): the objective's epoch ends follow it.
    pub steps_per_epoch: u64,
}

/// See the module documentation.
pub struct ComputeStage {
    cfg: ComputeConfig,
    net: Network,
    ema_net: Network,
    ema: Ema,
    opt: Sgd,
    objective: Box<dyn Objective>,
    test: Option<Arc<TestSet>>,
    pending: BTreeMap<u64, TrainBatch>,
    next_step: u64,
    best: (f64, f64),
    clock: Instant,
    images_since_log: usize,
    /// Wall time of the run: since this stage was built, plus what the checkpoint it resumed
    /// from had trained (so a resumed run's `elapsed_s` continues where it stopped).
    started: Instant,
    elapsed_before: f64,
    device: Device,
}

/// Names of the objective's tensors in a checkpoint start with this (`protocon.` since ProtoCon's
/// state was the first there; kept so older checkpoints resume).
const OBJECTIVE_PREFIX: &str = "protocon.";

/// A training step that failed, with why (its source).
#[derive(Debug, thiserror::Error)]
#[error("step {step}")]
pub struct StepError {
    pub step: u64,
    #[source]
    pub cause: Box<dyn std::error::Error + Send + Sync + 'static>,
}

fn failed(step: u64, e: impl std::error::Error + Send + Sync + 'static) -> StageError {
    StageError::failed(StepError { step, cause: Box::new(e) })
}

impl ComputeStage {
    /// A stage starting at step 0 with fresh networks (`net` and `ema_net` must be built with
    /// the same seed so they start equal), training towards `objective`.
    pub fn new(cfg: ComputeConfig, net: Network, ema_net: Network, objective: Box<dyn Objective>, test: Option<Arc<TestSet>>) -> Self {
        let opt = Sgd::new(net.params(), cfg.sgd);
        let ema = Ema::new(cfg.ema_decay);
        ComputeStage {
            objective,
            cfg,
            net,
            ema_net,
            ema,
            opt,
            test,
            pending: BTreeMap::new(),
            next_step: 0,
            best: (0.0, 0.0),
            clock: Instant::now(),
            images_since_log: 0,
            started: Instant::now(),
            elapsed_before: 0.0,
            device: Device::Cpu,
        }
    }

    /// Train on `device` (the CPU unless called): the networks, the optimizer and the EMA must
    /// already live there ([`Network::build`] on it); each step's batch is uploaded to it.
    pub fn on_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The objective, for wiring what it runs elsewhere (ProtoCon's cluster stage).
    pub fn objective_mut(&mut self) -> &mut dyn Objective {
        &mut *self.objective
    }

    /// Continue from a checkpoint: weights, EMA weights, momentum buffers, the objective's
    /// state, step, best accuracy. Returns the step to continue from.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<u64, StageError> {
        let part = |prefix: &str| -> HashMap<String, Tensor> {
            ck.tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        self.net.params().load(&part("model.")).map_err(|e| StageError::msg(format!("checkpoint model: {e}")))?;
        self.ema_net.params().load(&part("ema.")).map_err(|e| StageError::msg(format!("checkpoint ema: {e}")))?;
        self.opt.load_state(&part("opt.")).map_err(|e| StageError::msg(format!("checkpoint optimizer: {e}")))?;
        self.objective.load_state(OBJECTIVE_PREFIX, &ck.tensors)?;
        let meta = ck.training_meta()?;
        self.next_step = meta.step;
        self.best = (meta.best_test_acc, meta.best_test_acc_ema);
        self.elapsed_before = meta.elapsed_s;
        self.started = Instant::now();
        Ok(self.next_step)
    }

    /// The training state as a checkpoint.
    pub fn checkpoint(&self) -> candle_core::Result<Checkpoint> {
        let mut tensors = HashMap::new();
        for p in self.net.params().all() {
            tensors.insert(format!("model.{}", p.name), p.var.as_tensor().clone());
        }
        for p in self.ema_net.params().all() {
            tensors.insert(format!("ema.{}", p.name), p.var.as_tensor().clone());
        }
        for (name, t) in self.opt.state() {
            tensors.insert(format!("opt.{name}"), t);
        }
        tensors.extend(self.objective.state(OBJECTIVE_PREFIX)?);
        let mut meta = serde_json::json!({
            "step": self.next_step,
            "arch": self.net.arch().to_string(),
            "best_test_acc": self.best.0,
            "best_test_acc_ema": self.best.1,
            "elapsed_s": self.elapsed_s(),
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), self.cfg.checkpoint_meta.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        Ok(Checkpoint { tensors, meta })
    }

    /// Seconds of wall time this run has trained, across resumes.
    fn elapsed_s(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    fn save_checkpoint(&self, control: &Control) -> Result<(), StageError> {
        if let Some(path) = &self.cfg.checkpoint {
            self.objective.caught_up(self.next_step, control)?;
            self.checkpoint().map_err(|e| StageError::msg(format!("checkpoint: {e}")))?.save(path)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: TrainBatch, control: &Control) -> Result<TrainRecord, StageError> {
        let step = batch.plan.step;
        let lr = self.cfg.schedule.lr(step);
        self.opt.set_learning_rate(lr);
        let [c, h, w] = batch.shape;
        let (b, u) = (batch.plan.labeled.len(), batch.plan.unlabeled.len());
        let n = batch.images();
        let x = device::upload("images", batch.images, (n, c, h, w), &self.device)?;
        let labels = device::upload_slice("labels", batch.labels.as_slice(), batch.labels.len(), &self.device)?;
        let targets = match batch.targets {
            Some(t) if b > 0 && t.len() % b == 0 => {
                let classes = t.len() / b;
                Some(device::upload("soft targets", t, (b, classes), &self.device)?)
            }
            Some(t) => return Err(StageError::msg(format!("step {step}: {} soft target values for {b} labeled samples", t.len()))),
            None => None,
        };
        let out = self.net.forward(&x, Mode::Train)?;
        let mut record = TrainRecord::new(step, batch.plan.epoch, lr);
        let view = StepView {
            step,
            epoch: batch.plan.epoch,
            logits: &out.logits,
            projection: out.projection.as_ref(),
            labeled: b,
            unlabeled: u,
            labels: &labels,
            targets: targets.as_ref(),
            slots: &batch.plan.unlabeled_slots,
            hidden_labels: &batch.hidden_labels,
        };
        let mut loss = self.objective.loss(&view, Some(control), &mut record)?;
        if self.cfg.nan_at_step == Some(step) {
            loss = (loss * f64::NAN)?;
        }
        record.loss = device::download_scalar("loss", &loss)?;
        if !record.loss.is_finite() {
            return Err(StageError::msg(format!(
                "loss is {} (losses: x {:.4}, u {:.4}); stopping. The last checkpoint is kept.",
                record.loss, record.loss_x, record.loss_u
            )));
        }
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        self.ema.update(self.ema_net.params(), self.net.params())?;
        self.images_since_log += n;
        Ok(record)
    }

    /// The objective's end of an epoch after `step`, when it is the epoch's last step.
    fn end_epoch(&mut self, step: u64, epoch: u64, control: &Control) -> Result<Option<crate::record::EpochRecord>, StageError> {
        if (step + 1) % self.cfg.steps_per_epoch.max(1) != 0 {
            return Ok(None);
        }
        self.objective.end_epoch(step, epoch, control)
    }

    fn evaluate(&mut self, step: u64) -> candle_core::Result<Option<EvalRecord>> {
        let Some(test) = &self.test else { return Ok(None) };
        let raw = test.evaluate(&self.net, TestSet::CHUNK)?.accuracy;
        let ema = test.evaluate(&self.ema_net, TestSet::CHUNK)?.accuracy;
        self.best = (self.best.0.max(raw), self.best.1.max(ema));
        Ok(Some(EvalRecord { step, test_acc: raw, test_acc_ema: ema, best_test_acc: self.best.0, best_test_acc_ema: self.best.1 }))
    }

    fn run_ready(&mut self, ctx: &mut Ctx<Record>) -> Result<(), StageError> {
        while let Some(batch) = self.pending.remove(&self.next_step) {
            let step = self.next_step;
            let mut record = match self.train_step(batch, ctx) {
                Err(StageError::Cancelled) => return Err(StageError::Cancelled),
                other => other.map_err(|e| failed(step, e))?,
            };
            self.next_step += 1;
            let epoch_end = self.end_epoch(step, record.epoch, ctx)?;
            let last = step + 1 == self.cfg.schedule.total_steps;
            if (step + 1) % self.cfg.log_every.max(1) == 0 || last {
                record.images_per_s = self.images_since_log as f64 / self.clock.elapsed().as_secs_f64().max(1e-9);
                self.images_since_log = 0;
                self.clock = Instant::now();
                record.elapsed_s = Some(self.elapsed_s());
                ctx.emit(Record::Train(record))?;
            }
            if let Some(e) = epoch_end {
                ctx.emit(Record::Epoch(e))?;
            }
            if (self.cfg.eval_every > 0 && (step + 1) % self.cfg.eval_every == 0) || last {
                if let Some(r) = self.evaluate(step).map_err(|e| failed(step, e))? {
                    ctx.emit(Record::Eval(r))?;
                }
                // Evaluation time is not training throughput.
                self.clock = Instant::now();
            }
            if (self.cfg.checkpoint_every > 0 && (step + 1) % self.cfg.checkpoint_every == 0) || last {
                self.save_checkpoint(ctx)?;
            }
        }
        Ok(())
    }
}

impl Stage for ComputeStage {
    type In = TrainBatch;
    type Out = Record;

    fn process(&mut self, batch: TrainBatch, ctx: &mut Ctx<Record>) -> Result<(), StageError> {
        let step = batch.plan.step;
        if step < self.next_step || self.pending.contains_key(&step) {
            return Err(StageError::msg(format!("batch for step {step} arrived twice or after it was trained")));
        }
        self.pending.insert(step, batch);
        self.run_ready(ctx)
    }

    /// The data ended (last step, or the sampler stopped early on Ctrl-C): checkpoint what was
    /// trained so a later `--resume` continues from here.
    fn finish(&mut self, ctx: &mut Ctx<Record>) -> Result<(), StageError> {
        if let Some(step) = self.pending.keys().next() {
            return Err(StageError::msg(format!("batches from step {step} on never became contiguous (step {} missing)", self.next_step)));
        }
        self.save_checkpoint(ctx)?;
        self.objective.finish();
        Ok(())
    }
}

