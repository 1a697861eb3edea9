//! Would a direct 3x3 convolution beat im2col + `gemm` on this CPU (issue 18)? Three direct
//! forward kernels for 3x3 stride-1 "same" convolutions, AVX2 + FMA, one thread, against
//! `protocon::ops::conv2d` (im2col + `gemm`) on the 3x3 layer shapes of WRN-28-2 (32x32 input)
//! and cnn-small (28x28), 16 images:
//!
//! 1. "W-vectorised": output pixels in vectors (two runs of 8 along a row), six output
//!    channels' weights broadcast; reads a zero-padded copy of the image, no im2col.
//! 2. "k-vectorised": 16 output channels in two vectors of packed weights, six consecutive
//!    output pixels' inputs broadcast (gemm's 16x6 micro-kernel with the image itself as the
//!    right-hand operand: an implicit GEMM, no im2col, no packing of the columns).
//! 3. the same, over blocks of 32 input channels with partial sums in a pixel-major buffer.
//!
//! `cargo run --release --example direct_conv_probe` (x86-64 with AVX2 and FMA). Each line
//! gives the largest difference from `ops::conv2d` and GFLOP/s (best of 5 rounds of 5 calls).
//! The results are recorded in BENCHMARKS.md; none of these kernels is used by the library.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("direct_conv_probe: x86-64 only");
}

#[cfg(target_arch = "x86_64")]
use probe::main;

