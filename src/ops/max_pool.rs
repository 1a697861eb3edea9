//! Max-pooling over non-overlapping `k x k` windows (stride `k`, no padding), and its gradient.
//!
//! candle's `max_pool2d` backward is built from stock ops (upsample, compare, average-pool,
//! multiply, upsample, multiply: six passes over the input-sized tensor) and, for a window
//! with one maximum, passes on `1 / k^2` of the output gradient instead of all of it: it
//! multiplies by the window's mean of the "is a maximum" mask where the mask's count is what
//! the comment there says it scales by (candle-core 0.11.1, `backprop.rs`, `Op::MaxPool2D`).
//! Here the gradient goes, whole, to the first maximum of each window in row-major order,
//! which is PyTorch's rule (`max_pool2d_with_indices` keeps the first index on ties); the
//! backward pass recomputes that index from the input instead of storing indices.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::{contiguous_slice, Element};
use super::scratch::output_with;
use super::threads;

/// Checks `N x C x H x W` with `H` and `W` multiples of `k`; returns `(N * C, H, W)`.
fn planes(shape: &Shape, k: usize) -> Result<(usize, usize, usize)> {
    let (n, c, h, w) = shape.dims4()?;
    if k == 0 || h % k != 0 || w % k != 0 {
        bail!("protocon max-pool: {k} x {k} windows need height and width divisible by {k}, got {h} x {w}")
    }
    Ok((n * c, h, w))
}

/// Whether `v` replaces `best` as a window's maximum when it comes later in row-major order:
/// strictly greater, or a NaN over a number (a NaN wins, as in PyTorch); ties keep the first.
#[inline(always)]
#[allow(clippy::eq_op)] // `v != v` is the NaN test
fn beats<T: Element>(v: T, best: T) -> bool {
    v > best || (v != v && best == best)
}

/// The maxima of one plane (`h x w`, `k`-row bands) into `y` (`h/k x w/k`). The windows are
/// visited a whole image row at a time rather than window by window, so that the inner loops
/// run over contiguous rows without index arithmetic (per window, with its bounds checks,
/// this was a tenth of a cnn-small training step).
fn pool_plane<T: Element>(plane: &[T], y: &mut [T], w: usize, k: usize) {
    if k == 2 {
        return pool_plane_2x2(plane, y, w);
    }
    let ow = w / k;
    for (y_row, band) in y.chunks_exact_mut(ow).zip(plane.chunks_exact(k * w)) {
        let mut rows = band.chunks_exact(w);
        let first = rows.next().expect("k >= 1 rows per band");
        for (best, window) in y_row.iter_mut().zip(first.chunks_exact(k)) {
            *best = window[0];
            for &v in &window[1..] {
                if beats(v, *best) {
                    *best = v;
                }
            }
        }
        for row in rows {
            for (best, window) in y_row.iter_mut().zip(row.chunks_exact(k)) {
                for &v in window {
                    if beats(v, *best) {
                        *best = v;
                    }
                }
            }
        }
    }
}

fn forward<T: Element>(x: &[T], planes: usize, h: usize, w: usize, k: usize) -> Result<Vec<T>> {
    let (oh, ow) = (h / k, w / k);
    // SAFETY: each plane's chunk of the output is zero-filled, then pooled into.
    unsafe {
        output_with(planes * oh * ow, |y: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(y, plane)| {
                    pool_plane(plane, super::scratch::fill_init(y, T::zero()), w, k)
                })
            });
            Ok(())
        })
    }
}

/// The first maximum of `a` then `b`, by a select.
#[inline(always)]
fn first_max<T: Element>(a: T, b: T) -> T {
    if beats(b, a) {
        b
    } else {
        a
    }
}

/// [`pool_plane`] for the 2x2 windows of the models, on pairs of rows: each row's pairs
/// first (the top row's into `y`, the bottom row's into `pairs`), then the two rows against
/// each other, a contiguous loop. Knock-out rounds that keep the earlier value on ties give
/// the first maximum in row-major order, as the window scan does.
fn pool_plane_2x2<T: Element>(plane: &[T], y: &mut [T], w: usize) {
    let mut pairs = vec![T::zero(); w / 2];
    for (y_row, band) in y.chunks_exact_mut(w / 2).zip(plane.chunks_exact(2 * w)) {
        let (top, bottom) = band.split_at(w);
        for (o, t) in y_row.iter_mut().zip(top.chunks_exact(2)) {
            *o = first_max(t[0], t[1]);
        }
        for (o, b) in pairs.iter_mut().zip(bottom.chunks_exact(2)) {
            *o = first_max(b[0], b[1]);
        }
        for (o, &b) in y_row.iter_mut().zip(&pairs) {
            *o = first_max(*o, b);
        }
    }
}

