//! ProtoCon's state and math (`../shared/docs/protocon.md` s.3-5): online constrained k-means,
//! the compact memory bank, class prototypes, the class prior, refined pseudo-labels and the
//! five loss terms, in the order of s.4.
//!
//! [`ProtoCon`] holds the state that lives across steps; the compute stage calls
//! [`ProtoCon::cluster`] then [`ProtoCon::step`] once per training step and
//! [`ProtoCon::end_epoch`] after the last step of an epoch. The clustering, the bank and the
//! prototypes work on plain `f32` slices (detached projections); only the losses are candle
//! tensors, so gradients flow exactly where s.4 says they do.

pub mod bank;
pub mod dual_lr;
pub mod kmeans;
pub mod prior;
pub mod prototypes;
pub mod refine_gate;

pub use bank::{ClusterLabels, ClusterSizes, MemoryBank};
pub use dual_lr::{auto_dual_lr, DualLr};
pub use kmeans::{Assignment, ConstrainedKMeans, KMeansConfig};
pub use prior::{ClassPrior, PriorCorrection};
pub use prototypes::Prototypes;
pub use refine_gate::RefineGate;

use crate::device;
use crate::loss::masked_soft_cross_entropy;
use candle_core::{DType, Device, Tensor, WithDType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors of the ProtoCon state: bad settings, or tensors of the wrong shape (a checkpoint from
/// another configuration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoConError {
    #[error("protocon: {0}")]
    Config(String),
    #[error("protocon: {0}")]
    Shape(String),
    #[error("protocon: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Read tensor `name` as `len` values of `T`, with an error naming it when it is missing or has
/// another size or type.
pub(crate) fn tensor_vec<T: WithDType>(tensors: &HashMap<String, Tensor>, name: &str, len: usize) -> Result<Vec<T>, ProtoConError> {
    let t = tensors.get(name).ok_or_else(|| ProtoConError::Shape(format!("checkpoint has no tensor `{name}`")))?;
    if t.elem_count() != len || t.dtype() != T::DTYPE {
        return Err(ProtoConError::Shape(format!(
            "checkpoint tensor `{name}`: expected {len} values of {:?}, found {:?} of {:?} (a checkpoint of another configuration?)",
            T::DTYPE,
            t.dims(),
            t.dtype()
        )));
    }
    Ok(t.flatten_all()?.to_vec1::<T>()?)
}

/// Which samples the unlabeled losses keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaskFrom {
    /// `max p_hat >= tau` (protocon.md s.4.6, the paper).
    #[default]
    Refined,
    /// `max pw >= tau` while still training towards `p_hat` (an option beyond the paper: with
    /// alpha 0.8 the refined confidence only passes tau for nearly pure clusters, s.8).
    Classifier,
}

/// What `Lu` and `Lp_u` train the strong view towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The refined distribution `p_hat` itself (protocon.md s.4.7, the paper and its script).
    #[default]
    Soft,
    /// Its one-hot `argmax p_hat`, as FixMatch's hard pseudo-labels (beyond the paper; the
    /// early-phase ablation in docs/results.md compares the two).
    Hard,
}

/// Weights of the five loss terms (all 1 in the paper).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    pub x: f64,
    pub px: f64,
    pub u: f64,
    pub pu: f64,
    pub c: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights { x: 1.0, px: 1.0, u: 1.0, pu: 1.0, c: 1.0 }
    }
}

/// Everything ProtoCon needs to know besides the tensors (protocon.md s.7 for defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtoConConfig {
    pub classes: usize,
    /// Projection dimension `d`.
    pub dim: usize,
    pub clusters: usize,
    pub heads: usize,
    /// Unlabeled samples in the bank (`N`).
    pub samples: usize,
    /// Prototype and consistency temperature `T` (0.1).
    pub temperature: f32,
    /// Temperature of the consistency target, `T / 5`.
    pub target_temperature: f32,
    pub dual_lr: f32,
    pub gamma: f32,
    /// Refinement mix `alpha` (0.8).
    pub alpha: f32,
    /// Confidence threshold `tau` (0.95).
    pub threshold: f32,
    /// Refinement starts at this 0-based epoch (20: after 20 warm-up epochs have passed).
    pub refine_after_epochs: u64,
    /// Refinement also waits until the labeled images' cluster pseudo-labels agree with their
    /// labels at least this often over an epoch (0: the epoch alone, the paper; see
    /// [`RefineGate`]).
    pub refine_min_agreement: f32,
    pub prior: PriorCorrection,
    pub cluster_labels: ClusterLabels,
    /// Momentum of the projection center `qbar` (0.9).
    pub center_momentum: f32,
    pub weights: LossWeights,
    pub mask_from: MaskFrom,
    pub target: Target,
    pub seed: u64,
}

