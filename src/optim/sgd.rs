//! SGD with (Nesterov) momentum and weight decay, computed exactly as PyTorch's
//! `torch.optim.SGD(params, lr, momentum, weight_decay, nesterov=True)` with dampening 0:
//!
//! ```text
//! g = grad + wd * p                      (wd only for ParamKind::Weight)
//! b = g              on the first step   (buffer created from the gradient)
//! b = momentum * b + g                   afterwards
//! d = g + momentum * b  if nesterov, else d = b
//! p = p - lr * d
//! ```

use crate::model::{Param, ParamKind, ParamStore};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Hyper-parameters (ProtoCon / FixMatch defaults: lr 0.03, momentum 0.9, wd 5e-4, Nesterov).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.03, momentum: 0.9, weight_decay: 5e-4, nesterov: true }
    }
}

/// The optimizer: one momentum buffer per trained tensor, in the store's order.
pub struct Sgd {
    params: Vec<Param>,
    buffers: Vec<Option<Tensor>>,
    config: SgdConfig,
}

impl Sgd {
    pub fn new(store: &ParamStore, config: SgdConfig) -> Self {
        let params: Vec<Param> = store.trainable().cloned().collect();
        let buffers = vec![None; params.len()];
        Sgd { params, buffers, config }
    }

    pub fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    /// Set the learning rate for the next steps (the schedule calls this every step).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// One update from `grads`. Tensors without a gradient are left alone (their buffers too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig { lr, momentum, weight_decay, nesterov } = self.config;
        for (p, buf) in self.params.iter().zip(&mut self.buffers) {
            let Some(grad) = grads.get(&p.var) else { continue };
            // Detached: arithmetic on the variable itself records an op, and a momentum buffer
            // built from it would keep the previous step's buffer alive, and that one the one
            // before — one copy of every buffer per step, for the whole run.
            let value = p.var.as_tensor().detach();
            let mut g = grad.detach();
            if weight_decay != 0.0 && p.kind == ParamKind::Weight {
                g = (g + (&value * weight_decay)?)?;
            }
            let d = if momentum != 0.0 {
                let b = match buf.take() {
                    None => g.clone(),
                    Some(b) => ((b * momentum)? + &g)?,
                };
                let d = if nesterov { (&g + (&b * momentum)?)? } else { b.clone() };
                *buf = Some(b);
                d
            } else {
                g
            };
            p.var.set(&(&value - (d * lr)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints); absent before the first step.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| b.as_ref().map(|b| (format!("momentum.{}", p.name), b.clone())))
            .collect()
    }

    /// Restore buffers saved by [`state`](Self::state).
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for (p, buf) in self.params.iter().zip(&mut self.buffers) {
            *buf = match state.get(&format!("momentum.{}", p.name)) {
                Some(t) if t.dims() == p.var.dims() => Some(t.to_device(p.var.device())?),
                Some(t) => candle_core::bail!("momentum of `{}`: shape {:?}, expected {:?}", p.name, t.dims(), p.var.dims()),
                None => None,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamBuilder;
    use candle_core::{DType, Device};

    /// Three steps on loss = sum(c * p) (constant gradient c), checked against the update rule
    /// worked by hand: with g = c + wd*p, PyTorch's Nesterov SGD gives
    /// step 1: b = g1, p -= lr*(g1 + m*g1); step 2: b = m*b + g2, p -= lr*(g2 + m*b); ...
    #[test]
    fn nesterov_steps_match_hand_computed_pytorch_updates() {
        let dev = Device::Cpu;
        let mut store = ParamStore::default();
        let mut pb = ParamBuilder::new(&mut store, 0, &dev, DType::F64);
        let w = pb.constant("w", 1, 2.0, ParamKind::Weight).unwrap();
        let b = pb.constant("b", 1, 2.0, ParamKind::NoDecay).unwrap();
        let config = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01, nesterov: true };
        let mut opt = Sgd::new(&store, config);
        let c = 0.5;

        // Hand computation for the decayed weight and the undecayed bias.
        let (mut pw, mut bw) = (2.0f64, 0.0f64);
        let (mut pbias, mut bb) = (2.0f64, 0.0f64);
        let expected: Vec<(f64, f64)> = (0..3)
            .map(|step| {
                let g = c + 0.01 * pw;
                bw = if step == 0 { g } else { 0.9 * bw + g };
                pw -= 0.1 * (g + 0.9 * bw);
                let g = c;
                bb = if step == 0 { g } else { 0.9 * bb + g };
                pbias -= 0.1 * (g + 0.9 * bb);
                (pw, pbias)
            })
            .collect();
        // Written out for step 1: g = 0.5 + 0.02 = 0.52; p = 2 - 0.1 * (0.52 + 0.468) = 1.9012.
        assert!((expected[0].0 - 1.9012).abs() < 1e-12);

        for (want_w, want_b) in expected {
            let loss = ((w.as_tensor() * c).unwrap() + (b.as_tensor() * c).unwrap()).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let got_w = w.as_tensor().to_vec1::<f64>().unwrap()[0];
            let got_b = b.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got_w - want_w).abs() < 1e-12, "{got_w} vs {want_w}");
            assert!((got_b - want_b).abs() < 1e-12, "{got_b} vs {want_b}");
        }
        assert_eq!(opt.state().len(), 2);
        // The buffers are plain values: no autograd history chaining one step to the last.
        assert!(opt.state().iter().all(|(_, t)| !t.track_op()), "momentum buffers must not record ops");
    }

    #[test]
    fn plain_momentum_and_no_momentum() {
        let dev = Device::Cpu;
        let mut store = ParamStore::default();
        let w = ParamBuilder::new(&mut store, 0, &dev, DType::F64).constant("w", 1, 1.0, ParamKind::Weight).unwrap();
        let mut opt = Sgd::new(&store, SgdConfig { lr: 1.0, momentum: 0.5, weight_decay: 0.0, nesterov: false });
        for _ in 0..2 {
            let loss = w.as_tensor().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        // b1 = 1, p = 0; b2 = 0.5 + 1 = 1.5, p = -1.5.
        assert_eq!(w.as_tensor().to_vec1::<f64>().unwrap(), [-1.5]);
    }
}
