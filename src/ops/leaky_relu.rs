//! Leaky-ReLU, `y = x > 0 ? x : slope * x`, and its gradient `dx = x > 0 ? dy : slope * dy`
//! (PyTorch's convention at `x == 0`).
//!
//! candle-nn spells it `max(x, 0) + min(x, 0) * slope`: four element-wise ops and a zeros
//! tensor forward, and twice as many backward. Here each direction is one pass.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::{contiguous_slice, Element};
use super::scratch::output_with;
use super::threads;

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// spread a CIFAR activation over many threads.
const CHUNK: usize = 1 << 15;

/// `1` for `x > 0`, else `slope`: selected, then multiplied, so the loops vectorise
/// (`x * 1` is exact).
#[inline(always)]
fn factor<T: Element>(x: T, slope: T) -> T {
    if x > T::zero() {
        T::one()
    } else {
        slope
    }
}

fn forward<T: Element>(x: &[T], slope: T) -> Result<Vec<T>> {
    // SAFETY: the chunks cover the output and every element is written.
    unsafe {
        output_with(x.len(), |y: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                y.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(y, x)| {
                        for (o, &v) in y.iter_mut().zip(x) {
                            o.write(v * factor(v, slope));
                        }
                    })
            });
            Ok(())
        })
    }
}

fn backward<T: Element>(x: &[T], dy: &[T], slope: T) -> Result<Vec<T>> {
    // SAFETY: the chunks cover the output and every element is written.
    unsafe {
        output_with(x.len(), |dx: &mut [MaybeUninit<T>]| {
            threads::run(|| {
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                    .for_each(|(dx, (x, dy))| {
                        for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
                            o.write(d * factor(v, slope));
                        }
                    })
            });
            Ok(())
        })
    }
}

/// Leaky-ReLU as a candle custom op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeakyRelu {
    pub slope: f64,
}

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "protocon-leaky-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward(
                contiguous_slice(xs, xl, "leaky-relu input")?,
                self.slope as f32,
            )?),
            CpuStorage::F64(_) => CpuStorage::F64(forward(
                contiguous_slice(xs, xl, "leaky-relu input")?,
                self.slope,
            )?),
            _ => bail!(
                "protocon leaky-relu: f32 or f64 input, got {:?}",
                xs.dtype()
            ),
        };
        Ok((y, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let op = LeakyReluBackward { slope: self.slope };
        Ok(Some(
            x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &op)?,
        ))
    }
}

/// The gradient of [`LeakyRelu`] as a custom op on (x, dy).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeakyReluBackward {
    pub slope: f64,
}

impl CustomOp2 for LeakyReluBackward {
    fn name(&self) -> &'static str {
        "protocon-leaky-relu-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if xl.shape() != dyl.shape() {
            bail!(
                "protocon leaky-relu: gradient {:?} for input {:?}",
                dyl.shape(),
                xl.shape()
            )
        }
        let dx = match (xs, dys) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(backward(
                contiguous_slice(xs, xl, "leaky-relu input")?,
                contiguous_slice(dys, dyl, "leaky-relu output gradient")?,
                self.slope as f32,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(backward(
                contiguous_slice(xs, xl, "leaky-relu input")?,
                contiguous_slice(dys, dyl, "leaky-relu output gradient")?,
                self.slope,
            )?),
            _ => bail!(
                "protocon leaky-relu: f32 or f64 operands of one dtype, got {:?} and {:?}",
                xs.dtype(),
                dys.dtype()
            ),
        };
        Ok((dx, xl.shape().clone()))
    }
}
