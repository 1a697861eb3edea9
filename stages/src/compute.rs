//! The compute stage: owns the network, its EMA copy, the optimizer and the learning-rate
//! schedule; runs one forward over `[labeled weak ; unlabeled weak ; unlabeled strong]`, the
//! losses of the configured algorithm, backward and the SGD step; evaluates on the test split
//! and writes checkpoints. It is the only stage that touches the model.
//!
//! Batches may arrive out of order (the augmentation stages are worker pools); they are applied
//! in step order, so a run is the same whatever the number of augmentation workers.

use crate::augment::Image;
use crate::batch::TrainBatch;
use crate::cluster::{ClusterJob, ClusterProgress};
use crate::views::Normalization;
use candle_core::{DType, Device, Tensor, D};
use protocon::checkpoint::Checkpoint;
use protocon::data::{DataError, Dataset, FileDecoder, ImageFiles, Labelled, LoadOptions};
use protocon::ema::Ema;
use protocon::loss;
use protocon::model::{Mode, Network, Output};
use protocon::optim::{Sgd, SgdConfig};
use protocon::protocon::{ProtoCon, ProtoConConfig, StepInputs};
use protocon::schedule::CosineSchedule;
use protocon::{Control, Ctx, Message, QueueSender, Stage, StageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
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
    /// ProtoCon (protocon.md): online constrained clustering, memory bank, prototypes, refined
    /// soft pseudo-labels and the five loss terms.
    Protocon,
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
    /// ProtoCon's settings (with `Algorithm::Protocon`).
    pub protocon: Option<ProtoConConfig>,
    /// Steps per epoch (a pass over the unlabeled set): ProtoCon's epoch ends follow it.
    pub steps_per_epoch: u64,
}

/// The test split and the normalisation the network was trained with. Images stay u8 and are
/// normalised one chunk at a time as they are evaluated, so a set decoded at load takes a
/// quarter of the memory a normalised f32 copy would (7.5 GB rather than 30 GB for 50,000
/// images at 224 px); an image folder too large even for that is decoded per evaluation
/// ([`TestSet::per_visit`]).
pub struct TestSet {
    images: TestImages,
    norm: Normalization,
}

/// Where a [`TestSet`]'s pixels come from.
enum TestImages {
    /// Decoded (and brought to one size) at load.
    Decoded(Dataset),
    /// Files read, decoded and fitted each time they are evaluated, `threads` at a time.
    Files { files: ImageFiles, size: [usize; 2], options: LoadOptions, threads: usize },
}

/// Accuracy and confusion matrix (`rows = true class`, `cols = predicted`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub confusion: Vec<Vec<u64>>,
}

impl TestSet {
    /// Images per forward pass when evaluating: 128 keeps the largest activation of the models
    /// here (cnn-small's 32 channels at 32x32: 16.8 MB) under the allocator's 32 MB mmap
    /// threshold that the CLI sets, so each chunk reuses the previous chunk's heap memory
    /// instead of mapping and faulting in fresh pages; 500 held 3x the memory for no speed.
    pub const CHUNK: usize = 128;

    /// A test set decoded at load.
    pub fn new(data: Dataset, norm: Normalization) -> Self {
        TestSet { images: TestImages::Decoded(data), norm }
    }

    /// An image folder's test files, decoded at each evaluation on `threads` threads and
    /// brought to `size` (`[height, width]`, RGB) as `options.fit` says: the pixels
    /// [`folder::load_dir`](protocon::data::folder::load_dir) gives at load with the same
    /// options (both go through [`FileDecoder`]), without holding them between evaluations.
    pub fn per_visit(files: ImageFiles, size: [usize; 2], options: &LoadOptions, threads: usize, norm: Normalization) -> Self {
        let images = TestImages::Files { files, size, options: options.clone(), threads: threads.max(1) };
        TestSet { images, norm }
    }

    /// `(height, width, channels)` of every test image.
    pub fn shape(&self) -> (usize, usize, usize) {
        match &self.images {
            TestImages::Decoded(d) => (d.height(), d.width(), d.channels()),
            TestImages::Files { size, .. } => (size[0], size[1], 3),
        }
    }

