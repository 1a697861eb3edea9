//! `cnn-small`: a CPU-sized network for 32x32 inputs, for experiments that must finish in
//! minutes on a laptop: three stages of two (3x3 conv without bias, BatchNorm momentum 0.001,
//! leaky-ReLU 0.1) with 32, 64 and 128 channels, 2x2 max-pool after the first two stages,
//! global average pooling to a 128-d feature.

use super::layers::{BatchNorm2d, Conv2d, Mode};
use super::params::ParamBuilder;
use super::Backbone;
use crate::ops::Kernels;
use candle_core::{Result, Tensor};

pub struct CnnSmall {
    layers: Vec<(Conv2d, BatchNorm2d)>,
}

impl CnnSmall {
    pub const WIDTHS: [usize; 3] = [32, 64, 128];

    /// `bn_momentum`: 0.001 as in FixMatch's networks, unless the run is short.
    pub fn new(pb: &mut ParamBuilder, bn_momentum: f64) -> Result<Self> {
        let mut layers = Vec::new();
        let mut cin = 3;
        for (s, &width) in Self::WIDTHS.iter().enumerate() {
            for j in 0..2 {
                let name = format!("stage{}.{j}", s + 1);
                layers.push(pb.scope(&name, |pb| {
                    Ok((Conv2d::new(pb, "conv", cin, width, 3, 1)?, BatchNorm2d::new(pb, "bn", width, bn_momentum)?))
                })?);
                cin = width;
            }
        }
        Ok(CnnSmall { layers })
    }
}

impl Backbone for CnnSmall {
    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (conv, bn)) in self.layers.iter().enumerate() {
            h = bn.after_conv(conv, &h, mode, true, k)?;
            if i == 1 || i == 3 {
                h = k.max_pool2d(&h, 2)?;
            }
        }
        h.mean((2, 3))
    }

    fn feature_dim(&self) -> usize {
        Self::WIDTHS[2]
    }
}
