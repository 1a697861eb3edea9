//! 3x3 stride-1 "same" convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 2x2 block of output
//! pixels is computed from a 4x4 input tile with 16 multiplications per channel pair instead
//! of 36, so the products a training step spends most of its time in shrink 2.25-fold.
//!
//! Why: every 3x3 layer of WRN-28-2 and cnn-small already ran at 70-85 GFLOP/s per core
//! through im2col and `gemm`, close to what AVX2 allows; beating oneDNN's direct convolutions
//! on these layers takes fewer multiplications, not faster ones (see BENCHMARKS.md).
//!
//! With `d` a 4x4 input tile (rows and columns `2t - 1 .. 2t + 3`, zero outside the image),
//! `g` a 3x3 filter and `Bᵀ`, `G`, `Aᵀ` the F(2, 3) matrices below, one output block is
//! `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`. Collecting the 16 positions `ξ` of the 4x4 products
//! over channels and tiles turns the sum into 16 GEMMs per block of tiles:
//!
//! - forward: `M[ξ] (K x P) = U[ξ] (K x C) · V[ξ] (C x P)`, `U = G g Gᵀ`, `V = Bᵀ d B`;
//! - weight gradient: `dU[ξ] (K x C) += dM[ξ] (K x P) · V[ξ]ᵀ`, `dM = A dY Aᵀ`, then
//!   `dg = Gᵀ dU G`;
//! - input gradient: the forward convolution of `dY` with the flipped, channel-transposed
//!   filters (see `conv2d`), so it takes the forward path.
//!
//! The results differ from im2col's in rounding only (the transforms add and subtract a few
//! values before the products): the unit tests below hold the f64 path to 1e-12 of the
//! definition; the model tests against PyTorch's recorded outputs pass unchanged in f32.
//! The transforms are plain loops over long contiguous lines (see [`Tiling`]), compiled a
//! second time for AVX2 and chosen at run time; the products are `gemm` calls.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::conv2d::{matmul, ConvGeometry, Operand};
use super::element::Element;
use super::scratch::with_scratch;
use super::threads::{self, BatchSplit};

/// Positions in a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// Budget, in elements, for one block's transformed inputs plus products (`16 (C + K) P`):
/// 512K (2 MB in f32, per thread). Larger blocks give the 16 GEMMs more columns; measured
/// one thread, 120 images, forward (`examples/ops_bench.rs --baseline im2col`): 96K left the
/// 128-channel 8x8 layer (20 tiles per GEMM) slower than im2col, 256K to 2M were alike
/// within noise, 512K the best of them.
const BLOCK_ELEMENTS: usize = 512 * 1024;

/// Whether 3x3 convolutions take the Winograd path (see [`set_winograd`]).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Chooses how the fused kernels compute 3x3 stride-1 convolutions with padding 1 (forward,
/// input gradient and weight gradient): by Winograd's F(2x2, 3x3) (`true`, the default: about
/// 2.25 times fewer multiplications, results within rounding of the other path) or through
/// im2col and one GEMM (`false`: the products as PyTorch's reference computes them).
/// Takes effect at the next kernel call.
pub fn set_winograd(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether 3x3 stride-1 convolutions take the Winograd path (see [`set_winograd`]).
pub fn winograd() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a convolution of this geometry takes the Winograd path: it [`fits`] and the path
/// is enabled.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    fits(g) && winograd()
}

/// The geometry F(2x2, 3x3) computes here: 3x3 kernels, stride 1, padding 1.
fn fits(g: &ConvGeometry) -> bool {
    g.kernel_h == 3 && g.kernel_w == 3 && g.stride == 1 && g.padding == 1
}

/// The tiling of one image: `rows x cols` tiles of 2x2 output pixels (the last row or column
/// of tiles overhangs an odd-sized output by one pixel), laid out `line = cols + 1` tiles
/// apart from row to row. The extra tile of each row is padding: with it, the tile at
/// `q = row * line + col` reads its input at `q` and `q + 1` (next column pair) and
/// `q + line` (next row pair) of the input's deinterleaved planes, so every transform is one
/// long contiguous loop over a block instead of a short loop per tile row (which left
/// the transforms slower than the GEMMs). The padding tiles are computed and discarded; they
/// cost `1 / line` of the GEMM work (6% at 32x32, 20% at 8x8).
#[derive(Clone, Copy, Debug)]
struct Tiling {
    rows: usize,
    cols: usize,
    line: usize,
    /// Tile rows per block (see [`BLOCK_ELEMENTS`]); a block groups whole images while they
    /// fit, so it may hold more rows than one image has.
    rows_per_block: usize,
    /// Tile rows per segment: an image's rows, or as many as fit in a block.
    rows_per_segment: usize,
}

