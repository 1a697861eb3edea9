//! `protocon data split`: a labeled subset of the train subset (N per class, or a fraction of
//! each class), drawn from a seed; the rest unlabeled.

use anyhow::Context;
use protocon::data::{DatasetSpec, Split, Subset};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data set, e.g. `fashion-mnist`, `cifar10:DIR`, `folder:PATH`.
    #[arg(long)]
    dataset: DatasetSpec,
    /// Labeled samples per class.
    #[arg(long, required_unless_present = "label_fraction", conflicts_with = "label_fraction")]
    labels_per_class: Option<usize>,
    /// Or a fraction of each class, `max(1, round(f x class size))` (ImageNet's 1%: 0.01).
    #[arg(long)]
    label_fraction: Option<f64>,
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
    let split = match (args.labels_per_class, args.label_fraction) {
        (Some(n), _) => Split::balanced(&data, n, args.seed),
        (None, Some(f)) => Split::by_fraction(&data, f, args.seed),
        (None, None) => unreachable!("clap requires one of --labels-per-class and --label-fraction"),
    }
    .with_context(|| format!("splitting {}", args.dataset))?;
    split.save(&args.out)?;
    let per_class = match split.label_fraction() {
        Some(f) => format!("{f} of each"),
        None => format!("{} per class", split.labels_per_class()),
    };
    println!(
        "{}: {} labeled ({per_class} of {} classes), {} unlabeled, seed {}, from {} (train)",
        args.out.display(),
        split.labeled().len(),
        split.num_classes(),
        split.unlabeled().len(),
        split.seed(),
        args.dataset,
    );
    Ok(())
}
