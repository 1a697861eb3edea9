//! [`Image`]: the pixels every augmentation reads and writes.
//!
//! Interleaved 8-bit channels, row-major (HWC), exactly what a JPEG/PNG decoder produces and
//! what PIL's `Image.tobytes()` gives for "L" and "RGB" images; no stride, no padding. That
//! keeps every op a plain loop over a slice and lets a worker reuse one buffer per view
//! ([`Image::copy_from`] keeps the allocation).

use super::AugmentError;
use std::fmt;

/// An 8-bit image: `height` rows of `width` pixels of `channels` interleaved bytes.
///
/// Invariant: `data` holds at least `width * height * channels` bytes, `channels` is 1 (gray)
/// or 3 (RGB), and the image is not empty, except for [`Image::default`], an empty
/// placeholder that is meant to be overwritten with [`Image::copy_from`] or
/// [`Image::set_pixels`].
#[derive(Clone, Default)]
pub struct Image {
    width: usize,
    height: usize,
    channels: usize,
    /// The pixels, then bytes kept from a larger image: a buffer reused for images of varying
    /// sizes (decoded files, windows of them) is zero-filled only when it grows past its
    /// largest size so far, not each time it grows back.
    data: Vec<u8>,
    /// Column of the original image this image's column 0 is, and the original's width:
    /// `(0, width)` unless it is a decoded window ([`Image::window`]).
    left: usize,
    full_width: usize,
}

impl Image {
    /// Wraps `data` (row-major, interleaved channels).
    ///
    /// Returns an error when the buffer length does not match the size, when `channels` is
    /// neither 1 nor 3, or when the image is empty.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Image, AugmentError> {
        check_shape(width, height, channels, data.len())?;
        Ok(Image { width, height, channels, data, left: 0, full_width: width })
    }

    /// An image of the given size with every byte set to `value`.
    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Result<Image, AugmentError> {
        Image::new(width, height, channels, vec![value; width * height * channels])
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Where this image's columns lie in the image it was decoded from: `(left, full_width)`,
    /// so its column `x` is the original's column `left + x`. `(0, width)` for a whole image.
    ///
    /// A decoder told which columns the views will read decodes only a window around them
    /// ([`codec::decode_region_into`](super::codec::decode_region_into)). Only an op that
    /// reported those columns ([`Augmentation::region_read`](super::Augmentation::region_read))
    /// is ever given such a window, as its chain's source; every op's output is whole.
    pub fn window(&self) -> (usize, usize) {
        (self.left, self.full_width)
    }

    /// Makes this image the window of columns `left..left + width` of itself: the buffer's
    /// first `width * height` pixels become the rows (a decoder wrote them packed there).
    ///
    /// # Panics
    /// When the window does not lie within the image.
    pub fn narrow_to_window(&mut self, left: usize, width: usize) {
        assert!(width > 0 && left + width <= self.width, "window {left}+{width} of a {}-pixel-wide image", self.width);
        self.left += left;
        self.width = width;
    }

    /// Bytes per pixel: 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// All pixels, row-major, channels interleaved.
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len()]
    }

    /// All pixels, mutable. The size cannot change through this slice.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let n = self.len();
        &mut self.data[..n]
    }

    /// Gives the pixel buffer away.
    pub fn into_data(mut self) -> Vec<u8> {
        self.data.truncate(self.len());
        self.data
    }

    /// Bytes of pixels: `width * height * channels`.
    fn len(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// Bytes in one row.
    pub fn row_len(&self) -> usize {
        self.width * self.channels
    }

    /// Row `y`.
    pub fn row(&self, y: usize) -> &[u8] {
        let n = self.row_len();
        &self.data()[y * n..(y + 1) * n]
    }

    /// Row `y`, mutable.
    pub fn row_mut(&mut self, y: usize) -> &mut [u8] {
        let n = self.row_len();
        &mut self.data_mut()[y * n..(y + 1) * n]
    }

    /// The `channels` bytes of pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * self.channels;
        &self.data()[i..i + self.channels]
    }

    /// The bytes of pixel (x, y), mutable.
    pub fn pixel_mut(&mut self, x: usize, y: usize) -> &mut [u8] {
        let (i, c) = ((y * self.width + x) * self.channels, self.channels);
        &mut self.data_mut()[i..i + c]
    }

    /// Makes `self` an exact copy of `src`, reusing `self`'s allocation when it is big enough.
    pub fn copy_from(&mut self, src: &Image) {
        self.width = src.width;
        self.height = src.height;
        self.channels = src.channels;
        (self.left, self.full_width) = (src.left, src.full_width);
        self.store(src.data());
    }

    /// Replaces the pixels with a copy of `data` (row-major, interleaved), reusing the
    /// allocation: how a worker loads a decoded sample without allocating.
    pub fn set_pixels(
        &mut self,
        width: usize,
        height: usize,
        channels: usize,
        data: &[u8],
    ) -> Result<(), AugmentError> {
        check_shape(width, height, channels, data.len())?;
        self.width = width;
        self.height = height;
        self.channels = channels;
        (self.left, self.full_width) = (0, width);
        self.store(data);
        Ok(())
    }

    /// Writes `pixels` (the current size's bytes) to the start of the buffer, keeping any
    /// bytes beyond them for a later, larger image.
    fn store(&mut self, pixels: &[u8]) {
        match self.data.get_mut(..pixels.len()) {
            Some(start) => start.copy_from_slice(pixels),
            None => {
                self.data.clear();
                self.data.extend_from_slice(pixels);
            }
        }
    }

    /// Resizes the buffer for a whole `width` x `height` image with `channels` channels,
    /// keeping the allocation. The pixel values afterwards are unspecified (ops overwrite
    /// them all).
    pub(crate) fn reshape(&mut self, width: usize, height: usize, channels: usize) {
        self.width = width;
        self.height = height;
        self.channels = channels;
        (self.left, self.full_width) = (0, width);
        let n = self.len();
        if self.data.len() < n {
            self.data.resize(n, 0);
        }
    }

    /// Writes the pixels as planar f32 (CHW), `(v / 255 - mean[c]) / std[c]`: the layout and
    /// normalisation the model consumes (protocon.md s.2, "normalise after augmentation").
    ///
    /// `mean` and `std` hold one value per channel; `out` must hold exactly
    /// `channels * height * width` values.
    ///
    /// # Panics
    /// When `mean`, `std` or `out` have the wrong length.
    pub fn normalize_chw_into(&self, mean: &[f32], std: &[f32], out: &mut [f32]) {
        let c = self.channels;
        assert_eq!(mean.len(), c, "one mean per channel");
        assert_eq!(std.len(), c, "one std per channel");
        let plane = self.width * self.height;
        assert_eq!(out.len(), c * plane, "output holds channels*height*width values");
        for ch in 0..c {
            let scale = 1.0 / (255.0 * std[ch]);
            let shift = mean[ch] / std[ch];
            let dst = &mut out[ch * plane..(ch + 1) * plane];
            for (o, px) in dst.iter_mut().zip(self.data().chunks_exact(c)) {
                *o = px[ch] as f32 * scale - shift;
            }
        }
    }
}