/// Tile rows `rows` of image `image`: one run of a block's tiles.
#[derive(Clone, Debug)]
struct Segment {
    image: usize,
    rows: Range<usize>,
}

impl Tiling {
    fn new(g: &ConvGeometry) -> Self {
        let (rows, cols) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        let line = cols + 1;
        let tiles_per_block = BLOCK_ELEMENTS / (POSITIONS * (g.in_channels + g.out_channels));
        let rows_per_block = (tiles_per_block / line).max(1);
        Self {
            rows,
            cols,
            line,
            rows_per_block,
            rows_per_segment: rows_per_block.min(rows),
        }
    }

    /// The tiles of `images` images in blocks of at most [`Self::block_tiles`]: whole images
    /// grouped while they fit, else runs of tile rows of one image.
    fn blocks(&self, images: usize) -> Vec<Vec<Segment>> {
        let mut blocks: Vec<Vec<Segment>> = Vec::new();
        let mut current: Vec<Segment> = Vec::new();
        let mut current_rows = 0;
        for image in 0..images {
            for first in (0..self.rows).step_by(self.rows_per_segment) {
                let rows = first..(first + self.rows_per_segment).min(self.rows);
                if current_rows + rows.len() > self.rows_per_block && !current.is_empty() {
                    blocks.push(std::mem::take(&mut current));
                    current_rows = 0;
                }
                current_rows += rows.len();
                current.push(Segment { image, rows });
            }
        }
        if !current.is_empty() {
            blocks.push(current);
        }
        blocks
    }

    /// Tiles (the GEMMs' `P`, padding tiles included) of the largest block.
    fn block_tiles(&self) -> usize {
        self.rows_per_block * self.line
    }

    /// Tiles of a block.
    fn tiles(&self, block: &[Segment]) -> usize {
        block.iter().map(|s| s.rows.len() * self.line).sum()
    }
}

/// `U[ξ][k][c] = (G g_kc Gᵀ)[ξ]` for the filters `w` (`K x C x 3 x 3`), with
/// `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`.
fn filter_transform<T: Element>(g: &ConvGeometry, w: &[T]) -> Vec<T> {
    let (k_len, c_len) = (g.out_channels, g.in_channels);
    let half = T::from_f64(0.5);
    let mut u = vec![T::zero(); POSITIONS * k_len * c_len];
    for (kc, f) in w.chunks_exact(9).enumerate() {
        // G f (4 x 3), column by column, then (G f) Gᵀ (4 x 4), row by row.
        let mut gf = [[T::zero(); 3]; 4];
        for col in 0..3 {
            let (a, b, c) = (f[col], f[3 + col], f[6 + col]);
            let column = [a, (a + b + c) * half, (a - b + c) * half, c];
            for (row, value) in column.into_iter().enumerate() {
                gf[row][col] = value;
            }
        }
        for (row, [a, b, c]) in gf.into_iter().enumerate() {
            let transformed = [a, (a + b + c) * half, (a - b + c) * half, c];
            for (col, v) in transformed.into_iter().enumerate() {
                u[(4 * row + col) * k_len * c_len + kc] = v;
            }
        }
    }
    u
}

