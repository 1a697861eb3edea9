//! `protocon bench step`: full training steps on synthetic 32x32 batches — one forward over
//! [labeled ; unlabeled weak ; unlabeled strong], cross-entropy on the labeled part, FixMatch's
//! masked cross-entropy on the strong view with pseudo-labels from the weak view, backward,
//! Nesterov SGD — with the fused CPU kernels, against candle's stock ops in the same run.

use super::Spread;
use anyhow::{ensure, Context as _};
use candle_core::{DType, Device, Tensor};
use protocon::loss;
use protocon::model::{Arch, Mode, Network};
use protocon::ops::Kernels;
use protocon::optim::{Sgd, SgdConfig};
use rand::{RngExt as _, SeedableRng};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network: wrn-28-2, wrn-28-8, cnn-small.
    #[arg(long, default_value = "wrn-28-2")]
    model: Arch,
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
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Baseline {
    Stock,
    None,
}

/// Times `warmup + steps` training steps; returns per-step seconds of the timed ones.
fn time_steps(args: &Args, kernels: Kernels, warmup: usize, steps: usize) -> anyhow::Result<(Vec<f64>, f32)> {
    let dev = Device::Cpu;
    let net = Network::new(args.model, args.classes, None, 0, &dev)?.with_kernels(kernels);
    let mut opt = Sgd::new(net.params(), SgdConfig::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = args.labeled + 2 * args.unlabeled;
    let x = Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &dev)?;
    let labels: Vec<u32> = (0..args.labeled).map(|_| rng.random_range(0..args.classes as u32)).collect();
    let labels = Tensor::new(labels.as_slice(), &dev)?;
    let (b, u) = (args.labeled, args.unlabeled);
    let mut times = Vec::with_capacity(steps);
    let mut last_loss = f32::NAN;
    for i in 0..warmup + steps {
        let start = Instant::now();
        let out = net.forward(&x, Mode::Train)?;
        let logits_x = out.logits.narrow(0, 0, b)?;
        let logits_w = out.logits.narrow(0, b, u)?;
        let logits_s = out.logits.narrow(0, b + u, u)?;
        let lx = loss::cross_entropy(&logits_x, &labels)?;
        // Threshold 0 so every sample contributes (a realistic mid-training workload).
        let (pseudo, mask) = loss::hard_pseudo_labels(&logits_w, 0.0)?;
        let lu = loss::masked_cross_entropy(&logits_s, &pseudo, &mask)?;
        let total = (lx + lu)?;
        let grads = total.backward()?;
        opt.step(&grads)?;
        last_loss = total.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    ensure!(last_loss.is_finite(), "loss is not finite: {last_loss}");
    Ok((times, last_loss))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.threads >= 1 && args.steps >= 1, "--threads and --steps must be at least 1");
    ensure!(args.labeled >= 1 && args.unlabeled >= 1, "--labeled and --unlabeled must be at least 1");
    // candle's own CPU kernels read RAYON_NUM_THREADS once, at their first use.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    protocon::ops::set_num_threads(args.threads);
    let images = (args.labeled + 2 * args.unlabeled) as f64;

    let (fused, loss) = time_steps(&args, Kernels::Fused, args.warmup, args.steps).context("fused step")?;
    let fused_peak = protocon::rss::peak_rss_bytes();
    let fused = Spread::of(&fused);
    let stock = match args.baseline {
        Baseline::Stock => Some(Spread::of(&time_steps(&args, Kernels::Stock, 1, args.baseline_steps).context("stock step")?.0)),
        Baseline::None => None,
    };
    let img_s = |s: &Spread| images / s.median;
    if args.json {
        let v = serde_json::json!({
            "benchmark": "step",
            "model": args.model.to_string(),
            "labeled": args.labeled,
            "unlabeled": args.unlabeled,
            "images_per_step": images,
            "threads": args.threads,
            "fused": {"step_ms": fused.median * 1e3, "step_ms_min": fused.min * 1e3, "step_ms_max": fused.max * 1e3,
                      "images_per_s": img_s(&fused), "steps": args.steps},
            "stock": stock.map(|s| serde_json::json!({"step_ms": s.median * 1e3, "step_ms_min": s.min * 1e3,
                      "step_ms_max": s.max * 1e3, "images_per_s": img_s(&s), "steps": args.baseline_steps})),
            "ratio_fused_over_stock_images_per_s": stock.map(|s| s.median / fused.median),
            "peak_rss_bytes": fused_peak,
            "final_loss": loss,
        });
        println!("{v}");
    } else {
        println!(
            "{} step, {} labeled + {} weak + {} strong = {} images, {} threads",
            args.model, args.labeled, args.unlabeled, args.unlabeled, images, args.threads
        );
        println!(
            "fused kernels: {:>8.1} ms/step ({:.1}..{:.1}), {:>7.1} images/s, peak RSS {:.2} GB (median of {})",
            fused.median * 1e3,
            fused.min * 1e3,
            fused.max * 1e3,
            img_s(&fused),
            fused_peak.unwrap_or(0) as f64 / 1e9,
            args.steps
        );
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
