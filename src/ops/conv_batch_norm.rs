//! A convolution and the batch norm (+ leaky-ReLU) after it as one op in training mode: the
//! layer of cnn-small and of ResNet's stem and inner block convolutions.
//!
//! Why: candle's backward pass gives every tensor of the graph its own gradient slot, filled by
//! `zeros_like` and then an `add` of the first gradient that arrives: a zero-fill and a full
//! extra pass over every activation-sized gradient, about 5% of a cnn-small step. As two ops,
//! the convolution's output is such a tensor; fused, it is private to the op, and its gradient
//! goes straight from the batch norm's backward pass into the convolution's. The kernels are
//! the same ones the separate ops run, so outputs and gradients equal theirs.
//!
//! The convolution output is kept (the batch norm's backward pass reads it), as the separate
//! batch-norm op kept it: memory is unchanged.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::batch_norm::{normalise, Affine, BatchNormBackward, ChannelGeometry, Saved, Statistics};
use super::conv2d::Conv2d;
use super::element::{contiguous_slice, Element};

/// `act(bn(conv(x, w)))` with batch statistics, as a candle custom op on `(x, w, params)`,
/// `params` being `gamma ++ beta`. The convolution output `z` is computed before the op (outside
/// the graph) and handed to it here.
#[derive(Debug)]
pub(crate) struct ConvBatchNorm {
    pub conv: Conv2d,
    pub z: Tensor,
    pub eps: f64,
    pub slope: Option<f64>,
    /// The batch statistics, for backward and for the caller's running-statistics update.
    pub saved: Arc<Mutex<Option<Saved>>>,
}

impl ConvBatchNorm {
    fn forward<T: Element>(&self, z: &[T], g: &ChannelGeometry, params: &[T]) -> Result<Vec<T>> {
        let c = g.channels;
        let saved = Statistics::Batch.saved(g, z, &params[..c], &params[c..])?;
        let affine = Affine::per_channel(&saved.stats, &saved.stats.inv_std(self.eps), &saved.gamma, &saved.beta);
        let y = normalise(g, z, &affine, self.slope)?;
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        Ok(y)
    }
}

impl CustomOp3 for ConvBatchNorm {
    fn name(&self) -> &'static str {
        "protocon-conv-batch-norm"
    }

    fn cpu_fwd(&self, _xs: &CpuStorage, _xl: &Layout, _ws: &CpuStorage, _wl: &Layout, ps: &CpuStorage, pl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (zs, zl) = self.z.storage_and_layout();
        let Storage::Cpu(zs) = &*zs else {
            bail!("protocon conv-batch-norm: the convolution output is not on the CPU")
        };
        let g = ChannelGeometry::new(zl.dims())?;
        if pl.shape().elem_count() != 2 * g.channels {
            bail!("protocon conv-batch-norm: {} channels want gamma and beta ({} values), got {:?}", g.channels, 2 * g.channels, pl.shape())
        }
        let y = match (zs, ps) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(self.forward(
                contiguous_slice(zs, zl, "convolution output")?,
                &g,
                contiguous_slice(ps, pl, "batch-norm parameters")?,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(self.forward(
                contiguous_slice(zs, zl, "convolution output")?,
                &g,
                contiguous_slice(ps, pl, "batch-norm parameters")?,
            )?),
            _ => bail!("protocon conv-batch-norm: f32 or f64 operands of one dtype, got {:?} and {:?}", zs.dtype(), ps.dtype()),
        };
        Ok((y, zl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, params: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = match self.saved.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(saved) => saved.clone(),
            None => bail!("protocon conv-batch-norm: backward before forward"),
        };
        let op = BatchNormBackward { saved, eps: self.eps, slope: self.slope, batch_statistics: true };
        let packed = self.z.apply_op2_no_bwd(&dy.contiguous()?, &op)?;
        let n = self.z.elem_count();
        let dz = packed.narrow(0, 0, n)?.reshape(self.z.shape())?;
        let dparams = packed.narrow(0, n, params.elem_count())?;
        let (dx, dw) = self.conv.bwd(x, w, &self.z, &dz)?;
        Ok((dx, dw, Some(dparams)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::ops::{self, BatchNormLayer, BatchNormOptions};

    /// Output, the gradients of the input, the weights, gamma and beta, and the running
    /// statistics equal, bit for bit, those of the convolution followed by the batch norm as two
    /// ops; with and without the activation, with a stride, and with an input that takes no
    /// gradient (a network's first layer).
    #[test]
    fn equals_convolution_then_batch_norm() {
        let dev = Device::Cpu;
        let value = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / 9.0;
        for (slope, stride, input_grad) in [(Some(0.1), 1, true), (None, 2, true), (Some(0.0), 1, false)] {
            let run = |fused: bool| {
                let x = Var::from_vec((0..2 * 3 * 6 * 5).map(|i| value(i, 37, 101)).collect::<Vec<_>>(), (2, 3, 6, 5), &dev).unwrap();
                let w = Var::from_vec((0..4 * 3 * 9).map(|i| value(i, 53, 97)).collect::<Vec<_>>(), (4, 3, 3, 3), &dev).unwrap();
                let var = |v: Vec<f64>| Var::from_vec(v, 4, &dev).unwrap();
                let (gamma, beta) = (var(vec![1.0, 0.5, 1.5, 0.8]), var(vec![0.1, -0.2, 0.0, 0.3]));
                let (mean, variance) = (var(vec![0.0; 4]), var(vec![1.0; 4]));
                let options = BatchNormOptions { momentum: 0.1, leaky_relu_slope: slope, ..Default::default() };
                let input = if input_grad { x.as_tensor().clone() } else { x.as_tensor().detach() };
                let y = if fused {
                    let layer = BatchNormLayer { gamma: gamma.as_tensor(), beta: beta.as_tensor(), running_mean: &mean, running_var: &variance, options };
                    ops::conv2d_batch_norm_train(&input, w.as_tensor(), stride, 1, &layer).unwrap()
                } else {
                    let z = ops::conv2d(&input, w.as_tensor(), stride, 1).unwrap();
                    ops::batch_norm_train(&z, gamma.as_tensor(), beta.as_tensor(), &mean, &variance, &options).unwrap()
                };
                let weights = Tensor::from_vec((0..y.elem_count()).map(|i| value(i, 29, 89)).collect::<Vec<_>>(), y.shape(), &dev).unwrap();
                let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let grad = |v: &Var| grads.get(v.as_tensor()).map(flat);
                (flat(&y), grad(&x), grad(&w), grad(&gamma), grad(&beta), flat(mean.as_tensor()), flat(variance.as_tensor()))
            };
            let (fused, separate) = (run(true), run(false));
            assert_eq!(fused, separate, "slope {slope:?}, stride {stride}, input gradient {input_grad}");
            assert_eq!(fused.1.is_some(), input_grad);
            assert!(fused.2.is_some() && fused.3.is_some());
        }
    }
}
