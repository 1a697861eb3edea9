//! Batch normalisation over the channel axis (dim 1) of `N x C x ...` tensors, optionally
//! fused with the leaky-ReLU that follows it in Wide-ResNet.
//!
//! Per channel `c`, over its `M = N * H * W` values:
//!
//! - training: `mean`, biased `var` of the batch; `xhat = (x - mean) / sqrt(var + eps)`;
//!   `z = gamma * xhat + beta`; `y = z` or `leaky_relu(z)`.
//! - backward (with `dz = dy`, or `dy * (z > 0 ? 1 : slope)` after leaky-ReLU):
//!   `dbeta = Σ dz`, `dgamma = Σ dz·xhat`, and
//!   `dx = gamma / sqrt(var + eps) * (dz - dbeta / M - xhat * dgamma / M)`;
//!   in inference mode the statistics are constants and `dx = gamma / sqrt(var + eps) * dz`.
//!
//! Stock candle spells this as a chain of a dozen broadcast element-wise ops, each with its
//! own allocation and, in backward, its own pass and gradient buffer. Here the forward pass
//! is one read for the statistics and one read + write for the output, the backward pass one
//! read of (x, dy) for the two sums and one read + write for `dx`; the statistics are summed
//! in f64 so f32 training loses nothing to cancellation. The pre-activation `z` is never
//! stored: backward recomputes it from `x` with the same f32 arithmetic as forward, so the
//! leaky-ReLU mask is bit-identical.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::{contiguous_slice, Element};
use super::scratch::output_with;
use super::threads;

/// Sizes of a batch-norm operand: `batch x channels x spatial` (spatial = product of the
/// dims after the channel dim, 1 for `N x C` inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelGeometry {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl ChannelGeometry {
    pub(crate) fn new(dims: &[usize]) -> Result<Self> {
        let [batch, channels, rest @ ..] = dims else {
            bail!("protocon batch norm: want at least 2 dims (N, C, ...), got {dims:?}")
        };
        let spatial = rest.iter().product();
        if *batch == 0 || *channels == 0 || spatial == 0 {
            bail!("protocon batch norm: empty input {dims:?}")
        }
        Ok(Self {
            batch: *batch,
            channels: *channels,
            spatial,
        })
    }

    /// Values per channel.
    pub(crate) fn count(&self) -> usize {
        self.batch * self.spatial
    }

    fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    /// The `batch` contiguous planes of channel `c`.
    fn planes<'a, T>(&self, x: &'a [T], c: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (channels, spatial) = (self.channels, self.spatial);
        (0..self.batch).map(move |n| &x[(n * channels + c) * spatial..][..spatial])
    }
}

/// Per-channel mean and biased variance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChannelStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

impl ChannelStats {
    pub(crate) fn inv_std(&self, eps: f64) -> Vec<f64> {
        self.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
    }
}

/// Independent partial sums, so the compiler can keep them in vector lanes.
const LANES: usize = 8;

/// Elements summed in `T` before the partial sums move to f64: few enough (32 per lane)
/// that f32 rounding stays near 1e-6 relative, many enough that the inner loop runs in
/// vector registers.
const BLOCK: usize = 256;

/// `(Σ f(a_i, b_i).0, Σ f(a_i, b_i).1)`, in f64 across blocks.
///
/// Each block is first mapped into two small buffers by a plain loop, then summed lane-wise:
/// fused into one loop, LLVM turned the activation's select into per-lane branches (an
/// 8x slower loop on random signs); split, the map vectorises with blends.
#[inline(always)]
fn pair_sums<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (f64, f64) {
    let (mut p, mut q) = ([T::zero(); BLOCK], [T::zero(); BLOCK]);
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for (a, b) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let (p, q) = (&mut p[..a.len()], &mut q[..a.len()]);
        for ((p, q), (&a, &b)) in p.iter_mut().zip(q.iter_mut()).zip(a.iter().zip(b)) {
            (*p, *q) = f(a, b);
        }
        t1 += lane_sum(p);
        t2 += lane_sum(q);
    }
    (t1, t2)
}

/// `Σ values` with `LANES` independent partial sums in `T`.
#[inline(always)]
fn lane_sum<T: Element>(values: &[T]) -> f64 {
    let mut sums = [T::zero(); LANES];
    let mut lanes = values.chunks_exact(LANES);
    for chunk in &mut lanes {
        let chunk: &[T; LANES] = chunk.try_into().unwrap();
        for lane in 0..LANES {
            sums[lane] += chunk[lane];
        }
    }
    let tail: f64 = lanes.remainder().iter().map(|v| v.to_f64()).sum();
    sums.iter().map(|v| v.to_f64()).sum::<f64>() + tail
}

