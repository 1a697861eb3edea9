//! Max-pooling built from candle ops that every backend has, for inputs the fused CPU kernels
//! do not take (a CUDA device): candle's own `max_pool2d` cannot be used there in training, its
//! backward passes on `1 / k^2` of the gradient (see the `max_pool` module) and refuses windows
//! that overlap (ResNet's 3x3 stride 2).
//!
//! The windows are laid side by side in a new last dimension (reshapes for `k x k` windows with
//! stride `k`; strided row and column selections for overlapping ones) and reduced with `max`,
//! whose backward sends the gradient to the elements equal to the maximum: the whole of it to
//! the maximum, as PyTorch does (where two elements of a window tie exactly, each gets it).

use candle_core::{DType, Result, Tensor, D};

/// `k x k` windows with stride `k`; `H` and `W` multiples of `k`.
pub(crate) fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % k != 0 || w % k != 0 {
        candle_core::bail!("max_pool2d: {h}x{w} does not split into {k}x{k} windows");
    }
    let (ho, wo) = (h / k, w / k);
    x.reshape((n, c, ho, k, wo, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((n, c, ho, wo, k * k))?
        .max(D::Minus1)
}

/// `kernel x kernel` windows every `stride` pixels over the input padded by `padding` on each
/// side, with PyTorch's output size `(H + 2p - kernel) / stride + 1`; the padding never wins.
pub(crate) fn max_pool2d_window(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if stride == 0 || h + 2 * padding < kernel || w + 2 * padding < kernel {
        candle_core::bail!("max_pool2d_window: kernel {kernel}, stride {stride}, padding {padding} on {h}x{w}");
    }
    let x = pad_lowest(&pad_lowest(x, 2, padding)?, 3, padding)?;
    let (ho, wo) = ((h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1);
    let device = x.device();
    let every = |first: usize, count: usize| Tensor::from_vec((0..count).map(|i| (first + i * stride) as u32).collect::<Vec<_>>(), count, device);
    let mut taps = Vec::with_capacity(kernel * kernel);
    for i in 0..kernel {
        let rows = x.index_select(&every(i, ho)?, 2)?;
        for j in 0..kernel {
            taps.push(rows.index_select(&every(j, wo)?, 3)?);
        }
    }
    Tensor::stack(&taps, 4)?.max(D::Minus1)
}

/// `x` with `padding` elements of the dtype's lowest value added on both sides of `dim`.
fn pad_lowest(x: &Tensor, dim: usize, padding: usize) -> Result<Tensor> {
    if padding == 0 {
        return Ok(x.clone());
    }
    let mut shape = x.dims().to_vec();
    shape[dim] = padding;
    let lowest = match x.dtype() {
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    };
    let pad = Tensor::full(lowest, shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&pad, x, &pad], dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: usize) -> Vec<f64> {
        // Distinct values (no ties), so that every gradient rule agrees on where it goes.
        (0..n).map(|i| ((i * 7919 + seed * 104729) % 1009) as f64 / 97.0 - 5.0).collect()
    }

    /// Forward and gradient equal the fused kernels' (themselves checked by hand and by finite
    /// differences), for the 2x2 pool of cnn-small and ResNet's overlapping 3x3 stride 2 pad 1.
    #[test]
    fn pools_and_their_gradients_match_the_fused_kernels() {
        let dev = Device::Cpu;
        for (shape, window) in [((2, 3, 6, 8), None), ((2, 3, 7, 9), Some((3, 2, 1))), ((1, 2, 8, 8), Some((3, 2, 1)))] {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let x = Var::from_vec(values(n, 1), shape, &dev).unwrap();
            let pool = |any_device: bool| {
                let y = match (window, any_device) {
                    (None, true) => max_pool2d(x.as_tensor(), 2),
                    (None, false) => crate::ops::max_pool2d(x.as_tensor(), 2),
                    (Some((k, s, p)), true) => max_pool2d_window(x.as_tensor(), k, s, p),
                    (Some((k, s, p)), false) => crate::ops::max_pool2d_window(x.as_tensor(), k, s, p),
                }
                .unwrap();
                let weights = Tensor::from_vec(values(y.elem_count(), 2), y.dims(), &dev).unwrap();
                let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
                let dx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
                (y.dims().to_vec(), y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), dx)
            };
            let (a, b) = (pool(true), pool(false));
            assert_eq!((&a.0, &a.1), (&b.0, &b.1), "{shape:?} {window:?}: forward");
            // An element that is the maximum of two overlapping windows sums two gradients, in
            // another order here: equal to the last bits.
            for (i, (p, q)) in a.2.iter().zip(&b.2).enumerate() {
                assert!((p - q).abs() <= 1e-12 * q.abs().max(1.0), "{shape:?} {window:?}: gradient {i}: {p} vs {q}");
            }
            assert!(a.2.iter().filter(|&&g| g != 0.0).count() >= a.1.len() / 2, "the gradient reaches the maxima");
        }
    }

    #[test]
    fn odd_sizes_are_refused() {
        let x = Tensor::zeros((1, 1, 5, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, 2).is_err());
        assert!(max_pool2d_window(&x, 3, 0, 1).is_err());
    }
}
