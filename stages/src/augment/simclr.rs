//! The SimCLR-style strong view used for large data sets (protocon.md s.2): flip, color
//! jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2, Gaussian blur p 0.5,
//! solarize p 0.3. The crop (RandomResizedCrop) is a separate chain element before it.
//!
//! Semantics are torchvision's on PIL images: brightness, contrast and saturation are
//! `ImageEnhance` Brightness, Contrast and Color with a factor uniform in
//! [max(0, 1 - s), 1 + s] (extrapolating above 1, clipped); hue converts to PIL's 8-bit
//! HSV, adds `int(h * 255)` to the hue byte modulo 256 and converts back; the four run in a
//! random order. Grayscale is the luma in every channel; the blur kernel spans 10% of the
//! shorter side (odd) with sigma uniform in [0.1, 2.0]; solarize inverts values >= 128.

use super::{blur, enhance, geometry, tone, AugContext, AugmentError, Augmentation, Image};
use serde::{Deserialize, Serialize};

/// The SimCLR color/blur strong augmentation (registered as `simclr`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimclrStrong {
    /// Horizontal flip probability.
    pub flip_p: f64,
    /// Color jitter strengths: brightness, contrast, saturation, hue.
    pub jitter: [f64; 4],
    /// Probability of applying the color jitter.
    pub jitter_p: f64,
    /// Probability of converting to gray.
    pub grayscale_p: f64,
    /// Probability of blurring.
    pub blur_p: f64,
    /// Blur sigma range.
    pub blur_sigma: [f64; 2],
    /// Blur kernel size as a fraction of the shorter side (rounded down, made odd).
    pub blur_kernel: f64,
    /// Probability of solarizing.
    pub solarize_p: f64,
    /// Solarize threshold.
    pub solarize_threshold: u16,
}

impl Default for SimclrStrong {
    fn default() -> Self {
        SimclrStrong {
            flip_p: 0.5,
            jitter: [0.8, 0.8, 0.8, 0.2],
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: [0.1, 2.0],
            blur_kernel: 0.1,
            solarize_p: 0.3,
            solarize_threshold: 128,
        }
    }
}

impl SimclrStrong {
    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        let bad = |m: String| Err(AugmentError::bad_params("simclr", m));
        for (name, p) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p} is not in [0, 1]"));
            }
        }
        if self.jitter[..3].iter().any(|&s| s < 0.0) || !(0.0..=0.5).contains(&self.jitter[3]) {
            return bad(format!("jitter {:?}: strengths must be >= 0 and hue in [0, 0.5]", self.jitter));
        }
        if !(self.blur_sigma[0] > 0.0 && self.blur_sigma[0] <= self.blur_sigma[1]) {
            return bad(format!("blur_sigma {:?} must satisfy 0 < lo <= hi", self.blur_sigma));
        }
        if !(0.0..=1.0).contains(&self.blur_kernel) {
            return bad(format!("blur_kernel {} is not in [0, 1]", self.blur_kernel));
        }
        Ok(self)
    }
}

/// Pillow's RGB -> HSV (`Convert.c`, `rgb2hsv_row`): all three in 0..=255. The mix of
/// single and double precision is Pillow's (C promotes `float op double` to double).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return (0, 0, maxc);
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    // fmod(h / 6 + 1, 1) on a value in [5/6, 11/6): subtracting 1 is exact (Sterbenz), and
    // far cheaper than a libm fmod call.
    let x = f64::from(h) / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    let clip = |v: f64| (v as i32).clamp(0, 255) as u8;
    (clip(f64::from(h) * 255.0), clip(f64::from(s) * 255.0), maxc)
}

/// Pillow's HSV -> RGB (`Convert.c`, `hsv2rgb`), same precision rules; C's `round` rounds
/// halves away from zero, as Rust's `f64::round`.
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> (u8, u8, u8) {
    if s == 0 {
        return (v, v, v);
    }
    let h6 = f64::from(h) * 6.0 / 255.0;
    let i = h6 as i32; // floor: h6 >= 0
    let f = (h6 - f64::from(i)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let vf = f64::from(v);
    // C's round (halves away from zero) for x >= 0, without a libm call; x - trunc(x) is exact.
    let clip = |x: f64| {
        let t = x as i64;
        let r = if x - t as f64 >= 0.5 { t + 1 } else { t };
        r.clamp(0, 255) as u8
    };
    let p = clip(vf * (1.0 - f64::from(fs)));
    let q = clip(vf * (1.0 - f64::from(fs * f)));
    let t = clip(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    match i % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Shifts the hue by `shift` (in [-0.5, 0.5] of a turn) as torchvision's `adjust_hue` on a
/// PIL image does. Gray images are unchanged.
pub fn adjust_hue(img: &mut Image, shift: f64) {
    if img.channels() == 1 {
        return;
    }
    let delta = (shift * 255.0) as i32; // np.int8(hue_factor * 255): truncation
    for px in img.data_mut().chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
        let h = (i32::from(h) + delta).rem_euclid(256) as u8;
        let (r, g, b) = hsv_to_rgb(h, s, v);
        px[0] = r;
        px[1] = g;
        px[2] = b;
    }
}

impl Augmentation for SimclrStrong {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        // Every draw happens whatever the coins say, so the stream layout is fixed.
        let rng = ctx.rng();
        let flip = rng.chance(self.flip_p);
        let jitter = rng.chance(self.jitter_p);
        let [sb, sc, ss, sh] = self.jitter;
        let factor = |rng: &mut super::AugRng, s: f64| rng.uniform_range((1.0 - s).max(0.0), 1.0 + s);
        let (fb, fc, fs) = (factor(rng, sb), factor(rng, sc), factor(rng, ss));
        let fh = rng.uniform_range(-sh, sh);
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let gray = rng.chance(self.grayscale_p);
        let blur = rng.chance(self.blur_p);
        let sigma = rng.uniform_range(self.blur_sigma[0], self.blur_sigma[1]);
        let solarize = rng.chance(self.solarize_p);

        if flip {
            geometry::flip_horizontal(img);
            ctx.record_builtin("Flip", None, None);
        }
        if jitter {
            for step in order {
                match step {
                    0 if sb > 0.0 => {
                        enhance::brightness(img, fb);
                        ctx.record_builtin("Brightness", None, Some(fb as f32));
                    }
                    1 if sc > 0.0 => {
                        enhance::contrast(img, fc);
                        ctx.record_builtin("Contrast", None, Some(fc as f32));
                    }
                    2 if ss > 0.0 => {
                        enhance::color(img, fs);
                        ctx.record_builtin("Saturation", None, Some(fs as f32));
                    }
                    3 if sh > 0.0 => {
                        adjust_hue(img, fh);
                        ctx.record_builtin("Hue", None, Some(fh as f32));
                    }
                    _ => {}
                }
            }
        }
        if gray {
            enhance::grayscale(img);
            ctx.record_builtin("Grayscale", None, None);
        }
        if blur {
            let k = ((self.blur_kernel * img.width().min(img.height()) as f64) as usize) | 1;
            blur::gaussian_blur(img, k, sigma, ctx.workspace());
            ctx.record_builtin("GaussianBlur", None, Some(sigma as f32));
        }
        if solarize {
            tone::solarize(img, self.solarize_threshold);
            ctx.record_builtin("Solarize", None, Some(f32::from(self.solarize_threshold)));
        }
        if !ctx.handled() {
            ctx.record_skipped();
        }
    }
}
