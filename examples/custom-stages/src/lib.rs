//! A worked example of protocon as a library: a new augmentation op registered by name
//! ([`ChannelShuffle`], `"channel_shuffle"` in a config's chains) and a batch stage inserted
//! after collation ([`MixUp`]), trained through [`TrainingRun`] without any change to the
//! project's crates. `src/main.rs` trains with both; `tests/custom_stages.rs` checks they ran.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use protocon_custom_stages::{train_with_custom_stages, Counters};
//! use protocon_pipelines::config::{RunConfig, DEFAULT_CONFIG};
//! let config = RunConfig::parse(DEFAULT_CONFIG, "built-in", &["train.steps=50".into()])?;
//! let counters = Counters::default();
//! train_with_custom_stages(config, "runs/custom".as_ref(), 0.4, &counters)?;
//! # Ok(()) }
//! ```

use protocon::{Ctx, Stage, StageError, StageSpec};
use protocon_pipelines::{RunInfo, TrainOptions, TrainSummary, TrainingRun};
use protocon_stages::augment::{AugContext, AugmentError, AugmentRegistry, Augmentation, Image};
use protocon_stages::batch::TrainBatch;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};
use serde::Deserialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How often the custom stages acted (shared with the stages, read after the run).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Views in which `channel_shuffle` permuted the channels.
    pub shuffled_views: Arc<AtomicU64>,
    /// Batches whose labeled images MixUp mixed.
    pub mixed_batches: Arc<AtomicU64>,
}

/// Permutes the colour channels of a view (one of the 5 non-identity orders of RGB, drawn per
/// view) with probability `p`: a colour augmentation for data whose classes do not hinge on hue.
pub struct ChannelShuffle {
    p: f64,
    applied: Arc<AtomicU64>,
}

/// `channel_shuffle`'s parameters in a config: `{ name = "channel_shuffle", p = 0.5 }`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelShuffleParams {
    pub p: f64,
}

impl Default for ChannelShuffleParams {
    fn default() -> Self {
        ChannelShuffleParams { p: 0.5 }
    }
}

impl Augmentation for ChannelShuffle {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        if img.channels() != 3 || !ctx.rng().chance(self.p) {
            return ctx.record_skipped();
        }
        const ORDERS: [[usize; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let order = ORDERS[ctx.rng().below(ORDERS.len() as u64) as usize];
        for px in img.data_mut().chunks_exact_mut(3) {
            let rgb = [px[0], px[1], px[2]];
            for (out, &from) in px.iter_mut().zip(&order) {
                *out = rgb[from];
            }
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
    }
}

/// Adds `channel_shuffle` to `registry`, counting its applications in `counters`.
pub fn register_channel_shuffle(registry: &mut AugmentRegistry, counters: &Counters) {
    let applied = counters.shuffled_views.clone();
    registry.register_params("channel_shuffle", move |p: ChannelShuffleParams| {
        if !(0.0..=1.0).contains(&p.p) {
            return Err(AugmentError::bad_params("channel_shuffle", format!("p must be in [0, 1], got {}", p.p)));
        }
        Ok(ChannelShuffle { p: p.p, applied: applied.clone() })
    });
}

/// MixUp (Zhang et al., 2018) on the labeled images of each batch: image `i` becomes
/// `l x_i + (1 - l) x_j` for a random partner `j` of the same batch, and its target
/// `l onehot(y_i) + (1 - l) onehot(y_j)`, with `l ~ Beta(alpha, alpha)` folded to `l >= 0.5`
/// (so `y_i` stays the largest class, as [`TrainBatch::targets`] asks). Draws depend on the run
/// seed and the step only, so runs stay reproducible with any number of workers.
pub struct MixUp {
    beta: Beta<f64>,
    seed: u64,
    classes: usize,
    mixed: Arc<AtomicU64>,
}

impl MixUp {
    /// A MixUp stage for the run `info` describes.
    pub fn new(info: &RunInfo, alpha: f64, counters: &Counters) -> Result<Self, StageError> {
        let beta = Beta::new(alpha, alpha).map_err(|e| StageError::msg(format!("mixup alpha {alpha}: {e}")))?;
        Ok(MixUp { beta, seed: info.config.seed, classes: info.classes, mixed: counters.mixed_batches.clone() })
    }
}

impl Stage for MixUp {
    type In = TrainBatch;
    type Out = TrainBatch;

    fn process(&mut self, mut batch: TrainBatch, ctx: &mut Ctx<TrainBatch>) -> Result<(), StageError> {
        let b = batch.labels.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ batch.plan.step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let lambda = {
            let l: f64 = self.beta.sample(&mut rng);
            l.max(1.0 - l) as f32
        };
        // A rotation of the labeled images by a random offset: every image gets a partner
        // other than itself (for b > 1).
        let offset = if b > 1 { 1 + (self.beta.sample(&mut rng) * (b - 1) as f64) as usize % (b - 1) } else { 0 };
        let len = batch.image_len();
        let originals = batch.images[..b * len].to_vec();
        let mut targets = vec![0f32; b * self.classes];
        for i in 0..b {
            let j = (i + offset) % b;
            let (xi, xj) = (&originals[i * len..(i + 1) * len], &originals[j * len..(j + 1) * len]);
            for (out, (a, c)) in batch.images[i * len..(i + 1) * len].iter_mut().zip(xi.iter().zip(xj)) {
                *out = lambda * a + (1.0 - lambda) * c;
            }
            targets[i * self.classes + batch.labels[i] as usize] += lambda;
            targets[i * self.classes + batch.labels[j] as usize] += 1.0 - lambda;
        }
        batch.targets = Some(targets);
        self.mixed.fetch_add(1, Ordering::Relaxed);
        ctx.emit(batch)
    }
}

/// Trains `config` into `out` with `channel_shuffle` available to its augmentation chains and a
/// MixUp stage (`alpha`) after collation.
pub fn train_with_custom_stages(config: protocon_pipelines::config::RunConfig, out: &Path, alpha: f64, counters: &Counters) -> anyhow::Result<TrainSummary> {
    let mut registry = AugmentRegistry::with_builtins();
    register_channel_shuffle(&mut registry, counters);
    let c = counters.clone();
    TrainingRun::new(config)
        .augmentations(registry)
        .batch_stage(StageSpec::new("mixup"), move |info, _| MixUp::new(info, alpha, &c))
        .run(TrainOptions::new(out))
}
