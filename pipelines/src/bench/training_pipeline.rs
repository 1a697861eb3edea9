//! `protocon bench pipeline --config C`: how much of a training step the pipeline fails to hide.
//!
//! Two runs of the same steps of config `C`, each with a fresh compute stage from
//! [`TrainingRun::prepare`], wired by the same [`TrainingRun`] methods that `train` uses:
//!
//! - **end to end**: sampler -> weak-augment -> strong-augment -> compute, wired as `train` wires
//!   it (same stage names, workers and queues);
//! - **compute only**: the same steps' batches, augmented beforehand in the same process
//!   (untimed, by a sampler -> weak -> strong pipeline into memory), fed from memory into the
//!   same kind of compute stage.
//!
//! With `--rounds R` the pair runs R times, interleaved (A B B A A B ...), each run with a fresh compute
//! stage; the means pool every round, and the ratio's spread is over rounds.
//!
//! Both runs train identical batches on identically initialised networks, so their losses must
//! match step for step (reported as `identical_losses`): the same work on both sides. The ratio
//! end-to-end / compute-only is what augmentation, queueing and data movement add to a step
//! when they should overlap with compute; 1.0 means fully hidden.
//!
//! What is timed: the compute stage emits a training record after every step (`log_every = 1`);
//! the sink stamps each arrival. A run trains `warmup + steps` steps and the timed span runs from
//! the record of the last warm-up step to the record of the last timed step, so it holds exactly
//! `steps` steps of steady state. The schedule is one step longer than what is fed
//! (`train.steps = warmup + steps + 1`) and `eval_every = checkpoint_every = 0`: the compute
//! stage evaluates and checkpoints only after the schedule's last step, which never arrives, so
//! no evaluation or checkpoint falls in the timed span. (The checkpoint that the compute stage
//! writes when its input ends comes after the last stamp, into a temporary directory.)

use super::Spread;
use crate::config::RunConfig;
use crate::train::{Feed, Prepared, TrainingRun};
use anyhow::{ensure, Context as _};
use protocon::{Control, Pipeline, Profile, Sink, Source, StageError, StageSpec};
use protocon_stages::batch::TrainBatch;
use protocon_stages::compute::ComputeStage;
use protocon_stages::record::Record;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What to measure.
pub struct Options {
    /// Where the config came from (for the report).
    pub origin: String,
    pub config: RunConfig,
    /// Timed steps.
    pub steps: u64,
    /// Untimed steps before them.
    pub warmup: u64,
    /// Pairs of runs (end to end, then compute only), interleaved.
    pub rounds: usize,
    /// Chrome trace of the end-to-end run.
    pub trace: Option<PathBuf>,
    pub json: bool,
}

/// When each step's training record reached the sink, and its loss.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    step: u64,
    at: Instant,
    loss: f64,
}

type Stamps = Arc<Mutex<Vec<Stamp>>>;

/// Sink that stamps training records.
struct StepClock(Stamps);

impl Sink for StepClock {
    type In = Record;
    fn consume(&mut self, record: Record, _: &Control) -> Result<(), StageError> {
        let at = Instant::now();
        if let Record::Train(t) = &record {
            self.0.lock().expect("not poisoned").push(Stamp { step: t.step, at, loss: t.loss });
        }
        Ok(())
    }
}

/// Sink that keeps the batches (pre-augmentation).
struct Keep(Arc<Mutex<Vec<TrainBatch>>>);

impl Sink for Keep {
    type In = TrainBatch;
    fn consume(&mut self, batch: TrainBatch, _: &Control) -> Result<(), StageError> {
        self.0.lock().expect("not poisoned").push(batch);
        Ok(())
    }
}

/// Source that replays batches made beforehand.
struct Replay(std::vec::IntoIter<TrainBatch>);

impl Source for Replay {
    type Out = TrainBatch;
    fn next(&mut self, _: &Control) -> Result<Option<TrainBatch>, StageError> {
        Ok(self.0.next())
    }
}

/// Add `run`'s batches for steps `0..end` to `p`, as `train` does.
fn augmentation(p: &mut protocon::PipelineBuilder, run: &TrainingRun, feed: &Feed, end: u64) -> protocon::Port<TrainBatch> {
    run.add_batches(p, feed, 0, end, Arc::new(AtomicBool::new(false)))
}

/// Add the compute stage reading `batches` and a [`StepClock`] after it.
fn compute_and_clock(p: &mut protocon::PipelineBuilder, run: &TrainingRun, compute: ComputeStage, batches: protocon::Port<TrainBatch>) -> Stamps {
    let records = run.add_compute(p, compute, batches, 0);
    let stamps: Stamps = Arc::default();
    let s = stamps.clone();
    p.sink(StageSpec::new("metrics"), records, move |_| Ok(StepClock(s.clone())));
    stamps
}

