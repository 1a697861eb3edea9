//! Brightness, Color, Contrast and Sharpness with PIL `ImageEnhance` semantics, and the
//! luma conversion they share (protocon.md s.2, RandAugment pool; SimCLR color jitter).
//!
//! `ImageEnhance.X(img).enhance(f)` is `Image.blend(degenerate, img, f)`: every byte becomes
//! `d + f * (v - d)`, evaluated in single precision (`f` is passed to C as a `float`) and
//! truncated toward zero, clipped to 0..=255 when `f` is outside [0, 1]. The degenerate
//! image `d` is:
//!
//! | op         | degenerate image                                                      |
//! |------------|-----------------------------------------------------------------------|
//! | Brightness | black                                                                 |
//! | Color      | the image's luma, `L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`     |
//! | Contrast   | uniform gray at `int(mean(L) + 0.5)`                                  |
//! | Sharpness  | the image smoothed by `[[1,1,1],[1,5,1],[1,1,1]] / 13`, border kept   |
//!
//! (PIL documents luma as `(299 R + 587 G + 114 B) / 1000`; its code uses the 16-bit
//! fixed-point form above, which rounds. We follow the code: the outputs match Pillow's.)

use super::Image;

/// `d + alpha * (v - d)` as Pillow's `ImagingBlend` computes it for 8-bit bands.
#[inline(always)]
fn blend(d: u8, v: u8, alpha: f32) -> u8 {
    // Truncating toward zero and saturating covers both of Pillow's branches at once.
    saturate_u8(d as f32 + alpha * (v as i32 - d as i32) as f32)
}

/// `v as u8`: truncation toward zero, saturating at 0 and 255, NaN to 0. A float-to-int `as`
/// cast must handle out-of-range values and NaN, which keeps loops over it scalar (one
/// `cvttss2si` per byte); once the value is known to lie in 0..=255 the unchecked conversion
/// vectorizes.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN, which the unchecked conversion must not see
fn saturate_u8(v: f32) -> u8 {
    // `max` returns 0 for NaN, so the value is a number in 0.0..=255.0.
    let v = v.max(0.0).min(255.0);
    // SAFETY: `v` is finite and within i32's range (see above).
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

/// ITU-R 601-2 luma as Pillow's `convert("L")` computes it.
#[inline(always)]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Blends every byte with a constant degenerate value through a 256-entry table.
fn blend_constant(img: &mut Image, d: u8, factor: f64) {
    let alpha = factor as f32;
    let lut: [u8; 256] = std::array::from_fn(|v| blend(d, v as u8, alpha));
    img.data_mut().iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// Scales brightness: `factor` 0 gives black, 1 the original (`ImageEnhance.Brightness`).
pub fn brightness(img: &mut Image, factor: f64) {
    blend_constant(img, 0, factor);
}

/// Scales saturation: `factor` 0 gives the gray image, 1 the original (`ImageEnhance.Color`).
/// A gray image is unchanged.
pub fn color(img: &mut Image, factor: f64) {
    if img.channels() == 1 {
        return;
    }
    let alpha = factor as f32;
    for px in img.data_mut().chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        px[0] = blend(l, px[0], alpha);
        px[1] = blend(l, px[1], alpha);
        px[2] = blend(l, px[2], alpha);
    }
}

/// Mean luma rounded as `ImageEnhance.Contrast` does: `int(mean + 0.5)`.
fn mean_luma(img: &Image) -> u8 {
    let sum: u64 = match img.channels() {
        1 => img.data().iter().map(|&v| u64::from(v)).sum(),
        _ => img.data().chunks_exact(3).map(|p| u64::from(luma(p[0], p[1], p[2]))).sum(),
    };
    let n = (img.width() * img.height()) as f64;
    (sum as f64 / n + 0.5) as u8
}

/// Scales contrast around the mean luma: `factor` 0 gives uniform gray, 1 the original
/// (`ImageEnhance.Contrast`).
pub fn contrast(img: &mut Image, factor: f64) {
    let mean = mean_luma(img);
    blend_constant(img, mean, factor);
}

/// Converts to gray in place, keeping the channel count (every channel gets the luma):
/// torchvision's `Grayscale(num_output_channels=3)` on a PIL image.
pub fn grayscale(img: &mut Image) {
    if img.channels() == 1 {
        return;
    }
    for px in img.data_mut().chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        px.fill(l);
    }
}

/// The SMOOTH kernel's weights as Pillow holds them: `float(k / 13.0)` computed in double.
fn smooth_weights() -> (f32, f32) {
    ((1.0f64 / 13.0) as f32, (5.0f64 / 13.0) as f32)
}

/// Writes the SMOOTH-filtered `src` into `dst` (Pillow's `ImagingFilter3x3`): inner pixels
/// are `clip(0.5 + sum(w * v))` truncated, summed row below, row, row above, each row
/// left to right, in single precision; the one-pixel border is copied unchanged.
fn smooth_into(src: &Image, dst: &mut Image) {
    dst.copy_from(src);
    let (w, h, c) = (src.width(), src.height(), src.channels());
    if w < 3 || h < 3 {
        return;
    }
    let (k, k5) = smooth_weights();
    let row = w * c;
    let n = row - 2 * c; // inner bytes of a row
    let s = src.data();
    let d = dst.data_mut();
    for y in 1..h - 1 {
        let above = &s[(y - 1) * row..y * row];
        let mid = &s[y * row..(y + 1) * row];
        let below = &s[(y + 1) * row..(y + 2) * row];
        let out = &mut d[y * row + c..y * row + c + n];
        // Equal-length slices for the left, centre and right taps: no bounds checks, so the
        // loop vectorizes; each element still sums in Pillow's order.
        let (bl, bc, br) = (&below[..n], &below[c..c + n], &below[2 * c..2 * c + n]);
        let (ml, mc, mr) = (&mid[..n], &mid[c..c + n], &mid[2 * c..2 * c + n]);
        let (al, ac, ar) = (&above[..n], &above[c..c + n], &above[2 * c..2 * c + n]);
        for i in 0..n {
            let mut ss = 0.5f32;
            ss += bl[i] as f32 * k + bc[i] as f32 * k + br[i] as f32 * k;
            ss += ml[i] as f32 * k + mc[i] as f32 * k5 + mr[i] as f32 * k;
            ss += al[i] as f32 * k + ac[i] as f32 * k + ar[i] as f32 * k;
            out[i] = saturate_u8(ss);
        }
    }
}

/// Scales sharpness: `factor` 0 gives the smoothed image, 1 the original, above 1 sharpens
/// (`ImageEnhance.Sharpness`). Images narrower or shorter than 3 pixels are unchanged.
///
/// `scratch` receives the smoothed (degenerate) image; its previous contents are ignored.
pub fn sharpness(img: &mut Image, factor: f64, scratch: &mut Image) {
    smooth_into(img, scratch);
    let alpha = factor as f32;
    for (v, &d) in img.data_mut().iter_mut().zip(scratch.data()) {
        *v = blend(d, *v, alpha);
    }
}
