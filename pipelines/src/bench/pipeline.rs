//! `protocon bench pipeline`: what the stage runtime itself costs, and whether its profiler
//! names a deliberately slow stage.
//!
//! Part 1 (overhead): source -> N map stages -> sink passing `u64`s with trivial work, against
//! the same chain built from plain threads and bounded crossbeam channels (no profiling, no
//! cancellation, no supervisor) measured in the same run. Part 2 (bottleneck): the same shape
//! with real per-item CPU work, one stage `--slow-factor` times slower; the profiler must name it.
//!
//! With `--config C` it measures the real training pipeline of `C` instead: end to end against
//! compute only (see [`super::training_pipeline`]).

use super::Spread;
use anyhow::{ensure, Context as _};
use protocon::{Control, Ctx, Pipeline, Profile, Sink, Source, Stage, StageError, StageSpec};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of map stages between source and sink.
    #[arg(long, default_value_t = 3)]
    stages: usize,
    /// Workers per map stage.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Capacity of every queue, in messages.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Messages per overhead run.
    #[arg(long, default_value_t = 200_000)]
    items: u64,
    /// CPU work per message in each map stage during the overhead runs, in microseconds.
    #[arg(long, default_value_t = 0.0)]
    work_us: f64,
    /// Timed overhead runs (after 1 warm-up run of each side); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Messages in the bottleneck run.
    #[arg(long, default_value_t = 2_000)]
    slow_items: u64,
    /// CPU work per message in each map stage during the bottleneck run, in microseconds.
    #[arg(long, default_value_t = 20.0)]
    slow_work_us: f64,
    /// Which map stage (1-based) is made slower in the bottleneck run.
    #[arg(long, default_value_t = 2)]
    slow_stage: usize,
    /// How much slower that stage is.
    #[arg(long, default_value_t = 10.0)]
    slow_factor: f64,
    /// Write a Chrome trace-event JSON of the bottleneck run (with --config: of the first
    /// end-to-end run); open it in Perfetto.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print one JSON object with every figure instead of tables.
    #[arg(long)]
    json: bool,
    /// Measure the training pipeline of this config instead of synthetic stages: ms per step end
    /// to end (sampler -> augmentation -> compute) against compute alone on the same batches
    /// augmented beforehand. The synthetic-stage options above are then ignored.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --config: timed training steps.
    #[arg(long, default_value_t = 50, requires = "config")]
    steps: u64,
    /// With --config: untimed warm-up steps before them.
    #[arg(long, default_value_t = 2, requires = "config")]
    warmup: u64,
    /// With --config: pairs of runs (end to end, compute only), interleaved.
    #[arg(long, default_value_t = 1, requires = "config")]
    rounds: usize,
    /// With --config: override a config field, e.g. `--set threads.compute=1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    set: Vec<String>,
}

