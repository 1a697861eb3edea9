//! Max-pooling over overlapping, padded windows (`k x k`, stride `s`, padding `p`): ResNet's
//! 3x3 stride-2 pad-1 pool after its stem. PyTorch's rules: the output is `(H + 2p - k) / s + 1`
//! rows (floor), the padding never wins (it is `-inf`), and the gradient goes whole to the first
//! maximum of each window in row-major order, summed over the windows that share an input.
//!
//! candle's `max_pool2d_with_stride` has no padding and the backward described in the
//! `max_pool` module; [`max_pool`](super::max_pool) covers the non-overlapping case faster.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::{contiguous_slice, Element};
use super::scratch::{fill_init, output_with};
use super::threads;

/// Window size, stride and padding (the same along both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Window {
    /// `(N * C, H, W, Ho, Wo)` of an `N x C x H x W` input, or why the window does not fit.
    fn geometry(&self, shape: &Shape) -> Result<(usize, usize, usize, usize, usize)> {
        let (n, c, h, w) = shape.dims4()?;
        let Window { kernel: k, stride: s, padding: p } = *self;
        if k == 0 || s == 0 || 2 * p > k {
            bail!("protocon max-pool: kernel {k}, stride {s}, padding {p}: need kernel and stride >= 1 and padding <= kernel / 2 (PyTorch's rule)")
        }
        if h + 2 * p < k || w + 2 * p < k {
            bail!("protocon max-pool: a {k} x {k} window does not fit a {h} x {w} input padded by {p}")
        }
        Ok((n * c, h, w, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    /// The input positions `[start, end)` along an axis of length `len` that output `o` sees.
    #[inline(always)]
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let first = (o * self.stride) as isize - self.padding as isize;
        (first.max(0) as usize, ((first + self.kernel as isize) as usize).min(len))
    }

    /// The first maximum (row-major) of output `(oy, ox)`'s window in `plane` (`h x w`).
    #[inline(always)]
    #[allow(clippy::eq_op)] // `v != v` is the NaN test: a NaN wins, as in PyTorch
    fn argmax<T: Element>(&self, plane: &[T], w: usize, h: usize, oy: usize, ox: usize) -> usize {
        let ((y0, y1), (x0, x1)) = (self.span(oy, h), self.span(ox, w));
        let mut at = y0 * w + x0;
        for y in y0..y1 {
            for x in x0..x1 {
                let v = plane[y * w + x];
                if v > plane[at] || (v != v && plane[at] == plane[at]) {
                    at = y * w + x;
                }
            }
        }
        at
    }
}

fn forward<T: Element>(x: &[T], win: Window, (planes, h, w, oh, ow): (usize, usize, usize, usize, usize)) -> Result<Vec<T>> {
    // SAFETY: every plane's chunk of `y` is written whole.
    unsafe {
        output_with(planes * oh * ow, |y: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(y, plane)| {
                    let y = fill_init(y, T::zero());
                    for oy in 0..oh {
                        for ox in 0..ow {
                            y[oy * ow + ox] = plane[win.argmax(plane, w, h, oy, ox)];
                        }
                    }
                })
            });
            Ok(())
        })
    }
}

fn backward<T: Element>(x: &[T], dy: &[T], win: Window, (planes, h, w, oh, ow): (usize, usize, usize, usize, usize)) -> Result<Vec<T>> {
    // SAFETY: every plane's chunk of `dx` is zero-filled, then accumulated into.
    unsafe {
        output_with(planes * h * w, |dx: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow))).for_each(|(dx, (plane, dy))| {
                    let dx = fill_init(dx, T::zero());
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let at = win.argmax(plane, w, h, oy, ox);
                            dx[at] = dx[at] + dy[oy * ow + ox];
                        }
                    }
                })
            });
            Ok(())
        })
    }
}

/// The pooling as a candle op (f32 and f64), with the backward below.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxPoolWindow(pub Window);

impl CustomOp1 for MaxPoolWindow {
    fn name(&self) -> &'static str {
        "protocon-max-pool-window"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geometry(xl.shape())?;
        let (n, c, _, _) = xl.shape().dims4()?;
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward(contiguous_slice(xs, xl, "max-pool input")?, self.0, g)?),
            CpuStorage::F64(_) => CpuStorage::F64(forward(contiguous_slice(xs, xl, "max-pool input")?, self.0, g)?),
            _ => bail!("protocon max-pool: f32 or f64 input, got {:?}", xs.dtype()),
        };
        Ok((y, Shape::from((n, c, g.3, g.4))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolWindowBackward(self.0))?))
    }
}