impl ProtoConConfig {
    /// The paper's defaults (protocon.md s.7) for a problem of this size: T 0.1, target T/5,
    /// lambda 20, gamma 0.9, alpha 0.8, tau 0.95, refinement after 20 epochs, debiasing,
    /// weighted cluster labels, all loss weights 1.
    pub fn paper(classes: usize, dim: usize, clusters: usize, heads: usize, samples: usize) -> Self {
        ProtoConConfig {
            classes,
            dim,
            clusters,
            heads,
            samples,
            temperature: 0.1,
            target_temperature: 0.02,
            dual_lr: 20.0,
            gamma: 0.9,
            alpha: 0.8,
            threshold: 0.95,
            refine_after_epochs: 20,
            refine_min_agreement: 0.0,
            prior: PriorCorrection::default(),
            cluster_labels: ClusterLabels::Weighted,
            center_momentum: 0.9,
            weights: LossWeights::default(),
            mask_from: MaskFrom::Refined,
            target: Target::Soft,
            seed: 0,
        }
    }

    pub fn kmeans(&self) -> KMeansConfig {
        KMeansConfig { clusters: self.clusters, heads: self.heads, dim: self.dim, dual_lr: self.dual_lr, gamma: self.gamma }
    }
}

/// The tensors of one step: logits and projections of `[labeled weak ; unlabeled weak ;
/// unlabeled strong]`, the labels, and the unlabeled samples' bank slots.
pub struct StepInputs<'a> {
    pub logits_x: &'a Tensor,
    pub logits_w: &'a Tensor,
    pub logits_s: &'a Tensor,
    pub q_x: &'a Tensor,
    pub q_w: &'a Tensor,
    /// `q_w`'s values when the caller has them on the host already (it clustered them): the
    /// step then does not download them again.
    pub q_w_host: Option<&'a [f32]>,
    pub q_s: &'a Tensor,
    /// Labels of the labeled samples (u32): the prototypes, Lp_x and the labeled images'
    /// cluster agreement use them.
    pub labels: &'a Tensor,
    /// Soft targets of the labeled samples (`b x C`) when a batch stage mixed them (MixUp):
    /// Lx is then the cross-entropy against them; `labels` should hold each row's largest class.
    pub targets_x: Option<&'a Tensor>,
    pub slots: &'a [u32],
    /// 0-based epoch of the step.
    pub epoch: u64,
}

/// The loss terms' values (unweighted).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossTerms {
    pub x: f64,
    pub px: f64,
    pub u: f64,
    pub pu: f64,
    pub c: f64,
}

/// What a step produced: the total loss to back-propagate and what the metrics report.
pub struct StepOutput {
    pub loss: Tensor,
    pub terms: LossTerms,
    /// `p_hat` (`u x C`) and the mask, as used by the losses.
    pub p_hat: Vec<f32>,
    pub mask: Vec<bool>,
    /// Refined hard pseudo-labels `argmax p_hat`.
    pub pseudo_labels: Vec<u32>,
    /// Whether refinement was applied this step.
    pub refined: bool,
    /// `argmax z` per sample once cluster pseudo-labels exist (after the first epoch end).
    pub cluster_labels: Option<Vec<u32>>,
    /// `argmax q_w . P^T` once prototypes exist.
    pub prototype_labels: Option<Vec<u32>>,
}

