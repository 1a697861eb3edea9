//! Load-time image options: grey to RGB, and bringing images to one target size.
//!
//! Done once at load time, not per epoch, because the models want a fixed input shape (e.g.
//! 32x32x3 for a WideResNet) and the augmentation stages should not pay for it every step.

use super::{DataError, Dataset};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

/// How an image is brought to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Bilinear resampling (a triangle filter, widened when shrinking so it also antialiases).
    #[default]
    Resize,
    /// Centre the image on a canvas filled with the pad value, keeping pixels unchanged: the
    /// usual way to feed 28x28 (Fashion-)MNIST to a 32x32 network (2 px each side). When the
    /// margin is odd the extra pixel goes to the bottom/right. The target must not be smaller.
    Pad,
    /// The ImageNet evaluation transform, torchvision's `Resize(int(side / crop_fraction))`
    /// then `CenterCrop(side)` (`side`: the target's longer side): the image is scaled so its
    /// shorter side is `side / crop_fraction` (aspect ratio kept), and the target's size is cut
    /// from the centre. Done in one resampling step over the central box of the source, with
    /// the filter reading across the box's edges as the two-step version does. The usual
    /// evaluation of a model trained on RandomResizedCrop views.
    #[serde(rename = "center-crop")]
    CenterCrop,
}

/// The name a config gives it (`data.fit`).
impl std::fmt::Display for Fit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fit::Resize => "resize",
            Fit::Pad => "pad",
            Fit::CenterCrop => "center-crop",
        })
    }
}

/// Share of the scaled image's shorter side [`Fit::CenterCrop`] keeps by default: 224 of 256,
/// the ImageNet convention.
pub const DEFAULT_CROP_FRACTION: f64 = 0.875;

/// Options applied to every image as it is loaded.
///
/// ```
/// use protocon::data::{Fit, LoadOptions};
/// // Fashion-MNIST as 32x32 RGB, zero-padded.
/// let options = LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad);
/// assert_eq!(options.size, Some([32, 32]));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// Expand grey images to 3 channels (the grey value copied to R, G and B). Default `false`.
    pub rgb: bool,
    /// Target `[height, width]`; `None` (default) keeps the native size. Image folders, whose
    /// files may differ in size, are brought to it per file.
    pub size: Option<[usize; 2]>,
    /// How to reach `size`. Default [`Fit::Resize`].
    pub fit: Fit,
    /// Fill value of the canvas for [`Fit::Pad`]. Default 0 (black).
    pub pad_value: u8,
    /// For [`Fit::CenterCrop`]: the target's side over the scaled image's shorter side, in
    /// `(0, 1]`. Default [`DEFAULT_CROP_FRACTION`].
    pub crop_fraction: f64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { rgb: false, size: None, fit: Fit::default(), pad_value: 0, crop_fraction: DEFAULT_CROP_FRACTION }
    }
}

impl LoadOptions {
    /// Native size and channels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expand grey images to 3 channels.
    pub fn rgb(mut self, rgb: bool) -> Self {
        self.rgb = rgb;
        self
    }

    /// Bring every image to `height x width`.
    pub fn size(mut self, height: usize, width: usize) -> Self {
        self.size = Some([height, width]);
        self
    }

    /// How to reach the target size.
    pub fn fit(mut self, fit: Fit) -> Self {
        self.fit = fit;
        self
    }

    /// Canvas value for [`Fit::Pad`].
    pub fn pad_value(mut self, value: u8) -> Self {
        self.pad_value = value;
        self
    }

    /// Share of the scaled image [`Fit::CenterCrop`] keeps.
    pub fn crop_fraction(mut self, fraction: f64) -> Self {
        self.crop_fraction = fraction;
        self
    }

    /// Applies the options to every image of `data`; a no-op when there is nothing to change.
    pub fn apply(&self, data: Dataset) -> Result<Dataset, DataError> {
        let from = (data.height(), data.width(), data.channels());
        let mut fitter = ImageFitter::new(self, from)?;
        if fitter.is_identity() {
            return Ok(data);
        }
        let to = fitter.output_shape();
        data.map_images(to, |image, out| fitter.fit(image, out))
    }
}

