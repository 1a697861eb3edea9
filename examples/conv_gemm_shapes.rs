//! How fast the `gemm` crate runs the products of the 3x3 convolutions of the small models, and
//! whether other ways of cutting the convolution into GEMMs would be faster (issue 18):
//!
//! 1. one thread, one image: im2col + one GEMM (what `protocon::ops::conv2d` does) against nine
//!    shifted GEMMs over a zero-padded copy of the image (no im2col; the inner dimension is C
//!    instead of 9C);
//! 2. two threads, 60 images each: the forward product and the weight gradient one image per
//!    GEMM, against several images' columns side by side in one GEMM (longer rows, one packing
//!    of the weights per group).
//!
//! `cargo run --release --example conv_gemm_shapes`. Inputs are synthetic; only the times
//! matter. The im2col here copies whole shifted planes (the padding columns are not zeroed), so
//! it is a little cheaper than the real one.

use std::time::Instant;

/// `dst (m x n, row stride dst_rs) (+)= a (m x k) . b (k x n)`, `a` and `b` given by their
/// row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, accumulate: bool, a: (&[f32], isize, isize), b: (&[f32], isize, isize)) {
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    // SAFETY: the asserts above and below keep every addressed element inside its slice.
    assert!(a.0.len() as isize > (m as isize - 1) * a.1 + (k as isize - 1) * a.2);
    assert!(b.0.len() as isize > (k as isize - 1) * b.1 + (n as isize - 1) * b.2);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.0.as_ptr(),
            a.2,
            a.1,
            b.0.as_ptr(),
            b.2,
            b.1,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Best of 7 rounds of `reps` calls, in seconds per call.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            (0..reps).for_each(|_| f());
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

/// Row `t` (tap `ki*3 + kj`) of channel `ci`'s im2col block: the plane shifted by the tap.
fn im2col_image(x: &[f32], c: usize, hw: usize, col: &mut [f32], cols: usize, offset: usize) {
    for ci in 0..c {
        for t in 0..9 {
            let dst = &mut col[(ci * 9 + t) * cols + offset..][..hw];
            let from = (ci * hw + t).min(c * hw - hw);
            dst.copy_from_slice(&x[from..from + hw]);
        }
    }
}

fn single_image_variants() {
    println!("one thread, one image: GFLOP/s of the forward product");
    for (c, h) in [(32usize, 32usize), (64, 16), (128, 8)] {
        let (k, w, hw, rows) = (c, h, h * h, 9 * c);
        let x: Vec<f32> = (0..c * hw).map(|i| (i % 7) as f32).collect();
        let weights = vec![0.01f32; k * rows];
        let mut y = vec![0f32; k * hw];
        let flops = 2.0 * (k * rows * hw) as f64;
        // Bands of output rows whose columns fit 96K elements, as the real kernel cuts them.
        let band_rows = (96 * 1024 / (rows * w)).clamp(1, h);
        let mut col = vec![0f32; rows * band_rows * w];
        let im2col = best(50, || {
            let mut r0 = 0;
            while r0 < h {
                let bc = band_rows.min(h - r0) * w;
                for ci in 0..c {
                    for t in 0..9 {
                        let from = (ci * hw + r0 * w + t).min(c * hw - bc);
                        col[(ci * 9 + t) * bc..][..bc].copy_from_slice(&x[from..from + bc]);
                    }
                }
                gemm(k, bc, rows, &mut y[r0 * w..], hw, false, (&weights, rows as isize, 1), (&col, bc as isize, 1));
                r0 += band_rows;
            }
        });
        let (hp, wp) = (h + 2, w + 2);
        let mut padded = vec![0f32; c * hp * wp + 2];
        let mut wide = vec![0f32; k * h * wp];
        let taps = vec![0.01f32; 9 * k * c];
        let shifted = best(50, || {
            for ci in 0..c {
                for r in 0..h {
                    padded[ci * hp * wp + (r + 1) * wp + 1..][..w].copy_from_slice(&x[ci * hw + r * w..][..w]);
                }
            }
            for t in 0..9 {
                let (ki, kj) = (t / 3, t % 3);
                let a = (&taps[t * k * c..], c as isize, 1);
                let b = (&padded[ki * wp + kj..], (hp * wp) as isize, 1);
                gemm(k, h * wp, c, &mut wide, h * wp, t > 0, a, b);
            }
            for kk in 0..k {
                for r in 0..h {
                    y[kk * hw + r * w..][..w].copy_from_slice(&wide[kk * h * wp + r * wp..][..w]);
                }
            }
        });
        println!(
            "  {c:3}x{h:2}x{h:2} -> {k:3}: im2col + GEMM {:5.1}, nine shifted GEMMs {:5.1}",
            flops / im2col / 1e9,
            flops / shifted / 1e9
        );
    }
}

fn grouped_images() {
    const PER_THREAD: usize = 60;
    println!("two threads, {PER_THREAD} images each: GFLOP/s with `group` images per GEMM");
    for (c, h) in [(64usize, 16usize), (128, 8)] {
        let (k, hw, rows) = (c, h * h, 9 * c);
        let flops = 2.0 * (k * rows * hw * PER_THREAD * 2) as f64;
        let x: Vec<f32> = (0..PER_THREAD * c * hw).map(|i| (i % 7) as f32).collect();
        let dy: Vec<f32> = (0..PER_THREAD * k * hw).map(|i| (i % 5) as f32).collect();
        let weights = vec![0.01f32; k * rows];
        let mut line = format!("  {c:3}x{h:2}x{h:2} -> {k:3}:");
        for group in [1usize, 2, 4, 8] {
            let run = |weight_gradient: bool| {
                best(1, || {
                    std::thread::scope(|s| {
                        for _ in 0..2 {
                            let (x, dy, weights) = (&x, &dy, &weights);
                            s.spawn(move || {
                                let mut col = vec![0f32; rows * hw * group];
                                let mut gathered = vec![0f32; k * hw * group];
                                let mut y = vec![0f32; k * hw];
                                let mut dw = vec![0f32; k * rows];
                                for n0 in (0..PER_THREAD).step_by(group) {
                                    let g = group.min(PER_THREAD - n0);
                                    let cols = g * hw;
                                    for i in 0..g {
                                        im2col_image(&x[(n0 + i) * c * hw..][..c * hw], c, hw, &mut col, cols, i * hw);
                                    }
                                    if weight_gradient {
                                        // dW (k x rows) += dY (k x cols) . colᵀ, the images' dY side by side.
                                        for i in 0..g {
                                            for kk in 0..k {
                                                gathered[kk * cols + i * hw..][..hw].copy_from_slice(&dy[((n0 + i) * k + kk) * hw..][..hw]);
                                            }
                                        }
                                        gemm(k, rows, cols, &mut dw, rows, n0 > 0, (&gathered, cols as isize, 1), (&col, 1, cols as isize));
                                    } else {
                                        gemm(k, cols, rows, &mut gathered, cols, false, (weights, rows as isize, 1), (&col, cols as isize, 1));
                                        for i in 0..g {
                                            for kk in 0..k {
                                                y[kk * hw..][..hw].copy_from_slice(&gathered[kk * cols + i * hw..][..hw]);
                                            }
                                        }
                                    }
                                }
                                std::hint::black_box((&y, &dw));
                            });
                        }
                    })
                })
            };
            line += &format!("  group {group}: forward {:5.0}, weight gradient {:5.0}", flops / run(false) / 1e9, flops / run(true) / 1e9);
        }
        println!("{line}");
    }
}

fn main() {
    single_image_variants();
    grouped_images();
}
