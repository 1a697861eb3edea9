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

/// Index within the plane (`h x w`) of the first maximum of the window at output `(oy, ox)`;
/// a NaN wins over numbers, as in PyTorch.
#[inline(always)]
#[allow(clippy::eq_op)] // `v != v` is the NaN test
fn argmax<T: Element>(plane: &[T], w: usize, k: usize, oy: usize, ox: usize) -> usize {
    let mut best = oy * k * w + ox * k;
    for dy in 0..k {
        let row = (oy * k + dy) * w + ox * k;
        for i in row..row + k {
            let (v, m) = (plane[i], plane[best]);
            if v > m || (v != v && m == m) {
                best = i;
            }
        }
    }
    best
}

fn forward<T: Element>(x: &[T], planes: usize, h: usize, w: usize, k: usize) -> Result<Vec<T>> {
    let (oh, ow) = (h / k, w / k);
    // SAFETY: each plane's chunk of the output is written in full.
    unsafe {
        output_with(planes * oh * ow, |y: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(y, plane)| {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            y[oy * ow + ox].write(plane[argmax(plane, w, k, oy, ox)]);
                        }
                    }
                })
            });
            Ok(())
        })
    }
}

fn backward<T: Element>(x: &[T], dy: &[T], planes: usize, h: usize, w: usize, k: usize) -> Result<Vec<T>> {
    let (oh, ow) = (h / k, w / k);
    // SAFETY: each plane's chunk is zero-filled, then the maxima are written.
    unsafe {
        output_with(planes * h * w, |dx: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow))).for_each(|(dx, (plane, dy))| {
                    let dx = super::scratch::fill_init(dx, T::zero());
                    for oy in 0..oh {
                        for ox in 0..ow {
                            dx[argmax(plane, w, k, oy, ox)] = dy[oy * ow + ox];
                        }
                    }
                })
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
        let eps = 1e-6;
        for i in 0..values.len() {
            let (mut up, mut down) = (values.clone(), values.clone());
            up[i] += eps;
            down[i] -= eps;
            let numeric = (loss(&up) - loss(&down)) / (2.0 * eps);
            assert!((grad[i] - numeric).abs() < 1e-6, "element {i}: {} vs {numeric}", grad[i]);
        }
        assert_eq!(grad.iter().filter(|g| **g != 0.0).count(), 2 * 2 * 2 * 3, "one maximum per window");
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