#[cfg(target_arch = "x86_64")]
mod probe {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::time::Instant;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const KB: usize, const NV: usize>(
        xp: *const f32,
        offs: [usize; NV],
        plane: usize,
        wp: usize,
        wk: *const f32,
        c: usize,
        outs: [*mut f32; NV],
        out_plane: usize,
        valid: [usize; NV],
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; KB];
        for ci in 0..c {
            let base = xp.add(ci * plane);
            let w = wk.add(ci * 9 * KB);
            for ky in 0..3 {
                for kx in 0..3 {
                    let off = ky * wp + kx;
                    let mut v = [_mm256_setzero_ps(); NV];
                    for r in 0..NV {
                        v[r] = _mm256_loadu_ps(base.add(offs[r] + off));
                    }
                    for j in 0..KB {
                        let wv = _mm256_broadcast_ss(&*w.add((ky * 3 + kx) * KB + j));
                        for r in 0..NV {
                            acc[j][r] = _mm256_fmadd_ps(wv, v[r], acc[j][r]);
                        }
                    }
                }
            }
        }
        for j in 0..KB {
            for r in 0..NV {
                let p = outs[r].add(j * out_plane);
                if valid[r] == 8 {
                    _mm256_storeu_ps(p, acc[j][r]);
                } else {
                    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid[r] as i32), lanes);
                    _mm256_maskstore_ps(p, mask, acc[j][r]);
                }
            }
        }
    }

    /// x: C x H x W, w: K x C x 3 x 3 -> y: K x H x W.
    fn direct(
        x: &[f32],
        c: usize,
        h: usize,
        wd: usize,
        w: &[f32],
        k: usize,
        y: &mut [f32],
        xp: &mut Vec<f32>,
        wpk: &mut Vec<f32>,
    ) {
        let wp = wd + 2;
        let plane = (h + 2) * wp;
        pad_image(x, c, h, wd, xp);
        // blocks of 6 output channels, then of 2: [block][c][9][kb]
        let blocks: Vec<(usize, usize)> = (0..k / 6)
            .map(|b| (b * 6, 6))
            .chain(((k / 6) * 6..k).step_by(2).map(|k0| (k0, 2)))
            .collect();
        wpk.clear();
        wpk.resize(k * c * 9, 0.0);
        for &(k0, kb) in &blocks {
            for ci in 0..c {
                for t in 0..9 {
                    for j in 0..kb {
                        wpk[k0 * c * 9 + (ci * 9 + t) * kb + j] = w[((k0 + j) * c + ci) * 9 + t];
                    }
                }
            }
        }
        let runs: Vec<(usize, usize, usize)> = (0..h)
            .flat_map(|oy| (0..wd).step_by(8).map(move |ox| (oy, ox, (wd - ox).min(8))))
            .collect();
        let out_plane = h * wd;
        for &(k0, kb) in &blocks {
            let wk = wpk[k0 * c * 9..].as_ptr();
            let ybase = y[k0 * out_plane..].as_mut_ptr();
            let mut chunks = runs.chunks_exact(2);
            for ch in &mut chunks {
                let offs = [0, 1].map(|i| ch[i].0 * wp + ch[i].1);
                let outs = [0, 1].map(|i| unsafe { ybase.add(ch[i].0 * wd + ch[i].1) });
                let valid = [0, 1].map(|i| ch[i].2);
                unsafe {
                    if kb == 6 {
                        tile::<6, 2>(xp.as_ptr(), offs, plane, wp, wk, c, outs, out_plane, valid)
                    } else {
                        tile::<2, 2>(xp.as_ptr(), offs, plane, wp, wk, c, outs, out_plane, valid)
                    }
                };
            }
            for r in chunks.remainder() {
                unsafe {
                    if kb == 6 {
                        tile::<6, 1>(
                            xp.as_ptr(),
                            [r.0 * wp + r.1],
                            plane,
                            wp,
                            wk,
                            c,
                            [ybase.add(r.0 * wd + r.1)],
                            out_plane,
                            [r.2],
                        )
                    } else {
                        tile::<2, 1>(
                            xp.as_ptr(),
                            [r.0 * wp + r.1],
                            plane,
                            wp,
                            wk,
                            c,
                            [ybase.add(r.0 * wd + r.1)],
                            out_plane,
                            [r.2],
                        )
                    }
                };
            }
        }
    }

    /// Forward tile, k-vectorised: 16 output channels (two vectors of the packed weights) x P
    /// consecutive output pixels of one row (broadcast inputs).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ktile<const P: usize>(
        xp: *const f32,
        plane: usize,
        wp: usize,
        wk: *const f32,
        c: usize,
        out: *mut f32,
        out_plane: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); P]; 2];
        for ci in 0..c {
            let base = xp.add(ci * plane);
            let w = wk.add(ci * 9 * 16);
            for ky in 0..3 {
                for kx in 0..3 {
                    let w0 = _mm256_load_ps(w.add((ky * 3 + kx) * 16));
                    let w1 = _mm256_load_ps(w.add((ky * 3 + kx) * 16 + 8));
                    for p in 0..P {
                        let xv = _mm256_broadcast_ss(&*base.add(ky * wp + kx + p));
                        acc[0][p] = _mm256_fmadd_ps(w0, xv, acc[0][p]);
                        acc[1][p] = _mm256_fmadd_ps(w1, xv, acc[1][p]);
                    }
                }
            }
        }
        let mut tmp = [0f32; 8];
        for r in 0..2 {
            for p in 0..P {
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc[r][p]);
                for j in 0..8 {
                    *out.add((r * 8 + j) * out_plane + p) = tmp[j];
                }
            }
        }
    }

    /// As `ktile`, accumulating into `acc_buf` ([pixel][16], aligned) over channels `c`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ktile_acc<const P: usize>(
        xp: *const f32,
        plane: usize,
        wp: usize,
        wk: *const f32,
        c: usize,
        acc_buf: *mut f32,
        first: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); P]; 2];
        if !first {
            for p in 0..P {
                acc[0][p] = _mm256_load_ps(acc_buf.add(p * 16));
                acc[1][p] = _mm256_load_ps(acc_buf.add(p * 16 + 8));
            }
        }
        for ci in 0..c {
            let base = xp.add(ci * plane);
            let w = wk.add(ci * 9 * 16);
            for ky in 0..3 {
                for kx in 0..3 {
                    let w0 = _mm256_load_ps(w.add((ky * 3 + kx) * 16));
                    let w1 = _mm256_load_ps(w.add((ky * 3 + kx) * 16 + 8));
                    for p in 0..P {
                        let xv = _mm256_broadcast_ss(&*base.add(ky * wp + kx + p));
                        acc[0][p] = _mm256_fmadd_ps(w0, xv, acc[0][p]);
                        acc[1][p] = _mm256_fmadd_ps(w1, xv, acc[1][p]);
                    }
                }
            }
        }
        for p in 0..P {
            _mm256_store_ps(acc_buf.add(p * 16), acc[0][p]);
            _mm256_store_ps(acc_buf.add(p * 16 + 8), acc[1][p]);
        }
    }

    /// Blocked over input channels (chunks of `CHUNK`), partial sums in a [pixel][16] buffer.
    fn kdirect_blocked(
        x: &[f32],
        c: usize,
        h: usize,
        wd: usize,
        w: &[f32],
        k: usize,
        y: &mut [f32],
        xp: &mut Vec<f32>,
        wpk: &mut Vec<A32>,
        accb: &mut Vec<A32>,
    ) {
        const CHUNK: usize = 32;
        let wp = wd + 2;
        let plane = (h + 2) * wp;
        pad_image(x, c, h, wd, xp);
        let flat = pack_weights16(w, c, k, wpk);
        let out_plane = h * wd;
        accb.clear();
        accb.resize(out_plane * 2, A32([0.0; 8]));
        let acc: *mut f32 = accb.as_mut_ptr().cast();
        for kb in 0..k / 16 {
            for c0 in (0..c).step_by(CHUNK) {
                let cn = CHUNK.min(c - c0);
                let wk = flat[(kb * c + c0) * 9 * 16..].as_ptr();
                for oy in 0..h {
                    let mut ox = 0;
                    while ox < wd {
                        let pixels = (wd - ox).min(6);
                        let xb = xp[c0 * plane + oy * wp + ox..].as_ptr();
                        let a = unsafe { acc.add((oy * wd + ox) * 16) };
                        let first = c0 == 0;
                        unsafe {
                            match pixels {
                                6 => ktile_acc::<6>(xb, plane, wp, wk, cn, a, first),
                                5 => ktile_acc::<5>(xb, plane, wp, wk, cn, a, first),
                                4 => ktile_acc::<4>(xb, plane, wp, wk, cn, a, first),
                                3 => ktile_acc::<3>(xb, plane, wp, wk, cn, a, first),
                                2 => ktile_acc::<2>(xb, plane, wp, wk, cn, a, first),
                                _ => ktile_acc::<1>(xb, plane, wp, wk, cn, a, first),
                            }
                        }
                        ox += pixels;
                    }
                }
            }
            let accs: &[f32] = unsafe { std::slice::from_raw_parts(acc, out_plane * 16) };
            for j in 0..16 {
                let dst = &mut y[(kb * 16 + j) * out_plane..][..out_plane];
                for (p, d) in dst.iter_mut().enumerate() {
                    *d = accs[p * 16 + j];
                }
            }
        }
    }

    /// `x` (C x H x W) into `xp` with a zero border of one pixel and 16 floats of slack.
    fn pad_image(x: &[f32], c: usize, h: usize, wd: usize, xp: &mut Vec<f32>) {
        let wp = wd + 2;
        let plane = (h + 2) * wp;
        xp.clear();
        xp.resize(c * plane + 16, 0.0);
        for ci in 0..c {
            for iy in 0..h {
                xp[ci * plane + (iy + 1) * wp + 1..][..wd]
                    .copy_from_slice(&x[(ci * h + iy) * wd..][..wd]);
            }
        }
    }

    /// `w` (K x C x 3 x 3) packed as [K/16][C][9][16] into the 32-byte-aligned `wpk`.
    fn pack_weights16<'a>(w: &[f32], c: usize, k: usize, wpk: &'a mut Vec<A32>) -> &'a mut [f32] {
        wpk.clear();
        wpk.resize(k * c * 9 / 8, A32([0.0; 8]));
        // SAFETY: A32 is 8 floats; the vector holds k*c*9 of them.
        let flat: &mut [f32] =
            unsafe { std::slice::from_raw_parts_mut(wpk.as_mut_ptr().cast(), k * c * 9) };
        for kb in 0..k / 16 {
            for ci in 0..c {
                for t in 0..9 {
                    for j in 0..16 {
                        flat[((kb * c + ci) * 9 + t) * 16 + j] =
                            w[((kb * 16 + j) * c + ci) * 9 + t];
                    }
                }
            }
        }
        flat
    }

    #[repr(align(32))]
    #[allow(dead_code)] // only its size and alignment are used: a 32-byte-aligned buffer of floats
    #[derive(Clone, Copy)]
    struct A32([f32; 8]);

    /// k-vectorised direct convolution (K a multiple of 16).
    fn kdirect(
        x: &[f32],
        c: usize,
        h: usize,
        wd: usize,
        w: &[f32],
        k: usize,
        y: &mut [f32],
        xp: &mut Vec<f32>,
        wpk: &mut Vec<A32>,
    ) {
        let wp = wd + 2;
        let plane = (h + 2) * wp;
        pad_image(x, c, h, wd, xp);
        let flat = pack_weights16(w, c, k, wpk);
        let out_plane = h * wd;
        for kb in 0..k / 16 {
            let wk = flat[kb * c * 9 * 16..].as_ptr();
            for oy in 0..h {
                let mut ox = 0;
                while ox < wd {
                    let pixels = (wd - ox).min(6);
                    let xb = xp[oy * wp + ox..].as_ptr();
                    let out = y[kb * 16 * out_plane + oy * wd + ox..].as_mut_ptr();
                    unsafe {
                        match pixels {
                            6 => ktile::<6>(xb, plane, wp, wk, c, out, out_plane),
                            5 => ktile::<5>(xb, plane, wp, wk, c, out, out_plane),
                            4 => ktile::<4>(xb, plane, wp, wk, c, out, out_plane),
                            3 => ktile::<3>(xb, plane, wp, wk, c, out, out_plane),
                            2 => ktile::<2>(xb, plane, wp, wk, c, out, out_plane),
                            _ => ktile::<1>(xb, plane, wp, wk, c, out, out_plane),
                        }
                    }
                    ox += pixels;
                }
            }
        }
    }

    pub fn main() -> candle_core::Result<()> {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            println!("direct_conv_probe: needs AVX2 and FMA");
            return Ok(());
        }
        protocon::ops::set_num_threads(1);
        let dev = Device::Cpu;
        for &(c, k, hw) in &[
            (32usize, 32usize, 32usize),
            (64, 64, 16),
            (128, 128, 8),
            (32, 32, 28),
            (64, 64, 14),
            (128, 128, 7),
        ] {
            let n = 16;
            let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?;
            let w = Tensor::randn(0f32, 0.1, (k, c, 3, 3), &dev)?;
            let reference = protocon::ops::conv2d(&x, &w, 1, 1)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let wv = w.flatten_all()?.to_vec1::<f32>()?;
            let mut y = vec![0f32; n * k * hw * hw];
            let (mut xp, mut wpk) = (Vec::new(), Vec::new());
            let run_direct = |y: &mut Vec<f32>, xp: &mut Vec<f32>, wpk: &mut Vec<f32>| {
                for i in 0..n {
                    direct(
                        &xv[i * c * hw * hw..][..c * hw * hw],
                        c,
                        hw,
                        hw,
                        &wv,
                        k,
                        &mut y[i * k * hw * hw..][..k * hw * hw],
                        xp,
                        wpk,
                    );
                }
            };
            run_direct(&mut y, &mut xp, &mut wpk);
            let r = reference.flatten_all()?.to_vec1::<f32>()?;
            let err = r
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let flops = 2.0 * (n * k * c * 9 * hw * hw) as f64;
            let time = |f: &mut dyn FnMut()| {
                f();
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..5 {
                            f()
                        }
                        t.elapsed().as_secs_f64() / 5.0
                    })
                    .fold(f64::MAX, f64::min)
            };
            let td = time(&mut || run_direct(&mut y, &mut xp, &mut wpk));
            let tg = time(&mut || {
                protocon::ops::conv2d(&x, &w, 1, 1).unwrap();
            });
            let mut wk = Vec::new();
            let run_k = |y: &mut Vec<f32>, xp: &mut Vec<f32>, wk: &mut Vec<A32>| {
                for i in 0..n {
                    kdirect(
                        &xv[i * c * hw * hw..][..c * hw * hw],
                        c,
                        hw,
                        hw,
                        &wv,
                        k,
                        &mut y[i * k * hw * hw..][..k * hw * hw],
                        xp,
                        wk,
                    );
                }
            };
            run_k(&mut y, &mut xp, &mut wk);
            let kerr = r
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let tk = time(&mut || run_k(&mut y, &mut xp, &mut wk));
            let mut accb = Vec::new();
            let run_b =
                |y: &mut Vec<f32>, xp: &mut Vec<f32>, wk: &mut Vec<A32>, accb: &mut Vec<A32>| {
                    for i in 0..n {
                        kdirect_blocked(
                            &xv[i * c * hw * hw..][..c * hw * hw],
                            c,
                            hw,
                            hw,
                            &wv,
                            k,
                            &mut y[i * k * hw * hw..][..k * hw * hw],
                            xp,
                            wk,
                            accb,
                        );
                    }
                };
            run_b(&mut y, &mut xp, &mut wk, &mut accb);
            let berr = r
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let tb = time(&mut || run_b(&mut y, &mut xp, &mut wk, &mut accb));
            let rate = |t: f64| flops / t / 1e9;
            println!("{c}->{k} {hw}x{hw}: im2col+gemm {:.1} GFLOP/s; W-vectorised {:.1} ({:.2}x, max diff {err:.1e}); k-vectorised {:.1} ({:.2}x, {kerr:.1e}); k-vectorised blocked {:.1} ({:.2}x, {berr:.1e})", rate(tg), rate(td), tg / td, rate(tk), tg / tk, rate(tb), tg / tb);
        }
        Ok(())
    }
}