    /// Writes the pixels (u8, HWC) of samples `range` into `out`, which holds exactly that many
    /// images.
    pub fn images_into(&self, range: Range<usize>, out: &mut [u8]) -> Result<(), DataError> {
        let (h, w, c) = self.shape();
        let image_len = h * w * c;
        assert_eq!(out.len(), range.len() * image_len, "images_into: buffer for {} images", range.len());
        match &self.images {
            TestImages::Decoded(d) => out.copy_from_slice(&d.pixels()[range.start * image_len..range.end * image_len]),
            TestImages::Files { files, size, options, threads } => {
                let per_thread = range.len().div_ceil(*threads).max(1);
                std::thread::scope(|s| {
                    let parts: Vec<_> = out
                        .chunks_mut(per_thread * image_len)
                        .enumerate()
                        .map(|(t, part)| {
                            let first = range.start + t * per_thread;
                            s.spawn(move || -> Result<(), DataError> {
                                let mut decoder = FileDecoder::new(*size, options);
                                let mut fitted = Vec::with_capacity(part.len());
                                for i in first..first + part.len() / image_len {
                                    decoder.decode(files.path(i), &mut fitted)?;
                                }
                                part.copy_from_slice(&fitted);
                                Ok(())
                            })
                        })
                        .collect();
                    parts.into_iter().try_for_each(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                })?;
            }
        }
        Ok(())
    }

    /// Evaluate `net` in inference mode, in chunks of `chunk` images.
    pub fn evaluate(&self, net: &Network, chunk: usize) -> candle_core::Result<Evaluation> {
        let classes = self.num_classes();
        let mut confusion = vec![vec![0u64; classes]; classes];
        let mut correct = 0u64;
        self.forward_chunks(net, chunk, |range, out| {
            let pred: Vec<u32> = out.logits.argmax(D::Minus1)?.to_vec1()?;
            for (p, &y) in pred.iter().zip(&self.labels()[range]) {
                confusion[y as usize][*p as usize] += 1;
                correct += (*p == y as u32) as u64;
            }
            Ok(())
        })?;
        Ok(Evaluation { accuracy: correct as f64 / self.num_samples().max(1) as f64, confusion })
    }

    /// Run `net` in inference mode over every image, `chunk` at a time, handing each chunk's
    /// sample range and outputs (logits, and projections when the network has a head) to `f`.
    pub fn forward_chunks(
        &self,
        net: &Network,
        chunk: usize,
        mut f: impl FnMut(Range<usize>, &Output) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        let n = self.num_samples();
        let (h, w, c) = self.shape();
        let image_len = c * h * w;
        let mut values = vec![0f32; chunk.min(n) * image_len];
        let mut pixels = Vec::new();
        let mut img = Image::default();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let chunk_pixels = match &self.images {
                TestImages::Decoded(d) => &d.pixels()[start * image_len..(start + len) * image_len],
                TestImages::Files { .. } => {
                    pixels.resize(len * image_len, 0);
                    self.images_into(start..start + len, &mut pixels).map_err(candle_core::Error::wrap)?;
                    &pixels[..]
                }
            };
            for (k, px) in chunk_pixels.chunks_exact(image_len).enumerate() {
                img.set_pixels(w, h, c, px).map_err(candle_core::Error::wrap)?;
                img.normalize_chw_into(&self.norm.mean, &self.norm.std, &mut values[k * image_len..(k + 1) * image_len]);
            }
            let x = Tensor::from_slice(&values[..len * image_len], (len, c, h, w), &Device::Cpu)?;
            f(start..start + len, &net.forward(&x, Mode::Eval)?)?;
            start += len;
        }
        Ok(())
    }
}

impl TestImages {
    fn labelled(&self) -> &dyn Labelled {
        match self {
            TestImages::Decoded(d) => d,
            TestImages::Files { files, .. } => files,
        }
    }
}

impl Labelled for TestSet {
    fn name(&self) -> &str {
        self.images.labelled().name()
    }
    fn labels(&self) -> &[u16] {
        self.images.labelled().labels()
    }
    fn classes(&self) -> &[String] {
        self.images.labelled().classes()
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(TrainRecord),
    Eval(EvalRecord),
    /// ProtoCon's end of an epoch.
    Epoch(EpochRecord),
}

impl Message for Record {}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Eval(r) => r.step,
            Record::Epoch(r) => r.step,
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
    /// ProtoCon's prototypical losses (labeled, unlabeled) and projection consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_px: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_c: Option<f64>,
    /// Whether ProtoCon refined the pseudo-labels with the clusters this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refined: Option<bool>,
    /// Accuracy of `argmax z` (the samples' cluster pseudo-labels) against the hidden labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_label_acc: Option<f64>,
    /// Accuracy of the nearest prototype of the weak projection against the hidden labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_label_acc: Option<f64>,
    /// Share of the unlabeled samples seen so far whose last pseudo-label was reliable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable_fraction: Option<f64>,
}

