//! ResNet-18/34/50/101/152 in torchvision's layout (ProtoCon's ImageNet and DomainNet encoder is
//! ResNet-50): a 7x7 stride-2 stem with BatchNorm and ReLU, a 3x3 stride-2 max-pool, four stages
//! of basic blocks (18, 34) or bottlenecks (50+, "v1.5": the stride on the 3x3 convolution),
//! a 1x1 convolution + BatchNorm shortcut where the shape changes, global average pooling.
//! Parameter names are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
//! ...), so its weights load by name; torchvision's `num_batches_tracked` counters are not kept.
//! With `zero_init_residual` the last BatchNorm of each block starts with scale 0, so each block
//! starts as the identity (torchvision's option of the same name).

use super::layers::{BatchNorm2d, Conv2d, Mode};
use super::params::ParamBuilder;
use super::Backbone;
use crate::ops::{Kernels, Shortcut};
use candle_core::{Result, Tensor};

/// Blocks per stage, and whether they are bottlenecks, for a depth.
pub fn layout(depth: usize) -> Option<([usize; 4], bool)> {
    Some(match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => return None,
    })
}

/// A 3x3 + 3x3 basic block or a 1x1 + 3x3 + 1x1 bottleneck: convolutions, each with its
/// BatchNorm, ReLU between them, and after the sum with the shortcut.
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(pb: &mut ParamBuilder, cin: usize, planes: usize, stride: usize, bottleneck: bool, zero_init_residual: bool, m: f64) -> Result<Self> {
        let expansion = if bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        let shapes: Vec<(usize, usize, usize, usize)> = if bottleneck {
            vec![(cin, planes, 1, 1), (planes, planes, 3, stride), (planes, cout, 1, 1)]
        } else {
            vec![(cin, planes, 3, stride), (planes, cout, 3, 1)]
        };
        let last = shapes.len() - 1;
        let mut convs = Vec::new();
        for (i, (ci, co, kernel, s)) in shapes.into_iter().enumerate() {
            let conv = Conv2d::new(pb, &format!("conv{}", i + 1), ci, co, kernel, s)?;
            let bn = BatchNorm2d::new(pb, &format!("bn{}", i + 1), co, m)?.relu();
            if zero_init_residual && i == last {
                bn.gamma.set(&bn.gamma.zeros_like()?)?;
            }
            convs.push((conv, bn));
        }
        let downsample = if stride != 1 || cin != cout {
            Some((Conv2d::new(pb, "downsample.0", cin, cout, 1, stride)?, BatchNorm2d::new(pb, "downsample.1", cout, m)?))
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor> {
        let (last, rest) = self.convs.split_last().expect("a block has convolutions");
        let mut h = x.clone();
        for (conv, bn) in rest {
            // The convolution, its BatchNorm and the ReLU in one op.
            h = bn.after_conv(conv, &h, mode, true, k)?;
        }
        let (conv, bn) = last;
        let h = conv.forward(&h, k)?;
        // The last BatchNorm(s), the sum and the ReLU in one op, which keeps no block-sized
        // intermediate for the backward pass.
        match &self.downsample {
            Some((conv, shortcut_bn)) => {
                let s = conv.forward(x, k)?;
                k.batch_norm_residual_relu(&h, &bn.layer(false), &Shortcut::BatchNorm(&s, shortcut_bn.layer(false)), mode.into())
            }
            None => k.batch_norm_residual_relu(&h, &bn.layer(false), &Shortcut::Identity(x), mode.into()),
        }
    }
}

/// The ResNet backbone of `depth` (18, 34, 50, 101, 152).
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<Block>,
    features: usize,
}

impl ResNet {
    /// `bn_momentum` in PyTorch's convention (torchvision: 0.1).
    pub fn new(pb: &mut ParamBuilder, depth: usize, zero_init_residual: bool, bn_momentum: f64) -> Result<Self> {
        let Some((counts, bottleneck)) = layout(depth) else {
            candle_core::bail!("ResNet depth must be 18, 34, 50, 101 or 152, got {depth}")
        };
        let conv1 = Conv2d::new(pb, "conv1", 3, 64, 7, 2)?;
        let bn1 = BatchNorm2d::new(pb, "bn1", 64, bn_momentum)?.relu();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = 64;
        let mut blocks = Vec::new();
        for (stage, &count) in counts.iter().enumerate() {
            let planes = 64 << stage;
            for i in 0..count {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let name = format!("layer{}.{i}", stage + 1);
                blocks.push(pb.scope(&name, |pb| Block::new(pb, cin, planes, stride, bottleneck, zero_init_residual, bn_momentum))?);
                cin = planes * expansion;
            }
        }
        Ok(ResNet { conv1, bn1, blocks, features: cin })
    }
}

impl Backbone for ResNet {
    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor> {
        let h = self.bn1.after_conv(&self.conv1, x, mode, true, k)?;
        let mut h = k.max_pool2d_window(&h, 3, 2, 1)?;
        for b in &self.blocks {
            h = b.forward(&h, mode, k)?;
        }
        h.mean((2, 3))
    }

    fn feature_dim(&self) -> usize {
        self.features
    }
}
