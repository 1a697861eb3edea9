//! The named parameters and buffers of a model, in a fixed order.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// How the optimizer treats a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Trained, with weight decay (convolution and linear weights).
    Weight,
    /// Trained, without weight decay (biases, BatchNorm scale and shift), as FixMatch and
    /// ProtoCon exclude them.
    NoDecay,
    /// Not trained: BatchNorm running statistics. Saved in checkpoints.
    Buffer,
}

/// One named tensor.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
}

/// Every tensor of a model in creation order, so optimizer state, checkpoints and parameter
/// counts are deterministic.
#[derive(Debug, Default, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    /// All tensors, parameters and buffers.
    pub fn all(&self) -> &[Param] {
        &self.params
    }

    /// The tensors the optimizer updates.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.kind != ParamKind::Buffer)
    }

    /// Number of trained scalars (what papers call the parameter count).
    pub fn num_trainable(&self) -> usize {
        self.trainable().map(|p| p.var.elem_count()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    fn push(&mut self, name: String, tensor: Tensor, kind: ParamKind) -> Result<Var> {
        if self.get(&name).is_some() {
            candle_core::bail!("parameter `{name}` defined twice");
        }
        let var = Var::from_tensor(&tensor)?;
        self.params.push(Param { name, var: var.clone(), kind });
        Ok(var)
    }

    /// Every tensor by name (for safetensors).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params.iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect()
    }

    /// Copy values from `tensors` into this store's tensors. Every tensor must be present with
    /// the same shape; the error names the first that is not.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for p in &self.params {
            let t = tensors
                .get(&p.name)
                .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{}` missing", p.name)))?;
            if t.dims() != p.var.dims() {
                candle_core::bail!("tensor `{}`: expected shape {:?}, found {:?}", p.name, p.var.dims(), t.dims());
            }
            p.var.set(&t.to_dtype(p.var.dtype())?.to_device(p.var.device())?)?;
        }
        Ok(())
    }

    /// Copy every value of `other` (same architecture) into this store.
    pub fn copy_from(&self, other: &ParamStore) -> Result<()> {
        for (a, b) in self.params.iter().zip(&other.params) {
            a.var.set(b.var.as_tensor())?;
        }
        Ok(())
    }
}

/// Creates parameters with PyTorch's initialisations from a seeded generator, so the same seed
/// gives the same network on every machine (candle's own `randn` is not seedable on the CPU).
pub struct ParamBuilder<'a> {
    store: &'a mut ParamStore,
    rng: ChaCha8Rng,
    prefix: String,
    device: Device,
    dtype: DType,
}

impl<'a> ParamBuilder<'a> {
    pub fn new(store: &'a mut ParamStore, seed: u64, device: &Device, dtype: DType) -> Self {
        ParamBuilder { store, rng: ChaCha8Rng::seed_from_u64(seed), prefix: String::new(), device: device.clone(), dtype }
    }

    /// Run `f` with `name.` appended to the prefix of every tensor it creates.
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let saved = self.prefix.clone();
        self.prefix = format!("{saved}{name}.");
        let r = f(self);
        self.prefix = saved;
        r
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A tensor of independent normal draws.
    pub fn normal(&mut self, name: &str, shape: impl Into<Shape>, std: f64, kind: ParamKind) -> Result<Var> {
        let shape = shape.into();
        let dist = Normal::new(0.0f64, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let values: Vec<f64> = (0..shape.elem_count()).map(|_| dist.sample(&mut self.rng)).collect();
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let name = self.full_name(name);
        self.store.push(name, t, kind)
    }

    /// A tensor filled with `value`.
    pub fn constant(&mut self, name: &str, shape: impl Into<Shape>, value: f64, kind: ParamKind) -> Result<Var> {
        let t = (Tensor::ones(shape, self.dtype, &self.device)? * value)?;
        let name = self.full_name(name);
        self.store.push(name, t, kind)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}
