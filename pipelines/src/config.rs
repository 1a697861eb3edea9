//! The run configuration: one TOML file per data set x label count (`configs/`), every field
//! documented here, unknown keys rejected with the key and the file named. `--set key=value`
//! overrides any field (dotted path, value in TOML syntax; bare words are strings).

use anyhow::{bail, Context as _};
use protocon::data::{DatasetKind, DatasetSpec, Fit, Subset};
use protocon::device::DeviceKind;
use protocon::model::Arch;
use protocon::protocon::{ClusterLabels, DualLr, LossWeights, MaskFrom, PriorCorrection, ProtoConConfig, Target};
use protocon_stages::augment::AugmentConfig;
use protocon_stages::objective::Algorithm;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run (the default output directory is `runs/<name>`).
    pub name: String,
    /// `supervised` (labeled data only), `fixmatch` or `protocon`: the objective of the run.
    pub algorithm: Algorithm,
    /// Seed of the split (when made from the seed), the initial weights, sampling and augmentation.
    #[serde(default)]
    pub seed: u64,
    pub data: DataSection,
    pub model: ModelSection,
    pub train: TrainSection,
    #[serde(default)]
    pub threads: ThreadsSection,
    /// Weak and strong augmentation chains (see `protocon_stages::augment::AugmentConfig`).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// ProtoCon's settings (used with `algorithm = "protocon"`).
    #[serde(default)]
    pub protocon: ProtoconSection,
    /// Where the model trains.
    #[serde(default)]
    pub device: DeviceSection,
    /// How the fused CPU kernels compute (see [`KernelsSection`]).
    #[serde(default)]
    pub kernels: KernelsSection,
}

/// Choices of the fused CPU kernels that change rounding but not the maths.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelsSection {
    /// How 3x3 stride-1 convolutions are computed (see [`Conv3x3`]).
    #[serde(default)]
    pub conv3x3: Conv3x3,
}

/// The algorithm of the 3x3 stride-1, padding-1 convolutions (every 3x3 layer of WRN and
/// cnn-small, ResNet's bottleneck convolutions), forward and both gradients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Conv3x3 {
    /// Winograd's F(2x2, 3x3): 2.25 times fewer multiplications, results within float
    /// rounding (about 1e-6 relative) of im2col's.
    #[default]
    Winograd,
    /// im2col and one GEMM, the products as PyTorch's reference computes them.
    Im2col,
}

impl Conv3x3 {
    /// Makes the fused kernels use this algorithm from their next call on.
    pub fn apply(self) {
        protocon::ops::set_winograd(self == Conv3x3::Winograd);
    }
}

/// Where the networks, the optimizer state, the EMA copy and each step's tensors live:
/// `kind = "cpu"` (the default) or `"cuda:N"` (a binary built with `--features cuda`, see
/// `scripts/build-cuda.sh`). The augmentation, the clustering, the memory bank and the
/// prototypes stay on the host either way (`protocon::device` says why and what crosses).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    #[serde(default)]
    pub kind: DeviceKind,
}