/// Per row of `c` values, the index of the largest (the first on ties, as `torch.argmax`).
pub fn argmax_rows(x: &[f32], c: usize) -> Vec<u32> {
    x.chunks(c)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

fn one_hot(labels: &[u32], c: usize) -> Vec<f32> {
    let mut out = vec![0f32; labels.len() * c];
    for (row, &l) in out.chunks_mut(c).zip(labels) {
        row[l as usize] = 1.0;
    }
    out
}

/// `t`'s values on the host, as f32 (one download, named `what`).
fn rows(what: &'static str, t: &Tensor) -> candle_core::Result<Vec<f32>> {
    device::download(what, &t.detach().to_dtype(DType::F32)?)
}

/// Row targets (shaped as `like`, rows x columns) and their row weights, uploaded to `like`'s
/// device and dtype.
fn upload_targets(what: [&'static str; 2], like: &Tensor, target: &[f32], weight: &[f32]) -> candle_core::Result<(Tensor, Tensor)> {
    let (dev, dtype, shape) = (like.device(), like.dtype(), like.dims2()?);
    let target = device::upload_slice(what[0], target, shape, dev)?.to_dtype(dtype)?;
    let weight = device::upload_slice(what[1], weight, shape.0, dev)?.to_dtype(dtype)?;
    Ok((target, weight))
}

/// The clustering and the memory bank, shared between the compute stage and an asynchronous
/// cluster stage. Each sits behind its own lock: the cluster stage holds the k-means for a whole
/// step but the bank only while it records, so the compute stage's reads and writes of the bank
/// (refinement, bookkeeping) rarely wait.
#[derive(Debug)]
pub struct Clustering {
    kmeans: Mutex<ConstrainedKMeans>,
    bank: Mutex<MemoryBank>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock fails the pipeline anyway; the data is still consistent
    // enough to checkpoint what was trained before.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clustering {
    /// s.4.2: assign the detached weak projections `q_w` (`u x d` values) in every head,
    /// record the assignments in the bank, dual ascent, centroid update. Returns per head the
    /// cluster of each sample.
    pub fn cluster(&self, slots: &[u32], q_w: &[f32]) -> Result<Vec<Vec<u32>>, ProtoConError> {
        let mut kmeans = lock(&self.kmeans);
        let assignments = kmeans.assign(q_w);
        {
            let mut bank = lock(&self.bank);
            for (h, a) in assignments.iter().enumerate() {
                bank.record_assignment(h, slots, &a.cluster, &a.score)?;
            }
        }
        kmeans.update(q_w, &assignments);
        Ok(assignments.into_iter().map(|a| a.cluster).collect())
    }

    pub fn kmeans(&self) -> MutexGuard<'_, ConstrainedKMeans> {
        lock(&self.kmeans)
    }

    pub fn bank(&self) -> MutexGuard<'_, MemoryBank> {
        lock(&self.bank)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ProtoCon {
    cfg: ProtoConConfig,
    clustering: Arc<Clustering>,
    pub prototypes: Prototypes,
    pub prior: ClassPrior,
    /// Projection center `qbar` (`d`), zero at the start.
    center: Vec<f32>,
    /// Epoch ends processed so far (cluster pseudo-labels exist once this is > 0).
    epochs_ended: u64,
    gate: RefineGate,
}

impl ProtoCon {
    pub fn new(cfg: ProtoConConfig) -> Result<Self, ProtoConError> {
        let kmeans = ConstrainedKMeans::new(cfg.kmeans(), cfg.seed)?;
        Self::with_kmeans(cfg, kmeans)
    }

    /// Start from a given clustering (tests feed recorded initial centroids).
    pub fn with_kmeans(cfg: ProtoConConfig, kmeans: ConstrainedKMeans) -> Result<Self, ProtoConError> {
        if !(0.0..=1.0).contains(&cfg.alpha) {
            return Err(ProtoConError::Config(format!("alpha must be in [0, 1], not {}", cfg.alpha)));
        }
        if cfg.temperature <= 0.0 || cfg.target_temperature <= 0.0 {
            return Err(ProtoConError::Config("temperatures must be positive".into()));
        }
        let bank = MemoryBank::new(cfg.samples, cfg.heads, cfg.clusters, cfg.classes)?;
        Ok(ProtoCon {
            clustering: Arc::new(Clustering { kmeans: Mutex::new(kmeans), bank: Mutex::new(bank) }),
            prototypes: Prototypes::new(cfg.classes, cfg.dim),
            prior: ClassPrior::new(cfg.prior, cfg.classes),
            center: vec![0.0; cfg.dim],
            epochs_ended: 0,
            gate: RefineGate::new(cfg.refine_min_agreement)?,
            cfg,
        })
    }

    pub fn config(&self) -> &ProtoConConfig {
        &self.cfg
    }

    pub fn center(&self) -> &[f32] {
        &self.center
    }

    /// s.4.2 synchronously (see [`Clustering::cluster`]).
    pub fn cluster(&mut self, slots: &[u32], q_w: &[f32]) -> Result<Vec<Vec<u32>>, ProtoConError> {
        self.clustering.cluster(slots, q_w)
    }

    /// The clustering and bank, for a cluster stage that runs them asynchronously.
    pub fn clustering(&self) -> Arc<Clustering> {
        self.clustering.clone()
    }

    pub fn kmeans(&self) -> MutexGuard<'_, ConstrainedKMeans> {
        self.clustering.kmeans()
    }

    pub fn bank(&self) -> MutexGuard<'_, MemoryBank> {
        self.clustering.bank()
    }

    /// Per head, the cluster recorded in the bank for each of `slots` (their assignment the
    /// last time they were seen): what an asynchronous clustering refines with.
    pub fn recorded_clusters(&self, slots: &[u32]) -> Vec<Vec<u32>> {
        let bank = self.bank();
        (0..self.cfg.heads).map(|h| slots.iter().map(|&s| bank.assignment(h, s)).collect()).collect()
    }

    /// s.4.3-4.11 for one step, given each sample's clusters per head (`clusters[h][i]`).
    pub fn step(&mut self, x: &StepInputs, clusters: &[Vec<u32>]) -> Result<StepOutput, ProtoConError> {
        let (c, d) = (self.cfg.classes, self.cfg.dim);
        let u = x.slots.len();
        let t = self.cfg.temperature as f64;
        let dev = x.q_x.device().clone();
        let dtype = x.q_x.dtype();
        let protos = device::upload_slice("prototypes", self.prototypes.matrix(), (c, d), &dev)?.to_dtype(dtype)?;

        // 3. Labeled losses.
        let loss_x = crate::loss::labeled_cross_entropy(x.logits_x, x.labels, x.targets_x)?;
        let loss_px = crate::loss::cross_entropy(&(x.q_x.matmul(&protos.t()?)? / t)?, x.labels)?;

        // 4. Classifier pseudo-labels with the prior correction.
        let weak = rows("weak-view logits", x.logits_w)?;
        let (pw, strong_margin) = self.prior.pseudo_labels(&weak);

        // 5. Refinement with the clusters' pseudo-labels.
        let z = self.refined_targets(u, clusters.len(), |head, i| clusters[head][i]);
        let refined = x.epoch >= self.cfg.refine_after_epochs && self.gate.open() && z.iter().any(|&v| v != 0.0);
        let alpha = self.cfg.alpha;
        let p_hat: Vec<f32> = if refined {
            pw.iter().zip(&z).map(|(p, z)| alpha * p + (1.0 - alpha) * z).collect()
        } else {
            pw.clone()
        };

        // 6. Confidence mask.
        let confident = |p: &[f32]| p.chunks(c).map(|r| r.iter().copied().fold(f32::MIN, f32::max) >= self.cfg.threshold).collect::<Vec<bool>>();
        let mask = match self.cfg.mask_from {
            MaskFrom::Refined => confident(&p_hat),
            MaskFrom::Classifier => confident(&pw),
        };
        let mask_f: Vec<f32> = mask.iter().map(|&m| m as u8 as f32).collect();
        let unmask_f: Vec<f32> = mask_f.iter().map(|m| 1.0 - m).collect();

        // 7. Unlabeled classification loss, with the debias margin on the strong logits.
        let strong = match &strong_margin {
            Some(m) => x.logits_s.broadcast_add(&device::upload_slice("strong debias margin", m, c, &dev)?.to_dtype(dtype)?)?,
            None => x.logits_s.clone(),
        };
        let target_u = match self.cfg.target {
            Target::Soft => p_hat.clone(),
            Target::Hard => one_hot(&argmax_rows(&p_hat, c), c),
        };
        let targets_u = upload_targets(["unlabeled targets", "mask"], &strong, &target_u, &mask_f)?;
        let loss_u = masked_soft_cross_entropy(&strong, &targets_u.0, &targets_u.1)?;
        // 8. Prototypical unlabeled loss.
        let loss_pu = masked_soft_cross_entropy(&(x.q_s.matmul(&protos.t()?)? / t)?, &targets_u.0, &targets_u.1)?;
        // 9. Consistency of the non-confident samples' projections, towards a centered, sharper
        // target.
        let q_w = match x.q_w_host {
            Some(values) => values.to_vec(),
            None => rows("weak-view projections", x.q_w)?,
        };
        let centered: Vec<f32> =
            q_w.iter().enumerate().map(|(i, &q)| (q - self.center[i % d]) / self.cfg.target_temperature).collect();
        let target = prior::softmax_rows(&centered, d);
        let targets_c = upload_targets(["consistency targets", "inverse mask"], x.q_s, &target, &unmask_f)?;
        let loss_c = masked_soft_cross_entropy(&(x.q_s / t)?, &targets_c.0, &targets_c.1)?;

        // 10. Total.
        let w = self.cfg.weights;
        let loss = ((((loss_x.clone() * w.x)? + (loss_px.clone() * w.px)?)? + ((loss_u.clone() * w.u)? + (loss_pu.clone() * w.pu)?)?)?
            + (loss_c.clone() * w.c)?)?;
        let terms = LossTerms {
            x: device::download_scalar("loss_x", &loss_x)?,
            px: device::download_scalar("loss_px", &loss_px)?,
            u: device::download_scalar("loss_u", &loss_u)?,
            pu: device::download_scalar("loss_pu", &loss_pu)?,
            c: device::download_scalar("loss_c", &loss_c)?,
        };

        // State updates after the losses: centre, prior, bank, prototypes.
        if u > 0 {
            let m = self.cfg.center_momentum;
            let mut mean = vec![0f32; d];
            for row in target.chunks(d) {
                mean.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            self.center.iter_mut().zip(&mean).for_each(|(q, v)| *q = m * *q + (1.0 - m) * v / u as f32);
        }
        self.prior.update(&weak);
        let pseudo_labels = argmax_rows(&p_hat, c);
        self.bank().record_labels(x.slots, &pseudo_labels, &mask)?;
        let labels: Vec<u32> = device::download("labels", &x.labels.to_dtype(DType::U32)?)?;
        let q_x = rows("labeled projections", x.q_x)?;
        if self.epochs_ended > 0 {
            let labeled_clusters = self.cluster_labels_of(&q_x);
            self.gate.observe(&labeled_clusters, &labels);
        }
        self.prototypes.accumulate(&q_x, &labels);
        for (i, row) in q_w.chunks(d).enumerate().filter(|(i, _)| mask[*i]) {
            self.prototypes.accumulate(row, &pseudo_labels[i..i + 1]);
        }

        let cluster_labels = (self.epochs_ended > 0).then(|| argmax_rows(&z, c));
        let prototype_labels = self.prototypes.any().then(|| self.prototypes.nearest(&q_w));
        Ok(StepOutput { loss, terms, p_hat, mask, pseudo_labels, refined, cluster_labels, prototype_labels })
    }

    /// `argmax z` for projections `q` (`n x d`) that are not in the bank: each is assigned in
    /// every head as the clustering would (nothing is updated) and takes the mean of its
    /// clusters' pseudo-labels, as a bank sample does.
    pub fn cluster_labels_of(&self, q: &[f32]) -> Vec<u32> {
        let assignments = self.kmeans().assign(q);
        let z = self.refined_targets(q.len() / self.cfg.dim, assignments.len(), |head, i| assignments[head].cluster[i]);
        argmax_rows(&z, self.cfg.classes)
    }

    /// The bank's refined target (s.4.5) of each of `samples` samples, `samples x C`, from the
    /// sample's cluster in each of `heads` heads (`cluster_of(head, sample)`): the training
    /// step's refinement and the labeled images' cluster pseudo-labels read the bank alike.
    fn refined_targets(&self, samples: usize, heads: usize, cluster_of: impl Fn(usize, usize) -> u32) -> Vec<f32> {
        let c = self.cfg.classes;
        let bank = self.bank();
        let mut z = vec![0f32; samples * c];
        let mut sample_clusters = vec![0u32; heads];
        for (i, zi) in z.chunks_mut(c).enumerate() {
            for (head, k) in sample_clusters.iter_mut().enumerate() {
                *k = cluster_of(head, i);
            }
            bank.refined_target(&sample_clusters, zi);
        }
        z
    }

    /// The last finished epoch's labeled agreement (see [`RefineGate`]).
    pub fn labeled_agreement(&self) -> Option<f64> {
        self.gate.agreement()
    }

    /// s.5: reset the k-means counters, recompute the cluster pseudo-labels, set the
    /// prototypes, close the epoch's labeled agreement. Returns the cluster sizes per head.
    pub fn end_epoch(&mut self) -> ClusterSizes {
        self.gate.end_epoch();
        self.kmeans().end_epoch();
        let sizes = self.bank().end_epoch(self.cfg.cluster_labels);
        self.prototypes.end_epoch();
        self.epochs_ended += 1;
        sizes
    }

    pub fn epochs_ended(&self) -> u64 {
        self.epochs_ended
    }

    /// Bytes held by the bank and the clustering state (what `bench bank` reports).
    pub fn bytes(&self) -> usize {
        self.bank().bytes() + self.kmeans().bytes() + self.prototypes.bytes() + 4 * self.center.len()
    }

    /// Everything, as named tensors for checkpoints.
    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = self.kmeans().state(&format!("{prefix}kmeans."))?;
        out.extend(self.bank().state(&format!("{prefix}bank."))?);
        out.extend(self.prototypes.state(&format!("{prefix}prototypes."))?);
        out.extend(self.prior.state(&format!("{prefix}prior."))?);
        out.extend(self.gate.state(&format!("{prefix}refine_gate."))?);
        out.push((format!("{prefix}center"), Tensor::from_slice(&self.center, self.cfg.dim, &Device::Cpu)?));
        out.push((format!("{prefix}epochs_ended"), Tensor::new(&[self.epochs_ended as i64], &Device::Cpu)?));
        Ok(out)
    }

    /// Restore what [`state`](Self::state) saved.
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        self.kmeans().load_state(&format!("{prefix}kmeans."), tensors)?;
        self.bank().load_state(&format!("{prefix}bank."), tensors)?;
        self.prototypes.load_state(&format!("{prefix}prototypes."), tensors)?;
        self.prior.load_state(&format!("{prefix}prior."), tensors)?;
        self.gate.load_state(&format!("{prefix}refine_gate."), tensors)?;
        self.center = tensor_vec::<f32>(tensors, &format!("{prefix}center"), self.cfg.dim)?;
        self.epochs_ended = tensor_vec::<i64>(tensors, &format!("{prefix}epochs_ended"), 1)?[0] as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lu with `target = "hard"` is the cross-entropy of the strong logits against `argmax pw`,
    /// worked by hand: the prior starts uniform, so the debias margins shift every logit of a
    /// row alike and change nothing; threshold 0 keeps both samples.
    #[test]
    fn a_hard_target_is_the_cross_entropy_against_the_argmax() {
        let dev = Device::Cpu;
        let t = |v: &[f32], r: usize, c: usize| Tensor::from_slice(v, (r, c), &dev).unwrap();
        let (weak, strong) = ([2.0f32, 0.5, 0.0, -1.0, 0.0, 3.0], [0.3f32, 2.0, -0.2, 1.0, 0.0, -1.0]);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let q = t(&[1.0, 0.0, 0.0, 1.0], 2, 2);
        let inputs = StepInputs {
            targets_x: None,
            logits_x: &t(&[0.0, 1.0, 0.0], 1, 3),
            logits_w: &t(&weak, 2, 3),
            logits_s: &t(&strong, 2, 3),
            q_x: &t(&[s, s], 1, 2),
            q_w: &q,
            q_w_host: None,
            q_s: &q,
            labels: &Tensor::new(&[1u32], &dev).unwrap(),
            slots: &[0, 1],
            epoch: 0,
        };
        let loss_u = |target| {
            let cfg = ProtoConConfig { threshold: 0.0, target, ..ProtoConConfig::paper(3, 2, 2, 1, 4) };
            ProtoCon::new(cfg).unwrap().step(&inputs, &[vec![0, 1]]).unwrap().terms.u
        };
        // argmax of the weak rows: class 0, class 2.
        let log_softmax = |row: &[f32], j: usize| {
            let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            row[j] as f64 - z.ln()
        };
        let hard = -(log_softmax(&strong[..3], 0) + log_softmax(&strong[3..], 2)) / 2.0;
        assert!((loss_u(Target::Hard) - hard).abs() < 1e-6, "{} vs {hard}", loss_u(Target::Hard));
        // The soft target weighs every class by pw instead.
        let pw = |row: &[f32]| {
            let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            row.iter().map(|&v| (v as f64).exp() / z).collect::<Vec<_>>()
        };
        let soft = -(0..2)
            .map(|i| pw(&weak[3 * i..3 * i + 3]).iter().enumerate().map(|(j, p)| p * log_softmax(&strong[3 * i..3 * i + 3], j)).sum::<f64>())
            .sum::<f64>()
            / 2.0;
        assert!((loss_u(Target::Soft) - soft).abs() < 1e-6, "{} vs {soft}", loss_u(Target::Soft));
        assert!((hard - soft).abs() > 0.05, "the example tells the two apart");
    }
}
