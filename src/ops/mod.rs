//! Fast CPU training kernels for the layers of the models: conv2d, batch norm (optionally
//! fused with leaky-ReLU) and leaky-ReLU, as candle custom ops with their backward passes; and
//! fusions that keep intermediate tensors out of candle's graph (a convolution with its batch
//! norm, a ResNet block's last batch norm with the shortcut sum and ReLU), because candle keeps
//! every op's operands until the backward pass ends and zero-fills every gradient slot.
//!
//! Stock candle trains a Wide-ResNet on the CPU about ten times slower than PyTorch: the input
//! gradient of a convolution is a naive transposed-convolution loop, im2col gathering
//! outweighs the matrix product, fresh buffers are zero-filled only to be overwritten, and
//! batch norm and leaky-ReLU are chains of element-wise ops, each with its own pass and
//! buffers in both directions. The kernels here put every convolution product on `gemm`,
//! build columns per image in reused scratch, write outputs without zero-filling them first,
//! and do batch norm (+ leaky-ReLU) in two passes over memory each way. 3x3 stride-1
//! convolutions take Winograd's F(2x2, 3x3) (`winograd`), 2.25x fewer multiplications,
//! unless [`set_winograd`] turns it off.
//!
//! Every public function dispatches on the input: f32 or f64 tensors on the CPU run the
//! fused kernels, anything else (a CUDA device, half precision) runs the stock candle ops in
//! [`reference`](mod@reference) (max-pooling excepted: candle's pool gradient is wrong, so
//! `max_pool_any_device` builds it from reshapes, selections and `max`), so model code calls
//! these functions unconditionally. [`Kernels`] lets a
//! model choose the stock ops on the CPU as well, to check one against the other.
//!
//! Threads: the fused kernels use [`num_threads`] threads, `RAYON_NUM_THREADS` (or the number
//! of physical cores) unless [`set_num_threads`] says otherwise.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use protocon::ops::{self, BatchNormOptions};
//!
//! let dev = Device::Cpu;
//! let x = Var::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?;
//! let w = Var::randn(0f32, 0.1, (4, 3, 3, 3), &dev)?;
//! let (gamma, beta) = (Var::ones(4, candle_core::DType::F32, &dev)?, Var::zeros(4, candle_core::DType::F32, &dev)?);
//! let (mean, var) = (Var::zeros(4, candle_core::DType::F32, &dev)?, Var::ones(4, candle_core::DType::F32, &dev)?);
//! let options = BatchNormOptions { momentum: 0.001, leaky_relu_slope: Some(0.1), ..Default::default() };
//!
//! let y = ops::conv2d(&x, &w, 1, 1)?;
//! let y = ops::batch_norm_train(&y, &gamma, &beta, &mean, &var, &options)?;
//! let grads = y.sqr()?.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), [4, 3, 3, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod batch_norm;
mod batch_norm_residual;
mod conv2d;
mod conv_batch_norm;
mod element;
mod leaky_relu;
mod max_pool;
mod max_pool_any_device;
mod max_pool_window;
pub mod reference;
mod scratch;
mod threads;
mod winograd;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Result, Tensor, Var};

pub use threads::{num_threads, set_num_threads};
pub use winograd::{set_winograd, winograd};

use batch_norm::{BatchNorm, ChannelStats, Statistics};

/// The leaky-ReLU slope of FixMatch's Wide-ResNet.
pub const DEFAULT_LEAKY_RELU_SLOPE: f64 = 0.1;

/// Settings of a batch-norm layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Weight of the batch statistics in the running ones, PyTorch's convention:
    /// `running = (1 - momentum) * running + momentum * batch`. PyTorch's default is 0.1;
    /// FixMatch's Wide-ResNet uses 0.001.
    pub momentum: f64,
    /// Added to the variance before the square root (PyTorch's default 1e-5).
    pub eps: f64,
    /// `Some(slope)` applies leaky-ReLU to the output in the same pass (and its gradient in
    /// the same backward pass), as the pre-activation blocks of Wide-ResNet need.
    pub leaky_relu_slope: Option<f64>,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        Self {
            momentum: 0.1,
            eps: 1e-5,
            leaky_relu_slope: None,
        }
    }
}

