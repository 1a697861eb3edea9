//! `protocon eval`: accuracy and confusion matrix of a checkpoint's EMA (or raw) model.

use crate::config::RunConfig;
use crate::train::test_set;
use anyhow::Context as _;
use candle_core::Device;
use protocon::checkpoint::Checkpoint;
use protocon::data::Labelled;
use protocon::model::{Network, NetworkOptions};
use protocon_stages::objective::Algorithm;
use protocon_stages::test_set::TestSet;
use protocon_stages::views::Normalization;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint file (or a run directory holding checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data set to evaluate on (default: the one the run trained on), e.g. `fashion-mnist:DIR`.
    #[arg(long)]
    data: Option<String>,
    /// Evaluate the raw model instead of the EMA model.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

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
        let path = if checkpoint.is_dir() { checkpoint.join("checkpoint.safetensors") } else { checkpoint.to_path_buf() };
        let ck = Checkpoint::load(&path, &Device::Cpu)?;
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
        let options = NetworkOptions { bn_momentum: config.model.bn_momentum, ..Default::default() };
        let net = Network::build(config.model.arch, classes, head, 0, &Device::Cpu, &options)?;
        let prefix = if raw { "model." } else { "ema." };
        let tensors: HashMap<_, _> = ck.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect();
        net.params().load(&tensors).with_context(|| format!("checkpoint {}", path.display()))?;
        Ok(TrainedModel { path, config, norm, classes, net, step: meta.step })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let TrainedModel { path, mut config, norm, classes, net, step } = TrainedModel::load(&args.checkpoint, args.raw, false)?;
    if let Some(d) = &args.data {
        config.data.dataset = d.clone();
    }
    config.data.test_limit = None;
    let test = test_set(&config, norm)?;
    if test.num_classes() != classes {
        anyhow::bail!("{}: {} classes, the checkpoint was trained on {classes}", config.data.dataset, test.num_classes());
    }
    let eval = test.evaluate(&net, TestSet::CHUNK)?;
    if args.json {
        println!("{}", serde_json::json!({"checkpoint": path, "model": if args.raw {"raw"} else {"ema"},
            "step": step, "images": test.num_samples(), "accuracy": eval.accuracy, "confusion": eval.confusion}));
        return Ok(());
    }
    println!("{} ({} model, step {}) on {} test images of {}", path.display(), if args.raw { "raw" } else { "EMA" }, step, test.num_samples(), config.data.dataset);
    println!("accuracy: {:.2}%", 100.0 * eval.accuracy);
    println!("confusion matrix (rows: true class, columns: predicted):");
    let names: Vec<String> = test.classes().iter().map(|s| s.chars().take(10).collect()).collect();
    print!("{:>10} ", "");
    for c in 0..classes {
        print!("{c:>6}");
    }
    println!();
    for (c, row) in eval.confusion.iter().enumerate() {
        print!("{:>10} ", names.get(c).cloned().unwrap_or_default());
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}