/// ProtoCon (protocon.md s.3-7). The defaults are `preset = "default"`: the paper's CIFAR-10
/// settings except where [`Preset`] says; every field set in the config wins over its preset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtoconSection {
    /// Where the fields not set come from: `"default"` or `"paper"` (see [`Preset`]).
    pub preset: Preset,
    /// Projection dimension d (64 for CIFAR, 128 for large data sets).
    pub projection_dim: usize,
    /// Clusters per head K; 0: unlabeled images / `min_cluster_size`.
    pub clusters: usize,
    /// Minimum cluster size n when `clusters` is 0 (200 for CIFAR, 4800 for ImageNet).
    pub min_cluster_size: usize,
    /// Independent clusterings H.
    pub heads: usize,
    /// Temperature T of prototype and projection logits.
    pub temperature: f32,
    /// Temperature of the consistency target (T / 5).
    pub target_temperature: f32,
    /// Dual learning rate lambda of the constrained k-means: `"auto"` (20 x min(b / 448, K / 250)
    /// for b unlabeled images per step and K clusters, which is the paper's 20 at its b and K;
    /// see `protocon::protocon::dual_lr`) or a number >= 0. The run prints the value it uses.
    pub dual_lr: DualLr,
    /// Lower bound gamma on cluster sizes, as a share of N / K.
    pub gamma: f32,
    /// Refinement mix alpha: p_hat = alpha * pw + (1 - alpha) * z.
    pub alpha: f32,
    /// Refinement starts at this (0-based) epoch.
    pub refine_after_epochs: u64,
    /// ... and only during epochs after one in which the labeled images' cluster pseudo-labels
    /// agreed with their labels at least this often (in [0, 1]; 0: the epoch alone, as in the
    /// paper). Beyond the paper; see `protocon::protocon::refine_gate`.
    pub refine_min_agreement: f32,
    /// `debias` (the script's default) or `distribution_alignment` (the paper's wording).
    pub prior: PriorKind,
    /// Debias margin (0.5): pw = softmax(p_w - margin * log pbar).
    pub debias_margin: f32,
    /// Margin on the strong logits in Lu, p_s + margin * log pbar (DebiasPL's adaptive marginal
    /// loss); unset: `debias_margin`, as in the script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strong_margin: Option<f32>,
    /// EMA momentum of the debiasing prior pbar.
    pub prior_momentum: f32,
    /// Batches averaged by distribution alignment.
    pub alignment_window: usize,
    /// Cluster pseudo-labels: `weighted` (by assignment scores, the default) or `plain`.
    pub cluster_labels: ClusterLabels,
    /// Momentum of the projection center qbar.
    pub center_momentum: f32,
    /// Weights of Lp_x, Lp_u and Lc (Lu's is `train.lambda_u`, Lx's is 1).
    pub weight_px: f64,
    pub weight_pu: f64,
    pub weight_c: f64,
    /// `refined` (max p_hat >= tau, the paper) or `classifier` (max pw >= tau, training
    /// towards p_hat: an option beyond the paper, see protocon.md s.8).
    pub mask_from: MaskFrom,
    /// `soft` (train the strong view towards p_hat, the paper) or `hard` (towards argmax p_hat,
    /// as FixMatch does; beyond the paper).
    pub target: Target,
    /// 0: cluster synchronously, exactly in the order of protocon.md s.4. S >= 1: cluster in a
    /// separate stage that may lag the compute stage by up to S steps; refinement then uses each
    /// sample's cluster from its previous visit (see `protocon_stages::cluster`).
    pub staleness: u64,
}

/// Which class-prior correction ProtoCon applies to the classifier's pseudo-labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorKind {
    Debias,
    DistributionAlignment,
}

/// A named set of ProtoCon settings, the base that a config's `[protocon]` fields override.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The paper's settings with the dual learning rate scaled to the run's batch and K
    /// (`dual_lr = "auto"`), which is the paper's 20 at the paper's batch and K.
    #[default]
    Default,
    /// The paper's exact settings (protocon.md s.7): `dual_lr = 20` whatever the batch and K.
    Paper,
}

impl Preset {
    /// The name a config writes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::Paper => "paper",
        }
    }

    /// The section this preset stands for.
    pub fn section(self) -> ProtoconSection {
        let default = ProtoconSection::default();
        match self {
            Preset::Default => default,
            Preset::Paper => {
                let paper = ProtoConConfig::paper(0, default.projection_dim, 0, default.heads, 0);
                ProtoconSection {
                    preset: Preset::Paper,
                    dual_lr: DualLr::Fixed(paper.dual_lr),
                    refine_min_agreement: paper.refine_min_agreement,
                    ..default
                }
            }
        }
    }
}

impl Default for ProtoconSection {
    /// The paper's numbers come from the core's one table ([`ProtoConConfig::paper`]); the
    /// section adds what only a config has: the preset, `dual_lr = "auto"`, `min_cluster_size`,
    /// the refinement gate, distribution alignment's window and the asynchronous clustering.
    fn default() -> Self {
        let paper = ProtoConConfig::paper(0, 64, 0, 1, 0);
        ProtoconSection {
            preset: Preset::Default,
            projection_dim: paper.dim,
            clusters: 0,
            min_cluster_size: 200,
            heads: paper.heads,
            temperature: paper.temperature,
            target_temperature: paper.target_temperature,
            dual_lr: DualLr::Auto,
            gamma: paper.gamma,
            alpha: paper.alpha,
            refine_after_epochs: paper.refine_after_epochs,
            refine_min_agreement: 0.5,
            prior: PriorKind::Debias,
            debias_margin: PriorCorrection::DEBIAS_MARGIN,
            strong_margin: None,
            prior_momentum: PriorCorrection::PRIOR_MOMENTUM,
            alignment_window: 32,
            cluster_labels: paper.cluster_labels,
            center_momentum: paper.center_momentum,
            weight_px: paper.weights.px,
            weight_pu: paper.weights.pu,
            weight_c: paper.weights.c,
            mask_from: paper.mask_from,
            target: paper.target,
            staleness: 0,
        }
    }
}