/// Whether the fused kernels handle this input.
fn fused_kernels_cover(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// 2-D convolution, NCHW: `x` is `N x C x H x W`, `w` is `K x C x kh x kw` (no bias, groups 1,
/// dilation 1); returns `N x K x Ho x Wo` with `Ho = (H + 2*padding - kh) / stride + 1`.
/// Differentiable in both operands.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return reference::conv2d(x, w, stride, padding);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, conv2d::Conv2d { stride, padding })
}

/// Batch norm in training mode over dim 1 of `x` (`N x C x ...`): normalises with the
/// batch's mean and biased variance, scales by `gamma` and shifts by `beta` (both `C`), then
/// applies the optional fused leaky-ReLU. Differentiable in `x`, `gamma` and `beta`.
///
/// Also updates `running_mean` and `running_var` (both `C`, any float dtype) in place with
/// `options.momentum` and the unbiased batch variance, as `torch.nn.BatchNorm2d` does; these
/// updates are outside the autograd graph.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Var,
    running_var: &Var,
    options: &BatchNormOptions,
) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return reference::batch_norm_train(x, gamma, beta, running_mean, running_var, options);
    }
    let saved = Arc::new(Mutex::new(None));
    let op = BatchNorm {
        statistics: Statistics::Batch,
        eps: options.eps,
        slope: options.leaky_relu_slope,
        saved: Arc::clone(&saved),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = match saved
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        Some(saved) => saved.stats.clone(),
        None => candle_core::bail!("protocon batch norm: forward left no statistics"),
    };
    update_running_stats(x, stats, running_mean, running_var, options.momentum)?;
    Ok(y)
}

/// Moves the running statistics towards the batch's, `stats` (of `x`), as
/// `torch.nn.BatchNorm2d` does: the mean, and the unbiased variance.
fn update_running_stats(x: &Tensor, stats: ChannelStats, running_mean: &Var, running_var: &Var, momentum: f64) -> Result<()> {
    let count = (x.elem_count() / x.dim(1)?) as f64;
    let unbiased: Vec<f64> = stats.var.iter().map(|v| v * count / (count - 1.0)).collect();
    let channels = stats.mean.len();
    let mean = Tensor::from_vec(stats.mean, channels, x.device())?;
    let unbiased = Tensor::from_vec(unbiased, channels, x.device())?;
    reference::update_running_stats(running_mean, running_var, &mean, &unbiased, momentum)
}

/// Batch norm in inference mode: normalises `x` with `running_mean` and `running_var`, scales
/// by `gamma`, shifts by `beta`, then applies the optional fused leaky-ReLU
/// (`options.momentum` is unused). Differentiable in `x`, `gamma` and `beta`, with the
/// running statistics as constants.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    options: &BatchNormOptions,
) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return reference::batch_norm_eval(x, gamma, beta, running_mean, running_var, options);
    }
    let op = BatchNorm {
        statistics: running_statistics(running_mean, running_var)?,
        eps: options.eps,
        slope: options.leaky_relu_slope,
        saved: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// Leaky-ReLU, `x > 0 ? x : slope * x` ([`DEFAULT_LEAKY_RELU_SLOPE`] in Wide-ResNet).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return reference::leaky_relu(x, slope);
    }
    x.contiguous()?.apply_op1(leaky_relu::LeakyRelu { slope })
}

