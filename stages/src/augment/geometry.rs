//! Geometric ops with PIL semantics: affine transforms with nearest sampling (Rotate,
//! ShearX/Y, TranslateX/Y of the RandAugment pool), flips and quarter turns.
//!
//! PIL's `Image.transform(size, AFFINE, (a, b, c, d, e, f), NEAREST)` maps each *output*
//! pixel (x, y) to the input point (a x + b y + c, d x + e y + f), sampled at the pixel
//! centre, and copies the input pixel there; points outside the input get the fill color.
//! Which input pixel "there" is depends on Pillow's engine, reproduced exactly here:
//!
//! * no rotation/shear terms (`b == 0 && d == 0`, translations): double precision,
//!   `xin = (int)(c + a/2 + a x)` (coordinates below 0 are outside);
//! * otherwise, when all four corners map within +/-32768: 16.16 fixed point,
//!   `FIX(v) = floor(v * 65536 + 0.5)`, start `FIX(c + a/2 + b/2)`, steps `FIX(a)`,
//!   `FIX(b)`, sample `xx >> 16` (floor);
//! * otherwise double precision as in the first case.
//!
//! `Image.rotate(angle)` (no expand, centre (w/2, h/2)) is such a transform with the matrix
//! `[cos t, sin t, ., -sin t, cos t, .]`, t = -angle in radians, each entry rounded to 15
//! decimals as Pillow does; angles 0, 180 and (on square images) 90 and 270 are exact
//! pixel permutations instead, as in Pillow.

use super::Image;

/// Applies the PIL affine transform `(a, b, c, d, e, f)` with nearest sampling, writing the
/// result into `dst` (same size and channels as `src`); pixels that map outside `src`
/// get `fill` in every channel.
pub fn affine_nearest_into(src: &Image, dst: &mut Image, m: [f64; 6], fill: u8) {
    dst.reshape(src.width(), src.height(), src.channels());
    dst.data_mut().fill(fill);
    match src.channels() {
        1 => affine_nearest_px::<1>(src, dst, m),
        _ => affine_nearest_px::<3>(src, dst, m),
    }
}

/// Applies the PIL affine transform in place (through `scratch`).
pub fn affine_nearest(img: &mut Image, m: [f64; 6], fill: u8, scratch: &mut Image) {
    affine_nearest_into(img, scratch, m, fill);
    std::mem::swap(img, scratch);
}

/// Pillow's `COORD`: a double coordinate to a pixel index, -1 for anything negative.
#[inline(always)]
fn coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

/// Pillow's `check_fixed`: whether (x, y) maps within the 16.16 fixed-point range.
fn fits_fixed(m: &[f64; 6], x: f64, y: f64) -> bool {
    (x * m[0] + y * m[1] + m[2]).abs() < 32768.0 && (x * m[3] + y * m[4] + m[5]).abs() < 32768.0
}

fn affine_nearest_px<const C: usize>(src: &Image, dst: &mut Image, m: [f64; 6]) {
    let (w, h) = (src.width(), src.height());
    let s = src.data();
    let d = dst.data_mut();
    let copy = |d: &mut [u8], x: usize, y: usize, xin: usize, yin: usize| {
        let o = (y * w + x) * C;
        let i = (yin * w + xin) * C;
        d[o..o + C].copy_from_slice(&s[i..i + C]);
    };
    if m[1] == 0.0 && m[3] == 0.0 {
        // ImagingScaleAffine (it tabulates the x positions once; recomputing them per row
        // repeats the same additions, so gives the same values without a buffer).
        let mut yo = m[5] + m[4] * 0.5;
        for y in 0..h {
            let yin = coord(yo);
            if yin >= 0 && (yin as usize) < h {
                let mut xo = m[2] + m[0] * 0.5;
                for x in 0..w {
                    let xin = coord(xo);
                    if xin >= 0 && (xin as usize) < w {
                        copy(d, x, y, xin as usize, yin as usize);
                    }
                    xo += m[0];
                }
            }
            yo += m[4];
        }
        return;
    }
    let (wf, hf) = (w as f64, h as f64);
    if fits_fixed(&m, 0.0, 0.0) && fits_fixed(&m, wf, hf) && fits_fixed(&m, 0.0, hf) && fits_fixed(&m, wf, 0.0) {
        // affine_fixed.
        let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
        let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
        let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
        let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
        let (wi, hi) = (w as i32, h as i32);
        for y in 0..h {
            let (mut xx, mut yy) = (a2, a5);
            for x in 0..w {
                let xin = xx >> 16;
                if xin >= 0 && xin < wi {
                    let yin = yy >> 16;
                    if yin >= 0 && yin < hi {
                        copy(d, x, y, xin as usize, yin as usize);
                    }
                }
                xx = xx.wrapping_add(a0);
                yy = yy.wrapping_add(a3);
            }
            a2 = a2.wrapping_add(a1);
            a5 = a5.wrapping_add(a4);
        }
        return;
    }
    // ImagingTransformAffine's floating-point loop.
    let mut xo = m[2] + m[1] * 0.5 + m[0] * 0.5;
    let mut yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
    for y in 0..h {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..w {
            let xin = coord(xx);
            if xin >= 0 && (xin as usize) < w {
                let yin = coord(yy);
                if yin >= 0 && (yin as usize) < h {
                    copy(d, x, y, xin as usize, yin as usize);
                }
            }
            xx += m[0];
            yy += m[3];
        }
        xo += m[1];
        yo += m[4];
    }
}

