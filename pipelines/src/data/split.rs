//! `protocon data split`: a balanced labeled subset of the train subset, drawn from a seed; the
//! rest unlabeled.

use anyhow::Context;
use protocon::data::{DatasetSpec, Split, Subset};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data set, e.g. `fashion-mnist`, `cifar10:DIR`, `folder:PATH`.
    #[arg(long)]
    dataset: DatasetSpec,
    /// Labeled samples per class.
    #[arg(long)]
    labels_per_class: usize,
    /// Seed of the draw; the same seed gives the same split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (to match a run's `data.train_limit`).
    #[arg(long)]
    limit: Option<usize>,
    /// Where to write the split (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Labels only: a folder's come from its listing, without decoding (or sizing) an image.
    let data = args.dataset.load_labels(Subset::Train).with_context(|| format!("loading {}", args.dataset))?;
    let data = match args.limit {
        Some(n) => data.truncate(n),
        None => data,
    };
    let split = Split::balanced(&data, args.labels_per_class, args.seed)
        .with_context(|| format!("splitting {}", args.dataset))?;
    split.save(&args.out)?;
    println!(
        "{}: {} labeled ({} per class x {} classes), {} unlabeled, seed {}, from {} (train)",
        args.out.display(),
        split.labeled().len(),
        split.labels_per_class(),
        split.num_classes(),
        split.unlabeled().len(),
        split.seed(),
        args.dataset,
    );
    Ok(())
}