/// Brings images of one source shape to the shape the options ask for; keeps the resizer's
/// buffers between images.
pub(crate) struct ImageFitter {
    from: (usize, usize, usize),
    to: (usize, usize, usize),
    fit: Fit,
    pad_value: u8,
    /// The source box resampled to the target (`left, top, width, height`, fractional):
    /// the whole image but for [`Fit::CenterCrop`].
    source_box: [f64; 4],
    resizer: Resizer,
    scratch: Vec<u8>,
}

impl ImageFitter {
    /// A fitter for images of `from = (height, width, channels)`.
    pub(crate) fn new(options: &LoadOptions, from: (usize, usize, usize)) -> Result<Self, DataError> {
        let (h, w, c) = from;
        let [th, tw] = options.size.unwrap_or([h, w]);
        let tc = if options.rgb && c == 1 { 3 } else { c };
        let fail =
            |reason: String| DataError::Fit { from: format!("{h}x{w}x{c}"), to: format!("{th}x{tw}x{tc}"), reason };
        if th == 0 || tw == 0 {
            return Err(fail("target size must be non-zero".into()));
        }
        if options.rgb && c != 1 && c != 3 {
            return Err(fail(format!("cannot convert {c} channels to RGB")));
        }
        let source_box = match options.fit {
            Fit::CenterCrop => {
                let f = options.crop_fraction;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(fail(format!("crop fraction {f} is not in (0, 1] (`data.crop_fraction` in a run config)")));
                }
                let source_box = center_crop_box((h, w), (th, tw), f);
                // The box spans about `f` of the shorter side; under a pixel is no image.
                if source_box[2] < 1.0 || source_box[3] < 1.0 {
                    return Err(fail(format!(
                        "crop fraction {f} keeps {:.3}x{:.3} source pixels: expected at least 1x1, i.e. a fraction of about \
                         1/{} or more (`data.crop_fraction` in a run config)",
                        source_box[3],
                        source_box[2],
                        h.min(w)
                    )));
                }
                source_box
            }
            Fit::Resize | Fit::Pad => [0.0, 0.0, w as f64, h as f64],
        };
        let fitter = ImageFitter {
            from,
            to: (th, tw, tc),
            fit: options.fit,
            pad_value: options.pad_value,
            source_box,
            resizer: Resizer::new(),
            scratch: Vec::new(),
        };
        if fitter.changes_geometry() {
            match options.fit {
                Fit::Pad if th < h || tw < w => {
                    return Err(fail("padding cannot shrink an image; use fit = resize (`data.fit` in a run config)".into()))
                }
                Fit::Resize | Fit::CenterCrop if pixel_type(c).is_none() => {
                    return Err(fail(format!("cannot resize images of {c} channels")))
                }
                _ => {}
            }
        }
        Ok(fitter)
    }

    /// `(height, width, channels)` of the images [`fit`](Self::fit) produces.
    pub(crate) fn output_shape(&self) -> (usize, usize, usize) {
        self.to
    }

    /// Whether [`fit`](Self::fit) copies images unchanged. Not merely when the shapes agree:
    /// a centre crop to the image's own size still crops and scales back up.
    pub(crate) fn is_identity(&self) -> bool {
        self.to == self.from && !self.changes_geometry()
    }

    /// Whether the image is resampled or padded (else it is copied).
    fn changes_geometry(&self) -> bool {
        let (h, w, _) = self.from;
        (self.to.0, self.to.1) != (h, w) || self.source_box != [0.0, 0.0, w as f64, h as f64]
    }

    /// Appends the fitted version of `image` (of the source shape) to `out`.
    pub(crate) fn fit(&mut self, image: &[u8], out: &mut Vec<u8>) -> Result<(), DataError> {
        let (h, w, c) = self.from;
        let (th, tw, tc) = self.to;
        debug_assert_eq!(image.len(), h * w * c);
        let mut sized = std::mem::take(&mut self.scratch);
        sized.clear();
        if !self.changes_geometry() {
            sized.extend_from_slice(image);
        } else {
            match self.fit {
                Fit::Pad => pad(image, (h, w, c), (th, tw), self.pad_value, &mut sized),
                Fit::Resize | Fit::CenterCrop => self.resize(image, &mut sized)?,
            }
        }
        if tc == c {
            out.extend_from_slice(&sized);
        } else {
            // Only grey -> RGB is allowed by `new`.
            out.extend(sized.iter().flat_map(|&v| [v, v, v]));
        }
        self.scratch = sized;
        Ok(())
    }

    fn resize(&mut self, image: &[u8], out: &mut Vec<u8>) -> Result<(), DataError> {
        let (h, w, c) = self.from;
        let (th, tw, _) = self.to;
        let fail =
            |reason: String| DataError::Fit { from: format!("{h}x{w}x{c}"), to: format!("{th}x{tw}x{c}"), reason };
        let pt = pixel_type(c).ok_or_else(|| fail(format!("cannot resize {c} channels")))?;
        let src = ImageRef::new(w as u32, h as u32, image, pt).map_err(|e| fail(e.to_string()))?;
        let mut dst = Image::new(tw as u32, th as u32, pt);
        let [left, top, bw, bh] = self.source_box;
        let alg = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(left, top, bw, bh);
        self.resizer.resize(&src, &mut dst, &alg).map_err(|e| fail(e.to_string()))?;
        out.extend_from_slice(dst.buffer());
        Ok(())
    }
}

