//! RandAugment, FixMatch variant (protocon.md s.2): pick `n` ops uniformly (with
//! replacement) from the 14-op pool, apply each with probability `p` at an integer
//! magnitude drawn uniformly from `magnitude[0]..=magnitude[1]` out of 10.
//!
//! Magnitude -> parameter, as in `fixmatch_augment_pool` of the public FixMatch-pytorch code
//! (kekmodel), with `PARAMETER_MAX = 10`, `float(m) * max_v / 10 + bias` for float
//! parameters and `int(m * max_v / 10) + bias` for integer ones. Ops marked +/- negate the
//! value with probability 1/2. Columns m=1 and m=9 are the ends of the default range.
//!
//! | op           | parameter                        | formula                  | m=1   | m=9   |
//! |--------------|----------------------------------|--------------------------|-------|-------|
//! | AutoContrast | -                                |                          |       |       |
//! | Brightness   | enhance factor                   | 0.9 m / 10 + 0.05        | 0.14  | 0.86  |
//! | Color        | enhance factor                   | 0.9 m / 10 + 0.05        | 0.14  | 0.86  |
//! | Contrast     | enhance factor                   | 0.9 m / 10 + 0.05        | 0.14  | 0.86  |
//! | Equalize     | -                                |                          |       |       |
//! | Identity     | -                                |                          |       |       |
//! | Posterize    | bits kept                        | int(4 m / 10) + 4        | 4     | 7     |
//! | Rotate       | degrees, +/-                     | int(30 m / 10)           | 3     | 27    |
//! | Sharpness    | enhance factor                   | 0.9 m / 10 + 0.05        | 0.14  | 0.86  |
//! | ShearX/Y     | shear, +/-                       | 0.3 m / 10               | 0.03  | 0.27  |
//! | Solarize     | threshold                        | 256 - int(256 m / 10)    | 231   | 26    |
//! | TranslateX/Y | pixels, +/-                      | int(+/-0.3 m / 10 * side)| 0 (32)| 8 (32)|
//!
//! Choice (protocon.md asks to pick one and say so): the enhance factors follow that code,
//! 0.05..0.95 over the full 0..10 scale, so they always *reduce* brightness, saturation,
//! contrast and sharpness; some ports use 1 +/- x instead. Rotate, shear and translate fill
//! uncovered pixels with `fill` (default 128, mid gray, as the TensorFlow FixMatch ops do);
//! the kekmodel code passes no fill color, i.e. black: set `fill = 0` to reproduce it.
//!
//! Draw order (one random stream per RandAugment element): for each of the `n` picks, the op
//! index, the magnitude, the apply coin and the sign coin, always all four, so one pick's
//! outcome never shifts the next pick's draws.

use super::{enhance, geometry, tone, AugContext, AugmentError, Augmentation, Image};
use serde::{Deserialize, Serialize};

/// PIL's `PARAMETER_MAX`: magnitudes are out of 10.
pub const MAX_MAGNITUDE: u8 = 10;

/// The 14 ops of the FixMatch RandAugment pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandAugmentOp {
    AutoContrast,
    Brightness,
    Color,
    Contrast,
    Equalize,
    Identity,
    Posterize,
    Rotate,
    Sharpness,
    ShearX,
    ShearY,
    Solarize,
    TranslateX,
    TranslateY,
}

/// The parameter an op is applied with, already derived from the magnitude and sign.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpParam {
    /// The op takes no parameter.
    None,
    /// An `ImageEnhance` factor.
    Factor(f64),
    /// Bits kept by Posterize.
    Bits(u8),
    /// Rotation in degrees (counter-clockwise positive).
    Degrees(f64),
    /// Shear coefficient.
    Shear(f64),
    /// Solarize threshold, 0..=256.
    Threshold(u16),
    /// Translation in pixels.
    Pixels(i64),
}

impl OpParam {
    /// The parameter as one number for logs.
    pub fn as_f32(self) -> Option<f32> {
        match self {
            OpParam::None => None,
            OpParam::Factor(v) | OpParam::Degrees(v) | OpParam::Shear(v) => Some(v as f32),
            OpParam::Bits(b) => Some(f32::from(b)),
            OpParam::Threshold(t) => Some(f32::from(t)),
            OpParam::Pixels(p) => Some(p as f32),
        }
    }
}