/// `dg = Gᵀ dU G` for every filter: the adjoint of [`filter_transform`], from `dU[ξ][k][c]`
/// into `dw` (`K x C x 3 x 3`).
fn filter_gradient<T: Element>(g: &ConvGeometry, du: &[T], dw: &mut [MaybeUninit<T>]) {
    let kc_len = g.out_channels * g.in_channels;
    let half = T::from_f64(0.5);
    // Gᵀ v for a 4-vector v: [v0 + ½v1 + ½v2, ½v1 - ½v2, ½v1 + ½v2 + v3].
    let adjoint = |v: [T; 4]| {
        [
            v[0] + (v[1] + v[2]) * half,
            (v[1] - v[2]) * half,
            (v[1] + v[2]) * half + v[3],
        ]
    };
    for (kc, out) in dw.chunks_exact_mut(9).enumerate() {
        let d: [[T; 4]; 4] = std::array::from_fn(|row| std::array::from_fn(|col| du[(4 * row + col) * kc_len + kc]));
        // Rows first (dU G on the right), then columns (Gᵀ on the left).
        let rows: [[T; 3]; 4] = d.map(adjoint);
        for col in 0..3 {
            let column = adjoint([rows[0][col], rows[1][col], rows[2][col], rows[3][col]]);
            for row in 0..3 {
                out[3 * row + col].write(column[row]);
            }
        }
    }
}

/// Whether the CPU has AVX2: the transforms are plain loops that the compiler vectorises,
/// 8 lanes wide with AVX2 instead of the 4 of the x86-64 baseline (`gemm` does its own
/// detection for the products).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// `out[t] = f(a[t], b[t])`: one line of a transform, written as a loop over slices so that
/// it compiles to vector instructions (indexing the 16 positions tile by tile did not).
#[inline(always)]
fn map2<T: Element>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

/// `out[t] = f(a[t], b[t], c[t])`, as [`map2`].
#[inline(always)]
fn map3<T: Element>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = f(a, b, c);
    }
}

/// Scatters input row `row` (`None`: padding, zero) into its two planes' lines: `even[t]`
/// is input column `2t - 1` and `odd[t]` column `2t`, zero outside the image.
#[inline(always)]
fn split_row<T: Element>(row: Option<&[T]>, even: &mut [T], odd: &mut [T]) {
    let Some(row) = row else {
        even.fill(T::zero());
        odd.fill(T::zero());
        return;
    };
    let pairs = row.len() / 2;
    even[0] = T::zero();
    for ((o, e), pair) in odd.iter_mut().zip(even[1..].iter_mut()).zip(row.chunks_exact(2)) {
        (*o, *e) = (pair[0], pair[1]);
    }
    match row.len() % 2 {
        1 => (odd[pairs], even[pairs + 1]) = (row[row.len() - 1], T::zero()),
        _ => odd[pairs] = T::zero(),
    }
    let tail = (pairs + 2).min(even.len());
    even[tail..].fill(T::zero());
    odd[pairs + 1..].fill(T::zero());
}

/// `V[ξ][c][p] = (Bᵀ d B)[ξ]` for every channel and tile of the block, `Bᵀ = [[1, 0, -1, 0],
/// [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`; `v` is `16 x C x P`, `P` the block's tiles.
#[inline(always)]
fn input_transform_lines<T: Element>(g: &ConvGeometry, t: &Tiling, x: &[T], block: &[Segment], v: &mut [T], lines: &mut [T]) {
    let (plane, image) = (g.height * g.width, g.in_channels * g.height * g.width);
    let tiles = t.tiles(block);
    let line = t.line;
    for c in 0..g.in_channels {
        let mut offset = c * tiles;
        for segment in block {
            let n = segment.rows.len() * line;
            // The four planes (row parity, column parity) of the padded input under these
            // tile rows: plane row s is padded row 2 (first + s) + parity; one more row and
            // one more element so that tile q can read q + line + 1.
            let plane_len = (segment.rows.len() + 1) * line + 1;
            let (planes, rest) = lines.split_at_mut(4 * plane_len);
            let (combined, _) = rest.split_at_mut(8 * (n + 1));
            let channel = &x[segment.image * image + c * plane..][..plane];
            for s in 0..=segment.rows.len() {
                for parity in 0..2 {
                    let padded = 2 * (segment.rows.start + s) + parity;
                    let row = padded.checked_sub(1).filter(|&r| r < g.height);
                    let (even_plane, odd_plane) = planes[2 * parity * plane_len..][..2 * plane_len].split_at_mut(plane_len);
                    let at = s * line;
                    split_row(row.map(|r| &channel[r * g.width..][..g.width]), &mut even_plane[at..at + line], &mut odd_plane[at..at + line]);
                }
            }
            // d(i, j) of tile q is plane (i % 2, j % 2) at q + (i / 2) line + j / 2.
            let plane_at = |row_parity: usize, col_parity: usize, shift: usize| &planes[(2 * row_parity + col_parity) * plane_len + shift..][..n + 1];
            // Bᵀ on the left, per column parity: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
            for col_parity in 0..2 {
                let (d0, d1) = (plane_at(0, col_parity, 0), plane_at(1, col_parity, 0));
                let (d2, d3) = (plane_at(0, col_parity, line), plane_at(1, col_parity, line));
                let out = |i: usize| (2 * i + col_parity) * (n + 1);
                map2(&mut combined[out(0)..][..n + 1], d0, d2, |a, b| a - b);
                map2(&mut combined[out(1)..][..n + 1], d1, d2, |a, b| a + b);
                map2(&mut combined[out(2)..][..n + 1], d2, d1, |a, b| a - b);
                map2(&mut combined[out(3)..][..n + 1], d1, d3, |a, b| a - b);
            }
            // B on the right, over the columns e0..e3 = even[q], odd[q], even[q + 1],
            // odd[q + 1] of each combined row: e0 - e2, e1 + e2, e2 - e1, e1 - e3.
            for i in 0..4 {
                let even = &combined[2 * i * (n + 1)..][..n + 1];
                let odd = &combined[(2 * i + 1) * (n + 1)..][..n + 1];
                let out = |j: usize| (4 * i + j) * g.in_channels * tiles + offset;
                map2(&mut v[out(0)..][..n], &even[..n], &even[1..], |a, b| a - b);
                map2(&mut v[out(1)..][..n], &odd[..n], &even[1..], |a, b| a + b);
                map2(&mut v[out(2)..][..n], &even[1..], &odd[..n], |a, b| a - b);
                map2(&mut v[out(3)..][..n], &odd[..n], &odd[1..], |a, b| a - b);
            }
            offset += n;
        }
    }
}

