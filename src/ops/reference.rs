//! The same operations spelt with candle's stock ops.
//!
//! This is what the public functions of [`crate::ops`] run on devices other than the CPU
//! (CUDA, where candle calls cuDNN or its own kernels) and on dtypes the fused kernels do not
//! cover; tests and benchmarks call it directly to compare the fused kernels against.

use candle_core::{bail, Result, Tensor, Var};

use super::BatchNormOptions;

/// `x` (`N x C x H x W`) convolved with `w` (`K x C x kh x kw`), groups 1, dilation 1:
/// candle's `Tensor::conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

/// candle's `max_pool2d` with `k x k` windows and stride `k`. Its gradient is `1 / k^2` of the
/// true one for windows with one maximum (see the `max_pool` module); only the stock-kernel
/// comparisons use it on the CPU.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    x.max_pool2d(k)
}

/// candle's `max_pool2d_with_stride` on the input padded with the dtype's lowest value (candle's
/// pool has no padding), so the padding never wins. Its gradient has the flaw
/// [`max_pool2d`]'s has; only the stock-kernel comparisons use it on the CPU.
pub fn max_pool2d_window(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let low = match x.dtype() {
        candle_core::DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    };
    let mut x = x.clone();
    for dim in [2, 3] {
        if padding > 0 {
            let mut shape = x.dims().to_vec();
            shape[dim] = padding;
            let pad = Tensor::full(low, shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
            x = Tensor::cat(&[&pad, &x, &pad], dim)?;
        }
    }
    x.max_pool2d_with_stride(kernel, stride)
}

/// Leaky-ReLU as candle-nn computes it, `max(x, 0) + min(x, 0) * slope`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    candle_nn::ops::leaky_relu(x, slope)
}

/// Batch norm in training mode over dim 1 of `x`, with candle-nn's arithmetic, updating the
/// running statistics as [`crate::ops::batch_norm_train`] documents.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Var,
    running_var: &Var,
    options: &BatchNormOptions,
) -> Result<Tensor> {
    let (channel_shape, reduce_dims) = channel_axes(x)?;
    let count = x.elem_count() / x.dim(1)?;
    if count < 2 {
        bail!("batch norm: training needs more than one value per channel")
    }
    let mean = x.mean_keepdim(reduce_dims.clone())?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(reduce_dims)?;
    let y = centred
        .broadcast_div(&(&var + options.eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(channel_shape.as_slice())?)?
        .broadcast_add(&beta.reshape(channel_shape.as_slice())?)?;
    let unbiased = (var.detach().flatten_all()? * (count as f64 / (count as f64 - 1.0)))?;
    update_running_stats(
        running_mean,
        running_var,
        &mean.detach().flatten_all()?,
        &unbiased,
        options.momentum,
    )?;
    activation(y, options.leaky_relu_slope)
}

/// Batch norm in inference mode: normalises with the running statistics.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    options: &BatchNormOptions,
) -> Result<Tensor> {
    let (channel_shape, _) = channel_axes(x)?;
    let shape = channel_shape.as_slice();
    let y = x
        .broadcast_sub(&running_mean.detach().reshape(shape)?)?
        .broadcast_div(&(running_var.detach().reshape(shape)? + options.eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(shape)?)?
        .broadcast_add(&beta.reshape(shape)?)?;
    activation(y, options.leaky_relu_slope)
}

/// PyTorch's convention: `running = (1 - momentum) * running + momentum * batch`, with the
/// unbiased batch variance. Not part of the autograd graph.
pub(crate) fn update_running_stats(
    running_mean: &Var,
    running_var: &Var,
    batch_mean: &Tensor,
    batch_unbiased_var: &Tensor,
    momentum: f64,
) -> Result<()> {
    for (running, batch) in [
        (running_mean, batch_mean),
        (running_var, batch_unbiased_var),
    ] {
        let batch = batch
            .to_dtype(running.dtype())?
            .to_device(running.device())?;
        let updated = ((running.as_detached_tensor() * (1.0 - momentum))? + (batch * momentum)?)?;
        running.set(&updated.reshape(running.shape())?)?;
    }
    Ok(())
}

/// The broadcast shape of a per-channel vector for `x` (`1 x C x 1 ...`) and the dims a
/// per-channel reduction sums over (all but dim 1).
fn channel_axes(x: &Tensor) -> Result<(Vec<usize>, Vec<usize>)> {
    if x.rank() < 2 {
        bail!(
            "batch norm: want at least 2 dims (N, C, ...), got {:?}",
            x.shape()
        )
    }
    let shape = x
        .dims()
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 1 { d } else { 1 })
        .collect();
    let reduce = (0..x.rank()).filter(|&d| d != 1).collect();
    Ok((shape, reduce))
}

fn activation(y: Tensor, slope: Option<f64>) -> Result<Tensor> {
    match slope {
        Some(slope) => leaky_relu(&y, slope),
        None => Ok(y),
    }
}