/// ProtoCon's end of an epoch: cluster sizes per head (from the memory bank's assignments).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// The last step of the epoch.
    pub step: u64,
    pub epoch: u64,
    pub cluster_size_min: Vec<u64>,
    pub cluster_size_max: Vec<u64>,
    pub reliable_fraction: f64,
    /// Share of the epoch's labeled images whose cluster pseudo-label was their label (what
    /// `protocon.refine_min_agreement` judges by); none before clusters have labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeled_agreement: Option<f64>,
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

/// (mask rate, accuracy over the masked samples (0 when none), accuracy over all) of
/// pseudo-labels against the hidden true labels.
fn pseudo_label_stats(pseudo: &[u32], mask: &[bool], hidden: &[u32]) -> (f64, f64, f64) {
    let u = pseudo.len().max(1) as f64;
    let kept = mask.iter().filter(|&&m| m).count();
    let right_kept = pseudo.iter().zip(mask).zip(hidden).filter(|((p, &m), y)| m && p == y).count();
    let right_all = pseudo.iter().zip(hidden).filter(|(p, y)| p == y).count();
    (kept as f64 / u, if kept > 0 { right_kept as f64 / kept as f64 } else { 0.0 }, right_all as f64 / u)
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
    protocon: Option<ProtoCon>,
    /// Asynchronous clustering (see `crate::cluster`).
    cluster_async: Option<AsyncClustering>,
}

/// The compute stage's end of an asynchronous cluster stage.
struct AsyncClustering {
    jobs: QueueSender<ClusterJob>,
    progress: Arc<ClusterProgress>,
    staleness: u64,
}

fn failed(step: u64, e: impl std::fmt::Display) -> StageError {
    StageError::msg(format!("step {step}: {e}"))
}

impl ComputeStage {
    /// A stage starting at step 0 with fresh networks (`net` and `ema_net` must be built with
    /// the same seed so they start equal).
    pub fn new(cfg: ComputeConfig, net: Network, ema_net: Network, test: Option<Arc<TestSet>>) -> Result<Self, StageError> {
        let opt = Sgd::new(net.params(), cfg.sgd);
        let ema = Ema::new(cfg.ema_decay);
        let protocon = match (&cfg.algorithm, &cfg.protocon) {
            (Algorithm::Protocon, Some(pc)) => Some(ProtoCon::new(pc.clone()).map_err(|e| StageError::msg(e.to_string()))?),
            (Algorithm::Protocon, None) => return Err(StageError::msg("algorithm protocon needs its settings")),
            _ => None,
        };
        Ok(ComputeStage {
            protocon,
            cluster_async: None,
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
        })
    }

    /// ProtoCon's clustering and bank, for an asynchronous cluster stage (`None` without ProtoCon).
    pub fn clustering(&self) -> Option<Arc<protocon::protocon::Clustering>> {
        self.protocon.as_ref().map(|pc| pc.clustering())
    }

    /// Cluster asynchronously: send each step's weak projections to `jobs` (read by a
    /// `ClusterStage` sharing [`clustering`](Self::clustering) and `progress`), letting the
    /// clustering lag by at most `staleness >= 1` steps.
    pub fn cluster_asynchronously(&mut self, jobs: QueueSender<ClusterJob>, progress: Arc<ClusterProgress>, staleness: u64) {
        self.cluster_async = Some(AsyncClustering { jobs, progress, staleness: staleness.max(1) });
    }

