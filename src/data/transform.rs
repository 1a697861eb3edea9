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
}

/// Options applied to every image as it is loaded.
///
/// ```
/// use protocon::data::{Fit, LoadOptions};
/// // Fashion-MNIST as 32x32 RGB, zero-padded.
/// let options = LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad);
/// assert_eq!(options.size, Some([32, 32]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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

    /// Applies the options to every image of `data`; a no-op when there is nothing to change.
    pub fn apply(&self, data: Dataset) -> Result<Dataset, DataError> {
        let from = (data.height(), data.width(), data.channels());
        let mut fitter = ImageFitter::new(self, from)?;
        if fitter.output_shape() == from {
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
        if (th, tw) != (h, w) {
            match options.fit {
                Fit::Pad if th < h || tw < w => {
                    return Err(fail("padding cannot shrink an image; use fit = resize (`data.fit` in a run config)".into()))
                }
                Fit::Resize if pixel_type(c).is_none() => {
                    return Err(fail(format!("cannot resize images of {c} channels")))
                }
                _ => {}
            }
        }
        Ok(ImageFitter {
            from,
            to: (th, tw, tc),
            fit: options.fit,
            pad_value: options.pad_value,
            resizer: Resizer::new(),
            scratch: Vec::new(),
        })
    }

    /// `(height, width, channels)` of the images [`fit`](Self::fit) produces.
    pub(crate) fn output_shape(&self) -> (usize, usize, usize) {
        self.to
    }

    /// Appends the fitted version of `image` (of the source shape) to `out`.
    pub(crate) fn fit(&mut self, image: &[u8], out: &mut Vec<u8>) -> Result<(), DataError> {
        let (h, w, c) = self.from;
        let (th, tw, tc) = self.to;
        debug_assert_eq!(image.len(), h * w * c);
        let mut sized = std::mem::take(&mut self.scratch);
        sized.clear();
        if (th, tw) == (h, w) {
            sized.extend_from_slice(image);
        } else {
            match self.fit {
                Fit::Pad => pad(image, (h, w, c), (th, tw), self.pad_value, &mut sized),
                Fit::Resize => self.resize(image, &mut sized)?,
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
        let alg = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        self.resizer.resize(&src, &mut dst, &alg).map_err(|e| fail(e.to_string()))?;
        out.extend_from_slice(dst.buffer());
        Ok(())
    }
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

    #[test]
    fn options_deserialize_and_reject_unknown_keys() {
        let o: LoadOptions = serde_json::from_str(r#"{"rgb": true, "size": [32, 32], "fit": "pad"}"#).unwrap();
        assert_eq!(o, LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad));
        assert!(serde_json::from_str::<LoadOptions>(r#"{"colour": true}"#).is_err());
    }
}