/// Two images are equal when their size, channels, placement ([`Image::window`]) and pixels
/// are; bytes kept beyond the pixels do not count.
impl PartialEq for Image {
    fn eq(&self, other: &Image) -> bool {
        (self.width, self.height, self.channels, self.left, self.full_width)
            == (other.width, other.height, other.channels, other.left, other.full_width)
            && self.data() == other.data()
    }
}

impl Eq for Image {}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .field("window", &self.window())
            .field("data", &self.data())
            .finish()
    }
}

fn check_shape(width: usize, height: usize, channels: usize, len: usize) -> Result<(), AugmentError> {
    if channels != 1 && channels != 3 {
        return Err(AugmentError::Channels(channels));
    }
    if width == 0 || height == 0 {
        return Err(AugmentError::Empty { width, height });
    }
    if width.checked_mul(height).and_then(|n| n.checked_mul(channels)) != Some(len) {
        return Err(AugmentError::BufferSize { width, height, channels, len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(Image::new(2, 2, 3, vec![0; 11]), Err(AugmentError::BufferSize { .. })));
        assert!(matches!(Image::new(2, 2, 4, vec![0; 16]), Err(AugmentError::Channels(4))));
        assert!(matches!(Image::new(0, 2, 1, vec![]), Err(AugmentError::Empty { .. })));
    }

    #[test]
    fn pixel_addressing_is_row_major_interleaved() {
        let img = Image::new(2, 2, 3, (0..12).collect()).unwrap();
        assert_eq!(img.pixel(1, 0), &[3, 4, 5]);
        assert_eq!(img.pixel(0, 1), &[6, 7, 8]);
        assert_eq!(img.row(1), &[6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn a_reused_buffer_shows_only_the_current_pixels() {
        let mut img = Image::filled(4, 3, 3, 9).unwrap();
        img.reshape(2, 2, 1);
        assert_eq!(img.data().len(), 4);
        // Copies into it keep the larger buffer too.
        img.set_pixels(2, 2, 1, &[5; 4]).unwrap();
        assert_eq!((img.data(), img.data.len()), (&[5u8; 4][..], 36));
        assert_eq!(img.row(1).len(), 2);
        // Equality and the pixels ignore the bytes kept from the larger image.
        img.data_mut().fill(1);
        assert_eq!(img, Image::filled(2, 2, 1, 1).unwrap());
        assert_eq!(img.clone().into_data(), vec![1; 4]);
        // A window keeps the original's width and its own columns.
        let mut wide = Image::new(4, 2, 1, (0..8).collect()).unwrap();
        wide.narrow_to_window(1, 2);
        assert_eq!((wide.width(), wide.window()), (2, (1, 4)));
        assert_eq!(wide.data(), &[0, 1, 2, 3]);
        assert_ne!(wide, Image::new(2, 2, 1, (0..4).collect()).unwrap());
        wide.reshape(2, 2, 1);
        assert_eq!(wide.window(), (0, 2));
    }

    #[test]
    fn normalize_writes_planes() {
        let img = Image::new(2, 1, 3, vec![0, 51, 255, 255, 102, 0]).unwrap();
        let mut out = [0.0f32; 6];
        img.normalize_chw_into(&[0.0, 0.2, 0.5], &[1.0, 0.2, 0.5], &mut out);
        // channel 0: v/255; channel 1: (v/255 - 0.2)/0.2; channel 2: (v/255 - 0.5)/0.5
        let want = [0.0, 1.0, 0.0, 1.0, 1.0, -1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }
}
