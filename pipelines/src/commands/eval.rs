//! `protocon eval`: accuracy and confusion matrix of a checkpoint's EMA (or raw) model.

use protocon::data::Labelled;
use protocon_pipelines::train::test_set;
use protocon_pipelines::trained::TrainedModel;
use protocon_stages::test_set::TestSet;
use std::path::PathBuf;

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
