//! 2-D convolution (NCHW, groups 1, dilation 1) and both of its gradients, on GEMM.
//!
//! With `col` the im2col matrix of one image (`C*kh*kw` rows, `Ho*Wo` columns), the three
//! products a training step needs are, per image `n`:
//!
//! - forward: `Y_n = W · col_n` (`W` viewed as `K x C*kh*kw`);
//! - weight gradient: `dW += dY_n · col_nᵀ`;
//! - input gradient: `dcol = Wᵀ · dY_n`, then col2im scatters `dcol` back onto `dX_n`; for a
//!   stride-1 convolution with "same" padding (every 3x3 layer of the models here) it is
//!   instead the forward convolution of `dY` with the flipped, channel-transposed weights,
//!   which writes each `dX` element once (no scatter, no zero-filled target).
//!
//! Stock candle computes the input gradient with a direct transposed-convolution loop and
//! builds the columns of the whole batch at once; that loop and the gathering were half of a
//! WRN training step. Here every product is a `gemm` call (transposes are strides, never
//! copies); columns are built for one band of output rows of one image at a time, into a
//! reused per-thread buffer small enough to stay in L2 between im2col and the GEMM that reads
//! it (the same buffer then receives `dcol`); a 1x1 stride-1 unpadded convolution uses the
//! image itself as its column matrix; and the images of a batch are spread over the threads
//! (see [`super::threads`]).
//!
//! 3x3 stride-1 convolutions with padding 1 (forward, input gradient, weight gradient) go to
//! [`super::winograd`] instead, unless `ops::set_winograd(false)`.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::{contiguous_slice, Element};
use super::scratch::{fill_init, output_with, uninit_ptr, with_scratch};
use super::threads::{self, BatchSplit};
use super::winograd;

/// Sizes of one convolution: input `N x C x H x W`, weight `K x C x kh x kw`, output
/// `N x K x Ho x Wo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    /// Checks the operand shapes and derives the output size, as PyTorch does:
    /// `Ho = (H + 2p - kh) / s + 1`.
    pub(crate) fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let (&[batch, in_channels, height, width], &[out_channels, w_channels, kernel_h, kernel_w]) =
            (x, w)
        else {
            bail!("protocon conv2d: want a 4-d input and weight, got {x:?} and {w:?}")
        };
        if w_channels != in_channels {
            bail!("protocon conv2d: input has {in_channels} channels, weight expects {w_channels}")
        }
        if stride == 0 {
            bail!("protocon conv2d: stride must be at least 1")
        }
        if [
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel_h,
            kernel_w,
        ]
        .contains(&0)
        {
            bail!("protocon conv2d: empty operand, input {x:?}, weight {w:?}")
        }
        if height + 2 * padding < kernel_h || width + 2 * padding < kernel_w {
            bail!("protocon conv2d: kernel {kernel_h}x{kernel_w} larger than padded input {x:?}")
        }
        Ok(Self {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel_h,
            kernel_w,
            stride,
            padding,
            out_h: (height + 2 * padding - kernel_h) / stride + 1,
            out_w: (width + 2 * padding - kernel_w) / stride + 1,
        })
    }

    pub(crate) fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.out_channels, self.out_h, self.out_w))
    }

    fn input_image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    fn output_image_len(&self) -> usize {
        self.out_channels * self.out_h * self.out_w
    }

    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Columns of the column matrix: one per output pixel.
    fn col_cols(&self) -> usize {
        self.out_h * self.out_w
    }

    pub(crate) fn weight_len(&self) -> usize {
        self.out_channels * self.col_rows()
    }

    /// A 1x1 kernel with stride 1 and no padding: the image, read as a `C x H*W` matrix, is
    /// already its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }

    /// For a stride-1 convolution with "same" padding (`2p + 1 = kh = kw`, the 3x3 layers of
    /// every model here), the input gradient is itself such a convolution: of `dy` with the
    /// weights transposed over channels and flipped in space (see [`flipped_transposed`]).
    /// Returns that convolution's geometry, or `None` when the shortcut does not apply (and
    /// for pointwise kernels, whose input gradient is one GEMM already).
    fn input_gradient_as_convolution(&self) -> Option<ConvGeometry> {
        let same = self.stride == 1
            && self.kernel_h == self.kernel_w
            && 2 * self.padding + 1 == self.kernel_h
            && !self.is_pointwise();
        same.then_some(ConvGeometry {
            in_channels: self.out_channels,
            out_channels: self.in_channels,
            ..*self
        })
    }

    /// Output columns `lo..hi` whose input column `ow*s + kj - p` lies inside the image;
    /// the others read padding.
    fn valid_out_cols(&self, kj: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        let lo = if kj >= p { 0 } else { (p - kj).div_ceil(s) };
        let hi = if self.width + p <= kj {
            0
        } else {
            (self.width - 1 + p - kj) / s + 1
        };
        let hi = hi.min(self.out_w);
        (lo.min(hi), hi)
    }

    /// The input row read by output row `oh` at kernel row `ki`, or `None` for padding.
    fn input_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.stride + ki)
            .checked_sub(self.padding)
            .filter(|&ih| ih < self.height)
    }
}

