//! A trained model read back from its checkpoint, with the run config and normalisation it was
//! trained with: what `protocon eval` and `protocon inspect` start from.

use crate::config::RunConfig;
use anyhow::Context as _;
use candle_core::Device;
use protocon::checkpoint::Checkpoint;
use protocon::model::{Network, NetworkOptions};
use protocon_stages::objective::Algorithm;
use protocon_stages::views::Normalization;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A checkpoint's model with the run config and normalisation it was trained with.
pub struct TrainedModel {
    pub path: PathBuf,
    pub config: RunConfig,
    pub norm: Normalization,
    pub classes: usize,
    pub net: Network,
    pub step: u64,
}

impl TrainedModel {
    /// Load `checkpoint` (a file, or a run directory holding checkpoint.safetensors): its EMA
    /// model, or the raw one with `raw`; with `projection`, the projection head too (ProtoCon
    /// checkpoints).
    pub fn load(checkpoint: &Path, raw: bool, projection: bool) -> anyhow::Result<TrainedModel> {
        let path = Checkpoint::file_of(checkpoint);
        Self::from_checkpoint(&path, &Checkpoint::load(&path, &Device::Cpu)?, raw, projection)
    }

    /// [`TrainedModel::load`] from a checkpoint already read from `path`.
    pub fn from_checkpoint(path: &Path, ck: &Checkpoint, raw: bool, projection: bool) -> anyhow::Result<TrainedModel> {
        let path = path.to_path_buf();
        let meta = ck.training_meta().with_context(|| format!("checkpoint {}", path.display()))?;
        let config: RunConfig = serde_json::from_value(meta.config)
            .with_context(|| format!("checkpoint {}: no run config in its metadata", path.display()))?;
        let n = meta.normalization.with_context(|| format!("checkpoint {}: no normalization in its metadata", path.display()))?;
        let norm = Normalization { mean: n.mean, std: n.std };
        let classes = meta.classes.with_context(|| format!("checkpoint {}: no class count in its metadata", path.display()))?;
        let head = match (projection, config.algorithm) {
            (false, _) => None,
            (true, Algorithm::Protocon) => Some(config.protocon.projection_dim),
            (true, other) => anyhow::bail!("checkpoint {}: a {other:?} run has no projection head", path.display()),
        };
        let options = NetworkOptions { bn_momentum: config.model.bn_momentum, zero_init_residual: config.model.zero_init_residual, ..Default::default() };
        let net = Network::build(config.model.arch, classes, head, 0, &Device::Cpu, &options)?;
        let prefix = if raw { "model." } else { "ema." };
        let tensors: HashMap<_, _> = ck.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect();
        net.params().load(&tensors).with_context(|| format!("checkpoint {}", path.display()))?;
        Ok(TrainedModel { path, config, norm, classes, net, step: meta.step })
    }
}