/// A convolution and the batch norm (+ optional leaky-ReLU, `bn.options`) after it, in
/// training mode, as one op: outputs, gradients and running statistics equal those of
/// [`conv2d`] then [`batch_norm_train`], without the convolution output's gradient passing
/// through candle's zero-filled gradient slot (see the `conv_batch_norm` module).
pub fn conv2d_batch_norm_train(x: &Tensor, w: &Tensor, stride: usize, padding: usize, bn: &BatchNormLayer) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return batch_norm_train(&conv2d(x, w, stride, padding)?, bn.gamma, bn.beta, bn.running_mean, bn.running_var, &bn.options);
    }
    let conv = conv2d::Conv2d { stride, padding };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let z = x.apply_op2_no_bwd(&w, &conv)?;
    let saved = Arc::new(Mutex::new(None));
    let op = conv_batch_norm::ConvBatchNorm { conv, z: z.clone(), eps: bn.options.eps, slope: bn.options.leaky_relu_slope, saved: Arc::clone(&saved) };
    let y = x.apply_op3(&w, &Tensor::cat(&[bn.gamma, bn.beta], 0)?, op)?;
    let stats = match saved.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
        Some(saved) => saved.stats.clone(),
        None => candle_core::bail!("protocon conv-batch-norm: forward left no statistics"),
    };
    update_running_stats(&z, stats, bn.running_mean, bn.running_var, bn.options.momentum)?;
    Ok(y)
}

/// Running statistics as the fused kernels take them.
fn running_statistics(running_mean: &Tensor, running_var: &Tensor) -> Result<Statistics> {
    let as_f64 = |t: &Tensor| t.detach().to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>();
    Ok(Statistics::Running(ChannelStats {
        mean: as_f64(running_mean)?,
        var: as_f64(running_var)?,
    }))
}

/// One batch-norm layer, as [`batch_norm_residual_relu`] (no activation of its own) and
/// [`conv2d_batch_norm_train`] take it.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormLayer<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Var,
    pub running_var: &'a Var,
    /// Momentum, epsilon and the activation; [`batch_norm_residual_relu`] wants none
    /// (`leaky_relu_slope: None`: its ReLU comes after the sum).
    pub options: BatchNormOptions,
}

impl BatchNormLayer<'_> {
    /// Normalises `x` in `mode` with `k`'s kernels ([`batch_norm_train`] or
    /// [`batch_norm_eval`]), applying the activation of `options`.
    pub fn forward(&self, x: &Tensor, mode: BatchNormMode, k: Kernels) -> Result<Tensor> {
        let (gamma, beta, options) = (self.gamma, self.beta, &self.options);
        match mode {
            BatchNormMode::Train => k.batch_norm_train(x, gamma, beta, self.running_mean, self.running_var, options),
            BatchNormMode::Eval => {
                k.batch_norm_eval(x, gamma, beta, self.running_mean.as_tensor(), self.running_var.as_tensor(), options)
            }
        }
    }

    fn norm(&self, mode: BatchNormMode) -> Result<batch_norm_residual::Norm> {
        let statistics = match mode {
            BatchNormMode::Train => Statistics::Batch,
            BatchNormMode::Eval => running_statistics(self.running_mean.as_tensor(), self.running_var.as_tensor())?,
        };
        Ok(batch_norm_residual::Norm { statistics, eps: self.options.eps })
    }
}

/// Which statistics a batch norm normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormMode {
    /// The batch's own, updating the running statistics ([`batch_norm_train`]).
    Train,
    /// The running statistics ([`batch_norm_eval`]).
    Eval,
}

/// What a ResNet block adds to its last batch norm's output.
#[derive(Clone, Copy, Debug)]
pub enum Shortcut<'a> {
    /// The block's input, as it is.
    Identity(&'a Tensor),
    /// A tensor (the 1x1 downsampling convolution's output) through its own batch norm.
    BatchNorm(&'a Tensor, BatchNormLayer<'a>),
}

