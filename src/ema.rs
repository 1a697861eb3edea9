//! Exponential moving average of a model's weights, evaluated as FixMatch and USB do:
//! trained tensors follow `ema = decay * ema + (1 - decay) * value` after every optimizer step;
//! buffers (BatchNorm running statistics) are copied, not averaged.

use crate::model::{ParamKind, ParamStore};
use candle_core::Result;

pub struct Ema {
    pub decay: f64,
}

impl Ema {
    pub fn new(decay: f64) -> Self {
        Ema { decay }
    }

    /// Update `ema` (a network of the same architecture) from `model`.
    pub fn update(&self, ema: &ParamStore, model: &ParamStore) -> Result<()> {
        for (e, m) in ema.all().iter().zip(model.all()) {
            debug_assert_eq!(e.name, m.name);
            let value = m.var.as_tensor().detach();
            let next = match m.kind {
                ParamKind::Buffer => value,
                _ => ((e.var.as_tensor() * self.decay)? + (value * (1.0 - self.decay))?)?,
            };
            e.var.set(&next)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamBuilder;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn averages_parameters_and_copies_buffers() {
        let dev = Device::Cpu;
        let make = |w: f64, r: f64| {
            let mut s = ParamStore::default();
            let mut pb = ParamBuilder::new(&mut s, 0, &dev, DType::F64);
            pb.constant("w", 2, w, ParamKind::Weight).unwrap();
            pb.constant("running_mean", 2, r, ParamKind::Buffer).unwrap();
            s
        };
        let (ema, model) = (make(1.0, 0.0), make(3.0, 5.0));
        let e = Ema::new(0.999);
        e.update(&ema, &model).unwrap();
        model.all()[0].var.set(&Tensor::new(&[5.0f64, 5.0], &dev).unwrap()).unwrap();
        e.update(&ema, &model).unwrap();
        // Step 1: 0.999 * 1 + 0.001 * 3 = 1.002; step 2: 0.999 * 1.002 + 0.001 * 5 = 1.005998.
        let w = ema.all()[0].var.as_tensor().to_vec1::<f64>().unwrap();
        assert!((w[0] - 1.005_998).abs() < 1e-12, "{w:?}");
        assert_eq!(ema.all()[1].var.as_tensor().to_vec1::<f64>().unwrap(), [5.0, 5.0]);
    }
}