/// The box of an `h x w` source that [`Fit::CenterCrop`] resamples to `th x tw`, as
/// `[left, top, width, height]` in source pixels. torchvision's `Resize(s)` scales the shorter
/// side to `s = int(max(th, tw) / fraction)` and the longer to `int(s * longer / shorter)`;
/// `CenterCrop` then starts at `round((scaled - target) / 2)` on each axis (Python's round: half
/// to even). Mapped back to the source, that is a box of `target * source / scaled` pixels at
/// `start * source / scaled`. The scaled image is never smaller than the target: its shorter
/// side is at least `max(th, tw)`.
fn center_crop_box((h, w): (usize, usize), (th, tw): (usize, usize), fraction: f64) -> [f64; 4] {
    let short_side = ((th.max(tw) as f64 / fraction) as usize).max(1);
    let (short, long) = (h.min(w), h.max(w));
    let long_side = (short_side as f64 * long as f64 / short as f64) as usize;
    let (sh, sw) = if h <= w { (short_side, long_side) } else { (long_side, short_side) };
    let axis = |source: usize, scaled: usize, target: usize| -> (f64, f64) {
        let start = ((scaled - target) as f64 / 2.0).round_ties_even();
        let of_scaled = |n: f64| n * source as f64 / scaled as f64;
        // Multiplied before divided, the whole axis (target == scaled) comes out exactly
        // `source`: fast_image_resize refuses a box a rounding error past the edge.
        let (left, width) = (of_scaled(start), of_scaled(target as f64));
        (left, width.min(source as f64 - left))
    };
    let (left, width) = axis(w, sw, tw);
    let (top, height) = axis(h, sh, th);
    [left, top, width, height]
}

fn pixel_type(channels: usize) -> Option<PixelType> {
    match channels {
        1 => Some(PixelType::U8),
        2 => Some(PixelType::U8x2),
        3 => Some(PixelType::U8x3),
        4 => Some(PixelType::U8x4),
        _ => None,
    }
}

