//! The compute stage: owns the network, its EMA copy, the optimizer and the learning-rate
//! schedule; runs one forward over `[labeled weak ; unlabeled weak ; unlabeled strong]`, the
//! losses of the configured algorithm, backward and the SGD step; evaluates on the test split
//! and writes checkpoints. It is the only stage that touches the model.
//!
//! Batches may arrive out of order (the augmentation stages are worker pools); they are applied
//! in step order, so a run is the same whatever the number of augmentation workers.

use crate::batch::TrainBatch;
use candle_core::{DType, Device, Tensor, D};
use protocon::checkpoint::Checkpoint;
use protocon::ema::Ema;
use protocon::loss;
use protocon::model::{Mode, Network};
use protocon::optim::{Sgd, SgdConfig};
use protocon::schedule::CosineSchedule;
use protocon::{Ctx, Message, Stage, StageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Which losses the compute stage trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Cross-entropy on the labeled samples only.
    Supervised,
    /// + FixMatch: hard pseudo-labels from the weak view above `threshold`, cross-entropy on the
    /// strong view.
    Fixmatch,
}

/// Settings of the compute stage.
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    pub algorithm: Algorithm,
    pub threshold: f64,
    pub lambda_u: f64,
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
}

/// The test split, normalised, ready for the network.
pub struct TestSet {
    pub images: Tensor,
    pub labels: Vec<u32>,
    pub classes: usize,
}

/// Accuracy and confusion matrix (`rows = true class`, `cols = predicted`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub confusion: Vec<Vec<u64>>,
}

impl TestSet {
    /// Evaluate `net` in inference mode, in chunks of `chunk` images.
    pub fn evaluate(&self, net: &Network, chunk: usize) -> candle_core::Result<Evaluation> {
        let n = self.labels.len();
        let mut confusion = vec![vec![0u64; self.classes]; self.classes];
        let mut correct = 0u64;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let x = self.images.narrow(0, start, len)?;
            let pred: Vec<u32> = net.forward(&x, Mode::Eval)?.logits.argmax(D::Minus1)?.to_vec1()?;
            for (p, &y) in pred.iter().zip(&self.labels[start..start + len]) {
                confusion[y as usize][*p as usize] += 1;
                correct += (*p == y) as u64;
            }
            start += len;
        }
        Ok(Evaluation { accuracy: correct as f64 / n.max(1) as f64, confusion })
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(TrainRecord),
    Eval(EvalRecord),
}

impl Message for Record {}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Eval(r) => r.step,
        }
    }
}

/// Losses and rates of one training step. `images_per_s` is the only wall-clock field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainRecord {
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    pub loss: f64,
    pub loss_x: f64,
    pub loss_u: f64,
    /// Share of unlabeled samples whose pseudo-label passed the threshold.
    pub mask_rate: f64,
    /// Accuracy of the pseudo-labels against the hidden true labels, over the masked samples
    /// (NaN-free: 0 when nothing passed).
    pub pseudo_label_acc: f64,
    /// Accuracy of the pseudo-labels over all unlabeled samples of the step.
    pub pseudo_label_acc_all: f64,
    pub images_per_s: f64,
}

/// Test accuracy of the raw and the EMA model after a step, with the best so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub test_acc: f64,
    pub test_acc_ema: f64,
    pub best_test_acc: f64,
    pub best_test_acc_ema: f64,
}

/// See the module documentation.
pub struct ComputeStage {
    cfg: ComputeConfig,
    net: Network,
    ema_net: Network,
    ema: Ema,
    opt: Sgd,
    test: Option<Arc<TestSet>>,
    pending: BTreeMap<u64, TrainBatch>,
    next_step: u64,
    best: (f64, f64),
    clock: Instant,
    images_since_log: usize,
    device: Device,
}

fn failed(step: u64, e: impl std::fmt::Display) -> StageError {
    StageError::msg(format!("step {step}: {e}"))
}

impl ComputeStage {
    /// A stage starting at step 0 with fresh networks (`net` and `ema_net` must be built with
    /// the same seed so they start equal).
    pub fn new(cfg: ComputeConfig, net: Network, ema_net: Network, test: Option<Arc<TestSet>>) -> Self {
        let opt = Sgd::new(net.params(), cfg.sgd);
        let ema = Ema::new(cfg.ema_decay);
        ComputeStage {
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
            device: Device::Cpu,
        }
    }

    /// Continue from a checkpoint: weights, EMA weights, momentum buffers, step, best accuracy.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<(), StageError> {
        let part = |prefix: &str| -> HashMap<String, Tensor> {
            ck.tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        self.net.params().load(&part("model.")).map_err(|e| StageError::msg(format!("checkpoint model: {e}")))?;
        self.ema_net.params().load(&part("ema.")).map_err(|e| StageError::msg(format!("checkpoint ema: {e}")))?;
        self.opt.load_state(&part("opt.")).map_err(|e| StageError::msg(format!("checkpoint optimizer: {e}")))?;
        self.next_step = ck.meta["step"].as_u64().ok_or_else(|| StageError::msg("checkpoint has no `step`"))?;
        self.best = (
            ck.meta["best_test_acc"].as_f64().unwrap_or(0.0),
            ck.meta["best_test_acc_ema"].as_f64().unwrap_or(0.0),
        );
        Ok(())
    }

