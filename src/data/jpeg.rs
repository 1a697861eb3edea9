//! JPEG decoding, shared by the image-folder reader and the augmentation stages.
//!
//! Decoding goes through libjpeg-turbo-rs, a Rust port of libjpeg-turbo whose output is
//! bit-identical to libjpeg-turbo's own (fancy upsampling, integer IDCT). That is the library
//! Pillow links, so a file decodes here to exactly the pixels `Image.open(f).convert("RGB")`
//! gives a PyTorch pipeline, CMYK files included: a model or an augmentation compared with its
//! PIL counterpart starts from the same bytes. It is also the fastest decoder we measured:
//! 0.74 ms against zune-jpeg's 0.85 ms per 500x375 4:2:0 photo, 1.18x Pillow (BENCHMARKS.md).
//!
//! Decoding at the ImageNet-style size dominates the cost of a view, so [`Jpeg::decode_into`]
//! writes into the caller's buffer and allocates nothing for the output.

use libjpeg_turbo_rs::{ColorSpace, Decoder, PixelFormat};

/// The start-of-image marker and the first byte of the next marker.
const MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// Whether `bytes` start like a JPEG file.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Why a JPEG file could not be decoded; the text comes from the decoder ("corrupt data:
/// invalid Huffman code", "unexpected end of data", ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JPEG: {0}")]
pub struct JpegError(String);

impl JpegError {
    fn from(e: libjpeg_turbo_rs::JpegError) -> Self {
        JpegError(e.to_string())
    }
}

/// Size of a decoded image: `height * width * channels` bytes, HWC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
}

impl Frame {
    /// Bytes of the decoded image.
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Never true for a parsed file: [`Jpeg::parse`] refuses empty frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A JPEG file whose headers have been read: its size is known before any pixel is decoded,
/// so the caller can size its buffer.
pub struct Jpeg<'a> {
    decoder: Decoder<'a>,
    frame: Frame,
}

