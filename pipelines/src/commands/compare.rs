//! `protocon compare`.

use protocon_pipelines::compare::{self, RunRow};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directories (each with `config.toml` and `metrics.jsonl`).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// The per-algorithm table in Markdown (the README's study table).
    #[arg(long, conflicts_with = "csv")]
    md: bool,
    /// One CSV record per run, and one with the means per group of several seeds.
    #[arg(long)]
    csv: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rows = args.runs.iter().map(|d| RunRow::read(d)).collect::<Result<Vec<_>, _>>()?;
    let groups = compare::group(rows);
    let table = if args.md {
        compare::markdown(&groups)
    } else if args.csv {
        compare::csv(&groups)?
    } else {
        compare::text(&groups)
    };
    print!("{table}");
    Ok(())
}
