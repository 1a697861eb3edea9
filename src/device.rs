//! Where a run computes (`[device] kind`, `--device`), and every crossing of data between the
//! host and that device.
//!
//! On a CUDA device the networks, the EMA copy, the optimizer's momentum buffers and every
//! tensor of the step live on the device, and candle's CUDA kernels run the ops: the fused CPU
//! kernels of [`crate::ops`] take only CPU tensors and hand anything else to candle's own ops.
//! The data crosses only where something on the host needs it, each crossing named and made
//! through [`upload`], [`download`] or [`download_scalar`]:
//!
//! - up, once per step: the batch's images, its labels (and soft targets when the objective
//!   mixes labels); ProtoCon's class prototypes and prior correction (a few KB);
//! - down, once per step: the loss and its parts for the metrics line (scalars); FixMatch's
//!   pseudo-labels and mask (for the pseudo-label accuracy against the hidden labels, `u`
//!   numbers); ProtoCon's weak-view projections and probabilities, the labeled projections and
//!   labels: the online clustering, the memory bank, the prototypes and the prior stay on the
//!   host, where they are sequential per-sample bookkeeping over the whole unlabeled set (the
//!   bank of ImageNet is 23 MB; a GPU would run them one small kernel at a time) and where
//!   the asynchronous cluster stage can overlap them with the next step.
//!
//! [`record_crossings`] lists the crossings a piece of code makes (on the CPU too, where they
//! cost nothing), so a test can pin the list: a new crossing in the step is a visible change.

use candle_core::{Device, Result, Shape, Tensor, WithDType};
use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

/// `"cpu"` or `"cuda:N"` (`"cuda"` is `"cuda:0"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda(usize),
}

/// Why a device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected \"cpu\" or \"cuda:N\" (N the GPU's ordinal, e.g. cuda:0)")]
    Unknown(String),
    #[error("device cuda:{0}: this protocon was built without CUDA; build it with scripts/build-cuda.sh (cargo build --release --features cuda)")]
    NotBuilt(usize),
    #[error("device cuda:{ordinal}: {source}")]
    Open {
        ordinal: usize,
        #[source]
        source: candle_core::Error,
    },
}

impl FromStr for DeviceKind {
    type Err = DeviceError;

    fn from_str(s: &str) -> std::result::Result<Self, DeviceError> {
        match s.trim() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceKind::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceKind {
    /// Whether this binary can open the device at all (checked with the config, before any
    /// work starts; whether the GPU is there shows only when [`open`](Self::open)ing it).
    pub fn supported(self) -> std::result::Result<(), DeviceError> {
        match self {
            DeviceKind::Cuda(ordinal) if !cfg!(feature = "cuda") => Err(DeviceError::NotBuilt(ordinal)),
            _ => Ok(()),
        }
    }

    /// The candle device; a CUDA one only in a binary built with the `cuda` feature.
    pub fn open(self) -> std::result::Result<Device, DeviceError> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(ordinal) if !cfg!(feature = "cuda") => Err(DeviceError::NotBuilt(ordinal)),
            DeviceKind::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|source| DeviceError::Open { ordinal, source }),
        }
    }
}

/// Bytes of device memory in use (total minus free, as `nvidia-smi` counts it: this process's
/// allocations, its CUDA context, and other processes'); `None` on the CPU.
pub fn memory_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.cuda_stream().context().mem_get_info().ok().map(|(free, total)| (total - free) as u64),
        _ => None,
    }
}

/// Which way data crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// One crossing between host and device: what, which way, how many bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub what: &'static str,
    pub direction: Direction,
    pub bytes: usize,
}

thread_local! {
    static LOG: RefCell<Option<Vec<Crossing>>> = const { RefCell::new(None) };
}

fn log(what: &'static str, direction: Direction, bytes: usize) {
    LOG.with(|l| {
        if let Some(list) = l.borrow_mut().as_mut() {
            list.push(Crossing { what, direction, bytes });
        }
    });
}

/// Runs `f` and returns what it returned with the crossings it made on this thread.
pub fn record_crossings<R>(f: impl FnOnce() -> R) -> (R, Vec<Crossing>) {
    let outer = LOG.with(|l| l.borrow_mut().replace(Vec::new()));
    let r = f();
    let list = LOG.with(|l| std::mem::replace(&mut *l.borrow_mut(), outer)).unwrap_or_default();
    (r, list)
}

/// `data` as a tensor of `shape` on `device`: one upload.
pub fn upload<T: WithDType>(what: &'static str, data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
    log(what, Direction::Up, data.len() * std::mem::size_of::<T>());
    Tensor::from_vec(data, shape, device)
}

/// `data` as a tensor of `shape` on `device`, copied from a borrowed slice: one upload.
pub fn upload_slice<T: WithDType>(what: &'static str, data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
    log(what, Direction::Up, std::mem::size_of_val(data));
    Tensor::from_slice(data, shape, device)
}

/// The elements of `t`, flattened, on the host: one download.
pub fn download<T: WithDType>(what: &'static str, t: &Tensor) -> Result<Vec<T>> {
    log(what, Direction::Down, t.elem_count() * std::mem::size_of::<T>());
    t.flatten_all()?.to_vec1::<T>()
}

/// A one-element tensor as an `f64` on the host: one download.
pub fn download_scalar(what: &'static str, t: &Tensor) -> Result<f64> {
    log(what, Direction::Down, t.dtype().size_in_bytes());
    t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?.first().copied().ok_or_else(|| candle_core::Error::Msg(format!("{what}: empty tensor, want one value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_kinds_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceKind>().unwrap(), DeviceKind::Cpu);
        assert_eq!("cuda".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(3));
        assert_eq!(DeviceKind::Cuda(1).to_string(), "cuda:1");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceKind>().unwrap_err().to_string();
            assert!(e.contains("cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn cuda_needs_the_cuda_build() {
        if cfg!(feature = "cuda") {
            return;
        }
        let e = DeviceKind::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("built without CUDA") && e.contains("build-cuda.sh"), "{e}");
        assert_eq!(DeviceKind::Cuda(2).supported().unwrap_err().to_string(), DeviceKind::Cuda(2).open().unwrap_err().to_string());
        assert!(matches!(DeviceKind::Cpu.open().unwrap(), Device::Cpu));
    }

    #[test]
    fn crossings_are_listed_in_order_with_their_bytes_and_nest() {
        let dev = Device::Cpu;
        let ((), outer) = record_crossings(|| {
            let t = upload("images", vec![1f32; 6], (2, 3), &dev).unwrap();
            let ((), inner) = record_crossings(|| {
                assert_eq!(download::<f32>("values", &t).unwrap(), vec![1.0; 6]);
            });
            assert_eq!(inner, [Crossing { what: "values", direction: Direction::Down, bytes: 24 }]);
            assert_eq!(download_scalar("loss", &t.sum_all().unwrap()).unwrap(), 6.0);
        });
        assert_eq!(
            outer,
            [
                Crossing { what: "images", direction: Direction::Up, bytes: 24 },
                Crossing { what: "loss", direction: Direction::Down, bytes: 4 },
            ]
        );
        // Outside a recording nothing is kept.
        download::<f32>("ignored", &Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap()).unwrap();
        assert!(record_crossings(|| ()).1.is_empty());
    }
}