/// Writes `Aᵀ m A` (`Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`) of every tile and output channel of
/// the block into `y` (the task's images, `N x K x Ho x Wo`), dropping padding tiles and
/// clipping an overhanging last row or column.
#[inline(always)]
fn output_transform_lines<T: Element>(g: &ConvGeometry, t: &Tiling, m: &[T], block: &[Segment], y: &mut [MaybeUninit<T>], lines: &mut [T]) {
    let (plane, image) = (g.out_h * g.out_w, g.out_channels * g.out_h * g.out_w);
    let tiles = t.tiles(block);
    let stride = g.out_channels * tiles;
    let line = t.line;
    for k in 0..g.out_channels {
        let mut offset = k * tiles;
        for segment in block {
            let n = segment.rows.len() * line;
            let (left, pixels) = lines[..12 * n].split_at_mut(8 * n);
            let m = |xi: usize| &m[xi * stride + offset..][..n];
            // Aᵀ on the left: for each column j, m0j + m1j + m2j and m1j - m2j - m3j.
            for j in 0..4 {
                let (top, bottom) = left[2 * j * n..][..2 * n].split_at_mut(n);
                map3(top, m(j), m(4 + j), m(8 + j), |a, b, c| a + b + c);
                map3(bottom, m(4 + j), m(8 + j), m(12 + j), |a, b, c| a - b - c);
            }
            // A on the right: pixel (i, 0) = l0 + l1 + l2 and (i, 1) = l1 - l2 - l3.
            for i in 0..2 {
                let l = |j: usize| &left[(2 * j + i) * n..][..n];
                let (even, odd) = pixels[2 * i * n..][..2 * n].split_at_mut(n);
                map3(even, l(0), l(1), l(2), |a, b, c| a + b + c);
                map3(odd, l(1), l(2), l(3), |a, b, c| a - b - c);
            }
            let channel = &mut y[segment.image * image + k * plane..][..plane];
            for (s, tile_row) in segment.rows.clone().enumerate() {
                for i in 0..2 {
                    let oh = 2 * tile_row + i;
                    if oh >= g.out_h {
                        continue;
                    }
                    let even = &pixels[2 * i * n + s * line..][..t.cols];
                    let odd = &pixels[(2 * i + 1) * n + s * line..][..t.cols];
                    let out = &mut channel[oh * g.out_w..][..g.out_w];
                    for (pair, (&e, &o)) in out.chunks_mut(2).zip(even.iter().zip(odd)) {
                        pair[0].write(e);
                        if let Some(second) = pair.get_mut(1) {
                            second.write(o);
                        }
                    }
                }
            }
            offset += n;
        }
    }
}

