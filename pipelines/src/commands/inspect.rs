//! `protocon inspect`.

use protocon_pipelines::inspect::{self, InspectOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint file (or a run directory holding checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory for prototypes.png (classifier.png without prototypes), clusters.png and
    /// inspect.json.
    #[arg(long)]
    out: PathBuf,
    /// Images per row.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Rows for this many of the largest and of the purest clusters (per head).
    #[arg(long, default_value_t = 5)]
    clusters: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = InspectOptions { k: args.k, clusters: args.clusters };
    let (inspection, test, train) = inspect::inspect(&args.checkpoint, &options)?;
    let written = inspect::write(&inspection, &test, train.as_ref(), &args.out, &options)?;
    println!(
        "{} ({} run, step {}, raw model) on {} test images",
        inspection.checkpoint.display(),
        inspection.algorithm,
        inspection.step,
        inspection.test_images
    );
    for class in &inspection.classes {
        let proto = class.nearest_to_prototype.as_ref().map_or(String::new(), |p| format!(", nearest to prototype {}/{}", class.of_class(p), p.len()));
        println!("  {:<14} classifier {}/{}{proto} of this class", class.name, class.of_class(&class.most_confident), class.most_confident.len());
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