/// `relu(bn(x) + shortcut)`, the end of a ResNet block, in one op that keeps neither batch
/// norm's output nor the sum for the backward pass (see the `batch_norm_residual` module).
/// Outputs, gradients and running-statistics updates equal those of the separate ops.
pub fn batch_norm_residual_relu(x: &Tensor, bn: &BatchNormLayer, shortcut: &Shortcut, mode: BatchNormMode) -> Result<Tensor> {
    for layer in std::iter::once(bn).chain(match shortcut {
        Shortcut::BatchNorm(_, layer) => Some(layer),
        Shortcut::Identity(_) => None,
    }) {
        if let Some(slope) = layer.options.leaky_relu_slope {
            candle_core::bail!("protocon batch-norm-residual-relu: the batch norms take no activation of their own, got slope {slope}")
        }
    }
    if !fused_kernels_cover(x) {
        let main = bn.forward(x, mode, Kernels::Fused)?;
        let added = match shortcut {
            Shortcut::Identity(s) => (main + *s)?,
            Shortcut::BatchNorm(s, layer) => (main + layer.forward(s, mode, Kernels::Fused)?)?,
        };
        return added.relu();
    }
    let saved = Arc::new(Mutex::new(Vec::new()));
    let (params, s, shortcut_norm) = match shortcut {
        Shortcut::Identity(s) => (Tensor::cat(&[bn.gamma, bn.beta], 0)?, *s, None),
        Shortcut::BatchNorm(s, layer) => (Tensor::cat(&[bn.gamma, bn.beta, layer.gamma, layer.beta], 0)?, *s, Some(layer.norm(mode)?)),
    };
    let op = batch_norm_residual::BatchNormResidualRelu { main: bn.norm(mode)?, shortcut: shortcut_norm, saved: Arc::clone(&saved) };
    let y = x.contiguous()?.apply_op3(&params, &s.contiguous()?, op)?;
    if mode == BatchNormMode::Train {
        let stats: Vec<ChannelStats> = saved.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|saved| saved.stats.clone()).collect();
        let mut stats = stats.into_iter();
        let (Some(main), shortcut_stats) = (stats.next(), stats.next()) else {
            candle_core::bail!("protocon batch-norm-residual-relu: forward left no statistics")
        };
        update_running_stats(x, main, bn.running_mean, bn.running_var, bn.options.momentum)?;
        if let (Shortcut::BatchNorm(s, layer), Some(shortcut_stats)) = (shortcut, shortcut_stats) {
            update_running_stats(s, shortcut_stats, layer.running_mean, layer.running_var, layer.options.momentum)?;
        }
    }
    Ok(y)
}

/// Max-pooling over `k x k` windows with stride `k` (`N x C x H x W`, `H` and `W` multiples of
/// `k`), whose gradient goes whole to each window's first maximum (candle's own backward passes
/// on `1 / k^2` of it; see the `max_pool` module). Off the CPU: [`max_pool_any_device`].
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return max_pool_any_device::max_pool2d(x, k);
    }
    x.contiguous()?.apply_op1(max_pool::MaxPool { k })
}

/// Max-pooling over `kernel x kernel` windows with `stride` and `padding` (ResNet's 3x3,
/// stride 2, padding 1), PyTorch's sizes and gradient rule (see the `max_pool_window` module).
pub fn max_pool2d_window(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if !fused_kernels_cover(x) {
        return max_pool_any_device::max_pool2d_window(x, kernel, stride, padding);
    }
    x.contiguous()?.apply_op1(max_pool_window::MaxPoolWindow(max_pool_window::Window { kernel, stride, padding }))
}

/// Which implementation of the layer operations a model calls.
///
/// A model holds one so the same model code can run a step on candle's stock ops and on the
/// fused kernels, to check one against the other or to time them side by side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// The fused CPU kernels, falling back to the stock ops off the CPU (the functions of
    /// this module).
    #[default]
    Fused,
    /// candle's stock ops everywhere ([`reference`](mod@reference)).
    Stock,
}

impl Kernels {
    /// See [`conv2d`].
    pub fn conv2d(self, x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
        match self {
            Kernels::Fused => conv2d(x, w, stride, padding),
            Kernels::Stock => reference::conv2d(x, w, stride, padding),
        }
    }

