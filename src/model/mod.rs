//! The networks: a backbone (Wide-ResNet-28-k or `cnn-small`) with a classifier head and,
//! for ProtoCon, a projection head (Linear, leaky-ReLU 0.1, Linear, L2-normalise).

mod cnn_small;
mod layers;
mod params;
mod resnet;
mod wide_resnet;

pub use cnn_small::CnnSmall;
pub use layers::{BatchNorm2d, Conv2d, Linear, Mode};
pub use params::{Param, ParamBuilder, ParamKind, ParamStore};
pub use resnet::ResNet;
pub use wide_resnet::WideResNet;

use crate::ops::{Kernels, DEFAULT_LEAKY_RELU_SLOPE};
use candle_core::{DType, Device, Result, Tensor};
use std::fmt;
use std::str::FromStr;

/// A feature extractor: images `N x 3 x H x W` to pooled features `N x feature_dim`.
/// Implement it to plug in another network.
pub trait Backbone: Send {
    fn forward(&self, x: &Tensor, mode: Mode, k: Kernels) -> Result<Tensor>;
    fn feature_dim(&self) -> usize;
}

/// Which backbone, as written in configs: `wrn-28-2`, `wrn-28-8` (any `wrn-D-K`), `cnn-small`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    WideResNet { depth: usize, widen: usize },
    CnnSmall,
    /// torchvision's ResNet of this depth (18, 34, 50, 101, 152).
    ResNet { depth: usize },
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "cnn-small" {
            return Ok(Arch::CnnSmall);
        }
        if let Some(depth) = s.strip_prefix("resnet") {
            let depth = depth.strip_prefix('-').unwrap_or(depth);
            return match depth.parse() {
                Ok(depth) if resnet::layout(depth).is_some() => Ok(Arch::ResNet { depth }),
                _ => Err(format!("model `{s}`: ResNet depth must be 18, 34, 50, 101 or 152 (`resnet50`)")),
            };
        }
        let bad = || format!("unknown model `{s}`: expected `cnn-small`, `wrn-DEPTH-WIDTH` such as `wrn-28-2`, or `resnet18` / `resnet50`");
        let rest = s.strip_prefix("wrn-").ok_or_else(bad)?;
        let (d, k) = rest.split_once('-').ok_or_else(bad)?;
        let (depth, widen) = (d.parse().map_err(|_| bad())?, k.parse().map_err(|_| bad())?);
        if depth < 10 || (depth - 4) % 6 != 0 || widen == 0 {
            return Err(format!("model `{s}`: Wide-ResNet depth must be 6n + 4 (>= 10) and width >= 1"));
        }
        Ok(Arch::WideResNet { depth, widen })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::WideResNet { depth, widen } => write!(f, "wrn-{depth}-{widen}"),
            Arch::CnnSmall => f.write_str("cnn-small"),
            Arch::ResNet { depth } => write!(f, "resnet{depth}"),
        }
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct Output {
    /// Classifier logits, `N x classes`.
    pub logits: Tensor,
    /// L2-normalised projections `N x d`, when the network has a projection head.
    pub projection: Option<Tensor>,
}

/// ProtoCon's projection head: Linear(f, f), leaky-ReLU 0.1, Linear(f, d), L2-normalise.
struct Projector {
    fc1: Linear,
    fc2: Linear,
}

impl Projector {
    fn forward(&self, features: &Tensor, k: Kernels) -> Result<Tensor> {
        let h = k.leaky_relu(&self.fc1.forward(features)?, DEFAULT_LEAKY_RELU_SLOPE)?;
        let q = self.fc2.forward(&h)?;
        let norm = q.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
        q.broadcast_div(&norm)
    }
}

/// Construction options of a [`Network`].
#[derive(Debug, Clone, Copy)]
pub struct NetworkOptions {
    pub dtype: DType,
    /// BatchNorm momentum (PyTorch convention). FixMatch's 0.001 by default; the running
    /// statistics then need thousands of steps to forget their initial values, so short runs
    /// (a CPU budget of ~1000 steps) should raise it or evaluation in inference mode suffers.
    pub bn_momentum: f64,
    /// ResNet: start the last BatchNorm of each block at scale 0 (torchvision's option).
    pub zero_init_residual: bool,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions { dtype: DType::F32, bn_momentum: wide_resnet::BN_MOMENTUM, zero_init_residual: false }
    }
}

/// Backbone + classifier (+ projector), with every tensor in one [`ParamStore`].
pub struct Network {
    backbone: Box<dyn Backbone>,
    classifier: Linear,
    projector: Option<Projector>,
    params: ParamStore,
    kernels: Kernels,
    arch: Arch,
    device: Device,
}

impl Network {
    /// Build `arch` with `classes` outputs and, if `projection_dim` is given, a projection head;
    /// weights drawn from `seed` with PyTorch's initialisations.
    pub fn new(arch: Arch, classes: usize, projection_dim: Option<usize>, seed: u64, device: &Device) -> Result<Self> {
        Self::build(arch, classes, projection_dim, seed, device, &NetworkOptions::default())
    }

