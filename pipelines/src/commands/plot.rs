//! `protocon plot`.

use crate::curves;
use anyhow::bail;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Run directories (or `metrics.jsonl` files). One: its 4-panel curves; several: their EMA
    /// test accuracy and mask rate overlaid, labelled by directory name.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
}

/// Legend label of a run: its directory's name (the file's parent for a `metrics.jsonl`).
fn label(run: &std::path::Path) -> String {
    let dir = if run.is_dir() { run } else { run.parent().unwrap_or(run) };
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.display().to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for r in &args.runs {
        if !curves::metrics_path(r).is_file() {
            bail!("{}: no metrics.jsonl there", r.display());
        }
    }
    if let [run] = args.runs.as_slice() {
        curves::draw(&curves::metrics_path(run), &args.out)?;
    } else {
        let mut runs: Vec<(String, PathBuf)> = args.runs.iter().map(|r| (label(r), r.clone())).collect();
        // Two runs of the same name (runs/a/x, runs/b/x): label them by their whole path.
        let names: Vec<String> = runs.iter().map(|r| r.0.clone()).collect();
        for (run, path) in runs.iter_mut().zip(&args.runs) {
            if names.iter().filter(|n| **n == run.0).count() > 1 {
                run.0 = path.display().to_string();
            }
        }
        curves::draw_many(&runs, &args.out)?;
    }
    println!("{}", args.out.display());
    Ok(())
}