impl ProtoconSection {
    /// Clusters per head for `unlabeled` images.
    pub fn clusters_for(&self, unlabeled: usize) -> usize {
        if self.clusters > 0 {
            self.clusters
        } else {
            (unlabeled / self.min_cluster_size.max(1)).max(1)
        }
    }

    /// The dual learning rate a run of `config` over `unlabeled` images uses.
    pub fn dual_lr_for(&self, config: &RunConfig, unlabeled: usize) -> f32 {
        self.dual_lr.resolve(config.unlabeled_batch(), self.clusters_for(unlabeled))
    }

    /// The core's settings for a run of `config` over `unlabeled` images and `classes` classes.
    pub fn settings(&self, config: &RunConfig, unlabeled: usize, classes: usize) -> ProtoConConfig {
        ProtoConConfig {
            classes,
            dim: self.projection_dim,
            clusters: self.clusters_for(unlabeled),
            heads: self.heads,
            samples: unlabeled,
            temperature: self.temperature,
            target_temperature: self.target_temperature,
            dual_lr: self.dual_lr_for(config, unlabeled),
            gamma: self.gamma,
            alpha: self.alpha,
            threshold: config.train.threshold as f32,
            refine_after_epochs: self.refine_after_epochs,
            refine_min_agreement: self.refine_min_agreement,
            prior: match self.prior {
                PriorKind::Debias => PriorCorrection::Debias {
                    margin: self.debias_margin,
                    strong_margin: self.strong_margin.unwrap_or(self.debias_margin),
                    momentum: self.prior_momentum,
                },
                PriorKind::DistributionAlignment => PriorCorrection::DistributionAlignment { window: self.alignment_window },
            },
            cluster_labels: self.cluster_labels,
            center_momentum: self.center_momentum,
            weights: LossWeights { x: 1.0, px: self.weight_px, u: config.train.lambda_u, pu: self.weight_pu, c: self.weight_c },
            mask_from: self.mask_from,
            target: self.target,
            seed: config.seed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `fashion-mnist`, `mnist`, `cifar10`, `cifar100` (optionally `:DIR`), or `folder:PATH`.
    pub dataset: String,
    /// Labeled samples per class (the rest of the training split is unlabeled).
    #[serde(default)]
    pub labels_per_class: usize,
    /// Instead of `labels_per_class` (which it overrides when set): this fraction of each class
    /// is labeled, `max(1, round(f x class size))` (ImageNet 1%: 0.01), in (0, 1].
    #[serde(default)]
    pub label_fraction: Option<f64>,
    /// A split file from `protocon data split`; without it the split is made from `seed`.
    #[serde(default)]
    pub split: Option<PathBuf>,
    /// Bring images to `size x size`, the way `fit` says.
    #[serde(default)]
    pub size: Option<usize>,
    /// How images reach `size`: `"pad"` (centred on a black canvas, pixels unchanged; images
    /// must not be larger, e.g. 28 -> 32 for (Fashion-)MNIST), `"resize"` (bilinear,
    /// antialiased when shrinking) or `"center-crop"` (ImageNet's evaluation transform:
    /// scaled so the shorter side is `size / crop_fraction`, aspect kept, and the central
    /// `size x size` kept). Default: `"center-crop"` for the test files of a folder decoded per
    /// sample (whose training views are random resized crops), `"resize"` for other `folder:`
    /// data sets, whose files come in any size, `"pad"` for the built-in ones.
    #[serde(default)]
    pub fit: Option<Fit>,
    /// With `fit = "center-crop"`: `size` over the scaled image's shorter side, in (0, 1].
    /// Default 0.875 (224 of 256).
    #[serde(default)]
    pub crop_fraction: Option<f64>,
    /// Expand grey images to 3 channels.
    #[serde(default = "yes")]
    pub rgb: bool,
    /// Use only the first N training images (quick experiments, tests).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Fetch the data set (see `protocon data fetch`) when its files are missing.
    #[serde(default = "yes")]
    pub fetch: bool,
    /// When training images are decoded: `"at-load"` (the whole set once, into memory, brought
    /// to `size`) or `"per-sample"` (an image folder's files are read and decoded each time a
    /// step uses them, at their own size). With `"per-sample"`, `size` is the side of the views
    /// the augmentation chains must produce (a `random_resized_crop` of that size leads both
    /// chains), and a JPEG is decoded only around the two views' crops. It
    /// is for folders too large to hold decoded; the test files are then decoded at each
    /// evaluation too, and brought to `size` as `fit` says (a centre crop by default).
    #[serde(default)]
    pub decode: Decode,
}

impl DataSection {
    /// The data set `dataset` names; the error names the key.
    pub fn spec(&self) -> anyhow::Result<DatasetSpec> {
        self.dataset.parse().map_err(|e| anyhow::anyhow!("data.dataset: {e}"))
    }

    /// The number of images of `subset` to use: `train_limit` or `test_limit`.
    pub fn limit(&self, subset: Subset) -> Option<usize> {
        match subset {
            Subset::Train => self.train_limit,
            Subset::Test => self.test_limit,
        }
    }

    /// How images of a `kind` data set reach `size`: `fit`, else a centre crop for a folder's
    /// test files decoded per visit (the ImageNet evaluation transform), a resize for other
    /// folders (whose files come in any size) and padding for the built-in sets (28 -> 32).
    pub fn fit_for(&self, kind: DatasetKind) -> Fit {
        self.fit.unwrap_or(match (kind, self.decode) {
            (DatasetKind::Folder, Decode::PerSample) => Fit::CenterCrop,
            (DatasetKind::Folder, Decode::AtLoad) => Fit::Resize,
            _ => Fit::Pad,
        })
    }
}

/// See [`DataSection::decode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decode {
    #[default]
    AtLoad,
    PerSample,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `cnn-small`, `wrn-28-2`, `wrn-28-8`, `resnet18`, `resnet50` (also 34, 101, 152).
    pub arch: Arch,
    /// BatchNorm momentum, PyTorch convention (FixMatch/ProtoCon: 0.001). With 0.001 the running
    /// statistics keep 0.999^k of their initial values after k steps, so runs of a few thousand
    /// steps evaluate badly in inference mode; short CPU runs raise it.
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// ResNet: start the last BatchNorm scale of each block at 0, so blocks start as the
    /// identity (torchvision's `zero_init_residual`). Other architectures ignore it.
    #[serde(default)]
    pub zero_init_residual: bool,
}

fn default_bn_momentum() -> f64 {
    0.001
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Total optimizer steps.
    pub steps: u64,
    /// Labeled images per step (B).
    pub labeled_batch: usize,
    /// Unlabeled images per step = `unlabeled_ratio * labeled_batch` (mu; 7 in the papers).
    #[serde(default = "default_mu")]
    pub unlabeled_ratio: usize,
    /// Base learning rate (after warm-up; cosine decay to 0.195x over `steps`).
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Weight decay on weights (not biases, not BatchNorm).
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "yes")]
    pub nesterov: bool,
    /// Steps of linear learning-rate warm-up.
    #[serde(default)]
    pub warmup_steps: u64,
    /// EMA decay of the evaluated model.
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Confidence threshold tau of pseudo-labels.
    #[serde(default = "default_tau")]
    pub threshold: f64,
    /// Weight of the unlabeled loss.
    #[serde(default = "default_one")]
    pub lambda_u: f64,
    /// Evaluate on the test split every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Write a metrics line every this many steps.
    #[serde(default = "default_one_u64")]
    pub log_every: u64,
    /// Write a checkpoint every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub checkpoint_every: u64,
    /// Fault injection for tests: the loss becomes NaN at this step.
    #[serde(default)]
    pub inject_nan_at_step: Option<u64>,
}

