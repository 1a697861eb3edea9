//! `protocon`: train, evaluate, prepare data and benchmark, from the command line.
//! Only glue lives here; the work is in the pipelines, stages and core crates.

mod bench;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "protocon", version, about = "Semi-supervised image classification (ProtoCon, FixMatch) as a pipeline of stages")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (supervised, FixMatch or ProtoCon) from a TOML config.
    Train(NotYet),
    /// Evaluate a checkpoint on a test split.
    Eval(NotYet),
    /// Fetch data sets, make label splits, preview augmentations.
    Data(NotYet),
    /// Measure throughput and memory of pipelines, stages and training steps.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Arguments of a command that a later release fills in; accepted and ignored.
#[derive(clap::Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn not_available(command: &str) -> ExitCode {
    eprintln!(
        "protocon {command}: not available yet in this version. \
         Available now: `protocon bench pipeline` (see `protocon bench --help`)."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(_) => return not_available("train"),
        Command::Eval(_) => return not_available("eval"),
        Command::Data(_) => return not_available("data"),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
