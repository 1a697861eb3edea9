//! `protocon`: train, evaluate, prepare data and benchmark, from the command line.
//! Only glue lives here; the work is in the pipelines, stages and core crates.

mod bench;
mod commands;
mod data;

use protocon_pipelines::{config, curves, train};

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
    /// Train a model (supervised, FixMatch or ProtoCon: `algorithm` in the config) from a TOML
    /// config; without arguments, the default Fashion-MNIST config (fetching the data if needed).
    Train(commands::train::Args),
    /// Evaluate a checkpoint on a test split: accuracy and confusion matrix.
    Eval(commands::eval::Args),
    /// Look at what a checkpoint learned: per class the test images the classifier is surest of
    /// next to those nearest the class prototype, and the bank's largest and purest clusters
    /// (prototypes.png, clusters.png, inspect.json).
    Inspect(commands::inspect::Args),
    /// Draw training curves from run directories: one run's 4 panels, or several runs overlaid.
    Plot(commands::plot::Args),
    /// Compare run directories: final and best EMA test accuracy, mean ± sd per algorithm over
    /// seeds, wall time and images/s (as text, `--md` or `--csv`).
    Compare(commands::compare::Args),
    /// Fetch data sets, make label splits, preview augmentations.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Measure throughput and memory of pipelines, stages and training steps.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Keep freed activation buffers in the heap instead of returning them to the OS.
///
/// A training step allocates and frees tensors of several megabytes; with glibc's defaults each
/// is a fresh `mmap` whose pages are faulted in (zeroed by the kernel) on first touch, which
/// measured up to 64% of a batch-norm kernel's time (BENCHMARKS.md). Raising the mmap and trim
/// thresholds lets the heap reuse them, as PyTorch's caching allocator does.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Data(cmd) => data::run(cmd),
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