/// `dM[ξ][k][p] = (A dY Aᵀ)[ξ]` of the block's 2x2 output-gradient tiles (zero where a tile
/// overhangs the output, and for padding tiles, so that they add nothing to the weight
/// gradient), the adjoint of [`output_transform`]; `dm` is `16 x K x P`.
#[inline(always)]
fn output_gradient_transform_lines<T: Element>(g: &ConvGeometry, t: &Tiling, dy: &[T], block: &[Segment], dm: &mut [T], lines: &mut [T]) {
    let (plane, image) = (g.out_h * g.out_w, g.out_channels * g.out_h * g.out_w);
    let tiles = t.tiles(block);
    let stride = g.out_channels * tiles;
    let line = t.line;
    for k in 0..g.out_channels {
        let mut offset = k * tiles;
        for segment in block {
            let n = segment.rows.len() * line;
            let (corners, left) = lines[..12 * n].split_at_mut(4 * n);
            corners.fill(T::zero());
            let channel = &dy[segment.image * image + k * plane..][..plane];
            // The tiles' corners a (top left), b (top right), c, d as lines over the tiles.
            for (s, tile_row) in segment.rows.clone().enumerate() {
                for i in 0..2 {
                    let oh = 2 * tile_row + i;
                    if oh >= g.out_h {
                        continue;
                    }
                    let row = &channel[oh * g.out_w..][..g.out_w];
                    for (tx, pair) in row.chunks(2).enumerate() {
                        corners[2 * i * n + s * line + tx] = pair[0];
                        if let Some(&second) = pair.get(1) {
                            corners[(2 * i + 1) * n + s * line + tx] = second;
                        }
                    }
                }
            }
            let corner = |i: usize| &corners[i * n..][..n];
            let (a, b, c, d) = (corner(0), corner(1), corner(2), corner(3));
            // A on the left: rows (p, q) = (a, b), (a + c, b + d), (a - c, b - d), (-c, -d).
            for (slot, out) in left.chunks_exact_mut(n).enumerate() {
                match slot {
                    0 => out.copy_from_slice(a),
                    1 => out.copy_from_slice(b),
                    2 => map2(out, a, c, |a, c| a + c),
                    3 => map2(out, b, d, |b, d| b + d),
                    4 => map2(out, a, c, |a, c| a - c),
                    5 => map2(out, b, d, |b, d| b - d),
                    6 => map2(out, c, c, |c, _| T::zero() - c),
                    _ => map2(out, d, d, |d, _| T::zero() - d),
                }
            }
            // Aᵀ on the right: each row (p, q) gives p, p + q, p - q, -q.
            for i in 0..4 {
                let p = &left[2 * i * n..][..n];
                let q = &left[(2 * i + 1) * n..][..n];
                let out = |j: usize| (4 * i + j) * stride + offset;
                dm[out(0)..][..n].copy_from_slice(p);
                map2(&mut dm[out(1)..][..n], p, q, |p, q| p + q);
                map2(&mut dm[out(2)..][..n], p, q, |p, q| p - q);
                map2(&mut dm[out(3)..][..n], q, q, |q, _| T::zero() - q);
            }
            offset += n;
        }
    }
}

/// Defines `$name`, which runs `$lines` compiled for AVX2 where the CPU has it (see
/// [`avx2`]), else as built for the x86-64 baseline.
macro_rules! with_avx2 {
    ($name:ident => $lines:ident($($arg:ident: $ty:ty),*)) => {
        #[doc = concat!("[`", stringify!($lines), "`], compiled for AVX2 where the CPU has it.")]
        fn $name<T: Element>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if avx2() {
                #[target_feature(enable = "avx2")]
                fn wide<T: Element>($($arg: $ty),*) {
                    $lines($($arg),*)
                }
                // SAFETY: the CPU has AVX2 (checked above).
                return unsafe { wide($($arg),*) };
            }
            $lines($($arg),*)
        }
    };
}