fn default_mu() -> usize {
    7
}
fn default_lr() -> f64 {
    0.03
}
fn default_momentum() -> f64 {
    0.9
}
fn default_wd() -> f64 {
    5e-4
}
fn default_ema() -> f64 {
    0.999
}
fn default_tau() -> f64 {
    0.95
}
fn default_one() -> f64 {
    1.0
}
fn default_one_u64() -> u64 {
    1
}
fn default_eval_every() -> u64 {
    500
}

/// How the machine's cores are shared. Candle's kernels and the augmentation workers compete
/// for the same cores; the run prints what it used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadsSection {
    /// Threads of the compute stage's kernels (0: `RAYON_NUM_THREADS` or the core count), and
    /// of the decoding of a per-sample folder's test files at each evaluation.
    #[serde(default)]
    pub compute: usize,
    /// Workers of the weak-augmentation stage.
    #[serde(default = "default_workers")]
    pub weak_workers: usize,
    /// Workers of the strong-augmentation stage.
    #[serde(default = "default_workers")]
    pub strong_workers: usize,
    /// Capacity of every queue, in batches.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_workers() -> usize {
    1
}
fn default_queue() -> usize {
    4
}

impl Default for ThreadsSection {
    fn default() -> Self {
        ThreadsSection { compute: 0, weak_workers: 1, strong_workers: 1, queue: 4 }
    }
}

