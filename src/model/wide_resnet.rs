//! Wide-ResNet-28-k as in FixMatch's PyTorch code (and ProtoCon's, which reuses it):
//! pre-activation blocks, leaky-ReLU 0.1, BatchNorm momentum 0.001, `activate_before_residual`
//! in the first group, global average pooling to a `64k`-d feature.

use super::layers::{BatchNorm2d, Conv2d, Mode};
use super::params::ParamBuilder;
use super::Backbone;
use crate::ops::Kernels;
use candle_core::{Result, Tensor};

/// BatchNorm momentum of FixMatch's Wide-ResNet (PyTorch convention).
pub const BN_MOMENTUM: f64 = 0.001;

struct Block {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    activate_before_residual: bool,
}

impl Block {
    fn new(pb: &mut ParamBuilder, cin: usize, cout: usize, stride: usize, activate_before_residual: bool, m: f64) -> Result<Self> {
        Ok(Block {
            bn1: BatchNorm2d::new(pb, "bn1", cin, m)?,
            conv1: Conv2d::new(pb, "conv1", cin, cout, 3, stride)?,
            bn2: BatchNorm2d::new(pb, "bn2", cout, m)?,
            conv2: Conv2d::new(pb, "conv2", cout, cout, 3, 1)?,
            shortcut: if cin != cout { Some(Conv2d::new(pb, "shortcut", cin, cout, 1, stride)?) } else { None },
            activate_before_residual,
        })
    }

    /// The reference's branches, kept exactly: when the block changes width without
    /// `activate_before_residual`, `conv1` and the shortcut read the *raw* input; `bn1` is then
    /// evaluated (its running statistics move) but its output is unused, as in FixMatch's code.
    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor> {
        let a = self.bn1.forward(x, mode, true, k)?;
        let (branch_in, residual) = match &self.shortcut {
            None => (a, x.clone()),
            Some(sc) if self.activate_before_residual => {
                let r = sc.forward(&a, k)?;
                (a, r)
            }
            Some(sc) => (x.clone(), sc.forward(x, k)?),
        };
        let h = self.conv1.forward(&branch_in, k)?;
        let h = self.bn2.forward(&h, mode, true, k)?;
        let h = self.conv2.forward(&h, k)?;
        h + residual
    }
}

/// Wide-ResNet of depth `6n + 4` and width factor `k`.
pub struct WideResNet {
    stem: Conv2d,
    blocks: Vec<Block>,
    bn: BatchNorm2d,
    features: usize,
}

impl WideResNet {
    /// `bn_momentum`: [`BN_MOMENTUM`] in FixMatch.
    pub fn new(pb: &mut ParamBuilder, depth: usize, widen: usize, bn_momentum: f64) -> Result<Self> {
        if depth < 10 || (depth - 4) % 6 != 0 {
            candle_core::bail!("Wide-ResNet depth must be 6n + 4 (e.g. 28), got {depth}");
        }
        let n = (depth - 4) / 6;
        let widths = [16, 16 * widen, 32 * widen, 64 * widen];
        let stem = Conv2d::new(pb, "conv1", 3, widths[0], 3, 1)?;
        let mut blocks = Vec::new();
        for group in 0..3 {
            for i in 0..n {
                let cin = if i == 0 { widths[group] } else { widths[group + 1] };
                let stride = if i == 0 && group > 0 { 2 } else { 1 };
                let name = format!("block{}.layer.{i}", group + 1);
                blocks.push(pb.scope(&name, |pb| Block::new(pb, cin, widths[group + 1], stride, group == 0, bn_momentum))?);
            }
        }
        let bn = BatchNorm2d::new(pb, "bn1", widths[3], bn_momentum)?;
        Ok(WideResNet { stem, blocks, bn, features: widths[3] })
    }
}

impl Backbone for WideResNet {
    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor> {
        let mut h = self.stem.forward(x, k)?;
        for b in &self.blocks {
            h = b.forward(&h, mode, k)?;
        }
        let h = self.bn.forward(&h, mode, true, k)?;
        h.mean((2, 3))
    }

    fn feature_dim(&self) -> usize {
        self.features
    }
}