/// Batch mean and biased variance of every channel.
///
/// One pass: sums of values shifted by the channel's first value, which keeps
/// `E[d²] - E[d]²` free of cancellation when the mean is large against the spread.
pub(crate) fn batch_stats<T: Element>(g: &ChannelGeometry, x: &[T]) -> ChannelStats {
    let m = g.count() as f64;
    let per_channel: Vec<(f64, f64)> = threads::run(|| {
        (0..g.channels)
            .into_par_iter()
            .map(|c| {
                let shift = x[c * g.spatial];
                let (s1, s2) = g.planes(x, c).fold((0.0, 0.0), |(a1, a2), plane| {
                    let (p1, p2) = pair_sums(plane, plane, |v, _| {
                        let d = v - shift;
                        (d, d * d)
                    });
                    (a1 + p1, a2 + p2)
                });
                let mean_d = s1 / m;
                (shift.to_f64() + mean_d, (s2 / m - mean_d * mean_d).max(0.0))
            })
            .collect()
    });
    let (mean, var) = per_channel.into_iter().unzip();
    ChannelStats { mean, var }
}

/// Per-channel constants of the forward map and of the recomputation of `z` in backward.
#[derive(Clone, Copy)]
pub(crate) struct Affine<T> {
    mean: T,
    /// `gamma / sqrt(var + eps)`.
    scale: T,
    beta: T,
}

impl<T: Element> Affine<T> {
    pub(crate) fn per_channel(
        stats: &ChannelStats,
        inv_std: &[f64],
        gamma: &[f64],
        beta: &[f64],
    ) -> Vec<Self> {
        (0..stats.mean.len())
            .map(|c| Affine {
                mean: T::from_f64(stats.mean[c]),
                scale: T::from_f64(gamma[c] * inv_std[c]),
                beta: T::from_f64(beta[c]),
            })
            .collect()
    }

    /// The pre-activation; `(x - mean)` first, so f32 keeps the precision of the centred value.
    #[inline(always)]
    pub(crate) fn z(&self, x: T) -> T {
        (x - self.mean) * self.scale + self.beta
    }
}

/// The activation as the factor it multiplies by: `1` for `z > 0`, else the leaky-ReLU slope
/// (`1` without activation). A multiply by a selected factor, not a branch, so the loops
/// vectorise; `z * 1` is exact.
#[derive(Clone, Copy)]
struct Activation<T> {
    negative_factor: T,
}

impl<T: Element> Activation<T> {
    fn new(slope: Option<f64>) -> Self {
        Self {
            negative_factor: T::from_f64(slope.unwrap_or(1.0)),
        }
    }

    #[inline(always)]
    fn factor(self, z: T) -> T {
        if z > T::zero() {
            T::one()
        } else {
            self.negative_factor
        }
    }
}

/// `y = act(gamma * (x - mean) / sqrt(var + eps) + beta)` for every element.
pub(crate) fn normalise<T: Element>(
    g: &ChannelGeometry,
    x: &[T],
    affine: &[Affine<T>],
    slope: Option<f64>,
) -> Result<Vec<T>> {
    let act = Activation::<T>::new(slope);
    // SAFETY: the planes cover the output and every element of each is written.
    unsafe {
        output_with(g.len(), |y| {
            threads::run(|| {
                y.par_chunks_mut(g.spatial)
                    .zip(x.par_chunks(g.spatial))
                    .enumerate()
                    .for_each(|(plane, (y, x))| {
                        let a = affine[plane % g.channels];
                        write_map(y, x, |v| {
                            let z = a.z(v);
                            z * act.factor(z)
                        })
                    })
            });
            Ok(())
        })
    }
}

#[inline(always)]
fn write_map<T: Copy>(out: &mut [MaybeUninit<T>], input: &[T], f: impl Fn(T) -> T) {
    for (o, &v) in out.iter_mut().zip(input) {
        o.write(f(v));
    }
}

/// What backward needs from forward, per channel.
#[derive(Clone, Debug)]
pub(crate) struct Saved {
    pub stats: ChannelStats,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
}

