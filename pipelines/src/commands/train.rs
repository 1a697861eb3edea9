//! `protocon train`.

use crate::config::{RunConfig, DEFAULT_CONFIG};
use crate::train::{default_out, TrainOptions, TrainingRun};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use protocon_stages::record::Record;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML config (default: the built-in configs/fashion-mnist-40.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Label split file from `protocon data split` (overrides data.split).
    #[arg(long)]
    split: Option<PathBuf>,
    /// Run directory (default: runs/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint file or a run directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Override a config field, e.g. `--set train.steps=200` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Write a Chrome trace of the pipeline (open in Perfetto).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// No progress bar (log lines only).
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut set = args.set.clone();
    if let Some(split) = &args.split {
        set.push(format!("data.split={}", toml::Value::String(split.display().to_string())));
    }
    let config = match &args.config {
        Some(path) => RunConfig::load(path, &set)?,
        None => RunConfig::parse(DEFAULT_CONFIG, "configs/fashion-mnist-40.toml (built in)", &set)?,
    };
    let out = args.out.clone().unwrap_or_else(|| default_out(&config));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a final checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current steps and writing a checkpoint (Ctrl-C again to quit now)");
    })
    .context("installing the Ctrl-C handler")?;

    let total = config.train.steps;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let b = bar.clone();
    let quiet = args.quiet;
    let observer = Box::new(move |r: &Record| match r {
        Record::Train(t) => {
            b.set_position(t.step + 1);
            b.set_message(format!(
                "{:.0} img/s  loss {:.3}  mask {:.2}  pl-acc {:.2}  lr {:.4}",
                t.images_per_s, t.loss, t.mask_rate, t.pseudo_label_acc, t.lr
            ));
            if quiet {
                eprintln!("step {} loss {:.4} mask {:.3} {:.0} img/s", t.step + 1, t.loss, t.mask_rate, t.images_per_s);
            }
        }
        Record::Eval(e) => {
            let line = format!(
                "step {}: test accuracy {:.2}% (EMA {:.2}%), best {:.2}% (EMA {:.2}%)",
                e.step + 1,
                100.0 * e.test_acc,
                100.0 * e.test_acc_ema,
                100.0 * e.best_test_acc,
                100.0 * e.best_test_acc_ema
            );
            if quiet {
                eprintln!("{line}");
            } else {
                b.println(line);
            }
        }
        Record::Epoch(e) => {
            let line = format!(
                "epoch {} ended: cluster sizes {:?}..{:?} per head, reliable {:.1}%",
                e.epoch + 1,
                e.cluster_size_min,
                e.cluster_size_max,
                100.0 * e.reliable_fraction
            );
            if quiet {
                eprintln!("{line}");
            } else {
                b.println(line);
            }
        }
    });
    eprintln!("run directory: {}", out.display());
    let summary = TrainingRun::new(config).run(TrainOptions {
        out: out.clone(),
        resume: args.resume.clone(),
        trace: args.trace.clone(),
        stop,
        observer: Some(observer),
    });
    bar.finish_and_clear();
    // Also after a failed run (a NaN loss): the curves up to the failure help find why.
    draw_curves(&out);
    let summary = summary?;
    println!("{}", summary.profile);
    if let Some(e) = summary.last_eval {
        println!(
            "after {} steps: test accuracy {:.2}% (EMA {:.2}%); best {:.2}% (EMA {:.2}%)",
            summary.steps_done,
            100.0 * e.test_acc,
            100.0 * e.test_acc_ema,
            100.0 * e.best_test_acc,
            100.0 * e.best_test_acc_ema
        );
    }
    println!(
        "metrics: {}  checkpoint: {}  curves: {}",
        out.join("metrics.jsonl").display(),
        out.join("checkpoint.safetensors").display(),
        out.join("curves.png").display()
    );
    Ok(())
}

/// Write `curves.png` from the run's `metrics.jsonl`. A failure (or a panic in the plotting
/// library) is only a warning: the run and its checkpoint are what matter.
fn draw_curves(out: &Path) {
    let metrics = out.join("metrics.jsonl");
    if !metrics.is_file() {
        return;
    }
    let png = out.join("curves.png");
    match std::panic::catch_unwind(|| crate::curves::draw(&metrics, &png)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: could not draw {}: {e:#}", png.display()),
        Err(_) => eprintln!("warning: could not draw {}: the plotting code panicked", png.display()),
    }
}