with_avx2!(input_transform => input_transform_lines(g: &ConvGeometry, t: &Tiling, x: &[T], block: &[Segment], v: &mut [T], lines: &mut [T]));
with_avx2!(output_transform => output_transform_lines(g: &ConvGeometry, t: &Tiling, m: &[T], block: &[Segment], y: &mut [MaybeUninit<T>], lines: &mut [T]));
with_avx2!(output_gradient_transform => output_gradient_transform_lines(g: &ConvGeometry, t: &Tiling, dy: &[T], block: &[Segment], dm: &mut [T], lines: &mut [T]));

/// Scratch for one block: transformed inputs (`16 C P`), products or output-gradient
/// transforms (`16 K P`), and the planes and lines of one segment's transforms.
fn block_scratch_len(g: &ConvGeometry, t: &Tiling) -> usize {
    let (p, segment) = (t.block_tiles(), (t.rows_per_segment + 1) * t.line + 1);
    POSITIONS * (g.in_channels + g.out_channels) * p + 4 * segment + 12 * (p + 1)
}

/// The loop both passes run on each thread: for every block of the task's images (`x_task`),
/// the input transform into `v`, then `per_block(block, tiles, v, products, lines)` with the
/// block's second `16 K P` buffer (products, or output-gradient transforms) and the
/// transforms' lines.
fn for_each_block<T: Element>(
    g: &ConvGeometry,
    t: &Tiling,
    x_task: &[T],
    mut per_block: impl FnMut(&[Segment], usize, &[T], &mut [T], &mut [T]),
) {
    let images = x_task.len() / (g.in_channels * g.height * g.width);
    with_scratch(block_scratch_len(g, t), |scratch: &mut [T]| {
        for block in t.blocks(images) {
            let tiles = t.tiles(&block);
            let (v, rest) = scratch.split_at_mut(POSITIONS * g.in_channels * t.block_tiles());
            let (products, lines) = rest.split_at_mut(POSITIONS * g.out_channels * t.block_tiles());
            input_transform(g, t, x_task, &block, v, lines);
            per_block(&block, tiles, v, products, lines);
        }
    })
}

/// The convolution of a batch (`x`: `N x C x H x W`, `w`: `K x C x 3 x 3`) into `y`
/// (`N x K x H x W`), writing every element. Requires [`applies`].
pub(crate) fn forward_into<T: Element>(g: &ConvGeometry, x: &[T], w: &[T], y: &mut [MaybeUninit<T>]) {
    debug_assert!(fits(g));
    let u = filter_transform(g, w);
    let t = Tiling::new(g);
    let split = BatchSplit::new(g.batch);
    let (in_len, out_len) = (g.in_channels * g.height * g.width, g.out_channels * g.out_h * g.out_w);
    let (c_len, k_len) = (g.in_channels, g.out_channels);
    let task = |x_task: &[T], y_task: &mut [MaybeUninit<T>]| {
        for_each_block(g, &t, x_task, |block, tiles, v, m, lines| {
            for xi in 0..POSITIONS {
                let u_xi = Operand::row_major(&u[xi * k_len * c_len..][..k_len * c_len], c_len);
                let v_xi = Operand::row_major(&v[xi * c_len * tiles..][..c_len * tiles], tiles);
                // SAFETY: m holds 16 K P >= 16 K tiles elements; u_xi is K x C, v_xi C x tiles.
                unsafe {
                    let m_xi = m.as_mut_ptr().add(xi * k_len * tiles);
                    matmul((k_len, tiles, c_len), (m_xi, tiles), false, u_xi, v_xi, split.gemm)
                }
            }
            output_transform(g, &t, m, block, y_task, lines);
        })
    };
    threads::run(|| {
        y.par_chunks_mut(split.images_per_task * out_len)
            .zip(x.par_chunks(split.images_per_task * in_len))
            .for_each(|(y_task, x_task)| task(x_task, y_task))
    });
}