/// The config that `protocon train` uses without `--config`: ProtoCon on Fashion-MNIST with 40
/// labels, at the budget the fourth study measured (3,000 steps on 6,000 images; see the file).
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/fashion-mnist-40-protocon.toml");

/// Where [`DEFAULT_CONFIG`] comes from, for messages.
pub const DEFAULT_CONFIG_ORIGIN: &str = "configs/fashion-mnist-40-protocon.toml (built in)";

impl RunConfig {
    /// Parse TOML `text` (from `origin`, for messages), apply `overrides` (`key=value`), check.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> anyhow::Result<RunConfig> {
        let mut table: toml::Table = toml::from_str(text).with_context(|| format!("config {origin}: not valid TOML"))?;
        for o in overrides {
            apply_override(&mut table, o).with_context(|| format!("--set {o}"))?;
        }
        let preset = apply_preset(&mut table).with_context(|| format!("config {origin}"))?;
        // Without overrides or a preset, parse the file itself so errors show its line and the
        // key in context; otherwise the merged document has other line numbers, so give the
        // message alone.
        let config: RunConfig = if overrides.is_empty() && preset == Preset::Default {
            toml::from_str(text).map_err(|e| anyhow::anyhow!("config {origin}: {e}"))?
        } else {
            let merged = toml::to_string(&table)?;
            toml::from_str(&merged)
                .map_err(|e| anyhow::anyhow!("config {origin} (with --set overrides): {}", e.message().trim()))?
        };
        config.validate().with_context(|| format!("config {origin}"))?;
        Ok(config)
    }

    /// Read a config file.
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<RunConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.device.kind.supported().context("device.kind")?;
        let t = &self.train;
        if t.steps == 0 || t.labeled_batch == 0 {
            bail!("train.steps and train.labeled_batch must be at least 1");
        }
        if self.data.labels_per_class == 0 && self.data.label_fraction.is_none() {
            bail!("data.labels_per_class must be at least 1 (or set data.label_fraction)");
        }
        if let Some(f) = self.data.label_fraction {
            if !(f > 0.0 && f <= 1.0) {
                bail!("data.label_fraction must be in (0, 1] (ImageNet 1%: 0.01), got {f}");
            }
        }
        if !(0.0..=1.0).contains(&t.threshold) {
            bail!("train.threshold must be in 0..=1, got {}", t.threshold);
        }
        // Every other number: finite, and in the range its meaning allows (NaN fails each test).
        for (key, v) in [("train.lr", t.lr), ("model.bn_momentum", self.model.bn_momentum)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{key} must be a finite number > 0, got {v}");
            }
        }
        for (key, v) in [("train.weight_decay", t.weight_decay), ("train.lambda_u", t.lambda_u)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{key} must be a finite number >= 0, got {v}");
            }
        }
        for (key, v) in [("train.momentum", t.momentum), ("train.ema_decay", t.ema_decay), ("model.bn_momentum", self.model.bn_momentum)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{key} must be in 0..=1, got {v}");
            }
        }
        if self.algorithm == Algorithm::Protocon {
            let p = &self.protocon;
            if let DualLr::Fixed(v) = p.dual_lr {
                if !(v.is_finite() && v >= 0.0) {
                    bail!("protocon.dual_lr must be \"auto\" or a finite number >= 0, got {v}");
                }
            }
            for (key, v) in [("weight_px", p.weight_px), ("weight_pu", p.weight_pu), ("weight_c", p.weight_c)] {
                if !(v.is_finite() && v >= 0.0) {
                    bail!("protocon.{key} must be a finite number >= 0, got {v}");
                }
            }
            if p.projection_dim == 0 || p.heads == 0 || p.min_cluster_size == 0 {
                bail!("protocon.projection_dim, protocon.heads and protocon.min_cluster_size must be at least 1");
            }
            if !(0.0..=1.0).contains(&p.alpha) || !(0.0..=1.0).contains(&p.gamma) {
                bail!("protocon.alpha and protocon.gamma must be in 0..=1");
            }
            if !(p.temperature > 0.0 && p.target_temperature > 0.0) {
                bail!("protocon.temperature and protocon.target_temperature must be positive");
            }
            for (key, v) in [("debias_margin", Some(p.debias_margin)), ("strong_margin", p.strong_margin)] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                    bail!("protocon.{key} must be a finite number >= 0, got {v}");
                }
            }
            for (key, v) in [
                ("prior_momentum", p.prior_momentum),
                ("center_momentum", p.center_momentum),
                ("refine_min_agreement", p.refine_min_agreement),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    bail!("protocon.{key} must be in 0..=1, got {v}");
                }
            }
            if self.train.unlabeled_ratio == 0 {
                bail!("algorithm protocon needs unlabeled images: train.unlabeled_ratio must be at least 1");
            }
        }
        if self.data.size == Some(0) {
            bail!("data.size must be at least 1 (pixels), got 0");
        }
        if let Some(f) = self.data.crop_fraction {
            if !(f > 0.0 && f <= 1.0) {
                bail!("data.crop_fraction must be in (0, 1], got {f}");
            }
            let fit = self.data.fit_for(self.data.spec()?.kind());
            if fit != Fit::CenterCrop {
                bail!("data.crop_fraction applies to data.fit = \"center-crop\" only, and data.fit is \"{fit}\" here");
            }
        }
        if self.data.decode == Decode::PerSample {
            if self.data.spec()?.kind() != DatasetKind::Folder {
                bail!(
                    "data.decode = \"per-sample\" reads one file per sample, so data.dataset must be an image folder \
                     (`folder:PATH`), not `{}`; the built-in formats are decoded at load",
                    self.data.dataset
                );
            }
            if self.data.size.is_none() {
                bail!("data.decode = \"per-sample\" needs data.size: the side of the views the augmentation chains produce");
            }
        }
        if self.threads.weak_workers == 0 || self.threads.strong_workers == 0 || self.threads.queue == 0 {
            bail!("threads.weak_workers, threads.strong_workers and threads.queue must be at least 1");
        }
        Ok(())
    }

    /// Unlabeled images per step (0 for supervised training).
    pub fn unlabeled_batch(&self) -> usize {
        match self.algorithm {
            Algorithm::Supervised => 0,
            _ => self.train.unlabeled_ratio * self.train.labeled_batch,
        }
    }

    /// The effective config as TOML (saved with the run).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// Fill the `[protocon]` fields the config does not set from its `preset`; returns the preset.
