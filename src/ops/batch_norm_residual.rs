//! The end of a ResNet block, `y = relu(bn(x) + shortcut)`, in one op: the block's last batch
//! norm, the sum with the shortcut and the ReLU. The shortcut is the block's input, or, where
//! the block changes shape, a second batch norm (of the 1x1 downsampling convolution's output),
//! fused as well.
//!
//! Why: candle keeps every op's operands until the backward pass ends. As separate ops, the
//! batch norm's output (and the shortcut batch norm's) is an operand of the sum, so every block
//! keeps one or two block-output-sized tensors that PyTorch frees (it adds the shortcut into the
//! batch-norm output in place and applies its ReLU in place): about 0.6 GB of a ResNet-50 step
//! at 224 px with 28 images. Fused, the op keeps only its operands (the convolution outputs,
//! which the batch norms kept anyway, and the block input, which the next convolution keeps) and
//! `y`. Its gradient is read from `y`: `g = dy` where `y > 0`, else 0 (PyTorch's rule for its
//! in-place ReLU, which sees only the output), then each batch norm's backward pass on `g`.
//!
//! The arithmetic is that of the chain it replaces (batch norm, batch norm, sum, ReLU), in the
//! same order, so outputs and gradients are bit-identical to it.
//!
//! Operands: `(x, params, s)`, `params` being `gamma ++ beta` of the block's batch norm, then
//! `gamma ++ beta` of the shortcut's where it has one (`2C` or `4C` values).

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::batch_norm::{Affine, BatchNormBackward, ChannelGeometry, Saved, Statistics};
use super::element::{contiguous_slice, Element};
use super::leaky_relu::LeakyReluBackward;
use super::scratch::output_with;
use super::threads;

/// One of the op's batch norms: where its statistics come from, and its epsilon.
#[derive(Clone, Debug)]
pub(crate) struct Norm {
    pub statistics: Statistics,
    pub eps: f64,
}

impl Norm {
    fn affine<T: Element>(&self, saved: &Saved) -> Vec<Affine<T>> {
        Affine::per_channel(&saved.stats, &saved.stats.inv_std(self.eps), &saved.gamma, &saved.beta)
    }

    /// The gradients of this batch norm at `input` for the gradient `g` of its output, packed
    /// as [`BatchNormBackward`] packs them: `d input`, `d gamma`, `d beta`.
    fn backward(&self, input: &Tensor, saved: &Saved, g: &Tensor) -> Result<Tensor> {
        let op = BatchNormBackward {
            saved: saved.clone(),
            eps: self.eps,
            slope: None,
            batch_statistics: matches!(self.statistics, Statistics::Batch),
        };
        input.contiguous()?.apply_op2_no_bwd(g, &op)
    }
}

/// `relu(bn(x) + s)`, or `relu(bn(x) + bn_s(s))`, as a candle custom op on `(x, params, s)`.
///
/// The statistics each batch norm used are left in `saved` (the block's first, the
/// shortcut's second) for the caller, who updates the running statistics from them, and for
/// backward.
#[derive(Debug)]
pub(crate) struct BatchNormResidualRelu {
    pub main: Norm,
    /// `None`: the shortcut is added as it is.
    pub shortcut: Option<Norm>,
    pub saved: Arc<Mutex<Vec<Saved>>>,
}

impl BatchNormResidualRelu {
    fn forward<T: Element>(&self, g: &ChannelGeometry, x: &[T], params: &[T], s: &[T]) -> Result<Vec<T>> {
        let c = g.channels;
        let main = self.main.statistics.saved(g, x, &params[..c], &params[c..2 * c])?;
        let main_affine = self.main.affine::<T>(&main);
        let mut saved = vec![main];
        let shortcut_affine = match &self.shortcut {
            Some(norm) => {
                let stats = norm.statistics.saved(g, s, &params[2 * c..3 * c], &params[3 * c..])?;
                let affine = norm.affine::<T>(&stats);
                saved.push(stats);
                Some(affine)
            }
            None => None,
        };
        // SAFETY: the planes cover the output and every element of each is written.
        let y = unsafe {
            output_with(x.len(), |y| {
                threads::run(|| {
                    y.par_chunks_mut(g.spatial).zip(x.par_chunks(g.spatial).zip(s.par_chunks(g.spatial))).enumerate().for_each(
                        |(plane, (y, (x, s)))| {
                            let a = main_affine[plane % c];
                            let relu = |t: T| if t > T::zero() { t } else { T::zero() };
                            match &shortcut_affine {
                                Some(affine) => {
                                    let b = affine[plane % c];
                                    for ((o, &u), &v) in y.iter_mut().zip(x).zip(s) {
                                        o.write(relu(a.z(u) + b.z(v)));
                                    }
                                }
                                None => {
                                    for ((o, &u), &v) in y.iter_mut().zip(x).zip(s) {
                                        o.write(relu(a.z(u) + v));
                                    }
                                }
                            }
                        },
                    )
                });
                Ok::<(), candle_core::Error>(())
            })?
        };
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = saved;
        Ok(y)
    }