/// The weight gradient of the convolution (`x`: `N x C x H x W`, `dy`: `N x K x H x W`) into
/// `dw` (`K x C x 3 x 3`), writing every element. Requires [`applies`].
pub(crate) fn weight_gradient_into<T: Element>(g: &ConvGeometry, x: &[T], dy: &[T], dw: &mut [MaybeUninit<T>]) {
    debug_assert!(fits(g));
    let t = Tiling::new(g);
    let split = BatchSplit::new(g.batch);
    let (in_len, out_len) = (g.in_channels * g.height * g.width, g.out_channels * g.out_h * g.out_w);
    let (c_len, k_len) = (g.in_channels, g.out_channels);
    let task = |x_task: &[T], dy_task: &[T]| -> Vec<T> {
        let mut du = vec![T::zero(); POSITIONS * k_len * c_len];
        for_each_block(g, &t, x_task, |block, tiles, v, dm, lines| {
            output_gradient_transform(g, &t, dy_task, block, dm, lines);
            for xi in 0..POSITIONS {
                let dm_xi = Operand::row_major(&dm[xi * k_len * tiles..][..k_len * tiles], tiles);
                let v_xi_t = Operand::transposed(&v[xi * c_len * tiles..][..c_len * tiles], tiles);
                // SAFETY: du holds 16 K C elements; dm_xi is K x tiles, v_xi_t tiles x C.
                unsafe {
                    let du_xi = du.as_mut_ptr().add(xi * k_len * c_len);
                    matmul((k_len, c_len, tiles), (du_xi, c_len), true, dm_xi, v_xi_t, split.gemm)
                }
            }
        });
        du
    };
    let partial: Vec<Vec<T>> = threads::run(|| {
        x.par_chunks(split.images_per_task * in_len)
            .zip(dy.par_chunks(split.images_per_task * out_len))
            .map(|(x_task, dy_task)| task(x_task, dy_task))
            .collect()
    });
    let mut parts = partial.into_iter();
    let mut du = parts.next().expect("a batch has at least one image");
    for part in parts {
        for (total, value) in du.iter_mut().zip(part) {
            *total += value;
        }
    }
    filter_gradient(g, &du, dw);
}

#[cfg(test)]
mod tests {
    use super::super::scratch::output_with;
    use super::*;