/// The gradients of [`normalise`], packed: `dx` (`N*C*spatial`), `dgamma` (`C`), `dbeta` (`C`).
fn backward<T: Element>(
    g: &ChannelGeometry,
    x: &[T],
    dy: &[T],
    saved: &Saved,
    eps: f64,
    slope: Option<f64>,
    batch_statistics: bool,
) -> Result<Vec<T>> {
    let inv_std = saved.stats.inv_std(eps);
    let affine = Affine::<T>::per_channel(&saved.stats, &inv_std, &saved.gamma, &saved.beta);
    let act = Activation::<T>::new(slope);
    // Pass 1, per channel: Σ dz and Σ dz·(x - mean), where dz, the gradient reaching the
    // normalisation, is dy through the activation.
    let sums: Vec<(f64, f64)> = threads::run(|| {
        (0..g.channels)
            .into_par_iter()
            .map(|c| {
                let a = affine[c];
                g.planes(x, c)
                    .zip(g.planes(dy, c))
                    .fold((0.0, 0.0), |(t1, t2), (xp, dyp)| {
                        let (p1, p2) = pair_sums(xp, dyp, |xv, dv| {
                            let dz = dv * act.factor(a.z(xv));
                            (dz, dz * (xv - a.mean))
                        });
                        (t1 + p1, t2 + p2)
                    })
            })
            .collect()
    });
    let m = g.count() as f64;
    // dx = a*dz - a*mean(dz) - k*(x - mean), with a = gamma*inv_std and
    // k = a*inv_std*mean(dz*(x-mean))*inv_std; the last two terms vanish in inference mode.
    let coefficients: Vec<(T, T, T)> = (0..g.channels)
        .map(|c| {
            let a = saved.gamma[c] * inv_std[c];
            let (s_dz, s_dzx) = sums[c];
            if batch_statistics {
                let k = a * inv_std[c] * inv_std[c] * s_dzx / m;
                (T::from_f64(a), T::from_f64(a * s_dz / m), T::from_f64(k))
            } else {
                (T::from_f64(a), T::zero(), T::zero())
            }
        })
        .collect();
    // SAFETY: dx's planes, then dgamma and dbeta, are all written below.
    unsafe {
        output_with(g.len() + 2 * g.channels, |out| {
            let (dx, params) = out.split_at_mut(g.len());
            let (dgamma, dbeta) = params.split_at_mut(g.channels);
            for c in 0..g.channels {
                let (s_dz, s_dzx) = sums[c];
                dgamma[c].write(T::from_f64(s_dzx * inv_std[c]));
                dbeta[c].write(T::from_f64(s_dz));
            }
            threads::run(|| {
                dx.par_chunks_mut(g.spatial)
                    .zip(x.par_chunks(g.spatial).zip(dy.par_chunks(g.spatial)))
                    .enumerate()
                    .for_each(|(plane, (dx, (x, dy)))| {
                        let c = plane % g.channels;
                        let (a, a_mean_dz, k) = coefficients[c];
                        let af = affine[c];
                        for ((o, &xv), &dv) in dx.iter_mut().zip(x).zip(dy) {
                            let dz = dv * act.factor(af.z(xv));
                            o.write(a * dz - a_mean_dz - k * (xv - af.mean));
                        }
                    })
            });
            Ok(())
        })
    }
}

/// Where the normalising statistics come from.
#[derive(Clone, Debug)]
pub(crate) enum Statistics {
    /// Training: the statistics of the batch itself, which backward differentiates through.
    Batch,
    /// Inference: running statistics, constants for backward.
    Running(ChannelStats),
}

impl Statistics {
    /// The statistics to normalise `x` with (computed here for [`Statistics::Batch`]), with
    /// the layer's parameters in f64: what backward needs.
    pub(crate) fn saved<T: Element>(&self, g: &ChannelGeometry, x: &[T], gamma: &[T], beta: &[T]) -> Result<Saved> {
        let stats = match self {
            Statistics::Batch => {
                if g.count() < 2 {
                    bail!("protocon batch norm: training needs more than one value per channel")
                }
                batch_stats(g, x)
            }
            Statistics::Running(stats) => {
                if stats.mean.len() != g.channels || stats.var.len() != g.channels {
                    bail!("protocon batch norm: running statistics do not have {} channels", g.channels)
                }
                stats.clone()
            }
        };
        Ok(Saved {
            stats,
            gamma: gamma.iter().map(|v| v.to_f64()).collect(),
            beta: beta.iter().map(|v| v.to_f64()).collect(),
        })
    }
}

/// Batch norm (with optional fused leaky-ReLU) as a candle custom op on (x, gamma, beta).
///
/// In training mode the batch statistics are left in `saved` for the caller (who updates the
/// running statistics from them) and for backward.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    pub statistics: Statistics,
    pub eps: f64,
    pub slope: Option<f64>,
    pub saved: Arc<Mutex<Option<Saved>>>,
}

impl BatchNorm {
    fn saved(&self) -> Result<Saved> {
        let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        match saved.as_ref() {
            Some(saved) => Ok(saved.clone()),
            None => bail!("protocon batch norm: backward before forward"),
        }
    }

    fn forward<T: Element>(
        &self,
        g: &ChannelGeometry,
        x: &[T],
        gamma: &[T],
        beta: &[T],
    ) -> Result<Vec<T>> {
        let saved = self.statistics.saved(g, x, gamma, beta)?;
        let inv_std = saved.stats.inv_std(self.eps);
        let affine = Affine::per_channel(&saved.stats, &inv_std, &saved.gamma, &saved.beta);
        let y = normalise(g, x, &affine, self.slope)?;
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        Ok(y)
    }
}

