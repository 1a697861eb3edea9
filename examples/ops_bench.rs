//! Times the fused CPU kernels of `protocon::ops` against candle's stock ops, forward +
//! backward, at the shapes of Wide-ResNet-28-2 on 32x32 inputs with batch 64.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example ops_bench [-- --batch 64 --runs 5 --only conv3x3]
//! ```
//!
//! Both sides get the same threads (`RAYON_NUM_THREADS` sets candle's pool and
//! `protocon::ops`'s), the same inputs and the same loss (`sum(y)`); each case runs 2
//! warm-up iterations, then `--runs` timed ones, stock and fused interleaved, and prints the
//! medians, the min-max spread and the ratio fused / stock (below 1: fused is faster).
//!
//! `--baseline im2col` makes the baseline column the fused kernels with Winograd's 3x3 path
//! off (`ops::set_winograd(false)`: every convolution through im2col and GEMM), so that the
//! ratio is Winograd's gain alone.

use std::time::Instant;

use candle_core::{DType, Device, Result, Var};
use protocon::ops::{self, BatchNormOptions, Kernels};

const WARMUP: usize = 2;

/// Command-line settings.
struct Settings {
    batch: usize,
    runs: usize,
    /// Cases whose name contains this run; the others are skipped.
    only: String,
    /// Time the fused kernels alone (for a profiler), no stock baseline and no ratio.
    fused_only: bool,
    /// The baseline is the fused kernels with Winograd off instead of candle's stock ops.
    im2col_baseline: bool,
}

impl Settings {
    fn from_args() -> Self {
        let mut settings = Settings {
            batch: 64,
            runs: 5,
            only: String::new(),
            fused_only: false,
            im2col_baseline: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_default();
            match arg.as_str() {
                "--batch" => settings.batch = value().parse().unwrap_or_else(|_| usage()),
                "--runs" => settings.runs = value().parse().unwrap_or_else(|_| usage()),
                "--only" => settings.only = value(),
                "--fused-only" => settings.fused_only = true,
                "--baseline" => match value().as_str() {
                    "stock" => settings.im2col_baseline = false,
                    "im2col" => settings.im2col_baseline = true,
                    _ => usage(),
                },
                _ => usage(),
            }
        }
        settings
    }
}

fn usage() -> ! {
    eprintln!("usage: ops_bench [--batch N] [--runs N] [--only SUBSTRING] [--fused-only] [--baseline stock|im2col]");
    std::process::exit(2)
}

fn main() -> Result<()> {
    let settings = Settings::from_args();
    let batch = settings.batch;
    println!(
        "threads {} (protocon::ops) / {} (candle), batch {batch}, {WARMUP} warm-up + median of {}",
        ops::num_threads(),
        candle_core::utils::get_num_threads(),
        settings.runs
    );
    println!(
        "{:<44} {:>22} {:>22} {:>7}",
        "case (fwd+bwd unless said)", "stock ms (min-max)", "fused ms (min-max)", "ratio"
    );
    let compare = |name: &str, step: &dyn Fn(Kernels) -> Result<()>| compare(&settings, name, step);
    let dev = Device::Cpu;
    for (size, channels, stride) in [(32, 32, 1), (16, 64, 1), (8, 128, 1), (32, 32, 2)] {
        let x = Var::randn(0f32, 1.0, (batch, channels, size, size), &dev)?;
        let out_channels = if stride == 2 { 2 * channels } else { channels };
        let w = Var::randn(0f32, 0.05, (out_channels, channels, 3, 3), &dev)?;
        let name = format!("conv3x3 {channels}x{size}x{size} -> {out_channels} s{stride}");
        compare(&format!("{name} fwd only"), &|k| {
            k.conv2d(&x, &w, stride, 1).map(drop)
        })?;
        compare(&name, &|k| {
            let y = k.conv2d(&x, &w, stride, 1)?;
            y.sum_all()?.backward().map(drop)
        })?;
    }
    for (size, channels) in [(32, 32), (16, 64)] {
        let x = Var::randn(0f32, 1.0, (batch, channels, size, size), &dev)?;
        let w = Var::randn(0f32, 0.05, (2 * channels, channels, 1, 1), &dev)?;
        let name = format!("conv1x1 {channels}x{size}x{size} -> {} s2", 2 * channels);
        compare(&name, &|k| {
            k.conv2d(&x, &w, 2, 0)?.sum_all()?.backward().map(drop)
        })?;
    }
    for (size, channels) in [(32, 32), (8, 128)] {
        let x = Var::randn(0f32, 1.0, (batch, channels, size, size), &dev)?;
        let gamma = Var::ones(channels, DType::F32, &dev)?;
        let beta = Var::zeros(channels, DType::F32, &dev)?;
        let mean = Var::zeros(channels, DType::F32, &dev)?;
        let var = Var::ones(channels, DType::F32, &dev)?;
        for slope in [None, Some(ops::DEFAULT_LEAKY_RELU_SLOPE)] {
            let options = BatchNormOptions {
                momentum: 0.001,
                leaky_relu_slope: slope,
                ..Default::default()
            };
            let what = if slope.is_some() {
                "bn-train+lrelu"
            } else {
                "bn-train"
            };
            let name = format!("{what} {channels}x{size}x{size}");
            compare(&name, &|k| {
                let y = k.batch_norm_train(&x, &gamma, &beta, &mean, &var, &options)?;
                y.sum_all()?.backward().map(drop)
            })?;
        }
    }
    let x = Var::randn(0f32, 1.0, (batch, 32, 32, 32), &dev)?;
    compare("leaky-relu 32x32x32", &|k| {
        k.leaky_relu(&x, ops::DEFAULT_LEAKY_RELU_SLOPE)?
            .sum_all()?
            .backward()
            .map(drop)
    })?;
    Ok(())
}

/// Runs `step` with the stock and the fused kernels, interleaved, and prints both medians.
fn compare(settings: &Settings, name: &str, step: &dyn Fn(Kernels) -> Result<()>) -> Result<()> {
    if !name.contains(&settings.only) {
        return Ok(());
    }
    // The baseline side: candle's stock ops, or the fused kernels with Winograd off.
    let step = |kernels: Kernels| match (kernels, settings.im2col_baseline) {
        (Kernels::Stock, true) => {
            ops::set_winograd(false);
            let result = step(Kernels::Fused);
            ops::set_winograd(true);
            result
        }
        _ => step(kernels),
    };
    let sides: &[Kernels] = if settings.fused_only {
        &[Kernels::Fused]
    } else {
        &[Kernels::Stock, Kernels::Fused]
    };
    for _ in 0..WARMUP {
        for &kernels in sides {
            step(kernels)?;
        }
    }
    let (mut stock, mut fused) = (Vec::new(), Vec::new());
    for _ in 0..settings.runs {
        for &kernels in sides {
            let start = Instant::now();
            step(kernels)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            match kernels {
                Kernels::Stock => stock.push(ms),
                Kernels::Fused => fused.push(ms),
            }
        }
    }
    let f = summary(&mut fused);
    if settings.fused_only {
        println!(
            "{name:<44} {:>22} {:>8.2} ({:>5.1}-{:>5.1})",
            "-", f.0, f.1, f.2
        );
    } else {
        let s = summary(&mut stock);
        println!(
            "{name:<44} {:>8.2} ({:>5.1}-{:>5.1}) {:>8.2} ({:>5.1}-{:>5.1}) {:>7.3}",
            s.0,
            s.1,
            s.2,
            f.0,
            f.1,
            f.2,
            f.0 / s.0
        );
    }
    Ok(())
}

/// (median, min, max).
fn summary(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], times[times.len() - 1])
}