fn end_to_end(run: &TrainingRun, prepared: Prepared, end: u64, trace: Option<&Path>) -> anyhow::Result<(Vec<Stamp>, Profile)> {
    let mut p = Pipeline::builder();
    if let Some(path) = trace {
        p.trace(path);
    }
    let batches = augmentation(&mut p, run, &prepared.feed, end);
    let stamps = compute_and_clock(&mut p, run, prepared.compute, batches);
    let report = p.run().context("end-to-end run")?;
    let stamps = stamps.lock().unwrap().clone();
    Ok((stamps, report.profile))
}

fn compute_only(run: &TrainingRun, prepared: Prepared, end: u64) -> anyhow::Result<Vec<Stamp>> {
    let config = run.config();
    // Augment every step first, with the same stages, outside the timed run.
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut p = Pipeline::builder();
    let batches = augmentation(&mut p, run, &prepared.feed, end);
    let k = kept.clone();
    p.sink(StageSpec::new("keep"), batches, move |_| Ok(Keep(k.clone())));
    p.run().context("pre-augmentation")?;
    let mut batches = std::mem::take(&mut *kept.lock().unwrap());
    batches.sort_by_key(|b| b.plan.step);
    ensure!(batches.len() as u64 == end, "pre-augmentation made {} batches, expected {end}", batches.len());

    let mut p = Pipeline::builder();
    let replay = Mutex::new(Some(batches.into_iter()));
    let batches = p.source(StageSpec::new("batches-in-memory").queue(config.threads.queue), move |_| {
        replay.lock().unwrap().take().map(Replay).ok_or_else(|| StageError::msg("the replay source has exactly one worker"))
    });
    let stamps = compute_and_clock(&mut p, run, prepared.compute, batches);
    p.run().context("compute-only run")?;
    let stamps = stamps.lock().unwrap().clone();
    Ok(stamps)
}

/// Per-step times (ms) of the timed steps `warmup..warmup + steps`, and their mean.
fn step_times(stamps: &[Stamp], warmup: u64, steps: u64) -> anyhow::Result<(Vec<f64>, f64)> {
    let end = (warmup + steps) as usize;
    ensure!(stamps.len() >= end, "only {} training records, expected {end}", stamps.len());
    ensure!(stamps.iter().enumerate().all(|(i, s)| s.step == i as u64), "training records out of step order");
    let timed = &stamps[warmup as usize - 1..end];
    let ms: Vec<f64> = timed.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64() * 1e3).collect();
    let mean = (timed[timed.len() - 1].at - timed[0].at).as_secs_f64() * 1e3 / steps as f64;
    Ok((ms, mean))
}

/// Figures of one side (end to end or compute only) over every round.
struct Side {
    /// Mean ms/step over all timed steps of all rounds.
    mean: f64,
    /// Per-step ms of every timed step.
    per_step: Spread,
    /// Mean ms/step of each round.
    rounds: Vec<f64>,
}

impl Side {
    fn of(runs: &[Vec<Stamp>], warmup: u64, steps: u64) -> anyhow::Result<Side> {
        let (mut all, mut rounds) = (Vec::new(), Vec::new());
        for stamps in runs {
            let (ms, mean) = step_times(stamps, warmup, steps)?;
            all.extend(ms);
            rounds.push(mean);
        }
        Ok(Side { mean: rounds.iter().sum::<f64>() / rounds.len() as f64, per_step: Spread::of(&all), rounds })
    }
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let Options { origin, mut config, steps, warmup, rounds, trace, json } = options;
    ensure!(steps >= 1, "--steps must be at least 1");
    ensure!(rounds >= 1, "--rounds must be at least 1");
    ensure!(warmup >= 1, "--warmup must be at least 1 (the timed span starts at the last warm-up step's record)");
    let end = warmup + steps;
    config.train.steps = end + 1;
    config.train.eval_every = 0;
    config.train.checkpoint_every = 0;
    config.train.log_every = 1;

    let dir = std::env::temp_dir().join(format!("protocon-bench-pipeline-{}", std::process::id()));
    let result = measure(&TrainingRun::new(config.clone()), end, rounds, trace.as_deref(), &dir);
    std::fs::remove_dir_all(&dir).ok();
    let (e2e_runs, co_runs, profile) = result?;