/// Python's `round(x, 15)` (correctly rounded to 15 decimals), used by `Image.rotate`.
fn round15(x: f64) -> f64 {
    format!("{x:.15}").parse().expect("a formatted float parses")
}

/// The affine matrix Pillow's `Image.rotate(angle)` uses (centre (w/2, h/2), no expand),
/// for an angle already reduced to [0, 360).
fn rotation_matrix(angle_deg: f64, w: usize, h: usize) -> [f64; 6] {
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let t = -angle_deg.to_radians();
    let (cos, sin) = (round15(t.cos()), round15(t.sin()));
    let mut m = [cos, sin, 0.0, round15(-t.sin()), cos, 0.0];
    let (x, y) = (-cx, -cy);
    // Pillow: `a * x + b * y + c` with c = 0 (addition commutes, so `+=` is the same value).
    m[2] += m[0] * x + m[1] * y;
    m[5] += m[3] * x + m[4] * y;
    m[2] += cx;
    m[5] += cy;
    m
}

/// Rotates counter-clockwise by `angle_deg` degrees about the image centre, nearest
/// sampling, uncovered corners filled with `fill` (`img.rotate(angle, fillcolor=fill)`).
pub fn rotate(img: &mut Image, angle_deg: f64, fill: u8, scratch: &mut Image) {
    // Python's float `%`: the result takes the divisor's sign.
    let angle = angle_deg.rem_euclid(360.0);
    let square = img.width() == img.height();
    if angle == 0.0 {
    } else if angle == 180.0 {
        rotate_180(img);
    } else if angle == 90.0 && square {
        quarter_turn_into(img, scratch, true);
        std::mem::swap(img, scratch);
    } else if angle == 270.0 && square {
        quarter_turn_into(img, scratch, false);
        std::mem::swap(img, scratch);
    } else {
        let m = rotation_matrix(angle, img.width(), img.height());
        affine_nearest(img, m, fill, scratch);
    }
}

/// Shears horizontally: output (x, y) samples input (x + v y, y) (`AFFINE (1, v, 0, 0, 1, 0)`).
pub fn shear_x(img: &mut Image, v: f64, fill: u8, scratch: &mut Image) {
    affine_nearest(img, [1.0, v, 0.0, 0.0, 1.0, 0.0], fill, scratch);
}

/// Shears vertically: output (x, y) samples input (x, v x + y) (`AFFINE (1, 0, 0, v, 1, 0)`).
pub fn shear_y(img: &mut Image, v: f64, fill: u8, scratch: &mut Image) {
    affine_nearest(img, [1.0, 0.0, 0.0, v, 1.0, 0.0], fill, scratch);
}

/// Output (x, y) samples input (x + dx, y) (`AFFINE (1, 0, dx, 0, 1, 0)`): a positive `dx`
/// moves the content left by `dx` pixels.
pub fn translate_x(img: &mut Image, dx: i64, fill: u8, scratch: &mut Image) {
    shift_into(img, scratch, dx, 0, fill);
    std::mem::swap(img, scratch);
}

/// Output (x, y) samples input (x, y + dy): a positive `dy` moves the content up.
pub fn translate_y(img: &mut Image, dy: i64, fill: u8, scratch: &mut Image) {
    shift_into(img, scratch, 0, dy, fill);
    std::mem::swap(img, scratch);
}

/// Output (x, y) = input (x + dx, y + dy), `fill` outside: for whole-pixel shifts this is
/// exactly what Pillow's nearest affine (`ImagingScaleAffine`) gives, done with row copies.
pub fn shift_into(src: &Image, dst: &mut Image, dx: i64, dy: i64, fill: u8) {
    let (w, h, c) = (src.width(), src.height(), src.channels());
    dst.reshape(w, h, c);
    dst.data_mut().fill(fill);
    let (wi, hi) = (w as i64, h as i64);
    // Output columns x with 0 <= x + dx < w, rows y with 0 <= y + dy < h.
    let (x0, x1) = ((-dx).clamp(0, wi), (wi - dx).clamp(0, wi));
    let (y0, y1) = ((-dy).clamp(0, hi), (hi - dy).clamp(0, hi));
    if x0 >= x1 {
        return;
    }
    let (x0, x1) = (x0 as usize, x1 as usize);
    let sx0 = (x0 as i64 + dx) as usize;
    for y in y0..y1 {
        let sy = (y + dy) as usize;
        let s = &src.row(sy)[sx0 * c..(sx0 + x1 - x0) * c];
        dst.row_mut(y as usize)[x0 * c..x1 * c].copy_from_slice(s);
    }
}