fn check_params(g: &ChannelGeometry, gamma: &Layout, beta: &Layout) -> Result<()> {
    if gamma.shape().elem_count() != g.channels || beta.shape().elem_count() != g.channels {
        bail!(
            "protocon batch norm: {} channels, gamma {:?}, beta {:?}",
            g.channels,
            gamma.shape(),
            beta.shape()
        )
    }
    Ok(())
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "protocon-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ChannelGeometry::new(xl.dims())?;
        check_params(&g, gl, bl)?;
        let y = match (xs, gs, bs) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.forward(
                    &g,
                    contiguous_slice(xs, xl, "batch norm input")?,
                    contiguous_slice(gs, gl, "batch norm gamma")?,
                    contiguous_slice(bs, bl, "batch norm beta")?,
                )?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.forward(
                    &g,
                    contiguous_slice(xs, xl, "batch norm input")?,
                    contiguous_slice(gs, gl, "batch norm gamma")?,
                    contiguous_slice(bs, bl, "batch norm beta")?,
                )?)
            }
            _ => bail!(
                "protocon batch norm: f32 or f64 operands of one dtype, got {:?}, {:?}, {:?}",
                xs.dtype(),
                gs.dtype(),
                bs.dtype()
            ),
        };
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BatchNormBackward {
            saved: self.saved()?,
            eps: self.eps,
            slope: self.slope,
            batch_statistics: matches!(self.statistics, Statistics::Batch),
        };
        let packed = x.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &op)?;
        let (n, c) = (x.elem_count(), gamma.elem_count());
        // Views into the one packed buffer: no copy.
        let dx = x
            .track_op()
            .then(|| packed.narrow(0, 0, n)?.reshape(x.shape()))
            .transpose()?;
        let dgamma = gamma
            .track_op()
            .then(|| packed.narrow(0, n, c)?.reshape(gamma.shape()))
            .transpose()?;
        let dbeta = beta
            .track_op()
            .then(|| packed.narrow(0, n + c, c)?.reshape(beta.shape()))
            .transpose()?;
        Ok((dx, dgamma, dbeta))
    }
}

/// The gradients of [`BatchNorm`] as one custom op on (x, dy).
#[derive(Debug)]
pub(crate) struct BatchNormBackward {
    pub saved: Saved,
    pub eps: f64,
    pub slope: Option<f64>,
    pub batch_statistics: bool,
}

impl CustomOp2 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "protocon-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ChannelGeometry::new(xl.dims())?;
        if xl.shape() != dyl.shape() {
            bail!(
                "protocon batch norm: gradient {:?} for input {:?}",
                dyl.shape(),
                xl.shape()
            )
        }
        let (eps, slope, batch) = (self.eps, self.slope, self.batch_statistics);
        let packed = match (xs, dys) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(backward::<f32>(
                &g,
                contiguous_slice(xs, xl, "batch norm input")?,
                contiguous_slice(dys, dyl, "batch norm output gradient")?,
                &self.saved,
                eps,
                slope,
                batch,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(backward::<f64>(
                &g,
                contiguous_slice(xs, xl, "batch norm input")?,
                contiguous_slice(dys, dyl, "batch norm output gradient")?,
                &self.saved,
                eps,
                slope,
                batch,
            )?),
            _ => bail!(
                "protocon batch norm: f32 or f64 operands of one dtype, got {:?} and {:?}",
                xs.dtype(),
                dys.dtype()
            ),
        };
        Ok((packed, Shape::from(g.len() + 2 * g.channels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shifted one-pass statistics against the two-pass textbook formula in f64, on data
    /// whose mean is large against its spread: f32 partial sums keep the variance to f32
    /// rounding (1e-7 here), where a naive E[x²] - E[x]² in f32 would lose it entirely
    /// (1000² against a variance of about 1.5).
    #[test]
    fn batch_stats_match_two_pass_formula() {
        let g = ChannelGeometry::new(&[3, 2, 5, 7]).unwrap();
        let x: Vec<f32> = (0..g.len())
            .map(|i| {
                1000.0
                    + ((i * 7919 % 211) as f32) / 50.0
                    + if (i / 35) % 2 == 1 { 5.0 } else { 0.0 }
            })
            .collect();
        let stats = batch_stats(&g, &x);
        for c in 0..2 {
            let values: Vec<f64> = g.planes(&x, c).flatten().map(|&v| f64::from(v)).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            assert!((stats.mean[c] - mean).abs() < 1e-9 * mean, "mean {c}");
            assert!(
                (stats.var[c] - var).abs() < 1e-6 * var,
                "var {c}: {} vs {var}",
                stats.var[c]
            );
        }
    }
}