    /// Wait until the asynchronous clustering has caught up with every trained step.
    fn cluster_caught_up(&self, control: &Control) -> Result<(), StageError> {
        match &self.cluster_async {
            Some(a) => a.progress.wait_until(self.next_step, control),
            None => Ok(()),
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
        if let Some(pc) = &mut self.protocon {
            pc.load_state("protocon.", &ck.tensors).map_err(|e| StageError::msg(format!("checkpoint ProtoCon state: {e}")))?;
        }
        self.next_step = ck.meta["step"].as_u64().ok_or_else(|| StageError::msg("checkpoint has no `step`"))?;
        self.best = (
            ck.meta["best_test_acc"].as_f64().unwrap_or(0.0),
            ck.meta["best_test_acc_ema"].as_f64().unwrap_or(0.0),
        );
        Ok(())
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
        if let Some(pc) = &self.protocon {
            tensors.extend(pc.state("protocon.")?);
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
        Ok(Checkpoint { tensors, meta })
    }

    fn save_checkpoint(&self, control: &Control) -> Result<(), StageError> {
        if let Some(path) = &self.cfg.checkpoint {
            self.cluster_caught_up(control)?;
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
        let x = Tensor::from_vec(batch.images, (n, c, h, w), &self.device)?;
        let labels = Tensor::new(batch.labels.as_slice(), &self.device)?;
        let out = self.net.forward(&x, Mode::Train)?;
        let mut record = TrainRecord {
            step,
            epoch: batch.plan.epoch,
            lr,
            loss: 0.0,
            loss_x: 0.0,
            loss_u: 0.0,
            mask_rate: 0.0,
            pseudo_label_acc: 0.0,
            pseudo_label_acc_all: 0.0,
            images_per_s: 0.0,
            loss_px: None,
            loss_pu: None,
            loss_c: None,
            refined: None,
            cluster_label_acc: None,
            proto_label_acc: None,
            reliable_fraction: None,
        };
        let mut loss = match (self.cfg.algorithm, &mut self.protocon) {
            (Algorithm::Protocon, Some(pc)) => {
                let proj = out.projection.as_ref().ok_or_else(|| candle_core::Error::Msg("ProtoCon needs a network with a projection head".into()))?;
                let q_w = proj.narrow(0, b, u)?;
                let q_w_values: Vec<f32> = q_w.detach().flatten_all()?.to_vec1()?;
                let slots = &batch.plan.unlabeled_slots;
                let pc_err = |e: protocon::protocon::ProtoConError| candle_core::Error::Msg(e.to_string());
                let clusters = match &self.cluster_async {
                    None => pc.cluster(slots, &q_w_values).map_err(pc_err)?,
                    Some(a) => {
                        // Read before sending: the stage may record this step's assignments
                        // any time after.
                        let recorded = pc.recorded_clusters(slots);
                        a.progress.wait_until((step + 1).saturating_sub(a.staleness), control)?;
                        a.jobs.send(ClusterJob { step, slots: slots.clone(), q_w: q_w_values }, control)?;
                        recorded
                    }
                };
                let inputs = StepInputs {
                    logits_x: &out.logits.narrow(0, 0, b)?,
                    logits_w: &out.logits.narrow(0, b, u)?,
                    logits_s: &out.logits.narrow(0, b + u, u)?,
                    q_x: &proj.narrow(0, 0, b)?,
                    q_w: &q_w,
                    q_s: &proj.narrow(0, b + u, u)?,
                    labels: &labels,
                    slots,
                    epoch: batch.plan.epoch,
                };
                let o = pc.step(&inputs, &clusters).map_err(pc_err)?;
                (record.mask_rate, record.pseudo_label_acc, record.pseudo_label_acc_all) =
                    pseudo_label_stats(&o.pseudo_labels, &o.mask, &batch.hidden_labels);
                let accuracy = |pred: &[u32]| pred.iter().zip(&batch.hidden_labels).filter(|(p, y)| p == y).count() as f64 / u.max(1) as f64;
                record.loss_x = o.terms.x;
                record.loss_u = o.terms.u;
                record.loss_px = Some(o.terms.px);
                record.loss_pu = Some(o.terms.pu);
                record.loss_c = Some(o.terms.c);
                record.refined = Some(o.refined);
                record.cluster_label_acc = o.cluster_labels.as_deref().map(accuracy);
                record.proto_label_acc = o.prototype_labels.as_deref().map(accuracy);
                record.reliable_fraction = Some(pc.bank().reliable_fraction());
                o.loss
            }
            (Algorithm::Fixmatch, _) if u > 0 => {
                let loss_x = loss::cross_entropy(&out.logits.narrow(0, 0, b)?, &labels)?;
                let (pseudo, mask) = loss::hard_pseudo_labels(&out.logits.narrow(0, b, u)?, self.cfg.threshold)?;
                let loss_u = loss::masked_cross_entropy(&out.logits.narrow(0, b + u, u)?, &pseudo, &mask)?;
                record.loss_x = loss_x.to_scalar::<f32>()? as f64;
                record.loss_u = loss_u.to_scalar::<f32>()? as f64;
                let pseudo: Vec<u32> = pseudo.to_vec1()?;
                let mask: Vec<bool> = mask.to_vec1::<f32>()?.iter().map(|&m| m > 0.5).collect();
                (record.mask_rate, record.pseudo_label_acc, record.pseudo_label_acc_all) =
                    pseudo_label_stats(&pseudo, &mask, &batch.hidden_labels);
                (loss_x + (loss_u * self.cfg.lambda_u)?)?
            }
            _ => {
                let loss_x = loss::cross_entropy(&out.logits.narrow(0, 0, b)?, &labels)?;
                record.loss_x = loss_x.to_scalar::<f32>()? as f64;
                loss_x
            }
        };
        if self.cfg.nan_at_step == Some(step) {
            loss = (loss * f64::NAN)?;
        }
        record.loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
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

    /// ProtoCon's end of an epoch after `step`, when it is the epoch's last step.
    fn end_epoch(&mut self, step: u64, epoch: u64, control: &Control) -> Result<Option<EpochRecord>, StageError> {
        if self.protocon.is_none() || (step + 1) % self.cfg.steps_per_epoch.max(1) != 0 {
            return Ok(None);
        }
        self.cluster_caught_up(control)?;
        let pc = self.protocon.as_mut().expect("checked above");
        let sizes = pc.end_epoch();
        Ok(Some(EpochRecord {
            step,
            epoch,
            cluster_size_min: sizes.min,
            cluster_size_max: sizes.max,
            reliable_fraction: pc.bank().reliable_fraction(),
            labeled_agreement: pc.labeled_agreement(),
        }))
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
        // Ends the cluster stage's input.
        self.cluster_async = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocon::model::{Arch, NetworkOptions};

    /// Chunked evaluation with per-chunk normalisation gives the confusion matrix of one
    /// forward pass over the whole set, normalised independently.
    #[test]
    fn evaluation_in_chunks_equals_one_pass_over_the_normalised_set() {
        let (n, h, w, c, classes) = (23, 32, 32, 3, 10);
        // Each image a flat colour of its own plus a little texture.
        let pixels: Vec<u8> = (0..n * h * w * c)
            .map(|i| {
                let (img, ch) = (i / (h * w * c), i % c);
                ((img * [71, 131, 29][ch] + (i / c) % 7 * 5) % 256) as u8
            })
            .collect();
        let labels: Vec<u16> = (0..n).map(|i| (i * 3 % classes) as u16).collect();
        let names = (0..classes).map(|k| k.to_string()).collect();
        let data = Dataset::new("t", (h, w, c), pixels.clone(), labels.clone(), names).unwrap();
        let norm = Normalization { mean: vec![0.4, 0.5, 0.6], std: vec![0.2, 0.25, 0.3] };
        let options = NetworkOptions { bn_momentum: 0.1, ..Default::default() };
        let net = Network::build(Arch::CnnSmall, classes, None, 3, &Device::Cpu, &options).unwrap();

        let mut values = vec![0f32; n * c * h * w];
        for (i, px) in pixels.chunks_exact(h * w * c).enumerate() {
            for (p, rgb) in px.chunks_exact(c).enumerate() {
                for ch in 0..c {
                    values[i * c * h * w + ch * h * w + p] = (rgb[ch] as f32 / 255.0 - norm.mean[ch]) / norm.std[ch];
                }
            }
        }
        let x = Tensor::from_vec(values, (n, c, h, w), &Device::Cpu).unwrap();
        let pred: Vec<u32> = net.forward(&x, Mode::Eval).unwrap().logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        let mut want = vec![vec![0u64; classes]; classes];
        for (p, &y) in pred.iter().zip(&labels) {
            want[y as usize][*p as usize] += 1;
        }
        assert!(pred.iter().any(|&p| p != pred[0]), "a constant prediction would not test the order: {pred:?}");

        let test = TestSet::new(data, norm);
        for chunk in [5, 23, 500] {
            let eval = test.evaluate(&net, chunk).unwrap();
            assert_eq!(eval.confusion, want, "chunk {chunk}");
            let correct: u64 = (0..classes).map(|k| want[k][k]).sum();
            assert_eq!(eval.accuracy, correct as f64 / n as f64);
        }
    }
}
