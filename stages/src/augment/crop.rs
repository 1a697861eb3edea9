//! The weak augmentation's geometry (protocon.md s.2): random crop with reflect padding,
//! horizontal flip, and RandomResizedCrop for large images.

use super::{AugContext, AugRng, AugmentError, Augmentation, Image, Workspace};
use fast_image_resize as fir;
use serde::{Deserialize, Serialize};

/// `i` mirrored into 0..n without repeating the edge (numpy/torch "reflect": -1 -> 1).
/// Also the border rule of the blur kernels.
#[inline(always)]
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r.clamp(0, n - 1) as usize
}

/// Writes the `src`-sized window at (left, top) of `src` reflect-padded by `pad` into `dst`.
pub fn reflect_crop_into(src: &Image, dst: &mut Image, pad: usize, left: usize, top: usize) {
    let (w, h, c) = (src.width(), src.height(), src.channels());
    dst.reshape(w, h, c);
    let row = w * c;
    // Output columns whose source column is inside the image need no reflection: one copy.
    let x_lo = pad.saturating_sub(left).min(w);
    let x_hi = (w + pad).saturating_sub(left).clamp(x_lo, w);
    for y in 0..h {
        let sy = reflect(top as isize + y as isize - pad as isize, h);
        let s = &src.data()[sy * row..(sy + 1) * row];
        let d = &mut dst.data_mut()[y * row..(y + 1) * row];
        for x in (0..x_lo).chain(x_hi..w) {
            let sx = reflect(left as isize + x as isize - pad as isize, w);
            d[x * c..(x + 1) * c].copy_from_slice(&s[sx * c..(sx + 1) * c]);
        }
        if x_hi > x_lo {
            let sx0 = left + x_lo - pad;
            d[x_lo * c..x_hi * c].copy_from_slice(&s[sx0 * c..(sx0 + x_hi - x_lo) * c]);
        }
    }
}

/// Padding in pixels for a padding fraction: `int(fraction * shorter side)`, as
/// `RandomCrop(32, padding=int(32 * 0.125))`, at most side - 1 (reflection needs it).
fn padding_px(fraction: f64, img: &Image) -> usize {
    let side = img.width().min(img.height());
    ((fraction * side as f64) as usize).min(side - 1)
}

/// Draws the crop window like torchvision's `RandomCrop`: top, then left, each uniform in
/// 0..=2*pad.
fn draw_crop(rng: &mut AugRng, pad: usize) -> (usize, usize) {
    let top = rng.below(2 * pad as u64 + 1) as usize;
    let left = rng.below(2 * pad as u64 + 1) as usize;
    (left, top)
}

fn check_probability(op: &str, p: f64) -> Result<(), AugmentError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(AugmentError::bad_params(op, format!("probability p = {p} is not in [0, 1]")))
    }
}

/// Random crop back to the input size after reflect padding: the weak view's crop
/// (registered as `crop`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReflectCrop {
    /// Padding as a fraction of the shorter side (0.125: 4 px at 32x32).
    pub padding: f64,
}

impl Default for ReflectCrop {
    fn default() -> Self {
        ReflectCrop { padding: 0.125 }
    }
}

impl ReflectCrop {
    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        if !(0.0..1.0).contains(&self.padding) {
            return Err(AugmentError::bad_params("crop", format!("padding {} is not in [0, 1)", self.padding)));
        }
        Ok(self)
    }

    fn crop(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        ctx.rebuild(img, |src, out, ctx| self.crop_from(src, out, ctx));
    }

    /// The crop of `src` written into `out`.
    fn crop_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        let pad = padding_px(self.padding, src);
        let (left, top) = draw_crop(ctx.rng(), pad);
        ctx.record_builtin("Crop", None, None);
        if pad == 0 {
            return out.copy_from(src);
        }
        reflect_crop_into(src, out, pad, left, top);
    }
}

impl Augmentation for ReflectCrop {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        self.crop(img, ctx);
    }

    fn apply_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        self.crop_from(src, out, ctx);
    }
}

/// Horizontal flip with probability `p` (registered as `flip`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HorizontalFlip {
    /// Probability of flipping.
    pub p: f64,
}

impl Default for HorizontalFlip {
    fn default() -> Self {
        HorizontalFlip { p: 0.5 }
    }
}

impl HorizontalFlip {
    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        check_probability("flip", self.p)?;
        Ok(self)
    }

    fn flip(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        if ctx.rng().chance(self.p) {
            super::geometry::flip_horizontal(img);
            ctx.record_builtin("Flip", None, None);
        } else {
            ctx.record_skipped();
        }
    }
}

impl Augmentation for HorizontalFlip {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        self.flip(img, ctx);
    }
}

/// The CIFAR weak augmentation in one op: reflect-pad crop, then flip (registered as
/// `crop_flip`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropFlip {
    /// Padding as a fraction of the shorter side.
    pub padding: f64,
    /// Probability of flipping.
    pub p: f64,
}

impl Default for CropFlip {
    fn default() -> Self {
        CropFlip { padding: 0.125, p: 0.5 }
    }
}

impl CropFlip {
    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        ReflectCrop { padding: self.padding }.validated()?;
        HorizontalFlip { p: self.p }.validated()?;
        Ok(self)
    }
}

impl Augmentation for CropFlip {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        ReflectCrop { padding: self.padding }.crop(img, ctx);
        HorizontalFlip { p: self.p }.flip(img, ctx);
    }

    fn apply_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        ReflectCrop { padding: self.padding }.crop_from(src, out, ctx);
        HorizontalFlip { p: self.p }.flip(out, ctx);
    }
}