/// [`unpool_plane`] for 2x2 windows, on pairs of rows, in the same knock-out order as
/// [`pool_plane_2x2`]: each row's pairs (value and position), then top against bottom, then
/// the writes; every loop runs over contiguous rows without branches.
fn unpool_plane_2x2<T: Element>(plane: &[T], dy: &[T], dx: &mut [MaybeUninit<T>], w: usize) {
    let ow = w / 2;
    let mut top_best = vec![T::zero(); ow];
    let mut at = vec![0u8; ow];
    let rows = plane.chunks_exact(2 * w).zip(dx.chunks_exact_mut(2 * w));
    for (dy_row, (band, dx_band)) in dy.chunks_exact(ow).zip(rows) {
        let (top, bottom) = band.split_at(w);
        for ((best, at), t) in top_best.iter_mut().zip(&mut at).zip(top.chunks_exact(2)) {
            let right = beats(t[1], t[0]);
            (*best, *at) = if right { (t[1], 1) } else { (t[0], 0) };
        }
        for ((&top, at), b) in top_best.iter().zip(&mut at).zip(bottom.chunks_exact(2)) {
            let right = beats(b[1], b[0]);
            let (value, position) = if right { (b[1], 3) } else { (b[0], 2) };
            *at = if beats(value, top) { position } else { *at };
        }
        let (dx_top, dx_bottom) = dx_band.split_at_mut(w);
        let z = T::zero();
        for ((d, &g), &at) in dx_top.chunks_exact_mut(2).zip(dy_row).zip(&at) {
            d[0].write(if at == 0 { g } else { z });
            d[1].write(if at == 1 { g } else { z });
        }
        for ((d, &g), &at) in dx_bottom.chunks_exact_mut(2).zip(dy_row).zip(&at) {
            d[0].write(if at == 2 { g } else { z });
            d[1].write(if at == 3 { g } else { z });
        }
    }
}

/// The gradient of one plane: each window's output gradient to its first maximum, zero to the
/// rest of the window. Every element of `dx` is written once (no zero-fill pass first); the
/// maxima are found again from the input, a row of windows at a time, into `best` (the
/// values) and `at` (each maximum's row-major position inside its window).
fn unpool_plane<T: Element>(plane: &[T], dy: &[T], dx: &mut [MaybeUninit<T>], w: usize, k: usize) {
    if k == 2 {
        return unpool_plane_2x2(plane, dy, dx, w);
    }
    let ow = w / k;
    let mut best = vec![T::zero(); ow];
    let mut at = vec![0usize; ow];
    for ((dy_row, band), dx_band) in dy.chunks_exact(ow).zip(plane.chunks_exact(k * w)).zip(dx.chunks_exact_mut(k * w)) {
        for (dy_in_window, row) in band.chunks_exact(w).enumerate() {
            for (ox, window) in row.chunks_exact(k).enumerate() {
                for (j, &v) in window.iter().enumerate() {
                    if (dy_in_window == 0 && j == 0) || beats(v, best[ox]) {
                        best[ox] = v;
                        at[ox] = dy_in_window * k + j;
                    }
                }
            }
        }
        for (dy_in_window, dx_row) in dx_band.chunks_exact_mut(w).enumerate() {
            for ((window, &g), &at) in dx_row.chunks_exact_mut(k).zip(dy_row).zip(&at) {
                for (j, d) in window.iter_mut().enumerate() {
                    d.write(if dy_in_window * k + j == at { g } else { T::zero() });
                }
            }
        }
    }
}

fn backward<T: Element>(x: &[T], dy: &[T], planes: usize, h: usize, w: usize, k: usize) -> Result<Vec<T>> {
    let (oh, ow) = (h / k, w / k);
    // SAFETY: `unpool_plane` writes every element of each plane's chunk.
    unsafe {
        output_with(planes * h * w, |dx: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                dx.par_chunks_mut(h * w)
                    .zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow)))
                    .for_each(|(dx, (plane, dy))| unpool_plane(plane, dy, dx, w, k))
            });
            Ok(())
        })
    }
}

/// Max-pooling with `k x k` windows and stride `k` as a candle custom op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxPool {
    pub k: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "protocon-max-pool"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, h, w) = planes(xl.shape(), self.k)?;
        let (n, c, _, _) = xl.shape().dims4()?;
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward(contiguous_slice(xs, xl, "max-pool input")?, p, h, w, self.k)?),
            CpuStorage::F64(_) => CpuStorage::F64(forward(contiguous_slice(xs, xl, "max-pool input")?, p, h, w, self.k)?),
            _ => bail!("protocon max-pool: f32 or f64 input, got {:?}", xs.dtype()),
        };
        Ok((y, Shape::from((n, c, h / self.k, w / self.k))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolBackward { k: self.k })?))
    }
}

