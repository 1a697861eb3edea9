//! `protocon train`.

use crate::config::{RunConfig, DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN};
use crate::train::{default_out, TrainOptions, TrainingRun};
use anyhow::Context as _;
use super::progress::ProgressLines;
use indicatif::{ProgressBar, ProgressStyle};
use protocon::checkpoint::Checkpoint;
use protocon_stages::objective::Algorithm;
use protocon_stages::record::Record;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML config (default: the built-in configs/fashion-mnist-40-protocon.toml: ProtoCon, 40
    /// labels, 3,000 steps on the first 6,000 Fashion-MNIST images).
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
    /// Directory for the TensorBoard event file (default: the run directory, so that
    /// `tensorboard --logdir runs/` shows every run).
    #[arg(long, value_name = "DIR")]
    tensorboard: Option<PathBuf>,
    /// Progress as log lines, not a bar (the default when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// Train on this device: `cpu` or `cuda:N` (overrides `device.kind`; CUDA needs a binary
    /// built with scripts/build-cuda.sh).
    #[arg(long, value_name = "cpu|cuda:N")]
    device: Option<String>,
    /// With log lines: at most one progress line per this many seconds (a line still comes
    /// only every `train.log_every` steps, whichever is rarer).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    log_seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut set = args.set.clone();
    if let Some(device) = &args.device {
        set.push(format!("device.kind={}", toml::Value::String(device.clone())));
    }
    if let Some(split) = &args.split {
        set.push(format!("data.split={}", toml::Value::String(split.display().to_string())));
    }
    let config = match &args.config {
        Some(path) => RunConfig::load(path, &set)?,
        None => {
            let config = RunConfig::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN, &set)?;
            eprintln!(
                "config: {DEFAULT_CONFIG_ORIGIN}: {} on {} ({} images), {} steps{}",
                config.algorithm,
                config.data.dataset,
                config.data.train_limit.map_or("all".to_string(), |n| format!("the first {n}")),
                config.train.steps,
                if config.algorithm == Algorithm::Protocon { "; FixMatch at the same budget: --set algorithm=fixmatch" } else { "" }
            );
            config
        }
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
    anyhow::ensure!(args.log_seconds.is_finite() && args.log_seconds >= 0.0, "--log-seconds must be a number of seconds >= 0, not {}", args.log_seconds);
    // Under nohup or a scheduler the bar would draw nothing for the whole run: lines instead.
    let lines_mode = args.quiet || !std::io::stderr().is_terminal();
    let bar = if lines_mode { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let b = bar.clone();
    let images_per_step = config.train.labeled_batch + 2 * config.unlabeled_batch();
    let mut lines = ProgressLines::new(total, images_per_step, Duration::from_secs_f64(args.log_seconds));
    let say = move |line: String| if lines_mode { eprintln!("{line}") } else { b.println(line) };
    let b = bar.clone();
    let observer = Box::new(move |r: &Record| match r {
        Record::Train(t) => {
            b.set_position(t.step + 1);
            b.set_message(format!(
                "{:.0} img/s  loss {:.3}  mask {:.2}  pl-acc {:.2}  lr {:.4}",
                t.images_per_s, t.loss, t.mask_rate, t.pseudo_label_acc, t.lr
            ));
            if lines_mode {
                if let Some(line) = lines.train(t, Instant::now()) {
                    eprintln!("{line}");
                }
            }
        }
        Record::Eval(e) => say(lines.eval(e)),
        Record::Epoch(e) => say(format!(
            "epoch {} ended: cluster sizes {:?}..{:?} per head, reliable {:.1}%",
            e.epoch + 1,
            e.cluster_size_min,
            e.cluster_size_max,
            100.0 * e.reliable_fraction
        )),
    });
    eprintln!("run directory: {}", out.display());
    let summary = TrainingRun::new(config).run(TrainOptions {
        out: out.clone(),
        resume: args.resume.clone(),
        trace: args.trace.clone(),
        stop,
        observer: Some(observer),
        tensorboard: args.tensorboard.clone(),
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
        out.join(Checkpoint::FILE_NAME).display(),
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