    /// As [`new`](Self::new) with parameters of `dtype` (f64 for numerical checks).
    pub fn with_dtype(
        arch: Arch,
        classes: usize,
        projection_dim: Option<usize>,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::build(arch, classes, projection_dim, seed, device, &NetworkOptions { dtype, ..Default::default() })
    }

    /// The general constructor.
    pub fn build(
        arch: Arch,
        classes: usize,
        projection_dim: Option<usize>,
        seed: u64,
        device: &Device,
        options: &NetworkOptions,
    ) -> Result<Self> {
        let mut params = ParamStore::default();
        let mut pb = ParamBuilder::new(&mut params, seed, device, options.dtype);
        let m = options.bn_momentum;
        let backbone: Box<dyn Backbone> = match arch {
            Arch::WideResNet { depth, widen } => Box::new(WideResNet::new(&mut pb, depth, widen, m)?),
            Arch::CnnSmall => Box::new(CnnSmall::new(&mut pb, m)?),
            Arch::ResNet { depth } => Box::new(ResNet::new(&mut pb, depth, options.zero_init_residual, m)?),
        };
        let f = backbone.feature_dim();
        let classifier = Linear::new(&mut pb, "fc", f, classes)?;
        let projector = match projection_dim {
            Some(d) => Some(Projector { fc1: Linear::new(&mut pb, "proj.fc1", f, f)?, fc2: Linear::new(&mut pb, "proj.fc2", f, d)? }),
            None => None,
        };
        Ok(Network { backbone, classifier, projector, params, kernels: Kernels::default(), arch, device: device.clone() })
    }

    /// Use candle's stock ops (to compare against the fused kernels) or the fused ones.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Where the parameters live (and the inputs must).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Output> {
        let features = self.backbone.forward(x, mode, self.kernels)?;
        let logits = self.classifier.forward(&features)?;
        let projection = match &self.projector {
            Some(p) => Some(p.forward(&features, self.kernels)?),
            None => None,
        };
        Ok(Output { logits, projection })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_pytorch() {
        // WRN-28-2 with 10 classes: 1,467,610 trained parameters (FixMatch / ProtoCon papers and
        // `sum(p.numel() for p in WideResNet(10, 28, 2).parameters())`).
        let net = Network::new("wrn-28-2".parse().unwrap(), 10, None, 0, &Device::Cpu).unwrap();
        assert_eq!(net.params().num_trainable(), 1_467_610);
        // Projection head for d = 64 on a 128-d feature: 128*128 + 128 + 128*64 + 64.
        let with_proj = Network::new("wrn-28-2".parse().unwrap(), 10, Some(64), 0, &Device::Cpu).unwrap();
        assert_eq!(with_proj.params().num_trainable(), 1_467_610 + 128 * 128 + 128 + 128 * 64 + 64);
        // cnn-small: conv weights 3*32*9 + 32*32*9 + 32*64*9 + 64*64*9 + 64*128*9 + 128*128*9,
        // BatchNorm 2*(32+32+64+64+128+128), classifier 128*10 + 10.
        // torchvision's `sum(p.numel() for p in resnet50().parameters())` with 1,000 classes, and
        // resnet18's.
        for (name, count) in [("resnet50", 25_557_032), ("resnet18", 11_689_512)] {
            let net = Network::new(name.parse().unwrap(), 1000, None, 0, &Device::Cpu).unwrap();
            assert_eq!(net.params().num_trainable(), count, "{name}");
        }
        let small = Network::new(Arch::CnnSmall, 10, None, 0, &Device::Cpu).unwrap();
        let convs = 9 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128);
        assert_eq!(small.params().num_trainable(), convs + 2 * 448 + 1290);
    }

    #[test]
    fn arch_names_round_trip_and_bad_names_are_explained() {
        for s in ["wrn-28-2", "wrn-28-8", "cnn-small", "resnet18", "resnet50"] {
            assert_eq!(s.parse::<Arch>().unwrap().to_string(), s);
        }
        assert_eq!("resnet-50".parse::<Arch>().unwrap(), Arch::ResNet { depth: 50 });
        assert!("resnet-51".parse::<Arch>().unwrap_err().contains("18, 34, 50, 101 or 152"));
        assert!("vgg16".parse::<Arch>().unwrap_err().contains("wrn-DEPTH-WIDTH"));
        assert!("wrn-27-2".parse::<Arch>().unwrap_err().contains("6n + 4"));
    }

    #[test]
    fn forward_shapes_and_unit_projections() {
        let net = Network::new(Arch::CnnSmall, 7, Some(16), 3, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let out = net.forward(&x, Mode::Train).unwrap();
        assert_eq!(out.logits.dims(), [2, 7]);
        let q = out.projection.unwrap();
        assert_eq!(q.dims(), [2, 16]);
        let norms: Vec<f32> = q.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
        for n in norms {
            assert!((n - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let a = Network::new(Arch::CnnSmall, 10, None, 42, &Device::Cpu).unwrap();
        let b = Network::new(Arch::CnnSmall, 10, None, 42, &Device::Cpu).unwrap();
        let c = Network::new(Arch::CnnSmall, 10, None, 43, &Device::Cpu).unwrap();
        let w = |n: &Network| n.params().all()[0].var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
    }
}