/// torchvision's `RandomResizedCrop(size, scale, ratio)` with bilinear (antialiased)
/// resampling: the weak crop for large images (registered as `random_resized_crop`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomResizedCrop {
    /// Output side in pixels (square output).
    pub size: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    pub ratio: [f64; 2],
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        RandomResizedCrop { size: 224, scale: [0.08, 1.0], ratio: [3.0 / 4.0, 4.0 / 3.0] }
    }
}

/// A crop window: left, top, width, height in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

impl RandomResizedCrop {
    /// Checks the parameters.
    pub fn validated(self) -> Result<Self, AugmentError> {
        let bad = |m: String| Err(AugmentError::bad_params("random_resized_crop", m));
        if self.size == 0 {
            return bad("size must be at least 1".into());
        }
        if !(self.scale[0] > 0.0 && self.scale[0] <= self.scale[1] && self.scale[1] <= 1.0) {
            return bad(format!("scale {:?} must satisfy 0 < lo <= hi <= 1", self.scale));
        }
        if !(self.ratio[0] > 0.0 && self.ratio[0] <= self.ratio[1]) {
            return bad(format!("ratio {:?} must satisfy 0 < lo <= hi", self.ratio));
        }
        Ok(self)
    }

    /// Draws the crop window for a `width` x `height` image like torchvision's
    /// `RandomResizedCrop.get_params`: up to 10 tries of (area, log-ratio) then (top, left);
    /// if none fits, the central crop clamped to the ratio range. Sizes round half to even
    /// as Python's `round`.
    pub fn draw_box(&self, rng: &mut AugRng, width: usize, height: usize) -> CropBox {
        let area = (width * height) as f64;
        let (log_lo, log_hi) = (self.ratio[0].ln(), self.ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.uniform_range(self.scale[0], self.scale[1]);
            let aspect = rng.uniform_range(log_lo, log_hi).exp();
            let w = (target * aspect).sqrt().round_ties_even() as usize;
            let h = (target / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.below((height - h + 1) as u64) as usize;
                let left = rng.below((width - w + 1) as u64) as usize;
                return CropBox { left, top, width: w, height: h };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio[0] {
            (width, ((width as f64 / self.ratio[0]).round_ties_even() as usize).clamp(1, height))
        } else if in_ratio > self.ratio[1] {
            (((height as f64 * self.ratio[1]).round_ties_even() as usize).clamp(1, width), height)
        } else {
            (width, height)
        };
        CropBox { left: (width - w) / 2, top: (height - h) / 2, width: w, height: h }
    }
}

/// Resizes the `crop` window of `src` to `out_w` x `out_h` into `dst` with
/// `fast_image_resize`'s bilinear convolution (antialiased like PIL's `resize(BILINEAR)`).
///
/// The source is a cropped *view* (`fir::images::CroppedImage`), whose rows are the window's
/// rows only: torchvision crops, *then* resizes, so the filter support must stop at the
/// crop's edges. (A crop box in the resize options would instead blend in pixels from outside
/// the box, up to 20 levels off on small crops.) The view reads `src` in place, so nothing is
/// copied before the resize.
pub fn resized_crop_into(src: &Image, crop: CropBox, out_w: usize, out_h: usize, dst: &mut Image, resizer: &mut fir::Resizer) {
    let c = src.channels();
    let pixel = if c == 1 { fir::PixelType::U8 } else { fir::PixelType::U8x3 };
    dst.reshape(out_w, out_h, c);
    let whole = fir::images::ImageRef::new(src.width() as u32, src.height() as u32, src.data(), pixel)
        .expect("an Image's buffer matches its size");
    let window =
        fir::images::CroppedImage::new(&whole, crop.left as u32, crop.top as u32, crop.width as u32, crop.height as u32)
            .expect("draw_box keeps the crop inside the image");
    let mut dst_view = fir::images::Image::from_slice_u8(out_w as u32, out_h as u32, dst.data_mut(), pixel)
        .expect("buffer sized above");
    let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    resizer.resize(&window, &mut dst_view, &options).expect("same pixel type, non-empty images");
}

/// Resizes the whole of `src` to `out_w` x `out_h` into `dst` (bilinear, antialiased when
/// shrinking): to show an image at another size, e.g. a file's original in a preview grid.
pub fn resize_into(src: &Image, out_w: usize, out_h: usize, dst: &mut Image, ws: &mut Workspace) {
    let whole = CropBox { left: 0, top: 0, width: src.width(), height: src.height() };
    resized_crop_into(src, whole, out_w, out_h, dst, &mut ws.resizer);
}

impl RandomResizedCrop {
    /// Draws the window for `src`, records it, and writes the resized crop into `out`.
    /// `src` may be a window of the decoded image holding the box ([`Image::window`]): the box
    /// is drawn on the whole image, then read from the window.
    fn crop_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        let (left, full_width) = src.window();
        let mut crop = self.draw_box(ctx.rng(), full_width, src.height());
        let area = (crop.width * crop.height) as f32 / (full_width * src.height()) as f32;
        ctx.record_builtin("ResizedCrop", None, Some(area));
        crop.left = crop.left.checked_sub(left).filter(|x| x + crop.width <= src.width()).unwrap_or_else(|| {
            panic!("the crop {crop:?} lies outside the decoded window ({left}, +{}): region_read differs from crop_from", src.width())
        });
        resized_crop_into(src, crop, self.size, self.size, out, &mut ctx.workspace().resizer);
    }
}

impl Augmentation for RandomResizedCrop {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        ctx.rebuild(img, |src, out, ctx| self.crop_from(src, out, ctx));
    }

    fn apply_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        self.crop_from(src, out, ctx);
    }

    /// The crop: [`resized_crop_into`] reads its pixels only.
    fn region_read(&self, width: usize, height: usize, rng: &mut AugRng) -> Option<CropBox> {
        Some(self.draw_box(rng, width, height))
    }
}