#[derive(Clone, Copy, Debug)]
struct MaxPoolWindowBackward(Window);

impl CustomOp2 for MaxPoolWindowBackward {
    fn name(&self) -> &'static str {
        "protocon-max-pool-window-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, dys: &CpuStorage, dyl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geometry(xl.shape())?;
        let (n, c, _, _) = xl.shape().dims4()?;
        if dyl.shape().dims() != [n, c, g.3, g.4] {
            bail!("protocon max-pool: gradient {:?} for input {:?}", dyl.shape(), xl.shape())
        }
        let (x, dy) = ("max-pool input", "max-pool output gradient");
        let dx = match (xs, dys) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(backward(contiguous_slice(xs, xl, x)?, contiguous_slice(dys, dyl, dy)?, self.0, g)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(backward(contiguous_slice(xs, xl, x)?, contiguous_slice(dys, dyl, dy)?, self.0, g)?)
            }
            _ => bail!("protocon max-pool: f32 or f64 operands of one dtype, got {:?} and {:?}", xs.dtype(), dys.dtype()),
        };
        Ok((dx, xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f64 - 500.0) / 97.0 + i as f64 * 1e-6).collect()
    }

    const RESNET: Window = Window { kernel: 3, stride: 2, padding: 1 };

    /// A 1 x 1 x 4 x 4 input worked by hand: the 3x3 stride-2 pad-1 windows of outputs (0,0),
    /// (0,1), (1,0), (1,1) cover input rows/columns 0-1, 1-3 (clipped at the border).
    #[test]
    fn forward_by_hand() {
        #[rustfmt::skip]
        let x = [
            1.0, 9.0, 2.0, 0.0,
            3.0, 4.0, 8.0, 5.0,
            7.0, 6.0, 0.5, 1.5,
            2.5, 3.5, 4.5, 5.5,
        ];
        let t = Tensor::from_slice(&x, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let y: Vec<f64> = t.apply_op1(MaxPoolWindow(RESNET)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // (0,0): rows 0-1, cols 0-1 -> 9; (0,1): rows 0-1, cols 1-3 -> 9; (1,0): rows 1-3, cols 0-1
        // -> 7; (1,1): rows 1-3, cols 1-3 -> 8.
        assert_eq!(y, [9.0, 9.0, 7.0, 8.0]);
        // PyTorch's size: 112 -> 56, 7 -> 4, 1 -> 1.
        for (h, o) in [(112, 56), (7, 4), (1, 1)] {
            assert_eq!(RESNET.geometry(&Shape::from((1, 1, h, h))).unwrap().3, o);
        }
        assert!(Window { kernel: 3, stride: 2, padding: 2 }.geometry(&Shape::from((1, 1, 4, 4))).is_err());
    }

    /// Overlapping windows: the 9 at (0,1) is the maximum of two windows and gets both
    /// gradients; the padding never does.
    #[test]
    fn gradient_matches_finite_differences_and_sums_over_windows() {
        let shape = (2, 3, 7, 6);
        let values = pseudo_random(2 * 3 * 7 * 6, 5);
        let (oh, ow) = (4, 3);
        let weights = Tensor::from_vec(pseudo_random(2 * 3 * oh * ow, 13), (2, 3, oh, ow), &Device::Cpu).unwrap();
        let loss = |v: &[f64]| -> f64 {
            let x = Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
            (x.apply_op1(MaxPoolWindow(RESNET)).unwrap() * &weights).unwrap().sum_all().unwrap().to_scalar().unwrap()
        };
        let x = Var::from_vec(values.clone(), shape, &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(MaxPoolWindow(RESNET)).unwrap();
        assert_eq!(y.dims(), [2, 3, oh, ow]);
        let grads = (y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let grad: Vec<f64> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        crate::ops::assert_finite_differences(&values, loss, &grad, 1e-6);

        #[rustfmt::skip]
        let x = Var::from_slice(&[
            1.0, 9.0, 2.0, 0.0,
            3.0, 4.0, 8.0, 5.0,
            7.0, 6.0, 0.5, 1.5,
            2.5, 3.5, 4.5, 5.5f64,
        ], (1, 1, 4, 4), &Device::Cpu).unwrap();
        let dy = Tensor::from_slice(&[1.0, 10.0, 100.0, 1000.0f64], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let grads = (x.as_tensor().apply_op1(MaxPoolWindow(RESNET)).unwrap() * dy).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut want = [0.0; 16];
        (want[1], want[8], want[6]) = (11.0, 100.0, 1000.0);
        assert_eq!(g, want);
    }
}