    let e2e = Side::of(&e2e_runs, warmup, steps)?;
    let co = Side::of(&co_runs, warmup, steps)?;
    let ratio = e2e.mean / co.mean;
    let round_ratios: Vec<f64> = e2e.rounds.iter().zip(&co.rounds).map(|(a, b)| a / b).collect();
    let ratio_spread = Spread::of(&round_ratios);
    let identical_losses = e2e_runs.iter().chain(&co_runs).all(|run| {
        run.len() == e2e_runs[0].len() && run.iter().zip(&e2e_runs[0]).all(|(a, b)| a.loss.to_bits() == b.loss.to_bits())
    });
    let threads = &config.threads;
    let compute_threads = protocon::ops::num_threads();
    let strong_workers = if config.unlabeled_batch() > 0 { threads.strong_workers } else { 0 };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (labeled, unlabeled) = (config.train.labeled_batch, config.unlabeled_batch());
    let images_per_step = labeled + 2 * unlabeled;
    let algorithm = serde_json::to_value(config.algorithm)?;
    let algorithm = algorithm.as_str().unwrap_or("?");

    if json {
        let v = serde_json::json!({
            "benchmark": "pipeline-training",
            "config": origin,
            "algorithm": algorithm,
            "model": config.model.arch.to_string(),
            "steps": steps,
            "warmup_steps": warmup,
            "rounds": rounds,
            "images_per_step": images_per_step,
            "threads": {
                "compute": compute_threads,
                "weak_workers": threads.weak_workers,
                "strong_workers": strong_workers,
                "available_cores": cores,
            },
            "end_to_end_ms_per_step": e2e.mean,
            "compute_only_ms_per_step": co.mean,
            "ratio": ratio,
            "ratio_per_round": ratio_spread,
            "end_to_end_step_ms": e2e.per_step,
            "compute_only_step_ms": co.per_step,
            "end_to_end_ms_per_step_per_round": e2e.rounds,
            "compute_only_ms_per_step_per_round": co.rounds,
            "identical_losses": identical_losses,
            "profile": profile.to_json(),
            "peak_rss_bytes": protocon::rss::peak_rss_bytes(),
        });
        println!("{v}");
    } else {
        println!(
            "== training pipeline of {origin} ({algorithm}, {}): {labeled} labeled + {unlabeled} unlabeled x 2 views = {images_per_step} images per step",
            config.model.arch
        );
        println!(
            "threads: compute {compute_threads} (kernels), weak augmentation {} worker(s), strong augmentation {strong_workers} worker(s); {cores} cores",
            threads.weak_workers
        );
        println!("end-to-end run ({end} steps{}):\n{profile}\n", if rounds > 1 { ", last round" } else { "" });
        for (name, side) in [("end to end (sampler -> augment -> compute):", &e2e), ("compute only (pre-augmented batches):", &co)] {
            println!(
                "{name:<44}{:>8.1} ms/step (per step: median {:.1}, {:.1}..{:.1})",
                side.mean, side.per_step.median, side.per_step.min, side.per_step.max
            );
        }
        let rounds_note = if rounds > 1 {
            format!(" (per round {:.3}..{:.3}, median {:.3}; {rounds} rounds interleaved)", ratio_spread.min, ratio_spread.max, ratio_spread.median)
        } else {
            String::new()
        };
        println!("ratio end-to-end / compute-only: {ratio:.3}x{rounds_note}, {steps} steps after {warmup} warm-up per run");
        println!(
            "the pipeline adds {:.1} ms/step ({:+.1}% of compute) that it does not hide",
            e2e.mean - co.mean,
            100.0 * (ratio - 1.0)
        );
        println!("losses identical in every run (same batches, same work): {}", if identical_losses { "yes" } else { "NO" });
        if let Some(path) = &trace {
            println!("trace of the first end-to-end run written to {}", path.display());
        }
    }
    Ok(())
}

type Measured = (Vec<Vec<Stamp>>, Vec<Vec<Stamp>>, Profile);

/// `rounds` x (end to end, compute only), interleaved A B B A A B ... so that neither side
/// always runs first; each run with a fresh compute stage.
fn measure(run: &TrainingRun, end: u64, rounds: usize, trace: Option<&Path>, dir: &Path) -> anyhow::Result<Measured> {
    let (mut e2e, mut co, mut profile) = (Vec::new(), Vec::new(), None);
    for round in 0..rounds {
        for end_to_end_now in if round % 2 == 0 { [true, false] } else { [false, true] } {
            if end_to_end_now {
                eprintln!("round {}/{rounds}: end-to-end run, {end} steps", round + 1);
                let (stamps, p) = end_to_end(run, run.prepare(dir)?, end, trace.filter(|_| round == 0))?;
                e2e.push(stamps);
                profile = Some(p);
            } else {
                eprintln!("round {}/{rounds}: compute-only run, augmenting {end} steps first, then {end} steps of compute", round + 1);
                co.push(compute_only(run, run.prepare(dir)?, end)?);
            }
        }
    }
    Ok((e2e, co, profile.expect("at least one round")))
}