/// Mirrors left-right.
pub fn flip_horizontal(img: &mut Image) {
    let row = img.row_len();
    if img.channels() == 1 {
        img.data_mut().chunks_exact_mut(row).for_each(<[u8]>::reverse);
        return;
    }
    // Each row is copied aside, then its pixels are written back in reverse order.
    let mut copy = vec![0u8; row];
    for r in img.data_mut().chunks_exact_mut(row) {
        copy.copy_from_slice(r);
        reverse_rgb(&copy, r);
    }
}

/// Writes the RGB pixels of `src` into `dst` (the same length) in reverse order.
///
/// Flipping is the last op of every RandomResizedCrop view, so it runs on half of all views
/// at 224x224; with SSSE3 (any x86-64 CPU since 2006) a byte shuffle reverses five pixels at
/// once, several times faster than moving three bytes per pixel.
fn reverse_rgb(src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3, checked just above.
        let done = unsafe { reverse_rgb_ssse3(src, dst) };
        return reverse_rgb_scalar(&src[..src.len() - done], &mut dst[done..]);
    }
    reverse_rgb_scalar(src, dst);
}

fn reverse_rgb_scalar(src: &[u8], dst: &mut [u8]) {
    let (src, _) = src.as_chunks::<3>();
    let (dst, _) = dst.as_chunks_mut::<3>();
    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
        *d = *s;
    }
}

/// Reverses the first 5 g pixels of `dst` from the last ones of `src`, five at a time, with
/// 16-byte loads and stores that stay inside both slices; returns the bytes of `dst` done
/// (a multiple of 15, leaving at least one pixel for [`reverse_rgb_scalar`], which
/// overwrites the one byte each store writes past its five pixels).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn reverse_rgb_ssse3(src: &[u8], dst: &mut [u8]) -> usize {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_setr_epi8, _mm_shuffle_epi8, _mm_storeu_si128};
    assert_eq!(src.len(), dst.len());
    let n = src.len() / 3;
    // Group g writes dst pixels 5g..5g+5 from src pixels n-5-5g..n-5g, loaded from one byte
    // before them: lane j holds src byte 3(n-5-5g) - 1 + j. Both ends stay in bounds while
    // 5g <= n - 6.
    let groups = if n >= 6 { (n - 6) / 5 + 1 } else { 0 };
    let mask = _mm_setr_epi8(13, 14, 15, 10, 11, 12, 7, 8, 9, 4, 5, 6, 1, 2, 3, 0);
    for g in 0..groups {
        let from = 3 * (n - 5 - 5 * g) - 1;
        let to = 15 * g;
        debug_assert!(from + 16 <= src.len() && to + 16 <= dst.len());
        // SAFETY: both 16-byte ranges are in bounds (5g <= n - 6, see above).
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().add(from) as *const __m128i);
            _mm_storeu_si128(dst.as_mut_ptr().add(to) as *mut __m128i, _mm_shuffle_epi8(v, mask));
        }
    }
    15 * groups
}

/// Turns by 180 degrees (Pillow's `Transpose.ROTATE_180`).
pub fn rotate_180(img: &mut Image) {
    let c = img.channels();
    let data = img.data_mut();
    let n = data.len() / c;
    for p in 0..n / 2 {
        let q = n - 1 - p;
        for k in 0..c {
            data.swap(p * c + k, q * c + k);
        }
    }
}

/// Writes `src` turned a quarter counter-clockwise (`ROTATE_90`, `ccw`) or clockwise
/// (`ROTATE_270`) into `dst`; width and height swap.
pub fn quarter_turn_into(src: &Image, dst: &mut Image, ccw: bool) {
    let (w, h, c) = (src.width(), src.height(), src.channels());
    dst.reshape(h, w, c);
    let (ow, oh) = (h, w);
    for y in 0..oh {
        for x in 0..ow {
            // ROTATE_90: out(x, y) = in(w-1-y, x); ROTATE_270: out(x, y) = in(y, h-1-x).
            let (xin, yin) = if ccw { (w - 1 - y, x) } else { (y, h - 1 - x) };
            let o = (y * ow + x) * c;
            let i = (yin * w + xin) * c;
            dst.data_mut()[o..o + c].copy_from_slice(&src.data()[i..i + c]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flipping_reverses_the_pixels_of_every_row_at_every_width() {
        // Widths around the 5-pixel groups of the shuffled path and its bounds (n - 6),
        // checked pixel by pixel against the definition.
        for width in (1..=40).chain([223, 224, 225, 500]) {
            for channels in [1, 3] {
                let (w, h) = (width, 3);
                let data: Vec<u8> = (0..w * h * channels).map(|i| (i * 7 % 251) as u8).collect();
                let src = Image::new(w, h, channels, data).unwrap();
                let mut img = src.clone();
                flip_horizontal(&mut img);
                for y in 0..h {
                    for x in 0..w {
                        assert_eq!(img.pixel(x, y), src.pixel(w - 1 - x, y), "width {w}, {channels} channels, ({x}, {y})");
                    }
                }
            }
        }
    }
}