/// Centres `image` on a `th x tw` canvas of `value`; the caller guarantees `th >= h, tw >= w`.
fn pad(image: &[u8], (h, w, c): (usize, usize, usize), (th, tw): (usize, usize), value: u8, out: &mut Vec<u8>) {
    let top = (th - h) / 2;
    let left = (tw - w) / 2;
    let start = out.len();
    out.resize(start + th * tw * c, value);
    let canvas = &mut out[start..];
    for (y, row) in image.chunks_exact(w * c).enumerate() {
        let at = ((top + y) * tw + left) * c;
        canvas[at..at + w * c].copy_from_slice(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(h: usize, w: usize, c: usize, pixels: Vec<u8>) -> Dataset {
        Dataset::new("t", (h, w, c), pixels, vec![0], vec!["a".into()]).unwrap()
    }

    #[test]
    fn pad_2x2_to_4x5_centres_with_extra_column_right() {
        let d = one(2, 2, 1, vec![1, 2, 3, 4]);
        let d = LoadOptions::new().size(4, 5).fit(Fit::Pad).pad_value(9).apply(d).unwrap();
        #[rustfmt::skip]
        assert_eq!(d.image(0), &[
            9, 9, 9, 9, 9,
            9, 1, 2, 9, 9,
            9, 3, 4, 9, 9,
            9, 9, 9, 9, 9,
        ]);
    }

    #[test]
    fn bilinear_upscale_matches_hand_computation() {
        // Source pixels [0, 255] at centres 0.5, 1.5; destination centres 0.25, 0.75, 1.25,
        // 1.75 in source coordinates. Triangle weights, clipped at the border and
        // renormalised: 0, 0.25 * 255 = 63.75, 0.75 * 255 = 191.25, 255.
        let d = one(1, 2, 1, vec![0, 255]);
        let d = LoadOptions::new().size(1, 4).apply(d).unwrap();
        assert_eq!(d.image(0), &[0, 64, 191, 255]);
    }

    #[test]
    fn resize_keeps_constant_rgb_image_constant() {
        let d = one(5, 7, 3, [10u8, 20, 30].repeat(35));
        let d = LoadOptions::new().size(3, 4).apply(d).unwrap();
        assert_eq!((d.height(), d.width(), d.channels()), (3, 4, 3));
        assert_eq!(d.image(0), [10u8, 20, 30].repeat(12).as_slice());
    }

    #[test]
    fn pad_to_smaller_size_is_an_error() {
        let d = one(2, 2, 1, vec![0; 4]);
        let e = LoadOptions::new().size(1, 2).fit(Fit::Pad).apply(d).unwrap_err();
        assert!(e.to_string().contains("2x2x1") && e.to_string().contains("1x2x1"), "{e}");
    }

    /// A `h x w` grey image whose pixel at (row, col) is `f(row, col)`.
    fn ramp(h: usize, w: usize, f: impl Fn(usize, usize) -> u8) -> Dataset {
        one(h, w, 1, (0..h * w).map(|i| f(i / w, i % w)).collect())
    }

    #[test]
    fn center_crop_is_torchvision_resize_then_center_crop() {
        // 4x8, columns 0, 10, .., 70, to 2x2 at fraction 1: Resize(2) makes it 2x4, and
        // CenterCrop(2) keeps scaled columns 1..3, i.e. source columns 2..6 (box [2, 0, 4, 4]).
        // Scale 2: the triangle filter spans 2 source pixels each side of an output centre
        // (3 and 5), so output 0 weighs columns 1, 2, 3, 4 by 1/4, 3/4, 3/4, 1/4 over 2:
        // (10/4 + 20*3/4 + 30*3/4 + 40/4) / 2 = 25, and output 1 columns 3..6: 45. The columns
        // beside the box count, as they do when the whole image is resized first.
        let d = LoadOptions::new().size(2, 2).fit(Fit::CenterCrop).crop_fraction(1.0);
        assert_eq!(d.apply(ramp(4, 8, |_, x| 10 * x as u8)).unwrap().image(0), &[25, 45, 25, 45]);
        // Portrait: the same along the rows.
        assert_eq!(d.apply(ramp(8, 4, |y, _| 10 * y as u8)).unwrap().image(0), &[25, 25, 45, 45]);
        // 8x8 at fraction 1/2: Resize(int(2 / 0.5) = 4) then CenterCrop(2): the same box across.
        let half = d.clone().crop_fraction(0.5);
        assert_eq!(half.apply(ramp(8, 8, |_, x| 10 * x as u8)).unwrap().image(0), &[25, 45, 25, 45]);
    }

    /// `benches/reference/randaugment_pil.py record`'s 5x6 RGB image:
    /// `(x * 97 + y * 57 + c * 31 + x * y * 13) % 256`.
    fn textured() -> Dataset {
        let px = (0..5 * 6 * 3).map(|i| {
            let (y, x, c) = (i / 18, i / 3 % 6, i % 3);
            ((x * 97 + y * 57 + c * 31 + x * y * 13) % 256) as u8
        });
        one(5, 6, 3, px.collect())
    }

    /// torchvision's `Resize(3)` + `CenterCrop(2)` of [`textured`] in Pillow 13:
    /// `img.resize((3, 3), BILINEAR).crop((0, 0, 2, 2))` (`randaugment_pil.py record`).
    const CENTER_CROP_2_06: [u8; 12] = [
    82, 113, 123, 112, 129, 105, 141, 111, 142, 144, 97, 121,
    ];
    /// `Resize(9)` + `CenterCrop(8)`: `img.resize((10, 9), BILINEAR).crop((1, 0, 9, 8))`.
    const CENTER_CROP_8_0875: [u8; 192] = [
    39, 70, 101, 97, 128, 159, 155, 186, 64, 162, 193, 19, 67, 98, 78, 74, 105, 136, 132, 163, 194, 190, 68, 99,
    60, 91, 122, 120, 151, 182, 130, 161, 90, 122, 153, 48, 81, 112, 109, 108, 105, 136, 168, 114, 145, 178, 73,
    104, 94, 125, 156, 159, 190, 221, 87, 118, 132, 56, 87, 95, 104, 135, 161, 164, 104, 135, 229, 32, 63, 157,
    80, 111, 129, 114, 145, 198, 115, 146, 114, 99, 130, 81, 89, 120, 150, 91, 122, 175, 80, 111, 176, 64, 95,
    160, 134, 97, 163, 92, 123, 237, 12, 43, 157, 86, 117, 129, 108, 139, 202, 29, 60, 174, 51, 82, 94, 125,
    156, 168, 199, 76, 141, 126, 157, 134, 51, 82, 144, 129, 160, 148, 156, 187, 140, 81, 112, 145, 107, 81,
    155, 186, 74, 147, 178, 84, 130, 144, 175, 59, 90, 121, 125, 156, 187, 150, 181, 212, 96, 127, 158, 121,
    152, 92, 187, 218, 21, 133, 164, 87, 164, 93, 124, 98, 129, 160, 82, 113, 144, 84, 115, 146, 119, 150, 181,
    120, 151, 148, 105, 136, 82, 140, 171, 66,
    ];

    #[test]
    fn center_crop_matches_pillow_recordings() {
        for (side, fraction, want) in [(2, 0.6, &CENTER_CROP_2_06[..]), (8, 0.875, &CENTER_CROP_8_0875[..])] {
            let options = LoadOptions::new().size(side, side).fit(Fit::CenterCrop).crop_fraction(fraction);
            let got = options.apply(textured()).unwrap();
            // One resampling of the box against Pillow's resize then crop, and
            // fast_image_resize's rounding against Pillow's: a level apart at most.
            let worst = got.image(0).iter().zip(want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 1, "size {side} at {fraction}: up to {worst} levels off Pillow: {:?}", got.image(0));
        }
    }

    #[test]
    fn center_crop_box_rounds_like_torchvision() {
        // 375x500 to 224 at 0.875: Resize(256) -> 256x341 (int(256 * 500 / 375) = 341),
        // CenterCrop(224) starts at round(16) = 16 down and round(58.5) = 58 across (half to
        // even); in source pixels x 375/256 and 500/341.
        let box_ = center_crop_box((375, 500), (224, 224), 0.875);
        let (y, x) = (|n: f64| n * 375.0 / 256.0, |n: f64| n * 500.0 / 341.0);
        assert_eq!(box_, [x(58.0), y(16.0), x(224.0), y(224.0)]);
        // A wide target: Resize(8) makes 4x4 8x8; the crop keeps all 8 columns and rows 3..5.
        assert_eq!(center_crop_box((4, 4), (2, 8), 1.0), [0.0, 1.5, 4.0, 1.0]);
    }

    #[test]
    fn center_crop_boxes_stay_inside_the_image() {
        // At fraction 1 the shorter side is scaled to the target and kept whole: its box must
        // be exactly the image's side, or fast_image_resize refuses it (225x300 once gave a
        // width a rounding error over 225).
        for short in 1..=1000 {
            for (h, w) in [(short, short), (short, short * 4 / 3 + 1), (short * 3 / 2 + 1, short)] {
                for f in [1.0, 0.875] {
                    let [left, top, width, height] = center_crop_box((h, w), (224, 224), f);
                    assert!(left >= 0.0 && left + width <= w as f64, "{h}x{w} at {f}: across {left} + {width}");
                    assert!(top >= 0.0 && top + height <= h as f64, "{h}x{w} at {f}: down {top} + {height}");
                }
            }
        }
        let options = LoadOptions::new().size(224, 224).fit(Fit::CenterCrop).crop_fraction(1.0);
        for (h, w) in [(225, 300), (300, 225), (232, 232), (450, 600)] {
            let d = options.apply(ramp(h, w, |y, x| (x + y) as u8)).unwrap();
            assert_eq!((d.height(), d.width()), (224, 224));
        }
    }

    #[test]
    fn center_crop_at_the_native_size_is_the_identity_at_fraction_one_only() {
        let d = ramp(5, 5, |y, x| (7 * y + x) as u8);
        let same = LoadOptions::new().size(5, 5).fit(Fit::CenterCrop).crop_fraction(1.0).apply(d.clone()).unwrap();
        assert_eq!(same.image(0), d.image(0));
        // CIFAR at 32 with the default 0.875: Resize(36) then CenterCrop(32), i.e. the box
        // [2 * 32/36, .., 32 * 32/36 wide] scaled up by 36/32. Columns valued 4x: output column
        // 0 samples source x = 32/36 * (2 + 0.5) = 2.22 (pixel centres at i + 0.5), between
        // columns 1 and 2: 4 + 0.72 * 4 = 6.89 -> 7; column 31 samples 32/36 * 33.5 = 29.78:
        // 4 * 29.28 = 117.1 -> 117.
        let cifar = ramp(32, 32, |_, x| 4 * x as u8);
        let crop = LoadOptions::new().size(32, 32).fit(Fit::CenterCrop).apply(cifar).unwrap();
        assert_eq!((crop.image(0)[0], crop.image(0)[31]), (7, 117));
    }

    #[test]
    fn center_crop_refuses_a_fraction_outside_0_1_or_under_a_pixel() {
        for f in [0.0, 1.5, f64::NAN, 1e-300, 0.2] {
            let e = LoadOptions::new().size(2, 2).fit(Fit::CenterCrop).crop_fraction(f).apply(ramp(4, 4, |_, _| 0));
            let e = e.unwrap_err().to_string();
            assert!(e.contains("crop fraction") && e.contains("data.crop_fraction"), "{e}");
        }
        // A quarter of a 4-pixel side is one pixel: still an image.
        let one = LoadOptions::new().size(2, 2).fit(Fit::CenterCrop).crop_fraction(0.25).apply(ramp(4, 4, |_, _| 9));
        assert_eq!(one.unwrap().image(0), &[9; 4]);
    }

    #[test]
    fn options_deserialize_and_reject_unknown_keys() {
        let o: LoadOptions = serde_json::from_str(r#"{"fit": "center-crop", "crop_fraction": 0.9}"#).unwrap();
        assert_eq!(o, LoadOptions::new().fit(Fit::CenterCrop).crop_fraction(0.9));
        let o: LoadOptions = serde_json::from_str(r#"{"rgb": true, "size": [32, 32], "fit": "pad"}"#).unwrap();
        assert_eq!(o, LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad));
        assert!(serde_json::from_str::<LoadOptions>(r#"{"colour": true}"#).is_err());
    }
}