    /// The convolution by its definition (zero padding 1), in f64.
    fn direct(g: &ConvGeometry, x: &[f64], w: &[f64]) -> Vec<f64> {
        let (c_len, k_len, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
        let mut y = vec![0.0; g.batch * k_len * h * wd];
        for n in 0..g.batch {
            for k in 0..k_len {
                for oh in 0..h {
                    for ow in 0..wd {
                        let mut sum = 0.0;
                        for c in 0..c_len {
                            for i in 0..3 {
                                for j in 0..3 {
                                    let (ih, iw) = ((oh + i).wrapping_sub(1), (ow + j).wrapping_sub(1));
                                    if ih < h && iw < wd {
                                        sum += x[((n * c_len + c) * h + ih) * wd + iw] * w[((k * c_len + c) * 3 + i) * 3 + j];
                                    }
                                }
                            }
                        }
                        y[((n * k_len + k) * h + oh) * wd + ow] = sum;
                    }
                }
            }
        }
        y
    }

    /// The weight gradient by its definition: `dw[k][c][i][j] = Σ dy[n][k][oh][ow] x[n][c][oh+i-1][ow+j-1]`.
    fn direct_weight_gradient(g: &ConvGeometry, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (c_len, k_len, h, wd) = (g.in_channels, g.out_channels, g.height, g.width);
        let mut dw = vec![0.0; k_len * c_len * 9];
        for n in 0..g.batch {
            for k in 0..k_len {
                for c in 0..c_len {
                    for i in 0..3 {
                        for j in 0..3 {
                            for oh in 0..h {
                                for ow in 0..wd {
                                    let (ih, iw) = ((oh + i).wrapping_sub(1), (ow + j).wrapping_sub(1));
                                    if ih < h && iw < wd {
                                        dw[((k * c_len + c) * 3 + i) * 3 + j] +=
                                            dy[((n * k_len + k) * h + oh) * wd + ow] * x[((n * c_len + c) * h + ih) * wd + iw];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        dw
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Shapes with even and odd sides, one image and several, more and fewer output than
    /// input channels; each batch fits one block, so blocks hold several images.
    const SHAPES: [[usize; 5]; 5] = [[1, 1, 4, 4, 1], [2, 3, 5, 7, 4], [3, 8, 8, 8, 5], [2, 4, 7, 7, 6], [5, 16, 6, 3, 2]];

    fn geometry([n, c, h, w, k]: [usize; 5]) -> ConvGeometry {
        ConvGeometry::new(&[n, c, h, w], &[k, c, 3, 3], 1, 1).unwrap()
    }

    /// Runs a kernel that writes every element of a fresh output of `len` elements.
    fn written(len: usize, kernel: impl FnOnce(&mut [MaybeUninit<f64>])) -> Vec<f64> {
        // SAFETY: the kernels tested here write every element.
        unsafe {
            output_with::<f64, candle_core::Error>(len, |out| {
                kernel(out);
                Ok(())
            })
        }
        .unwrap()
    }

    fn assert_close(got: &[f64], expected: &[f64], tolerance: f64, shape: [usize; 5]) {
        assert_eq!(got.len(), expected.len());
        for (i, (a, b)) in got.iter().zip(expected).enumerate() {
            assert!((a - b).abs() < tolerance, "shape {shape:?}, element {i}: {a} against {b}");
        }
    }

    #[test]
    fn forward_equals_the_definition() {
        for (s, shape) in SHAPES.into_iter().enumerate() {
            let g = geometry(shape);
            let x = values(g.batch * g.in_channels * g.height * g.width, 2 * s as u64);
            let w = values(g.out_channels * g.in_channels * 9, 2 * s as u64 + 1);
            let expected = direct(&g, &x, &w);
            let got = written(expected.len(), |y| forward_into(&g, &x, &w, y));
            assert_close(&got, &expected, 1e-13, shape);
        }
    }

    #[test]
    fn weight_gradient_equals_the_definition() {
        for (s, shape) in SHAPES.into_iter().enumerate() {
            let g = geometry(shape);
            let x = values(g.batch * g.in_channels * g.height * g.width, 3 * s as u64);
            let dy = values(g.batch * g.out_channels * g.out_h * g.out_w, 3 * s as u64 + 2);
            let expected = direct_weight_gradient(&g, &x, &dy);
            let got = written(expected.len(), |dw| weight_gradient_into(&g, &x, &dy, dw));
            assert_close(&got, &expected, 1e-12, shape);
        }
    }

    /// f32 (the training path, in its AVX2 build where the CPU has it) on a layer wide enough
    /// that an image's tiles span two blocks (the small shapes above put several whole images
    /// in one block).
    #[test]
    fn f32_forward_and_weight_gradient_match_the_definition_across_blocks() {
        let shape = [2, 200, 20, 20, 200];
        let g = geometry(shape);
        let t = Tiling::new(&g);
        assert!(t.rows_per_segment < t.rows);
        let x = values(g.batch * g.in_channels * g.height * g.width, 7);
        let w = values(g.out_channels * g.in_channels * 9, 8);
        let dy = values(g.batch * g.out_channels * g.out_h * g.out_w, 9);
        let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (x32, w32, dy32) = (narrow(&x), narrow(&w), narrow(&dy));
        let widen = |v: Vec<MaybeUninit<f32>>| -> Vec<f64> {
            // SAFETY: the kernels below wrote every element.
            v.into_iter().map(|v| unsafe { v.assume_init() } as f64).collect()
        };
        let mut y = vec![MaybeUninit::uninit(); g.batch * g.out_channels * g.out_h * g.out_w];
        forward_into(&g, &x32, &w32, &mut y);
        // Sums of 1,800 products of values in [-1, 1): f32 rounding stays far below 1e-3.
        assert_close(&widen(y), &direct(&g, &x, &w), 1e-3, shape);
        let mut dw = vec![MaybeUninit::uninit(); g.out_channels * g.in_channels * 9];
        weight_gradient_into(&g, &x32, &dy32, &mut dw);
        assert_close(&widen(dw), &direct_weight_gradient(&g, &x, &dy), 1e-3, shape);
    }

    /// The transforms on one hand-worked tile: a 4x4 input of ones and the all-ones filter
    /// give, at the interior output block, 9 (every tap on an input of one).
    #[test]
    fn all_ones_give_nine_in_the_interior() {
        let g = geometry([1, 1, 4, 4, 1]);
        let x = vec![1.0f64; 16];
        let w = vec![1.0f64; 9];
        let y = written(16, |y| forward_into(&g, &x, &w, y));
        let expected = [4.0, 6.0, 6.0, 4.0, 6.0, 9.0, 9.0, 6.0, 6.0, 9.0, 9.0, 6.0, 4.0, 6.0, 6.0, 4.0];
        assert_eq!(y, expected);
    }
}