fn apply_preset(table: &mut toml::Table) -> anyhow::Result<Preset> {
    let Some(section) = table.get_mut("protocon").and_then(|v| v.as_table_mut()) else {
        return Ok(Preset::Default);
    };
    let preset = match section.get("preset") {
        None => Preset::Default,
        Some(v) => Preset::deserialize(v.clone())
            .map_err(|_| anyhow::anyhow!("protocon.preset: expected \"default\" or \"paper\", got {v}"))?,
    };
    if preset != Preset::Default {
        let base = toml::Table::try_from(preset.section())?;
        for (key, value) in base {
            section.entry(key).or_insert(value);
        }
    }
    Ok(preset)
}

/// `a.b.c=value`: set `value` (TOML syntax, or a bare string) at the dotted path.
fn apply_override(table: &mut toml::Table, assignment: &str) -> anyhow::Result<()> {
    let (key, raw) = assignment.split_once('=').context("expected key=value")?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        node = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("`{part}` is not a table"))?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_and_overrides_apply() {
        let c = RunConfig::parse(DEFAULT_CONFIG, "default", &["train.steps=7".into(), "seed=3".into(), "model.arch=wrn-28-2".into()]).unwrap();
        assert_eq!(c.train.steps, 7);
        assert_eq!(c.seed, 3);
        assert_eq!(c.model.arch.to_string(), "wrn-28-2");
    }

    /// `protocon train` without a config trains ProtoCon at the budget the fourth study measured
    /// (docs/results.md), and FixMatch at that same budget is one override away.
    #[test]
    fn the_default_is_protocon_at_the_studied_budget_and_fixmatch_is_one_set_away() {
        let c = RunConfig::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN, &[]).unwrap();
        assert_eq!(c.algorithm, Algorithm::Protocon);
        assert_eq!((c.train.steps, c.data.train_limit, c.unlabeled_batch()), (3000, Some(6000), 56));
        assert_eq!((c.protocon.preset, c.protocon.dual_lr), (Preset::Default, DualLr::Auto));
        // >= 20 epochs of the unlabeled set, so refinement runs for most of training.
        let unlabeled = 6000 - 10 * c.data.labels_per_class;
        assert!(c.train.steps as usize * c.unlabeled_batch() / unlabeled >= 20);
        let fixmatch = RunConfig::parse(DEFAULT_CONFIG, "default", &["algorithm=fixmatch".into()]).unwrap();
        assert_eq!((fixmatch.algorithm, fixmatch.train.steps, fixmatch.data.train_limit), (Algorithm::Fixmatch, 3000, Some(6000)));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = RunConfig::parse(DEFAULT_CONFIG, "my.toml", &["train.stepz=7".into()]).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("my.toml") && text.contains("stepz"), "{text}");
        let err = RunConfig::parse(DEFAULT_CONFIG, "my.toml", &["colour=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("colour"));
        // Straight from a file: the line of the bad key is shown.
        let text = DEFAULT_CONFIG.replace("steps = 3000", "stepz = 3000");
        let err = format!("{:#}", RunConfig::parse(&text, "f.toml", &[]).unwrap_err());
        assert!(err.contains("f.toml") && err.contains("line") && err.contains("stepz = 3000"), "{err}");
    }

    #[test]
    fn fit_center_crop_parses_and_a_crop_fraction_outside_0_1_is_refused() {
        let set = |v: &[&str]| RunConfig::parse(DEFAULT_CONFIG, "my.toml", &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let c = set(&["data.fit=\"center-crop\"", "data.crop_fraction=0.9"]).unwrap();
        assert_eq!(c.data.fit_for(DatasetKind::FashionMnist), Fit::CenterCrop);
        assert_eq!((c.data.fit, c.data.crop_fraction), (Some(Fit::CenterCrop), Some(0.9)));
        let err = format!("{:#}", set(&["data.crop_fraction=1.2"]).unwrap_err());
        assert!(err.contains("data.crop_fraction") && err.contains("1.2"), "{err}");
        assert!(format!("{:#}", set(&["data.size=0"]).unwrap_err()).contains("data.size"));
        // The default config pads Fashion-MNIST: a crop fraction there would do nothing.
        let err = format!("{:#}", set(&["data.crop_fraction=0.9"]).unwrap_err());
        assert!(err.contains("data.crop_fraction") && err.contains("\"pad\""), "{err}");
    }

    fn protocon(sets: &[&str]) -> anyhow::Result<RunConfig> {
        let text = include_str!("../../configs/fashion-mnist-40-protocon.toml");
        RunConfig::parse(text, "fm.toml", &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn dual_lr_is_auto_by_default_and_resolves_from_the_batch_and_k() {
        // 8 x 7 = 56 unlabeled per step, K = 5,960 / 200 = 29: 20 x min(56/448, 29/250) = 2.32.
        let c = protocon(&[]).unwrap();
        assert_eq!(c.protocon.dual_lr, DualLr::Auto);
        assert!((c.protocon.dual_lr_for(&c, 5960) - 2.32).abs() < 1e-5);
        assert!((c.protocon.settings(&c, 5960, 10).dual_lr - 2.32).abs() < 1e-5);
        // The paper's batch (64 x 7) and K (50,000 / 200): the paper's 20.
        let c = protocon(&["train.labeled_batch=64"]).unwrap();
        assert_eq!(c.protocon.dual_lr_for(&c, 50_000), 20.0);
        // A number is used as it is.
        let c = protocon(&["protocon.dual_lr=7.5"]).unwrap();
        assert_eq!(c.protocon.settings(&c, 5960, 10).dual_lr, 7.5);
        for bad in ["protocon.dual_lr=-1", "protocon.dual_lr=nan", "protocon.dual_lr=fast"] {
            let e = format!("{:#}", protocon(&[bad]).unwrap_err());
            assert!(e.contains("dual_lr") && e.contains("auto"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_paper_preset_fills_what_the_config_leaves_unset() {
        let c = protocon(&["protocon.preset=paper"]).unwrap();
        assert_eq!(c.protocon.preset, Preset::Paper);
        assert_eq!(c.protocon.dual_lr, DualLr::Fixed(20.0));
        assert_eq!(c.protocon.settings(&c, 5960, 10).dual_lr, 20.0);
        // What the config sets wins over the preset: this config refines from epoch 2, not 20.
        assert_eq!(c.protocon.refine_after_epochs, 2);
        let c = protocon(&["protocon.preset=paper", "protocon.dual_lr=3"]).unwrap();
        assert_eq!(c.protocon.dual_lr, DualLr::Fixed(3.0));
        // The effective config written with a run reads back to the same settings.
        let again = RunConfig::parse(&c.to_toml().unwrap(), "effective", &[]).unwrap();
        assert_eq!(again.protocon.settings(&again, 5960, 10), c.protocon.settings(&c, 5960, 10));
        let e = format!("{:#}", protocon(&["protocon.preset=fast"]).unwrap_err());
        assert!(e.contains("protocon.preset") && e.contains("paper"), "{e}");
        // The presets differ in the dual rate and the refinement gate only.
        let (d, p) = (Preset::Default.section(), Preset::Paper.section());
        assert_eq!((d.refine_min_agreement, p.refine_min_agreement), (0.5, 0.0));
        let table = |s: ProtoconSection| toml::Table::try_from(s).unwrap();
        let paper = ProtoconSection { preset: Preset::Paper, dual_lr: DualLr::Fixed(20.0), refine_min_agreement: 0.0, ..d };
        assert_eq!(table(paper), table(p));
    }

    #[test]
    fn out_of_range_protocon_numbers_are_refused_by_name() {
        for (set, key) in [
            ("protocon.debias_margin=-0.5", "debias_margin"),
            ("protocon.strong_margin=nan", "strong_margin"),
            ("protocon.prior_momentum=1.5", "prior_momentum"),
            ("protocon.center_momentum=-1", "center_momentum"),
            ("protocon.refine_min_agreement=1.1", "refine_min_agreement"),
            ("protocon.temperature=nan", "temperature"),
            ("protocon.dual_lr=-1", "dual_lr"),
            ("protocon.dual_lr=nan", "dual_lr"),
            ("protocon.weight_c=-0.1", "protocon.weight_c"),
            ("data.label_fraction=0", "data.label_fraction"),
            ("data.label_fraction=1.5", "data.label_fraction"),
            ("train.lr=-0.03", "train.lr"),
            ("train.lr=0", "train.lr"),
            ("train.weight_decay=nan", "train.weight_decay"),
            ("train.momentum=1.5", "train.momentum"),
            ("train.ema_decay=-0.1", "train.ema_decay"),
            ("train.lambda_u=inf", "train.lambda_u"),
            ("model.bn_momentum=0", "model.bn_momentum"),
        ] {
            let e = format!("{:#}", protocon(&[set]).unwrap_err());
            assert!(e.contains(key), "{set}: {e}");
        }
        assert!(protocon(&["protocon.dual_lr=0"]).is_ok(), "0 (duals never move) is a valid setting");
        assert_eq!(protocon(&["device.kind=cuda:1"]).map(|c| c.device.kind).ok(), cfg!(feature = "cuda").then_some(DeviceKind::Cuda(1)));
        for (set, want) in [("device.kind=tpu", "unknown device \"tpu\""), ("device.kind=cuda:0", "device.kind")] {
            if set.ends_with("cuda:0") && cfg!(feature = "cuda") {
                continue;
            }
            let e = format!("{:#}", protocon(&[set]).unwrap_err());
            assert!(e.contains(want), "{set}: {e}");
        }
        let c = protocon(&["protocon.strong_margin=0", "protocon.target=hard"]).unwrap();
        let s = c.protocon.settings(&c, 5960, 10);
        assert_eq!(s.prior, PriorCorrection::Debias { margin: 0.5, strong_margin: 0.0, momentum: 0.999 });
        assert_eq!(s.target, Target::Hard);
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                seen += 1;
                let result = RunConfig::load(&path, &[]);
                if path.file_name().unwrap() == "imagenet-1pct-protocon.toml" {
                    let c = result.unwrap();
                    assert_eq!((c.model.arch.to_string().as_str(), c.data.decode), ("resnet50", Decode::PerSample));
                } else {
                    let c = result.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    if path.to_string_lossy().contains("protocon") {
                        assert_eq!(c.algorithm, Algorithm::Protocon, "{}", path.display());
                    }
                }
            }
        }
        assert!(seen >= 13, "{seen} configs");
    }
}
