//! `protocon data fetch NAME`: files already there, then `--from`, then the Debian package,
//! then the canonical URL; each file verified by SHA-256.

use anyhow::Context;
use protocon::data::{self, DatasetKind, DatasetSpec, FetchOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data set to fetch (only `fashion-mnist` has published hashes here).
    #[arg(value_parser = parse_kind)]
    dataset: DatasetKind,
    /// Directory to put the files in [default: $PROTOCON_DATA/NAME, or ./data/NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Local directory holding the files (searched recursively), tried before any download.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Use only local sources (files already there, --from): no apt-get, no curl.
    #[arg(long)]
    offline: bool,
}

fn parse_kind(name: &str) -> Result<DatasetKind, String> {
    DatasetKind::from_name(name).ok_or_else(|| {
        let known: Vec<_> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown data set `{name}`: expected one of {}", known.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut options = if args.offline { FetchOptions::offline() } else { FetchOptions::new() };
    options.dir = args.dir;
    options.from = args.from;
    let report = data::fetch(args.dataset, &options, &mut |line: &str| eprintln!("{line}"))
        .with_context(|| format!("fetching {}", args.dataset))?;
    for note in &report.skipped {
        eprintln!("note: {note}");
    }
    for (name, source) in &report.files {
        println!("{name}: {source}");
    }
    let spec = DatasetSpec::new(args.dataset, &report.dir);
    println!("{} is ready in {}; use it as --dataset {spec}", args.dataset, report.dir.display());
    Ok(())
}
