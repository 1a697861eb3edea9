//! `protocon bench step`: full training steps on synthetic batches (32x32 unless `--size`) — one forward over
//! [labeled ; unlabeled weak ; unlabeled strong], cross-entropy on the labeled part, FixMatch's
//! masked cross-entropy on the strong view with pseudo-labels from the weak view, backward,
//! Nesterov SGD — with the fused CPU kernels, against candle's stock ops in the same run.
//!
//! The fused run also reports where a step's time goes, as medians per phase: forward (the
//! network), loss (slicing, pseudo-labels, the loss terms), backward (candle's backward driver
//! with every op's gradient) and optimizer (SGD over every tensor).
//!
//! `--algorithm protocon` times ProtoCon's step instead (projection head, synchronous
//! clustering, memory bank, prototypes, the five losses) against FixMatch's step on the same
//! model and batch in the same run, and prints the ratio of step times.

use super::Spread;
use crate::config::Conv3x3;
use anyhow::{ensure, Context as _};
use candle_core::{DType, Device, Tensor};
use protocon::model::{Arch, Mode, Network};
use protocon::ops::Kernels;
use protocon::optim::{Sgd, SgdConfig};
use protocon::device::DeviceKind;
use protocon::protocon::ProtoConConfig;
use protocon_stages::objective::{FixMatch, Objective, ProtoConObjective, StepView};
use protocon_stages::record::TrainRecord;
use rand::{RngExt as _, SeedableRng};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network: wrn-28-2, wrn-28-8, cnn-small, resnet18, resnet50.
    #[arg(long, default_value = "wrn-28-2")]
    model: Arch,
    /// Side of the square images (32 as in CIFAR; 224 for the ImageNet ResNets).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Labeled images per step (B).
    #[arg(long, default_value_t = 16)]
    labeled: usize,
    /// Unlabeled images per step (mu*B); each comes as a weak and a strong view.
    #[arg(long, default_value_t = 112)]
    unlabeled: usize,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Compute threads (the fused kernels' pool and candle's own).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Baseline measured in the same run: candle's stock ops (`stock`) or none. The stock step
    /// is about ten times slower and needs much more memory (it does not fit 24 GB at 64+448+448).
    #[arg(long, default_value = "stock")]
    baseline: Baseline,
    /// Timed steps of the baseline (after 1 warm-up step).
    #[arg(long, default_value_t = 3)]
    baseline_steps: usize,
    /// `fixmatch` (against stock candle) or `protocon` (against FixMatch).
    #[arg(long, default_value = "fixmatch")]
    algorithm: BenchAlgorithm,
    /// ProtoCon: unlabeled images in the memory bank, clusters, projection dimension.
    #[arg(long, default_value_t = 50_000)]
    bank_samples: usize,
    #[arg(long, default_value_t = 250)]
    clusters: usize,
    #[arg(long, default_value_t = 64)]
    projection_dim: usize,
    /// Where the step runs: `cpu` or `cuda:N` (a binary built with scripts/build-cuda.sh). On a
    /// CUDA device every op is candle's own (the fused kernels are CPU kernels), so the stock
    /// baseline is skipped there; the peak of device memory in use is reported instead of RSS.
    #[arg(long, default_value = "cpu")]
    device: DeviceKind,
    /// How the fused kernels compute 3x3 stride-1 convolutions: `winograd` or `im2col` (the
    /// config's `kernels.conv3x3`).
    #[arg(long, default_value = "winograd")]
    conv3x3: Conv3x3,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BenchAlgorithm {
    Fixmatch,
    Protocon,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Baseline {
    Stock,
    None,
}

/// The objective a benchmarked step trains towards: the compute stage's own.
fn objective(args: &Args, algorithm: BenchAlgorithm) -> anyhow::Result<Box<dyn Objective>> {
    Ok(match algorithm {
        // Threshold 0 so every sample contributes (a realistic mid-training workload).
        BenchAlgorithm::Fixmatch => Box::new(FixMatch { threshold: 0.0, lambda_u: 1.0 }),
        BenchAlgorithm::Protocon => Box::new(
            ProtoConObjective::new(ProtoConConfig {
                // Everything passes (as in the FixMatch step), with refinement on: the busiest step.
                threshold: 0.0,
                refine_after_epochs: 0,
                ..ProtoConConfig::paper(args.classes, args.projection_dim, args.clusters, 1, args.bank_samples)
            })
?,
        ),
    })
}

/// One algorithm's training step on a fixed synthetic batch.
struct StepRunner {
    net: Network,
    opt: Sgd,
    objective: Box<dyn Objective>,
    x: Tensor,
    labels: Tensor,
    b: usize,
    u: usize,
    bank_samples: usize,
    steps_done: usize,
    /// Seconds of each phase ([`PHASES`]) of the last step.
    last_phases: [f64; 4],
    device: Device,
    /// Most device memory in use seen after a step (CUDA only).
    peak_device_bytes: Option<u64>,
}

/// The phases of a step, in order.
const PHASES: [&str; 4] = ["forward", "loss", "backward", "optimizer"];

impl StepRunner {
    fn new(args: &Args, kernels: Kernels, algorithm: BenchAlgorithm) -> anyhow::Result<Self> {
        let dev = args.device.open()?;
        let projection = (algorithm == BenchAlgorithm::Protocon).then_some(args.projection_dim);
        let net = Network::new(args.model, args.classes, projection, 0, &dev)?.with_kernels(kernels);
        let objective = objective(args, algorithm)?;
        let opt = Sgd::new(net.params(), SgdConfig::default());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = args.labeled + 2 * args.unlabeled;
        let x = Tensor::randn(0f32, 1.0, (n, 3, args.size, args.size), &dev)?;
        let labels: Vec<u32> = (0..args.labeled).map(|_| rng.random_range(0..args.classes as u32)).collect();
        let labels = Tensor::new(labels.as_slice(), &dev)?;
        Ok(StepRunner {
            net,
            opt,
            objective,
            x,
            labels,
            b: args.labeled,
            u: args.unlabeled,
            bank_samples: args.bank_samples,
            steps_done: 0,
            last_phases: [0.0; 4],
            device: dev,
            peak_device_bytes: None,
        })
    }

    /// Waits for the device's queued work, so that a phase's time is its own (a no-op on the CPU).
    fn sync(&self) -> candle_core::Result<Instant> {
        self.device.synchronize()?;
        Ok(Instant::now())
    }

    /// One step; returns its seconds and loss.
    fn step(&mut self) -> anyhow::Result<(f64, f32)> {
        let (b, u) = (self.b, self.u);
        let start = Instant::now();
        let out = self.net.forward(&self.x, Mode::Train)?;
        let forwarded = self.sync()?;
        let slots: Vec<u32> = (0..u).map(|j| ((self.steps_done * u + j) % self.bank_samples) as u32).collect();
        let view = StepView {
            step: self.steps_done as u64,
            epoch: 1,
            logits: &out.logits,
            projection: out.projection.as_ref(),
            labeled: b,
            unlabeled: u,
            labels: &self.labels,
            targets: None,
            slots: &slots,
            hidden_labels: &vec![0; u],
        };
        let mut record = TrainRecord::new(view.step, view.epoch, 0.0);
        let total = self.objective.loss(&view, None, &mut record)?;
        let lost = self.sync()?;
        let grads = total.backward()?;
        let backwarded = self.sync()?;
        self.opt.step(&grads)?;
        let loss = total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let done = self.sync()?;
        if let Some(bytes) = protocon::device::memory_in_use(&self.device) {
            self.peak_device_bytes = Some(self.peak_device_bytes.unwrap_or(0).max(bytes));
        }
        self.last_phases = [forwarded - start, lost - forwarded, backwarded - lost, done - backwarded].map(|d| d.as_secs_f64());
        self.steps_done += 1;
        ensure!(loss.is_finite(), "loss is not finite: {loss}");
        Ok((start.elapsed().as_secs_f64(), loss))
    }
}

/// Times `warmup + steps` FixMatch steps; returns per-step seconds of the timed ones, the median
/// seconds of each phase over them, the last loss and the peak of device memory in use (CUDA).
fn time_steps(args: &Args, kernels: Kernels, warmup: usize, steps: usize) -> anyhow::Result<(Vec<f64>, [f64; 4], f32, Option<u64>)> {
    let mut runner = StepRunner::new(args, kernels, BenchAlgorithm::Fixmatch)?;
    let mut times = Vec::with_capacity(steps);
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut last_loss = f32::NAN;
    for i in 0..warmup + steps {
        let (t, loss) = runner.step()?;
        last_loss = loss;
        if i >= warmup {
            times.push(t);
            phases.iter_mut().zip(runner.last_phases).for_each(|(p, v)| p.push(v));
        }
    }
    Ok((times, phases.map(|p| Spread::of(&p).median), last_loss, runner.peak_device_bytes))
}

/// `--algorithm protocon`: ProtoCon's step against FixMatch's, alternating steps so drift in
/// the machine's speed hits both.
fn run_protocon(args: &Args, images: f64) -> anyhow::Result<()> {
    let mut fixmatch = StepRunner::new(args, Kernels::Fused, BenchAlgorithm::Fixmatch)?;
    let mut protocon = StepRunner::new(args, Kernels::Fused, BenchAlgorithm::Protocon)?;
    for _ in 0..args.warmup {
        fixmatch.step().context("FixMatch step")?;
        protocon.step().context("ProtoCon step")?;
    }
    let (mut pc_times, mut fm_times) = (Vec::new(), Vec::new());
    let mut loss = f32::NAN;
    for _ in 0..args.steps {
        fm_times.push(fixmatch.step().context("FixMatch step")?.0);
        let (t, l) = protocon.step().context("ProtoCon step")?;
        pc_times.push(t);
        loss = l;
    }
    let (pc, fm) = (Spread::of(&pc_times), Spread::of(&fm_times));
    let ratio = pc.median / fm.median;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "step", "algorithm": "protocon", "baseline": "fixmatch",
                "model": args.model.to_string(), "labeled": args.labeled, "unlabeled": args.unlabeled,
                "images_per_step": images, "threads": args.threads,
                "bank_samples": args.bank_samples, "clusters": args.clusters, "projection_dim": args.projection_dim,
                "protocon": {"step_ms": pc.median * 1e3, "step_ms_min": pc.min * 1e3, "step_ms_max": pc.max * 1e3, "images_per_s": images / pc.median},
                "fixmatch": {"step_ms": fm.median * 1e3, "step_ms_min": fm.min * 1e3, "step_ms_max": fm.max * 1e3, "images_per_s": images / fm.median},
                "ratio_protocon_over_fixmatch_step_time": ratio,
                "steps": args.steps,
                "final_loss": loss,
            })
        );
    } else {
        println!(
            "{} step, {} labeled + {} weak + {} strong = {} images, {} threads; ProtoCon: K = {}, d = {}, bank of {}",
            args.model, args.labeled, args.unlabeled, args.unlabeled, images, args.threads, args.clusters, args.projection_dim, args.bank_samples
        );
        println!("ProtoCon: {:>8.1} ms/step ({:.1}..{:.1}), {:>7.1} images/s", pc.median * 1e3, pc.min * 1e3, pc.max * 1e3, images / pc.median);
        println!("FixMatch: {:>8.1} ms/step ({:.1}..{:.1}), {:>7.1} images/s", fm.median * 1e3, fm.min * 1e3, fm.max * 1e3, images / fm.median);
        println!("ratio ProtoCon/FixMatch step time: {ratio:.3}x (median of {} alternating steps each)", args.steps);
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.threads >= 1 && args.steps >= 1, "--threads and --steps must be at least 1");
    ensure!(args.labeled >= 1 && args.unlabeled >= 1, "--labeled and --unlabeled must be at least 1");
    // candle's own CPU kernels read RAYON_NUM_THREADS once, at their first use.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    protocon::ops::set_num_threads(args.threads);
    args.conv3x3.apply();
    let images = (args.labeled + 2 * args.unlabeled) as f64;
    if args.algorithm == BenchAlgorithm::Protocon {
        return run_protocon(&args, images);
    }

    let (fused, phases, loss, device_peak) = time_steps(&args, Kernels::Fused, args.warmup, args.steps).context("fused step")?;
    let fused_peak = protocon::rss::peak_rss_bytes();
    let fused = Spread::of(&fused);
    let on_cpu = args.device == DeviceKind::Cpu;
    let stock = match args.baseline {
        Baseline::Stock if on_cpu => Some(Spread::of(&time_steps(&args, Kernels::Stock, 1, args.baseline_steps).context("stock step")?.0)),
        Baseline::Stock | Baseline::None => None,
    };
    let img_s = |s: &Spread| images / s.median;
    if args.json {
        let v = serde_json::json!({
            "benchmark": "step",
            "model": args.model.to_string(),
            "labeled": args.labeled,
            "unlabeled": args.unlabeled,
            "conv3x3": format!("{:?}", args.conv3x3).to_lowercase(),
            "images_per_step": images,
            "threads": args.threads,
            "device": args.device.to_string(),
            "peak_device_memory_bytes": device_peak,
            "fused": {"step_ms": fused.median * 1e3, "step_ms_min": fused.min * 1e3, "step_ms_max": fused.max * 1e3,
                      "images_per_s": img_s(&fused), "steps": args.steps},
            "stock": stock.map(|s| serde_json::json!({"step_ms": s.median * 1e3, "step_ms_min": s.min * 1e3,
                      "step_ms_max": s.max * 1e3, "images_per_s": img_s(&s), "steps": args.baseline_steps})),
            "ratio_fused_over_stock_images_per_s": stock.map(|s| s.median / fused.median),
            "peak_rss_bytes": fused_peak,
            "fused_phase_ms": PHASES.iter().zip(phases).map(|(n, v)| (n.to_string(), serde_json::json!(v * 1e3))).collect::<serde_json::Map<_, _>>(),
            "final_loss": loss,
        });
        println!("{v}");
    } else {
        println!(
            "{} step, {} labeled + {} weak + {} strong = {} images, {} threads, device {}",
            args.model, args.labeled, args.unlabeled, args.unlabeled, images, args.threads, args.device
        );
        if let Some(bytes) = device_peak {
            println!("device memory in use after a step (total - free, peak): {:.2} GB", bytes as f64 / 1e9);
        }
        println!(
            "fused kernels: {:>8.1} ms/step ({:.1}..{:.1}), {:>7.1} images/s, peak RSS {:.2} GB (median of {})",
            fused.median * 1e3,
            fused.min * 1e3,
            fused.max * 1e3,
            img_s(&fused),
            fused_peak.unwrap_or(0) as f64 / 1e9,
            args.steps
        );
        let sum: f64 = phases.iter().sum();
        let parts: Vec<String> =
            PHASES.iter().zip(phases).map(|(n, v)| format!("{n} {:.1} ms ({:.0}%)", v * 1e3, 100.0 * v / sum.max(1e-12))).collect();
        println!("  phases (medians): {}", parts.join(", "));
        if let Some(s) = stock {
            println!(
                "stock candle:  {:>8.1} ms/step ({:.1}..{:.1}), {:>7.1} images/s (median of {})",
                s.median * 1e3,
                s.min * 1e3,
                s.max * 1e3,
                img_s(&s),
                args.baseline_steps
            );
            println!("ratio fused/stock: {:.2}x images/s", s.median / fused.median);
        }
    }
    Ok(())
}