impl<'a> Jpeg<'a> {
    /// Reads the headers of `bytes`. Gray files decode to one channel, every other colour
    /// space (YCbCr, RGB, CMYK, YCCK) to RGB; [`rgb`](Self::rgb) asks for RGB from gray too.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, JpegError> {
        let mut decoder = Decoder::new(bytes).map_err(JpegError::from)?;
        let (width, height) = (decoder.output_width(), decoder.output_height());
        if width == 0 || height == 0 {
            return Err(JpegError(format!("frame is {width}x{height}: expected a non-empty image")));
        }
        let gray = decoder.jpeg_color_space() == ColorSpace::Grayscale;
        decoder.set_output_format(if gray { PixelFormat::Grayscale } else { PixelFormat::Rgb });
        Ok(Jpeg { decoder, frame: Frame { width, height, channels: if gray { 1 } else { 3 } } })
    }

    /// Decode to RGB whatever the file holds (gray replicated to three channels, as Pillow's
    /// `convert("RGB")` does).
    pub fn rgb(mut self) -> Self {
        self.frame.channels = 3;
        self.decoder.set_output_format(PixelFormat::Rgb);
        self
    }

    /// What [`decode_into`](Self::decode_into) will write.
    pub fn frame(&self) -> Frame {
        self.frame
    }

    /// Decodes into `out`, which must hold exactly [`Frame::len`] bytes; pixels are HWC,
    /// rows top to bottom. A truncated or corrupt entropy-coded segment is an error, as it is
    /// for Pillow by default, never an image partly filled with grey.
    pub fn decode_into(&self, out: &mut [u8]) -> Result<(), JpegError> {
        let Frame { width, height, channels } = self.frame;
        if out.len() != self.frame.len() {
            return Err(JpegError(format!(
                "output buffer holds {} bytes, expected {} for {height}x{width}x{channels}",
                out.len(),
                self.frame.len()
            )));
        }
        // Some paths (CMYK) ask for room beyond the packed image; stage through a scratch
        // buffer then, rather than fail.
        let needed = self.decoder.output_buffer_size().map_err(JpegError::from)?;
        if needed <= out.len() {
            self.decoder.decode_image_into(out).map_err(JpegError::from)?;
        } else {
            let mut staged = vec![0u8; needed];
            self.decoder.decode_image_into(&mut staged).map_err(JpegError::from)?;
            out.copy_from_slice(&staged[..out.len()]);
        }
        Ok(())
    }

    /// Decodes into a new buffer of [`Frame::len`] bytes.
    pub fn decode(&self) -> Result<Vec<u8>, JpegError> {
        let mut out = vec![0u8; self.frame.len()];
        self.decode_into(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of tests/fixtures/jpeg and what Pillow decoded it to (RGB), written by
    /// `benches/reference/randaugment_pil.py record-jpeg tests/fixtures/jpeg`.
    macro_rules! fixture {
        ($name:literal) => {
            (
                &include_bytes!(concat!("../../tests/fixtures/jpeg/", $name, ".jpg"))[..],
                &include_bytes!(concat!("../../tests/fixtures/jpeg/", $name, ".rgb"))[..],
            )
        };
    }

    /// (file bytes, Pillow's RGB pixels).
    type Fixture = (&'static [u8], &'static [u8]);

    fn fixtures() -> [(&'static str, Fixture); 5] {
        [
            ("rgb420", fixture!("rgb420")),
            ("rgb444", fixture!("rgb444")),
            ("progressive", fixture!("progressive")),
            ("gray", fixture!("gray")),
            ("cmyk", fixture!("cmyk")),
        ]
    }

    #[test]
    fn decodes_to_exactly_the_pixels_pillow_gives() {
        for (name, (jpg, pil_rgb)) in fixtures() {
            let jpeg = Jpeg::parse(jpg).unwrap().rgb();
            assert_eq!(jpeg.frame(), Frame { width: 21, height: 13, channels: 3 }, "{name}");
            assert_eq!(jpeg.decode().unwrap(), pil_rgb, "{name}");
        }
    }

    #[test]
    fn gray_files_stay_gray_unless_rgb_is_asked_for() {
        let (jpg, pil_rgb) = fixture!("gray");
        let jpeg = Jpeg::parse(jpg).unwrap();
        assert_eq!(jpeg.frame().channels, 1);
        let gray = jpeg.decode().unwrap();
        let replicated: Vec<u8> = gray.iter().flat_map(|&v| [v, v, v]).collect();
        assert_eq!(replicated, pil_rgb);
        let (color, _) = fixture!("rgb420");
        assert_eq!(Jpeg::parse(color).unwrap().frame().channels, 3);
    }

    #[test]
    fn a_buffer_of_the_wrong_size_is_refused() {
        let (jpg, _) = fixture!("rgb420");
        let jpeg = Jpeg::parse(jpg).unwrap();
        let err = jpeg.decode_into(&mut vec![0; jpeg.frame().len() - 1]).unwrap_err();
        assert!(err.to_string().contains("expected 819"), "{err}");
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors_not_panics() {
        let (jpg, _) = fixture!("rgb420");
        assert!(is_jpeg(jpg));
        // Cut inside the headers, and cut inside the entropy-coded data.
        for cut in [2, 40, jpg.len() / 2, jpg.len() - 3] {
            let err = Jpeg::parse(&jpg[..cut]).and_then(|j| j.decode().map(drop)).unwrap_err();
            assert!(err.to_string().starts_with("JPEG: "), "cut at {cut}: {err}");
        }
        // Every single-byte overwrite either decodes or fails cleanly.
        for i in 0..jpg.len() {
            let mut bad = jpg.to_vec();
            bad[i] ^= 0x5A;
            let _ = Jpeg::parse(&bad).and_then(|j| j.decode());
        }
        assert!(!is_jpeg(b"\x89PNG\r\n"));
    }
}
