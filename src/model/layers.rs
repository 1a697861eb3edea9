//! The layers the models are made of, each calling the kernels the model chose.

use super::params::{ParamBuilder, ParamKind};
use crate::ops::{BatchNormLayer, BatchNormMode, BatchNormOptions, Kernels, DEFAULT_LEAKY_RELU_SLOPE};
use candle_core::{Result, Tensor, Var};

/// Whether a forward pass trains (batch statistics, running statistics updated) or evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

impl From<Mode> for BatchNormMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Train => BatchNormMode::Train,
            Mode::Eval => BatchNormMode::Eval,
        }
    }
}

/// Convolution without bias, weights initialised as PyTorch's
/// `kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu")` (gain sqrt(2), as FixMatch's
/// Wide-ResNet does).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Var,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn new(pb: &mut ParamBuilder, name: &str, cin: usize, cout: usize, kernel: usize, stride: usize) -> Result<Self> {
        let fan_out = (cout * kernel * kernel) as f64;
        let std = (2.0f64).sqrt() / fan_out.sqrt();
        let weight = pb.scope(name, |pb| pb.normal("weight", (cout, cin, kernel, kernel), std, ParamKind::Weight))?;
        Ok(Conv2d { weight, stride, padding: kernel / 2 })
    }

    pub fn forward(&self, x: &Tensor, k: Kernels) -> Result<Tensor> {
        k.conv2d(x, self.weight.as_tensor(), self.stride, self.padding)
    }
}

/// BatchNorm2d (scale 1, shift 0, running mean 0, running variance 1), optionally fused with
/// the leaky-ReLU that follows it (slope 0.1 as in Wide-ResNet, or 0: a ReLU, as in ResNet).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub gamma: Var,
    pub beta: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub momentum: f64,
    pub activation_slope: f64,
}

impl BatchNorm2d {
    pub fn new(pb: &mut ParamBuilder, name: &str, channels: usize, momentum: f64) -> Result<Self> {
        pb.scope(name, |pb| {
            Ok(BatchNorm2d {
                gamma: pb.constant("weight", channels, 1.0, ParamKind::NoDecay)?,
                beta: pb.constant("bias", channels, 0.0, ParamKind::NoDecay)?,
                running_mean: pb.constant("running_mean", channels, 0.0, ParamKind::Buffer)?,
                running_var: pb.constant("running_var", channels, 1.0, ParamKind::Buffer)?,
                momentum,
                activation_slope: DEFAULT_LEAKY_RELU_SLOPE,
            })
        })
    }

    /// The activation [`forward`](Self::forward) applies with `activate`: a ReLU (slope 0).
    pub fn relu(mut self) -> Self {
        self.activation_slope = 0.0;
        self
    }

    /// This layer, with its activation when `activate`, for the ops that fuse it with its
    /// neighbours.
    pub fn layer(&self, activate: bool) -> BatchNormLayer<'_> {
        BatchNormLayer {
            gamma: self.gamma.as_tensor(),
            beta: self.beta.as_tensor(),
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            options: BatchNormOptions {
                momentum: self.momentum,
                leaky_relu_slope: activate.then_some(self.activation_slope),
                ..Default::default()
            },
        }
    }

    /// `self(conv(x))`, with the activation when `activate`: one op in training mode (see
    /// [`crate::ops::conv2d_batch_norm_train`]).
    pub fn after_conv(&self, conv: &Conv2d, x: &Tensor, mode: Mode, activate: bool, k: Kernels) -> Result<Tensor> {
        k.conv2d_batch_norm(x, conv.weight.as_tensor(), conv.stride, conv.padding, &self.layer(activate), mode.into())
    }

    /// Normalise; with `activate`, apply the leaky-ReLU of `activation_slope` in the same pass.
    pub fn forward(&self, x: &Tensor, mode: Mode, activate: bool, k: Kernels) -> Result<Tensor> {
        self.layer(activate).forward(x, mode.into(), k)
    }
}

/// Fully connected layer. `init_std` None: PyTorch's `xavier_normal_`; bias zero.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    pub fn new(pb: &mut ParamBuilder, name: &str, inputs: usize, outputs: usize) -> Result<Self> {
        let std = (2.0 / (inputs + outputs) as f64).sqrt();
        pb.scope(name, |pb| {
            Ok(Linear {
                weight: pb.normal("weight", (outputs, inputs), std, ParamKind::Weight)?,
                bias: pb.constant("bias", outputs, 0.0, ParamKind::NoDecay)?,
            })
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.as_tensor().t()?)?.broadcast_add(self.bias.as_tensor())
    }
}