impl RandAugmentOp {
    /// The pool, in the order of `fixmatch_augment_pool`.
    pub const ALL: [RandAugmentOp; 14] = [
        RandAugmentOp::AutoContrast,
        RandAugmentOp::Brightness,
        RandAugmentOp::Color,
        RandAugmentOp::Contrast,
        RandAugmentOp::Equalize,
        RandAugmentOp::Identity,
        RandAugmentOp::Posterize,
        RandAugmentOp::Rotate,
        RandAugmentOp::Sharpness,
        RandAugmentOp::ShearX,
        RandAugmentOp::ShearY,
        RandAugmentOp::Solarize,
        RandAugmentOp::TranslateX,
        RandAugmentOp::TranslateY,
    ];

    /// The op's name in logs (the FixMatch code's function name).
    pub fn name(self) -> &'static str {
        match self {
            RandAugmentOp::AutoContrast => "AutoContrast",
            RandAugmentOp::Brightness => "Brightness",
            RandAugmentOp::Color => "Color",
            RandAugmentOp::Contrast => "Contrast",
            RandAugmentOp::Equalize => "Equalize",
            RandAugmentOp::Identity => "Identity",
            RandAugmentOp::Posterize => "Posterize",
            RandAugmentOp::Rotate => "Rotate",
            RandAugmentOp::Sharpness => "Sharpness",
            RandAugmentOp::ShearX => "ShearX",
            RandAugmentOp::ShearY => "ShearY",
            RandAugmentOp::Solarize => "Solarize",
            RandAugmentOp::TranslateX => "TranslateX",
            RandAugmentOp::TranslateY => "TranslateY",
        }
    }

    /// Whether the op draws a random sign.
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            RandAugmentOp::Rotate
                | RandAugmentOp::ShearX
                | RandAugmentOp::ShearY
                | RandAugmentOp::TranslateX
                | RandAugmentOp::TranslateY
        )
    }

    /// The parameter for magnitude `m` (0..=10) on a `width` x `height` image, negated when
    /// `negative` and the op is signed (see the module table).
    pub fn param(self, m: u8, negative: bool, width: usize, height: usize) -> OpParam {
        let m = f64::from(m);
        let max = f64::from(MAX_MAGNITUDE);
        let sign = |v: f64| if negative { -v } else { v };
        let factor = || OpParam::Factor(m * 0.9 / max + 0.05);
        match self {
            RandAugmentOp::AutoContrast | RandAugmentOp::Equalize | RandAugmentOp::Identity => OpParam::None,
            RandAugmentOp::Brightness | RandAugmentOp::Color | RandAugmentOp::Contrast | RandAugmentOp::Sharpness => {
                factor()
            }
            RandAugmentOp::Posterize => OpParam::Bits((m * 4.0 / max) as u8 + 4),
            RandAugmentOp::Rotate => OpParam::Degrees(sign((m * 30.0 / max).trunc())),
            RandAugmentOp::ShearX | RandAugmentOp::ShearY => OpParam::Shear(sign(m * 0.3 / max)),
            RandAugmentOp::Solarize => OpParam::Threshold(256 - (m * 256.0 / max) as u16),
            RandAugmentOp::TranslateX => OpParam::Pixels((sign(m * 0.3 / max) * width as f64) as i64),
            RandAugmentOp::TranslateY => OpParam::Pixels((sign(m * 0.3 / max) * height as f64) as i64),
        }
    }

    /// Applies the op with an explicit parameter (from [`RandAugmentOp::param`]).
    ///
    /// `fill` colors pixels uncovered by Rotate/Shear/Translate; `scratch` is a reusable
    /// buffer. A parameter of the wrong kind for the op leaves the image unchanged.
    pub fn apply_param(self, img: &mut Image, param: OpParam, fill: u8, scratch: &mut Image) {
        use RandAugmentOp as O;
        match (self, param) {
            (O::AutoContrast, _) => tone::autocontrast(img),
            (O::Equalize, _) => tone::equalize(img),
            (O::Identity, _) => {}
            (O::Brightness, OpParam::Factor(f)) => enhance::brightness(img, f),
            (O::Color, OpParam::Factor(f)) => enhance::color(img, f),
            (O::Contrast, OpParam::Factor(f)) => enhance::contrast(img, f),
            (O::Sharpness, OpParam::Factor(f)) => enhance::sharpness(img, f, scratch),
            (O::Posterize, OpParam::Bits(b)) => tone::posterize(img, b.clamp(1, 8)),
            (O::Solarize, OpParam::Threshold(t)) => tone::solarize(img, t),
            (O::Rotate, OpParam::Degrees(d)) => geometry::rotate(img, d, fill, scratch),
            (O::ShearX, OpParam::Shear(v)) => geometry::shear_x(img, v, fill, scratch),
            (O::ShearY, OpParam::Shear(v)) => geometry::shear_y(img, v, fill, scratch),
            (O::TranslateX, OpParam::Pixels(p)) => geometry::translate_x(img, p, fill, scratch),
            (O::TranslateY, OpParam::Pixels(p)) => geometry::translate_y(img, p, fill, scratch),
            _ => {}
        }
    }

    /// Applies the op at magnitude `m` with the given sign: [`RandAugmentOp::param`] then
    /// [`RandAugmentOp::apply_param`]. Returns the parameter used.
    pub fn apply(self, img: &mut Image, m: u8, negative: bool, fill: u8, scratch: &mut Image) -> OpParam {
        let param = self.param(m, negative, img.width(), img.height());
        self.apply_param(img, param, fill, scratch);
        param
    }
}