    fn saved(&self) -> Result<Vec<Saved>> {
        let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if saved.is_empty() {
            bail!("protocon batch-norm-residual-relu: backward before forward")
        }
        Ok(saved.clone())
    }

    fn param_count(&self, channels: usize) -> usize {
        if self.shortcut.is_some() {
            4 * channels
        } else {
            2 * channels
        }
    }
}

impl CustomOp3 for BatchNormResidualRelu {
    fn name(&self) -> &'static str {
        "protocon-batch-norm-residual-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ps: &CpuStorage, pl: &Layout, ss: &CpuStorage, sl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = ChannelGeometry::new(xl.dims())?;
        if xl.shape() != sl.shape() {
            bail!("protocon batch-norm-residual-relu: block output {:?} and shortcut {:?} differ in shape", xl.shape(), sl.shape())
        }
        if pl.shape().elem_count() != self.param_count(g.channels) {
            bail!(
                "protocon batch-norm-residual-relu: {} channels want {} parameter values (gamma and beta per batch norm), got {:?}",
                g.channels,
                self.param_count(g.channels),
                pl.shape()
            )
        }
        let y = match (xs, ps, ss) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(self.forward(
                &g,
                contiguous_slice(xs, xl, "block output")?,
                contiguous_slice(ps, pl, "batch-norm parameters")?,
                contiguous_slice(ss, sl, "shortcut")?,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(self.forward(
                &g,
                contiguous_slice(xs, xl, "block output")?,
                contiguous_slice(ps, pl, "batch-norm parameters")?,
                contiguous_slice(ss, sl, "shortcut")?,
            )?),
            _ => bail!(
                "protocon batch-norm-residual-relu: f32 or f64 operands of one dtype, got {:?}, {:?}, {:?}",
                xs.dtype(),
                ps.dtype(),
                ss.dtype()
            ),
        };
        Ok((y, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, s: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved()?;
        // y > 0 exactly where the sum is: the ReLU's rule applied to its output.
        let g = y.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &LeakyReluBackward { slope: 0.0 })?;
        let (n, c) = (x.elem_count(), x.dim(1)?);
        let main = self.main.backward(x, &saved[0], &g)?;
        let dx = main.narrow(0, 0, n)?.reshape(x.shape())?;
        let (dparams, ds) = match (&self.shortcut, saved.get(1)) {
            (None, _) => (main.narrow(0, n, 2 * c)?, g),
            (Some(norm), Some(shortcut_saved)) => {
                let shortcut = norm.backward(s, shortcut_saved, &g)?;
                let dparams = Tensor::cat(&[main.narrow(0, n, 2 * c)?, shortcut.narrow(0, n, 2 * c)?], 0)?;
                (dparams, shortcut.narrow(0, 0, n)?.reshape(s.shape())?)
            }
            (Some(_), None) => bail!("protocon batch-norm-residual-relu: forward left no shortcut statistics"),
        };
        Ok((Some(dx), Some(dparams.reshape(params.shape())?), Some(ds)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::ops::{self, BatchNormLayer, BatchNormMode, BatchNormOptions, Shortcut};

    /// A batch norm's variables with non-trivial values.
    struct Layer {
        gamma: Var,
        beta: Var,
        mean: Var,
        var: Var,
    }

    impl Layer {
        fn new(channels: usize, seed: usize) -> Self {
            let values = |f: &dyn Fn(usize) -> f64| Var::from_vec((0..channels).map(f).collect::<Vec<_>>(), channels, &Device::Cpu).unwrap();
            Layer {
                gamma: values(&|c| 0.5 + ((c + seed) % 3) as f64 * 0.4),
                beta: values(&|c| ((c * 5 + seed) % 7) as f64 / 7.0 - 0.4),
                mean: values(&|c| (c + seed) as f64 * 0.1),
                var: values(&|c| 1.0 + (c % 2) as f64 * 0.5),
            }
        }

        fn layer(&self) -> BatchNormLayer<'_> {
            BatchNormLayer {
                gamma: self.gamma.as_tensor(),
                beta: self.beta.as_tensor(),
                running_mean: &self.mean,
                running_var: &self.var,
                options: BatchNormOptions { momentum: 0.1, ..Default::default() },
            }
        }

        fn separate(&self, x: &Tensor, mode: BatchNormMode) -> Tensor {
            let l = self.layer();
            match mode {
                BatchNormMode::Train => ops::batch_norm_train(x, l.gamma, l.beta, l.running_mean, l.running_var, &l.options),
                BatchNormMode::Eval => ops::batch_norm_eval(x, l.gamma, l.beta, l.running_mean.as_tensor(), l.running_var.as_tensor(), &l.options),
            }
            .unwrap()
        }

        fn values(&self) -> Vec<Vec<f64>> {
            [&self.gamma, &self.beta, &self.mean, &self.var].iter().map(|v| v.as_tensor().to_vec1::<f64>().unwrap()).collect()
        }
    }

    /// Output, every gradient (both inputs, both batch norms' gamma and beta) and the running
    /// statistics after the step equal, bit for bit, those of the separate fused ops it
    /// replaces: batch norm(s), candle's sum, leaky-ReLU with slope 0 (PyTorch's ReLU rule, no
    /// gradient where the sum is exactly 0), with both shortcuts, in both modes. The data
    /// include sums that are exactly 0 (the identity shortcut is `-bn(x)` there).
    #[test]
    fn equals_the_separate_ops_bit_for_bit() {
        let dev = Device::Cpu;
        let shape = (2, 3, 2, 5);
        let n = 60;
        let x: Vec<f64> = (0..n).map(|i| ((i * 37) % 23) as f64 / 4.0 - 2.75).collect();
        let s: Vec<f64> = (0..n).map(|i| ((i * 11) % 17) as f64 / 5.0 - 1.6).collect();
        let weights: Vec<f64> = (0..n).map(|i| (i % 9) as f64 - 3.5).collect();
        for normalised_shortcut in [false, true] {
            for mode in [BatchNormMode::Train, BatchNormMode::Eval] {
                let run = |fused: bool| {
                    let (main, short) = (Layer::new(3, 0), Layer::new(3, 1));
                    let vx = Var::from_vec(x.clone(), shape, &dev).unwrap();
                    let mut s = s.clone();
                    if !normalised_shortcut {
                        // Make some sums exactly 0: s = -bn(x) at every seventh element (a
                        // layer of its own computes bn(x), so `main`'s statistics stay as they are).
                        let bn = Layer::new(3, 0).separate(&vx.as_tensor().detach(), mode).flatten_all().unwrap().to_vec1::<f64>().unwrap();
                        for i in (0..n).step_by(7) {
                            s[i] = -bn[i];
                        }
                    }
                    let vs = Var::from_vec(s, shape, &dev).unwrap();
                    let y = if fused {
                        let shortcut = if normalised_shortcut { Shortcut::BatchNorm(vs.as_tensor(), short.layer()) } else { Shortcut::Identity(vs.as_tensor()) };
                        ops::batch_norm_residual_relu(vx.as_tensor(), &main.layer(), &shortcut, mode).unwrap()
                    } else {
                        let shortcut = if normalised_shortcut { short.separate(vs.as_tensor(), mode) } else { vs.as_tensor().clone() };
                        ops::leaky_relu(&(main.separate(vx.as_tensor(), mode) + shortcut).unwrap(), 0.0).unwrap()
                    };
                    let w = Tensor::from_vec(weights.clone(), shape, &dev).unwrap();
                    let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                    let grad = |t: &Tensor| grads.get(t).map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                    let mut out = vec![y.flatten_all().unwrap().to_vec1::<f64>().unwrap()];
                    out.extend([vx.as_tensor(), vs.as_tensor(), main.gamma.as_tensor(), main.beta.as_tensor()].map(|t| grad(t).unwrap()));
                    if normalised_shortcut {
                        out.extend([short.gamma.as_tensor(), short.beta.as_tensor()].map(|t| grad(t).unwrap()));
                    }
                    out.extend(main.values());
                    out.extend(short.values());
                    out
                };
                let (fused, separate) = (run(true), run(false));
                assert_eq!(fused.len(), separate.len());
                for (i, (f, s)) in fused.iter().zip(&separate).enumerate() {
                    assert_eq!(f, s, "shortcut normalised {normalised_shortcut}, {mode:?}, output/gradient/statistic {i}");
                }
                let zeros = fused[0].iter().filter(|&&v| v == 0.0).count();
                assert!(zeros > 5 && zeros < n - 5, "the ReLU clips some but not all: {zeros} of {n}");
            }
        }
    }
}