/// Elements of the column matrix of one band of output rows: 96K (384 KB in f32), so that
/// the GEMM reading it finds what im2col just wrote in L2. Building the column matrix of a
/// whole 32x32 image (1.2 MB for 32 channels) sent it through L3 and cost a quarter of the
/// time of a WRN-28-2 convolution, forward and backward (measured with 24K to 96K: alike).
const BAND_ELEMENTS: usize = 96 * 1024;

impl ConvGeometry {
    /// Consecutive bands of output rows covering the output, each at least one row.
    fn bands(&self) -> impl Iterator<Item = Range<usize>> {
        let per_row = self.col_rows() * self.out_w;
        let rows = (BAND_ELEMENTS / per_row).clamp(1, self.out_h);
        let out_h = self.out_h;
        (0..out_h)
            .step_by(rows)
            .map(move |first| first..(first + rows).min(out_h))
    }

    /// Column-matrix elements of the largest band.
    fn band_len(&self) -> usize {
        self.bands().map(|band| band.len()).max().unwrap_or(0) * self.out_w * self.col_rows()
    }
}

/// Writes the columns of output rows `band` of one image (`x`: `C x H x W`) into `col`
/// (`C*kh*kw` rows of `band.len() * Wo` columns, row-major), padding with zeros.
fn im2col<T: Element>(g: &ConvGeometry, x: &[T], band: Range<usize>, col: &mut [T]) {
    let (plane_len, cols) = (g.height * g.width, band.len() * g.out_w);
    let mut rows = col.chunks_exact_mut(cols);
    for plane in x.chunks_exact(plane_len) {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = rows.next().expect("column matrix has C*kh*kw rows");
                if g.stride == 1 && g.out_w == g.width {
                    shifted_plane(g, plane, band.clone(), row, ki, kj);
                    continue;
                }
                let (lo, hi) = g.valid_out_cols(kj);
                for (oh, out) in band.clone().zip(row.chunks_exact_mut(g.out_w)) {
                    let Some(ih) = g.input_row(oh, ki) else {
                        out.fill(T::zero());
                        continue;
                    };
                    let src = &plane[ih * g.width..][..g.width];
                    out[..lo].fill(T::zero());
                    out[hi..].fill(T::zero());
                    let first = lo * g.stride + kj - g.padding;
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        for (o, &v) in out[lo..hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(g.stride))
                        {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// One row of the column matrix when stride is 1 and the output is as wide as the input
/// ("same" padding, the 3x3 convolutions of Wide-ResNet): the row is the input plane shifted
/// by `(ki - p, kj - p)`, so all of its in-image rows are one contiguous copy, after which
/// the `|kj - p|` columns that wrapped around from the neighbouring image row are zeroed.
/// Copying row by row instead spends most of its time in `memcpy` calls of 8 to 32 floats.
fn shifted_plane<T: Element>(
    g: &ConvGeometry,
    plane: &[T],
    band: Range<usize>,
    row: &mut [T],
    ki: usize,
    kj: usize,
) {
    let w = g.width;
    // Output rows reading inside the image: oh + ki - p in [0, H).
    let first = g.padding.saturating_sub(ki).clamp(band.start, band.end);
    let last = (g.height + g.padding)
        .saturating_sub(ki)
        .clamp(first, band.end);
    let (first_local, last_local) = (first - band.start, last - band.start);
    row[..first_local * w].fill(T::zero());
    row[last_local * w..].fill(T::zero());
    let block = &mut row[first_local * w..last_local * w];
    if block.is_empty() {
        return;
    }
    let base = (first + ki - g.padding) * w;
    let len = block.len();
    if kj >= g.padding {
        let shift = kj - g.padding;
        block[..len - shift].copy_from_slice(&plane[base + shift..base + len]);
        for image_row in block.chunks_exact_mut(w) {
            zero_few(&mut image_row[w - shift..]);
        }
    } else {
        let shift = g.padding - kj;
        block[shift..].copy_from_slice(&plane[base..base + len - shift]);
        for image_row in block.chunks_exact_mut(w) {
            zero_few(&mut image_row[..shift]);
        }
    }
}

/// Zeroes the one or two elements that a 3x3 or 5x5 kernel's shift wraps into each image
/// row. `fill` compiles to a `memset` call per row, which cost more than the copies around it.
#[inline(always)]
fn zero_few<T: Element>(elements: &mut [T]) {
    match elements {
        [a] => *a = T::zero(),
        [a, b] => (*a, *b) = (T::zero(), T::zero()),
        more => more.fill(T::zero()),
    }
}

/// Adds the column-matrix gradient of output rows `band` onto the image gradient `dx`
/// (the adjoint of [`im2col`]).
fn col2im<T: Element>(g: &ConvGeometry, dcol: &[T], band: Range<usize>, dx: &mut [T]) {
    let (plane_len, cols) = (g.height * g.width, band.len() * g.out_w);
    let mut rows = dcol.chunks_exact(cols);
    for plane in dx.chunks_exact_mut(plane_len) {
        for ki in 0..g.kernel_h {
            for kj in 0..g.kernel_w {
                let row = rows.next().expect("column matrix has C*kh*kw rows");
                let (lo, hi) = g.valid_out_cols(kj);
                for (oh, src) in band.clone().zip(row.chunks_exact(g.out_w)) {
                    let Some(ih) = g.input_row(oh, ki) else {
                        continue;
                    };
                    let dst = &mut plane[ih * g.width..][..g.width];
                    let first = lo * g.stride + kj - g.padding;
                    if g.stride == 1 {
                        for (d, &v) in dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[first..].iter_mut().step_by(g.stride).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// A read-only GEMM operand: base pointer and strides, so that a transpose is only a swap of
/// strides.
#[derive(Clone, Copy)]
pub(crate) struct Operand<T> {
    ptr: *const T,
    row_stride: isize,
    col_stride: isize,
}

impl<T> Operand<T> {
    /// `data` as a row-major matrix with `cols` columns.
    pub(crate) fn row_major(data: &[T], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// Rows starting `row_stride` elements apart in `data` (a band of columns of a wider
    /// row-major matrix).
    fn strided(data: &[T], row_stride: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: row_stride as isize,
            col_stride: 1,
        }
    }

    /// The transpose of `data` read as a row-major matrix with `cols` columns.
    pub(crate) fn transposed(data: &[T], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: 1,
            col_stride: cols as isize,
        }
    }
}

/// `dst = lhs · rhs` (`m x k` times `k x n`), or `dst += lhs · rhs` when `accumulate`;
/// `dst` is `(pointer, row stride)` with unit column stride.
///
/// # Safety
/// `dst` must be valid for the `m x n` elements it addresses (writes, and reads when
/// `accumulate`), and the operands for the `m x k` and `k x n` elements their strides address.
pub(crate) unsafe fn matmul<T: Element>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_row_stride): (*mut T, usize),
    accumulate: bool,
    lhs: Operand<T>,
    rhs: Operand<T>,
    parallelism: gemm::Parallelism,
) {
    // gemm computes dst = alpha * dst + beta * lhs * rhs, reading dst only if asked to.
    let alpha = if accumulate { T::one() } else { T::zero() };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            alpha,
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The convolution of a batch; `x` is `N x C x H x W`, `w` is `K x C x kh x kw`, both
/// contiguous; returns `N x K x Ho x Wo`.
pub(crate) fn forward<T: Element>(g: &ConvGeometry, x: &[T], w: &[T]) -> Result<Vec<T>> {
    // SAFETY: `forward_into` writes every element of the output.
    unsafe {
        output_with(g.batch * g.output_image_len(), |y| {
            forward_into(g, x, w, y);
            Ok(())
        })
    }
}

/// [`forward`] into `y` (`N x K x Ho x Wo`), writing every element: by Winograd's
/// algorithm where it applies (see [`winograd`]), else through im2col.
fn forward_into<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], y: &mut [MaybeUninit<T>]) {
    if winograd::applies(g) {
        return winograd::forward_into(g, x, w, y);
    }
    let split = BatchSplit::new(g.batch);
    let (in_len, out_len) = (g.input_image_len(), g.output_image_len());
    let forward_image = |x_n: &[T], y_n: &mut [MaybeUninit<T>]| {
        let (k, rows, cols) = (g.out_channels, g.col_rows(), g.col_cols());
        let weights = Operand::row_major(w, rows);
        let y_n = uninit_ptr(y_n);
        if g.is_pointwise() {
            let image = Operand::row_major(x_n, cols);
            // SAFETY: y_n holds K*Ho*Wo elements, w K*C, x_n C*H*W = C*Ho*Wo.
            unsafe {
                matmul(
                    (k, cols, rows),
                    (y_n, cols),
                    false,
                    weights,
                    image,
                    split.gemm,
                )
            }
            return;
        }
        with_scratch(g.band_len(), |col: &mut [T]| {
            for band in g.bands() {
                let band_cols = band.len() * g.out_w;
                let col = &mut col[..rows * band_cols];
                im2col(g, x_n, band.clone(), col);
                let col = Operand::row_major(col, band_cols);
                // SAFETY: the band's output columns start at band.start * Wo in y_n (K x Ho*Wo);
                // w holds K*rows elements, col rows*band_cols.
                unsafe {
                    let y_band = y_n.add(band.start * g.out_w);
                    matmul(
                        (k, band_cols, rows),
                        (y_band, cols),
                        false,
                        weights,
                        col,
                        split.gemm,
                    )
                }
            }
        })
    };
    // The chunks cover the output, and each image's GEMM writes all of its chunk.
    threads::run(|| {
        y.par_chunks_mut(split.images_per_task * out_len)
            .zip(x.par_chunks(split.images_per_task * in_len))
            .for_each(|(y_task, x_task)| {
                for (y_n, x_n) in y_task.chunks_mut(out_len).zip(x_task.chunks(in_len)) {
                    forward_image(x_n, y_n);
                }
            })
    });
}

/// Which gradients the backward pass computes: the input gradient of a network's first
/// layer, whose input is data, is never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub input: bool,
    pub weight: bool,
}

/// Both gradients of the convolution, packed in one buffer: `dx` (`N*C*H*W`, when wanted)
/// followed by `dw` (`K*C*kh*kw`, when wanted).
pub(crate) fn backward<T: Element>(
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    wanted: Wanted,
) -> Result<Vec<T>> {
    let split = BatchSplit::new(g.batch);
    let (in_len, out_len) = (g.input_image_len(), g.output_image_len());
    let dx_len = if wanted.input { g.batch * in_len } else { 0 };
    let dw_len = if wanted.weight { g.weight_len() } else { 0 };
    let dx_by_convolution = g.input_gradient_as_convolution().filter(|_| wanted.input);
    // SAFETY: dx is written whole by the transposed convolution or by the tasks (each its
    // chunk); the partial weight gradients are summed into all of dw.
    unsafe {
        output_with(dx_len + dw_len, |out| {
            let (dx, dw) = out.split_at_mut(dx_len);
            if let Some(transposed) = dx_by_convolution {
                forward_into(&transposed, dy, &flipped_transposed(g, w), dx);
                if !wanted.weight {
                    return Ok(());
                }
            }
            // Where Winograd applies, so does the transposed convolution above.
            if wanted.weight && winograd::applies(g) {
                winograd::weight_gradient_into(g, x, dy, dw);
                return Ok(());
            }
            let dx_tasks: Vec<Option<&mut [MaybeUninit<T>]>> = if wanted.input && dx_by_convolution.is_none() {
                dx.chunks_mut(split.images_per_task * in_len)
                    .map(Some)
                    .collect()
            } else {
                (0..split.tasks).map(|_| None).collect()
            };
            let partial_dw: Vec<Vec<T>> = threads::run(|| {
                dx_tasks
                    .into_par_iter()
                    .enumerate()
                    .map(|(task, dx_task)| {
                        let first = task * split.images_per_task;
                        let last = (first + split.images_per_task).min(g.batch);
                        backward_task(
                            g,
                            &x[first * in_len..last * in_len],
                            w,
                            &dy[first * out_len..last * out_len],
                            dx_task,
                            wanted.weight,
                            split.gemm,
                        )
                    })
                    .collect()
            });
            if wanted.weight {
                sum_into(&partial_dw, dw);
            }
            Ok(())
        })
    }
}

/// The weights of the convolution that computes the input gradient (see
/// [`ConvGeometry::input_gradient_as_convolution`]): `W'[c, k, i, j] = W[k, c, kh-1-i, kw-1-j]`,
/// `C x K x kh x kw`. This replaces the `Wᵀ · dY` GEMM and the col2im scatter-add after it
/// (with its zero-filled gradient) by a forward convolution: columns gathered by copies, one
/// GEMM with the long `K*kh*kw` inner dimension, and each `dX` element written once.
fn flipped_transposed<T: Element>(g: &ConvGeometry, w: &[T]) -> Vec<T> {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let mut flipped = Vec::with_capacity(w.len());
    for c in 0..g.in_channels {
        for k in 0..g.out_channels {
            let taps = &w[(k * g.in_channels + c) * kh * kw..][..kh * kw];
            flipped.extend(taps.iter().rev());
        }
    }
    flipped
}

/// Backward pass over a run of consecutive images (at least one): writes their input
/// gradient into `dx` when given, and returns their summed weight gradient when
/// `want_weight` (else an empty vector).
fn backward_task<T: Element>(
    g: &ConvGeometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    mut dx: Option<&mut [MaybeUninit<T>]>,
    want_weight: bool,
    parallelism: gemm::Parallelism,
) -> Vec<T> {
    let (in_len, out_len) = (g.input_image_len(), g.output_image_len());
    let (k, rows, cols) = (g.out_channels, g.col_rows(), g.col_cols());
    let images = dy.len() / out_len;
    debug_assert!(images > 0 && x.len() == images * in_len);
    let mut dw: Vec<T> = Vec::with_capacity(if want_weight { k * rows } else { 0 });
    let weights_t = Operand::transposed(w, rows);
    let dw_ptr = (dw.as_mut_ptr(), rows);
    for n in 0..images {
        let x_n = &x[n * in_len..][..in_len];
        let dy_n = &dy[n * out_len..][..out_len];
        let dx_n = dx.as_deref_mut().map(|dx| &mut dx[n * in_len..][..in_len]);
        if g.is_pointwise() {
            let dy_n = Operand::row_major(dy_n, cols);
            if want_weight {
                // SAFETY: dw has capacity K*C, dy_n K*H*W, x_n C*H*W; image 0 wrote it.
                unsafe {
                    let image_t = Operand::transposed(x_n, cols);
                    matmul((k, rows, cols), dw_ptr, n > 0, dy_n, image_t, parallelism)
                }
            }
            if let Some(dx_n) = dx_n {
                // SAFETY: dx_n holds C*H*W elements, w K*C, dy_n K*H*W.
                unsafe {
                    matmul(
                        (rows, cols, k),
                        (uninit_ptr(dx_n), cols),
                        false,
                        weights_t,
                        dy_n,
                        parallelism,
                    )
                }
            }
            continue;
        }
        // Bands of output rows add onto overlapping input rows: start from zero. One image
        // is a few hundred KB, in cache for the adds that follow.
        let mut dx_n = dx_n.map(|dx_n| fill_init(dx_n, T::zero()));
        with_scratch(g.band_len(), |col: &mut [T]| {
            for band in g.bands() {
                let band_cols = band.len() * g.out_w;
                let col = &mut col[..rows * band_cols];
                let dy_band = Operand::strided(&dy_n[band.start * g.out_w..], cols);
                if want_weight {
                    im2col(g, x_n, band.clone(), col);
                    let col_t = Operand::transposed(col, band_cols);
                    // The first band of the first image writes dw, the others add to it.
                    let accumulate = n > 0 || band.start > 0;
                    // SAFETY: dw has capacity K*rows, col rows*band_cols, dy_band K rows of
                    // band_cols elements inside dy_n.
                    unsafe {
                        matmul(
                            (k, rows, band_cols),
                            dw_ptr,
                            accumulate,
                            dy_band,
                            col_t,
                            parallelism,
                        )
                    }
                }
                if let Some(dx_n) = dx_n.as_deref_mut() {
                    // The columns are no longer needed: their buffer receives dcol.
                    // SAFETY: col holds rows*band_cols elements, w K*rows, dy_band as above.
                    unsafe {
                        let dcol = (col.as_mut_ptr(), band_cols);
                        matmul(
                            (rows, band_cols, k),
                            dcol,
                            false,
                            weights_t,
                            dy_band,
                            parallelism,
                        )
                    }
                    col2im(g, col, band, dx_n);
                }
            }
        });
    }
    if want_weight {
        // SAFETY: the GEMM of the first image wrote all K*rows elements.
        unsafe { dw.set_len(k * rows) };
    }
    dw
}

/// Writes the element-wise sum of `parts` (at least one, all as long as `out`) into `out`.
fn sum_into<T: Element>(parts: &[Vec<T>], out: &mut [MaybeUninit<T>]) {
    const CHUNK: usize = 1 << 14;
    threads::run(|| {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, out)| {
            let start = i * CHUNK;
            let out = fill_init(out, T::zero());
            for part in parts {
                for (o, &v) in out.iter_mut().zip(&part[start..]) {
                    *o += v;
                }
            }
        })
    });
}

/// Reads the two operands of a convolution custom op with their geometry.
fn operands<'a, T: Element>(
    (xs, xl): (&'a CpuStorage, &Layout),
    (ws, wl): (&'a CpuStorage, &Layout),
    g: &ConvGeometry,
) -> Result<(&'a [T], &'a [T])> {
    let x = contiguous_slice(xs, xl, "conv2d input")?;
    let w = contiguous_slice(ws, wl, "conv2d weight")?;
    debug_assert_eq!(
        (x.len(), w.len()),
        (g.batch * g.input_image_len(), g.weight_len())
    );
    Ok((x, w))
}

/// The convolution as a candle custom op on (input, weight).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2d {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "protocon-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let y = match (xs, ws) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (x, w) = operands::<f32>((xs, xl), (ws, wl), &g)?;
                CpuStorage::F32(forward(&g, x, w)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (x, w) = operands::<f64>((xs, xl), (ws, wl), &g)?;
                CpuStorage::F64(forward(&g, x, w)?)
            }
            _ => bail!(
                "protocon conv2d: f32 or f64 operands of one dtype, got {:?} and {:?}",
                xs.dtype(),
                ws.dtype()
            ),
        };
        Ok((y, g.output_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = Wanted {
            input: x.track_op(),
            weight: w.track_op(),
        };
        if !wanted.input && !wanted.weight {
            return Ok((None, None));
        }
        let op = Conv2dBackward {
            stride: self.stride,
            padding: self.padding,
            wanted,
        };
        let packed = x
            .contiguous()?
            .apply_op3_no_bwd(&w.contiguous()?, &dy.contiguous()?, &op)?;
        // Both gradients are views into the one packed buffer: no copy.
        let dx_len = if wanted.input { x.elem_count() } else { 0 };
        let dx = match wanted.input {
            true => Some(packed.narrow(0, 0, dx_len)?.reshape(x.shape())?),
            false => None,
        };
        let dw = match wanted.weight {
            true => Some(
                packed
                    .narrow(0, dx_len, w.elem_count())?
                    .reshape(w.shape())?,
            ),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// Both gradients of [`Conv2d`] as one custom op on (input, weight, output gradient), so that
/// each image's columns are built once for the weight gradient and reused as the buffer of
/// the input gradient.
#[derive(Clone, Copy, Debug)]
struct Conv2dBackward {
    stride: usize,
    padding: usize,
    wanted: Wanted,
}

impl Conv2dBackward {
    fn packed_len(&self, g: &ConvGeometry) -> usize {
        let dx = if self.wanted.input {
            g.batch * g.input_image_len()
        } else {
            0
        };
        let dw = if self.wanted.weight {
            g.weight_len()
        } else {
            0
        };
        dx + dw
    }
}

impl CustomOp3 for Conv2dBackward {
    fn name(&self) -> &'static str {
        "protocon-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        if dyl.shape() != &g.output_shape() {
            bail!(
                "protocon conv2d: gradient of shape {:?}, want {:?}",
                dyl.shape(),
                g.output_shape()
            )
        }
        let packed = match (xs, ws) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (x, w) = operands::<f32>((xs, xl), (ws, wl), &g)?;
                let dy = contiguous_slice(dys, dyl, "conv2d output gradient")?;
                CpuStorage::F32(backward(&g, x, w, dy, self.wanted)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (x, w) = operands::<f64>((xs, xl), (ws, wl), &g)?;
                let dy = contiguous_slice(dys, dyl, "conv2d output gradient")?;
                CpuStorage::F64(backward(&g, x, w, dy, self.wanted)?)
            }
            _ => bail!(
                "protocon conv2d: f32 or f64 operands of one dtype, got {:?} and {:?}",
                xs.dtype(),
                ws.dtype()
            ),
        };
        let len = self.packed_len(&g);
        Ok((packed, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(x: [usize; 4], w: [usize; 4], stride: usize, padding: usize) -> ConvGeometry {
        ConvGeometry::new(&x, &w, stride, padding).unwrap()
    }

    /// The shortcut for "same" convolutions against the GEMM + col2im path it replaces, on a
    /// non-square image with more output than input channels (a transpose mix-up would show).
    #[test]
    fn input_gradient_by_transposed_convolution_matches_col2im() {
        let g = geometry([2, 3, 5, 4], [4, 3, 3, 3], 1, 1);
        let value = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / 7.0;
        let x: Vec<f64> = (0..2 * g.input_image_len()).map(|i| value(i, 37, 101)).collect();
        let w: Vec<f64> = (0..g.weight_len()).map(|i| value(i, 53, 97)).collect();
        let dy: Vec<f64> = (0..2 * g.output_image_len()).map(|i| value(i, 29, 89)).collect();
        let both = Wanted { input: true, weight: true };
        let packed = backward(&g, &x, &w, &dy, both).unwrap();
        let mut dx = vec![MaybeUninit::uninit(); x.len()];
        let dw = backward_task(&g, &x, &w, &dy, Some(&mut dx), true, gemm::Parallelism::None);
        let dx: Vec<f64> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();
        let want: Vec<f64> = dx.into_iter().chain(dw).collect();
        assert_eq!(packed.len(), want.len());
        for (i, (a, b)) in packed.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-12, "element {i}: {a} vs {b}");
        }
        let input_only = Wanted { input: true, weight: false };
        assert_eq!(backward(&g, &x, &w, &dy, input_only).unwrap(), packed[..x.len()]);
        for (x, w, s, p) in [([1, 2, 6, 6], [3, 2, 3, 3], 2, 1), ([1, 2, 6, 6], [3, 2, 3, 3], 1, 0), ([1, 2, 6, 6], [3, 2, 1, 1], 1, 0)] {
            assert_eq!(geometry(x, w, s, p).input_gradient_as_convolution(), None, "{x:?} {w:?} s{s} p{p}");
        }
    }

    #[test]
    fn output_size_follows_pytorch() {
        assert_eq!(
            geometry([1, 3, 32, 32], [16, 3, 3, 3], 1, 1)
                .output_shape()
                .dims(),
            [1, 16, 32, 32]
        );
        assert_eq!(
            geometry([2, 3, 7, 9], [4, 3, 3, 3], 2, 1)
                .output_shape()
                .dims(),
            [2, 4, 4, 5]
        );
        assert_eq!(
            geometry([2, 3, 7, 9], [4, 3, 1, 1], 2, 0)
                .output_shape()
                .dims(),
            [2, 4, 4, 5]
        );
        assert!(ConvGeometry::new(&[1, 3, 2, 2], &[4, 3, 5, 5], 1, 0).is_err());
        assert!(ConvGeometry::new(&[1, 3, 8, 8], &[4, 2, 3, 3], 1, 1).is_err());
    }

    /// A hand-worked 3x3 image, 2x2 kernel, stride 1, padding 1: the 4 rows of the column
    /// matrix are the image shifted by (-1,-1), (-1,0), (0,-1), (0,0), zero-filled.
    #[test]
    fn im2col_matches_hand_worked_example() {
        let g = geometry([1, 1, 3, 3], [1, 1, 2, 2], 1, 1);
        assert_eq!((g.out_h, g.out_w), (4, 4));
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let mut col = vec![f64::NAN; 4 * 16];
        im2col(&g, &x, 0..g.out_h, &mut col);
        #[rustfmt::skip]
        let want = [
            // ki=0, kj=0: reads x[oh-1][ow-1]
            0., 0., 0., 0.,  0., 1., 2., 3.,  0., 4., 5., 6.,  0., 7., 8., 9.,
            // ki=0, kj=1: reads x[oh-1][ow]
            0., 0., 0., 0.,  1., 2., 3., 0.,  4., 5., 6., 0.,  7., 8., 9., 0.,
            // ki=1, kj=0: reads x[oh][ow-1]
            0., 1., 2., 3.,  0., 4., 5., 6.,  0., 7., 8., 9.,  0., 0., 0., 0.,
            // ki=1, kj=1: reads x[oh][ow]
            1., 2., 3., 0.,  4., 5., 6., 0.,  7., 8., 9., 0.,  0., 0., 0., 0.,
        ];
        assert_eq!(col, want);
    }

    /// The contiguous-copy path for stride-1 "same" convolutions equals the row-by-row
    /// gather it replaces, including kernels wider than 3 and asymmetric kernels.
    #[test]
    fn shifted_plane_matches_row_by_row_gather() {
        for (x, w, p) in [
            ([1, 2, 7, 9], [1, 2, 3, 3], 1),
            ([1, 1, 6, 5], [1, 1, 5, 5], 2),
            ([1, 1, 4, 6], [1, 1, 1, 3], 1),
        ] {
            let g = geometry(x, w, 1, p);
            assert_eq!(g.out_w, g.width);
            let image: Vec<f64> = (0..g.input_image_len()).map(|i| i as f64 + 1.0).collect();
            let mut fast = vec![f64::NAN; g.col_rows() * g.col_cols()];
            im2col(&g, &image, 0..g.out_h, &mut fast);
            // The general path, by definition: col[(c, ki, kj), (oh, ow)] = x[c, oh+ki-p, ow+kj-p].
            let mut want = vec![0.0; fast.len()];
            for c in 0..g.in_channels {
                for ki in 0..g.kernel_h {
                    for kj in 0..g.kernel_w {
                        let row = (c * g.kernel_h + ki) * g.kernel_w + kj;
                        for oh in 0..g.out_h {
                            for ow in 0..g.out_w {
                                let (ih, iw) = (
                                    (oh + ki) as isize - p as isize,
                                    (ow + kj) as isize - p as isize,
                                );
                                if (0..g.height as isize).contains(&ih)
                                    && (0..g.width as isize).contains(&iw)
                                {
                                    want[row * g.col_cols() + oh * g.out_w + ow] =
                                        image[(c * g.height + ih as usize) * g.width + iw as usize];
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(fast, want, "{g:?}");
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)> for any x and c,
    /// checked on strided, padded, odd-sized geometries, whole and band by band.
    #[test]
    fn col2im_is_adjoint_of_im2col() {
        for (x, w, s, p) in [
            ([1, 2, 7, 9], [1, 2, 3, 3], 1, 1),
            ([1, 3, 7, 9], [1, 3, 3, 3], 2, 1),
            ([1, 2, 8, 8], [1, 2, 1, 1], 2, 0),
            ([1, 1, 5, 6], [1, 1, 3, 2], 2, 2),
        ] {
            let g = geometry(x, w, s, p);
            let n_in = g.input_image_len();
            let n_col = g.col_rows() * g.col_cols();
            let image: Vec<f64> = (0..n_in)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
                .collect();
            let cols: Vec<f64> = (0..n_col)
                .map(|i| ((i * 53 % 97) as f64 - 48.0) / 5.0)
                .collect();
            let mut col = vec![0.0; n_col];
            im2col(&g, &image, 0..g.out_h, &mut col);
            let lhs: f64 = col.iter().zip(&cols).map(|(a, b)| a * b).sum();
            for split in [g.out_h, 1, 2] {
                // col2im band by band: each band's slice of the column matrix, rows of
                // band.len() * Wo columns.
                let mut back = vec![0.0; n_in];
                for first in (0..g.out_h).step_by(split) {
                    let band = first..(first + split).min(g.out_h);
                    let band_cols = band.len() * g.out_w;
                    let dcol: Vec<f64> = cols
                        .chunks_exact(g.col_cols())
                        .flat_map(|row| row[band.start * g.out_w..][..band_cols].to_vec())
                        .collect();
                    col2im(&g, &dcol, band, &mut back);
                }
                let rhs: f64 = image.iter().zip(&back).map(|(a, b)| a * b).sum();
                assert!(
                    (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0),
                    "{g:?} bands of {split}: {lhs} vs {rhs}"
                );
            }
        }
    }

    /// Bands of output rows cover the output in order, within the scratch budget unless a
    /// single row exceeds it.
    #[test]
    fn bands_cover_output_rows() {
        for (x, w) in [
            ([1, 32, 32, 32], [32, 32, 3, 3]),
            ([1, 128, 8, 8], [128, 128, 3, 3]),
            ([1, 640, 8, 8], [640, 640, 3, 3]),
        ] {
            let g = geometry(x, w, 1, 1);
            let bands: Vec<_> = g.bands().collect();
            assert_eq!(bands.first().unwrap().start, 0);
            assert_eq!(bands.last().unwrap().end, g.out_h);
            assert!(bands.windows(2).all(|b| b[0].end == b[1].start));
            assert!(g.band_len() <= BAND_ELEMENTS.max(g.col_rows() * g.out_w));
        }
    }
}