/// The gradient of [`MaxPool`] as a custom op on (x, dy).
#[derive(Clone, Copy, Debug)]
struct MaxPoolBackward {
    k: usize,
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "protocon-max-pool-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, dys: &CpuStorage, dyl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (p, h, w) = planes(xl.shape(), self.k)?;
        let (n, c, _, _) = xl.shape().dims4()?;
        if dyl.shape().dims() != [n, c, h / self.k, w / self.k] {
            bail!("protocon max-pool: gradient {:?} for input {:?}", dyl.shape(), xl.shape())
        }
        let dx = match (xs, dys) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(backward(
                contiguous_slice(xs, xl, "max-pool input")?,
                contiguous_slice(dys, dyl, "max-pool output gradient")?,
                p,
                h,
                w,
                self.k,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(backward(
                contiguous_slice(xs, xl, "max-pool input")?,
                contiguous_slice(dys, dyl, "max-pool output gradient")?,
                p,
                h,
                w,
                self.k,
            )?),
            _ => bail!("protocon max-pool: f32 or f64 operands of one dtype, got {:?} and {:?}", xs.dtype(), dys.dtype()),
        };
        Ok((dx, xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn input(values: Vec<f64>, shape: (usize, usize, usize, usize)) -> Var {
        Var::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
        // Distinct values (no ties), deterministic.
        (0..n).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f64 - 500.0) / 97.0 + i as f64 * 1e-6).collect()
    }

    fn pool(x: &Tensor, k: usize) -> Tensor {
        x.apply_op1(MaxPool { k }).unwrap()
    }

    #[test]
    fn forward_matches_candle() {
        let x = input(pseudo_random(2 * 3 * 8 * 6, 7), (2, 3, 8, 6));
        for k in [1, 2] {
            let ours: Vec<f64> = pool(&x, k).flatten_all().unwrap().to_vec1().unwrap();
            let stock: Vec<f64> = x.max_pool2d(k).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(ours, stock, "k = {k}");
        }
        let odd = input(vec![0.0; 5 * 4], (1, 1, 5, 4));
        assert!(odd.as_tensor().apply_op1(MaxPool { k: 2 }).is_err(), "5 rows do not split into 2-row windows");
    }

    /// d(sum(w * pool(x)))/dx against central differences: w at each window's maximum, 0 elsewhere.
    #[test]
    fn gradient_matches_finite_differences() {
        let shape = (2, 2, 4, 6);
        let values = pseudo_random(2 * 2 * 4 * 6, 3);
        let weights = Tensor::from_vec(pseudo_random(2 * 2 * 2 * 3, 11), (2, 2, 2, 3), &Device::Cpu).unwrap();
        let loss = |v: &[f64]| -> f64 {
            let x = Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
            (pool(&x, 2) * &weights).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };
        let x = input(values.clone(), shape);
        let grads = (pool(x.as_tensor(), 2) * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let grad: Vec<f64> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        crate::ops::assert_finite_differences(&values, loss, &grad, 1e-6);
        assert_eq!(grad.iter().filter(|g| **g != 0.0).count(), 2 * 2 * 2 * 3, "one maximum per window");
    }

    /// The row-wise kernels against a window-by-window scan, on values with many ties and
    /// NaNs, for several window sizes: same maxima, gradient at the same (first) position.
    #[test]
    fn row_wise_kernels_match_a_window_by_window_scan() {
        for k in [1, 2, 3] {
            let (planes, h, w) = (3, 2 * k, 3 * k);
            let x: Vec<f64> = (0..planes * h * w)
                .map(|i| match (i * 7 + 3) % 11 {
                    0 => f64::NAN,
                    r => (r % 4) as f64,
                })
                .collect();
            let dy: Vec<f64> = (0..planes * 2 * 3).map(|i| 1.0 + i as f64).collect();
            let (mut want_y, mut want_dx) = (Vec::new(), vec![0.0; x.len()]);
            for p in 0..planes {
                let plane = &x[p * h * w..][..h * w];
                for oy in 0..2 {
                    for ox in 0..3 {
                        let mut best = oy * k * w + ox * k;
                        for r in 0..k {
                            for c in 0..k {
                                let i = (oy * k + r) * w + ox * k + c;
                                if beats(plane[i], plane[best]) {
                                    best = i;
                                }
                            }
                        }
                        want_y.push(plane[best]);
                        want_dx[p * h * w + best] = dy[p * 6 + oy * 3 + ox];
                    }
                }
            }
            let y = forward(&x, planes, h, w, k).unwrap();
            let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
            assert!(same(&y, &want_y), "k = {k}: {y:?} vs {want_y:?}");
            assert!(y.iter().any(|v| v.is_nan()), "k = {k}: the data has a NaN maximum");
            assert_eq!(backward(&x, &dy, planes, h, w, k).unwrap(), want_dx, "k = {k}");
        }
    }

    /// Ties: the whole gradient goes to the first maximum in row-major order (PyTorch's rule).
    /// candle's own backward passes on 1/4 of it for a 2 x 2 window with one maximum; this pins
    /// the reason the models call this op (a candle upgrade that fixes it shows up here).
    #[test]
    fn ties_go_to_the_first_maximum_and_candle_scales_by_the_window() {
        let x = input(vec![1.0, 3.0, 3.0, 0.5], (1, 1, 2, 2));
        let g = (pool(x.as_tensor(), 2) * 5.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), [0.0, 5.0, 0.0, 0.0]);
        let y = input(vec![1.0, 3.0, 2.0, 0.5], (1, 1, 2, 2));
        let g = (y.as_tensor().max_pool2d(2).unwrap() * 5.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(y.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), [0.0, 1.25, 0.0, 0.0]);
    }
}
