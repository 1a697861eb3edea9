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

/// The allocator: mimalloc, never returning freed pages to the OS (below), so that the buffers
/// of a training step are faulted in during the first steps and then reused. With glibc's
/// malloc every buffer above its mmap threshold (at most 32 MB: ResNet-50 at 224 px has
/// activations of 90 MB) was mapped, faulted in page by page (zeroed by the kernel) and unmapped
/// again at every op; a ResNet-50 step took twice as long (BENCHMARKS.md). The earlier fix,
/// raising glibc's thresholds with `mallopt`, covered buffers up to 32 MB only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (mimalloc v3's option 15): -1 never returns freed pages to the
/// OS, so a step's large buffers are faulted in once, in the first steps, and then reused.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // SAFETY: sets an allocator option; any thread may call it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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