    /// See [`batch_norm_train`].
    pub fn batch_norm_train(
        self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Var,
        running_var: &Var,
        options: &BatchNormOptions,
    ) -> Result<Tensor> {
        match self {
            Kernels::Fused => batch_norm_train(x, gamma, beta, running_mean, running_var, options),
            Kernels::Stock => {
                reference::batch_norm_train(x, gamma, beta, running_mean, running_var, options)
            }
        }
    }

    /// See [`batch_norm_eval`].
    pub fn batch_norm_eval(
        self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        options: &BatchNormOptions,
    ) -> Result<Tensor> {
        match self {
            Kernels::Fused => batch_norm_eval(x, gamma, beta, running_mean, running_var, options),
            Kernels::Stock => {
                reference::batch_norm_eval(x, gamma, beta, running_mean, running_var, options)
            }
        }
    }

    /// See [`leaky_relu`].
    pub fn leaky_relu(self, x: &Tensor, slope: f64) -> Result<Tensor> {
        match self {
            Kernels::Fused => leaky_relu(x, slope),
            Kernels::Stock => reference::leaky_relu(x, slope),
        }
    }

    /// A convolution, then its batch norm (+ activation) in `mode`: in training mode with the
    /// fused kernels, [`conv2d_batch_norm_train`]; otherwise the two ops one after the other.
    pub fn conv2d_batch_norm(self, x: &Tensor, w: &Tensor, stride: usize, padding: usize, bn: &BatchNormLayer, mode: BatchNormMode) -> Result<Tensor> {
        match (self, mode) {
            (Kernels::Fused, BatchNormMode::Train) => conv2d_batch_norm_train(x, w, stride, padding, bn),
            _ => bn.forward(&self.conv2d(x, w, stride, padding)?, mode, self),
        }
    }

    /// See [`batch_norm_residual_relu`]; the stock ops normalise, add, then apply the ReLU.
    pub fn batch_norm_residual_relu(self, x: &Tensor, bn: &BatchNormLayer, shortcut: &Shortcut, mode: BatchNormMode) -> Result<Tensor> {
        match self {
            Kernels::Fused => batch_norm_residual_relu(x, bn, shortcut, mode),
            Kernels::Stock => {
                let main = bn.forward(x, mode, self)?;
                let added = match shortcut {
                    Shortcut::Identity(s) => (main + *s)?,
                    Shortcut::BatchNorm(s, layer) => (main + layer.forward(s, mode, self)?)?,
                };
                reference::leaky_relu(&added, 0.0)
            }
        }
    }

    /// See [`max_pool2d`].
    pub fn max_pool2d(self, x: &Tensor, k: usize) -> Result<Tensor> {
        match self {
            Kernels::Fused => max_pool2d(x, k),
            Kernels::Stock => reference::max_pool2d(x, k),
        }
    }

    /// See [`max_pool2d_window`].
    pub fn max_pool2d_window(self, x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        match self {
            Kernels::Fused => max_pool2d_window(x, kernel, stride, padding),
            Kernels::Stock => reference::max_pool2d_window(x, kernel, stride, padding),
        }
    }
}

/// Asserts that `grad` is the gradient of `loss` at `values`, element by element, against
/// central finite differences with step 1e-6, to `tolerance`.
#[cfg(test)]
pub(crate) fn assert_finite_differences(values: &[f64], loss: impl Fn(&[f64]) -> f64, grad: &[f64], tolerance: f64) {
    let eps = 1e-6;
    for i in 0..values.len() {
        let (mut up, mut down) = (values.to_vec(), values.to_vec());
        up[i] += eps;
        down[i] -= eps;
        let numeric = (loss(&up) - loss(&down)) / (2.0 * eps);
        assert!((grad[i] - numeric).abs() < tolerance, "element {i}: backward {}, finite differences {numeric}", grad[i]);
    }
}