/// Burn CPU for `d` (a stand-in for a stage's real work).
fn spin(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < d {
        for _ in 0..64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    black_box(x);
}

struct Counter {
    next: u64,
    end: u64,
}

impl Source for Counter {
    type Out = u64;
    fn next(&mut self, _: &Control) -> Result<Option<u64>, StageError> {
        if self.next == self.end {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(self.next))
    }
}

struct Work(Duration);

impl Stage for Work {
    type In = u64;
    type Out = u64;
    fn process(&mut self, x: u64, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
        spin(self.0);
        ctx.emit(x)
    }
}

struct Checksum(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Sink for Checksum {
    type In = u64;
    fn consume(&mut self, x: u64, _: &Control) -> Result<(), StageError> {
        self.0.fetch_add(x, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The staged chain on the runtime; returns (wall time, profile).
fn run_runtime(
    stages: usize,
    workers: usize,
    queue: usize,
    items: u64,
    work: impl Fn(usize) -> Duration,
    trace: Option<&PathBuf>,
) -> anyhow::Result<(Duration, Profile)> {
    let sum = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut p = Pipeline::builder();
    if let Some(path) = trace {
        p.trace(path);
    }
    let mut port = p.source(StageSpec::new("source").queue(queue), move |_| Ok(Counter { next: 0, end: items }));
    for i in 1..=stages {
        let d = work(i);
        port = p.stage(StageSpec::new(format!("map-{i}")).workers(workers).queue(queue), port, move |_| Ok(Work(d)));
    }
    let s = sum.clone();
    p.sink(StageSpec::new("sink"), port, move |_| Ok(Checksum(s.clone())));
    let start = Instant::now();
    let report = p.run()?;
    let wall = start.elapsed();
    let got = sum.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(got == items * (items + 1) / 2, "runtime lost or duplicated messages: checksum {got}");
    Ok((wall, report.profile))
}

/// The same chain with plain threads and bounded channels: the floor the runtime is compared to.
fn run_raw(stages: usize, workers: usize, queue: usize, items: u64, work: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (tx, mut rx) = crossbeam_channel::bounded::<u64>(queue);
    let mut threads = vec![std::thread::spawn(move || {
        for x in 1..=items {
            tx.send(x).expect("consumer alive");
        }
    })];
    for _ in 0..stages {
        let (next_tx, next_rx) = crossbeam_channel::bounded::<u64>(queue);
        for _ in 0..workers {
            let (input, output) = (rx.clone(), next_tx.clone());
            threads.push(std::thread::spawn(move || {
                for x in input {
                    spin(work);
                    output.send(x).expect("consumer alive");
                }
            }));
        }
        rx = next_rx;
    }
    let sum: u64 = rx.iter().sum();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("raw-channel thread panicked"))?;
    }
    let wall = start.elapsed();
    ensure!(sum == items * (items + 1) / 2, "raw chain checksum {sum}");
    Ok(wall)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        return super::training_pipeline::run(super::training_pipeline::Options {
            origin: path.display().to_string(),
            config: crate::config::RunConfig::load(path, &args.set)?,
            steps: args.steps,
            warmup: args.warmup,
            rounds: args.rounds,
            trace: args.trace.clone(),
            json: args.json,
        });
    }
    ensure!(args.stages >= 1, "--stages must be at least 1");
    ensure!(args.items >= 1 && args.slow_items >= 1, "--items and --slow-items must be at least 1");
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    ensure!(
        (1..=args.stages).contains(&args.slow_stage),
        "--slow-stage must name a map stage, 1..={}",
        args.stages
    );
    let work = Duration::from_secs_f64(args.work_us.max(0.0) * 1e-6);
    let hops = (args.stages + 1) as f64; // queues a message crosses

    // Part 1: overhead, interleaved A B A B after one warm-up of each.
    let mut runtime_ns = Vec::new();
    let mut raw_ns = Vec::new();
    let mut last_profile = None;
    for round in 0..=args.repeats {
        let (wall, profile) = run_runtime(args.stages, args.workers, args.queue, args.items, |_| work, None)?;
        let raw = run_raw(args.stages, args.workers, args.queue, args.items, work)?;
        if round > 0 {
            runtime_ns.push(wall.as_secs_f64() * 1e9 / args.items as f64);
            raw_ns.push(raw.as_secs_f64() * 1e9 / args.items as f64);
        }
        last_profile = Some(profile);
    }
    let runtime = Spread::of(&runtime_ns);
    let raw = Spread::of(&raw_ns);
    let ratio = runtime.median / raw.median;
    let per_hop = (runtime.median - raw.median) / hops;

    // Part 2: bottleneck detection.
    let slow_work = Duration::from_secs_f64(args.slow_work_us.max(0.0) * 1e-6);
    let (slow_stage, factor) = (args.slow_stage, args.slow_factor);
    let (slow_wall, slow_profile) = run_runtime(
        args.stages,
        args.workers,
        args.queue,
        args.slow_items,
        |i| if i == slow_stage { slow_work.mul_f64(factor) } else { slow_work },
        args.trace.as_ref(),
    )
    .context("bottleneck run")?;
    let expected = format!("map-{slow_stage}");
    let found = slow_profile.bottleneck().map(|s| s.name.clone()).unwrap_or_default();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    if args.json {
        let v = serde_json::json!({
            "benchmark": "pipeline",
            "stages": args.stages,
            "workers_per_stage": args.workers,
            "queue_capacity": args.queue,
            "available_cores": threads,
            "overhead": {
                "items": args.items,
                "work_us": args.work_us,
                "repeats": args.repeats,
                "runtime_ns_per_message": runtime,
                "raw_channels_ns_per_message": raw,
                "runtime_items_per_s": 1e9 / runtime.median,
                "raw_channels_items_per_s": 1e9 / raw.median,
                "ratio_runtime_over_raw": ratio,
                "overhead_ns_per_message_per_hop": per_hop,
                "profile": last_profile.as_ref().map(Profile::to_json),
            },
            "bottleneck": {
                "items": args.slow_items,
                "work_us": args.slow_work_us,
                "slow_factor": args.slow_factor,
                "expected": expected,
                "found": found,
                "wall_s": slow_wall.as_secs_f64(),
                "items_per_s": args.slow_items as f64 / slow_wall.as_secs_f64(),
                "profile": slow_profile.to_json(),
            },
            "peak_rss_bytes": protocon::rss::peak_rss_bytes(),
        });
        println!("{v}");
    } else {
        println!(
            "== overhead: source -> {} map stage(s) x {} worker(s) -> sink, queues of {}, {} messages, {} us work, {} cores",
            args.stages, args.workers, args.queue, args.items, args.work_us, threads
        );
        if let Some(p) = &last_profile {
            println!("{p}\n");
        }
        println!(
            "runtime:      {:>8.0} ns/message ({:.0}..{:.0}), {:>10.0} items/s",
            runtime.median, runtime.min, runtime.max, 1e9 / runtime.median
        );
        println!(
            "raw channels: {:>8.0} ns/message ({:.0}..{:.0}), {:>10.0} items/s",
            raw.median, raw.min, raw.max, 1e9 / raw.median
        );
        println!(
            "ratio runtime/raw: {ratio:.2}x; runtime overhead {per_hop:.0} ns per message per queue hop (median of {})\n",
            args.repeats
        );
        println!(
            "== bottleneck: {} messages, {} us work per stage, {expected} {}x slower",
            args.slow_items, args.slow_work_us, args.slow_factor
        );
        println!("{slow_profile}");
        println!(
            "expected bottleneck {expected}: {}",
            if found == expected { "found" } else { "NOT found" }
        );
        if let Some(path) = &args.trace {
            println!("trace written to {}", path.display());
        }
    }
    ensure!(found == expected, "profiler named `{found}` as the bottleneck, expected `{expected}`");
    Ok(())
}
