//! Cutout (protocon.md s.2): a gray square pasted at a random position, last step of the
//! strong view, always applied.

use super::{AugContext, AugmentError, Augmentation, Image};
use serde::{Deserialize, Serialize};

/// Cutout (registered as `cutout`).
///
/// Placement follows the FixMatch code's `CutoutAbs`: a centre (x, y) uniform over the image
/// (continuous), the top-left corner `int(max(0, centre - side / 2))`, the square clipped at
/// the right and bottom edges. The square is exactly `side` pixels wide where it fits
/// (PIL's `ImageDraw.rectangle` in that code includes its far corner, so it paints
/// side + 1; protocon.md's "16 px at 32x32" is what we do).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cutout {
    /// Side of the square as a fraction of the shorter image side (0.5: 16 px at 32x32), or
    /// the upper end of the random side's range when `random_size` is set.
    pub size: f64,
    /// USB's variant: side uniform in [0, `size`) of the shorter side, per image.
    pub random_size: bool,
    /// Gray level painted in every channel.
    pub fill: u8,
}

impl Default for Cutout {
    fn default() -> Self {
        Cutout { size: 0.5, random_size: false, fill: 127 }
    }
}

impl Cutout {
    /// USB's variant: random side in [0, 0.5) of the shorter side.
    pub fn usb() -> Cutout {
        Cutout { random_size: true, ..Cutout::default() }
    }

    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        if !(0.0..=1.0).contains(&self.size) {
            return Err(AugmentError::bad_params("cutout", format!("size {} is not in [0, 1]", self.size)));
        }
        Ok(self)
    }
}

/// Paints the `side` x `side` square with top-left corner (x0, y0), clipped to the image.
pub fn fill_square(img: &mut Image, x0: usize, y0: usize, side: usize, fill: u8) {
    let (w, h, c) = (img.width(), img.height(), img.channels());
    let (x1, y1) = ((x0 + side).min(w), (y0 + side).min(h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    for y in y0..y1 {
        img.row_mut(y)[x0 * c..x1 * c].fill(fill);
    }
}

impl Augmentation for Cutout {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        let (w, h) = (img.width(), img.height());
        let short = w.min(h) as f64;
        let rng = ctx.rng();
        let fraction = if self.random_size { rng.uniform_range(0.0, self.size) } else { self.size };
        let cx = rng.uniform() * w as f64;
        let cy = rng.uniform() * h as f64;
        let side = (fraction * short) as usize;
        let x0 = (cx - side as f64 / 2.0).max(0.0) as usize;
        let y0 = (cy - side as f64 / 2.0).max(0.0) as usize;
        fill_square(img, x0, y0, side, self.fill);
        ctx.record_builtin("Cutout", None, Some(side as f32));
    }
}