/// RandAugment's configuration and the op itself (registered as `randaugment`).
///
/// Defaults are the ProtoCon script's (n = 2, p = 0.5, magnitude 1..=9); the USB benchmark's
/// variant is [`RandAugment::usb`] (3 ops, always applied).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandAugment {
    /// Ops picked per image (with replacement).
    pub n: usize,
    /// Probability of applying each pick.
    pub p: f64,
    /// Magnitude range, both ends included, out of 10.
    pub magnitude: [u8; 2],
    /// Gray level for pixels uncovered by Rotate, Shear and Translate.
    pub fill: u8,
    /// The pool to pick from (default: all 14 ops).
    pub ops: Vec<RandAugmentOp>,
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment { n: 2, p: 0.5, magnitude: [1, 9], fill: 128, ops: RandAugmentOp::ALL.to_vec() }
    }
}

impl RandAugment {
    /// The FixMatch/ProtoCon setting: 2 ops, each with probability 0.5, magnitude 1..=9.
    pub fn fixmatch() -> RandAugment {
        RandAugment::default()
    }

    /// The USB benchmark's setting: 3 ops, always applied.
    pub fn usb() -> RandAugment {
        RandAugment { n: 3, p: 1.0, ..RandAugment::default() }
    }

    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        let bad = |m: String| Err(AugmentError::bad_params("randaugment", m));
        if !(0.0..=1.0).contains(&self.p) {
            return bad(format!("probability p = {} is not in [0, 1]", self.p));
        }
        let [lo, hi] = self.magnitude;
        if lo > hi || hi > MAX_MAGNITUDE {
            return bad(format!("magnitude range {lo}..={hi} must satisfy lo <= hi <= {MAX_MAGNITUDE}"));
        }
        if self.ops.is_empty() && self.n > 0 {
            return bad("the op pool `ops` is empty".into());
        }
        Ok(self)
    }
}

impl Augmentation for RandAugment {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        let [lo, hi] = self.magnitude;
        for _ in 0..self.n {
            let rng = ctx.rng();
            let op = self.ops[rng.below(self.ops.len() as u64) as usize];
            let m = rng.int_inclusive(i64::from(lo), i64::from(hi)) as u8;
            let apply = rng.chance(self.p);
            let negative = rng.chance(0.5);
            if !apply {
                continue;
            }
            let param = op.apply(img, m, negative, self.fill, &mut ctx.workspace().scratch);
            ctx.record_builtin(op.name(), Some(m), param.as_f32());
        }
        if !ctx.handled() {
            ctx.record_skipped();
        }
    }
}