    /// The training state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
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
        let mut meta = serde_json::json!({
            "step": self.next_step,
            "arch": self.net.arch().to_string(),
            "best_test_acc": self.best.0,
            "best_test_acc_ema": self.best.1,
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), self.cfg.checkpoint_meta.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        Checkpoint { tensors, meta }
    }

    fn save_checkpoint(&self) -> Result<(), StageError> {
        if let Some(path) = &self.cfg.checkpoint {
            self.checkpoint().save(path)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: TrainBatch) -> candle_core::Result<TrainRecord> {
        let step = batch.plan.step;
        let lr = self.cfg.schedule.lr(step);
        self.opt.set_learning_rate(lr);
        let [c, h, w] = batch.shape;
        let (b, u) = (batch.plan.labeled.len(), batch.plan.unlabeled.len());
        let n = batch.images();
        let x = Tensor::from_vec(batch.images, (n, c, h, w), &self.device)?;
        let labels = Tensor::new(batch.labels.as_slice(), &self.device)?;
        let out = self.net.forward(&x, Mode::Train)?;
        let loss_x = loss::cross_entropy(&out.logits.narrow(0, 0, b)?, &labels)?;
        let (mut loss, mut loss_u_value) = (loss_x.clone(), 0.0);
        let (mut mask_rate, mut pl_acc, mut pl_acc_all) = (0.0, 0.0, 0.0);
        if self.cfg.algorithm == Algorithm::Fixmatch && u > 0 {
            let (pseudo, mask) = loss::hard_pseudo_labels(&out.logits.narrow(0, b, u)?, self.cfg.threshold)?;
            let loss_u = loss::masked_cross_entropy(&out.logits.narrow(0, b + u, u)?, &pseudo, &mask)?;
            loss_u_value = loss_u.to_scalar::<f32>()? as f64;
            loss = (loss + (loss_u * self.cfg.lambda_u)?)?;
            let pseudo: Vec<u32> = pseudo.to_vec1()?;
            let mask: Vec<f32> = mask.to_vec1()?;
            let kept = mask.iter().filter(|&&m| m > 0.5).count();
            let right_kept = pseudo.iter().zip(&mask).zip(&batch.hidden_labels).filter(|((p, m), y)| **m > 0.5 && p == y).count();
            let right_all = pseudo.iter().zip(&batch.hidden_labels).filter(|(p, y)| p == y).count();
            mask_rate = kept as f64 / u as f64;
            pl_acc = if kept > 0 { right_kept as f64 / kept as f64 } else { 0.0 };
            pl_acc_all = right_all as f64 / u as f64;
        }
        if self.cfg.nan_at_step == Some(step) {
            loss = (loss * f64::NAN)?;
        }
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            candle_core::bail!("loss is {loss_value} (losses: x {:.4}, u {loss_u_value:.4}); stopping. The last checkpoint is kept.", loss_x.to_scalar::<f32>()?);
        }
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        self.ema.update(self.ema_net.params(), self.net.params())?;
        self.images_since_log += n;
        Ok(TrainRecord {
            step,
            epoch: batch.plan.epoch,
            lr,
            loss: loss_value,
            loss_x: loss_x.to_scalar::<f32>()? as f64,
            loss_u: loss_u_value,
            mask_rate,
            pseudo_label_acc: pl_acc,
            pseudo_label_acc_all: pl_acc_all,
            images_per_s: 0.0,
        })
    }

    fn evaluate(&mut self, step: u64) -> candle_core::Result<Option<EvalRecord>> {
        let Some(test) = &self.test else { return Ok(None) };
        let raw = test.evaluate(&self.net, 500)?.accuracy;
        let ema = test.evaluate(&self.ema_net, 500)?.accuracy;
        self.best = (self.best.0.max(raw), self.best.1.max(ema));
        Ok(Some(EvalRecord { step, test_acc: raw, test_acc_ema: ema, best_test_acc: self.best.0, best_test_acc_ema: self.best.1 }))
    }

    fn run_ready(&mut self, ctx: &mut Ctx<Record>) -> Result<(), StageError> {
        while let Some(batch) = self.pending.remove(&self.next_step) {
            let step = self.next_step;
            let mut record = self.train_step(batch).map_err(|e| failed(step, e))?;
            self.next_step += 1;
            let last = step + 1 == self.cfg.schedule.total_steps;
            if (step + 1) % self.cfg.log_every.max(1) == 0 || last {
                record.images_per_s = self.images_since_log as f64 / self.clock.elapsed().as_secs_f64().max(1e-9);
                self.images_since_log = 0;
                self.clock = Instant::now();
                ctx.emit(Record::Train(record))?;
            }
            if (self.cfg.eval_every > 0 && (step + 1) % self.cfg.eval_every == 0) || last {
                if let Some(r) = self.evaluate(step).map_err(|e| failed(step, e))? {
                    ctx.emit(Record::Eval(r))?;
                }
                // Evaluation time is not training throughput.
                self.clock = Instant::now();
            }
            if (self.cfg.checkpoint_every > 0 && (step + 1) % self.cfg.checkpoint_every == 0) || last {
                self.save_checkpoint()?;
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
    fn finish(&mut self, _ctx: &mut Ctx<Record>) -> Result<(), StageError> {
        if let Some(step) = self.pending.keys().next() {
            return Err(StageError::msg(format!("batches from step {step} on never became contiguous (step {} missing)", self.next_step)));
        }
        self.save_checkpoint()
    }
}
