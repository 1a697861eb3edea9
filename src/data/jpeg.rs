//! JPEG decoding, shared by the image-folder reader and the augmentation stages, and encoding
//! for previews and benchmark inputs.
//!
//! Decoding goes through libjpeg-turbo-rs, a Rust port of libjpeg-turbo whose output is
//! bit-identical to libjpeg-turbo's own (fancy upsampling, integer IDCT). That is the library
//! Pillow links, so a file decodes here to exactly the pixels `Image.open(f).convert("RGB")`
//! gives a PyTorch pipeline, CMYK files included: a model or an augmentation compared with its
//! PIL counterpart starts from the same bytes. It is also the fastest decoder we measured:
//! 0.74 ms against zune-jpeg's 0.85 ms per 500x375 4:2:0 photo, 1.18x Pillow (BENCHMARKS.md).
//!
//! Decoding at the ImageNet-style size dominates the cost of a view, so [`Jpeg::decode_into`]
//! writes into the caller's buffer and allocates nothing for the output, and
//! [`Jpeg::decode_region_into`] decodes only the part a random crop will read (the CPU form
//! of NVIDIA DALI's fused decode-and-crop): the entropy-coded data below it is never touched,
//! and the columns beside it are not upsampled or colour-converted.

use libjpeg_turbo_rs::{ColorSpace, Decoder, Encoder, PixelFormat, Subsampling};

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
    bytes: &'a [u8],
    /// Built by [`parse`](Self::parse) unless the file's own headers told the frame (plain
    /// gray or three-component sequential files): then it is built at decode time, on the
    /// shortened copy when the file is cut, so a cut file is parsed by the decoder once.
    decoder: Option<Decoder<'a>>,
    frame: Frame,
    format: PixelFormat,
    /// Where the file can be cut short: see [`TopRows`].
    top_rows: Option<TopRows>,
}

/// What [`Jpeg::decode_region_into`] needs to decode a file's first rows only, and a window of
/// their columns.
///
/// In a sequential (baseline or extended, Huffman-coded, 8-bit) file whose first scan holds
/// every component, the entropy-coded data runs MCU row by MCU row from the top. A copy of the
/// file whose frame header claims fewer rows therefore decodes to exactly the full decode's
/// top rows, except next to its new bottom edge, where chroma upsampling would repeat the last
/// row instead of reading the next. Progressive, arithmetic-coded, lossless, 12-bit and
/// multi-scan files hold their data in other orders; they always decode in full.
#[derive(Clone, Copy, Debug)]
struct TopRows {
    /// Byte offset of the frame header's 16-bit height.
    height_at: usize,
    /// Rows per MCU row: the cut is made on a multiple of it.
    mcu_rows: usize,
    /// The largest horizontal sampling factor: 2 when chroma is halved across (4:2:0, 4:2:2).
    max_h: u8,
    /// The frame header's width, height and number of components.
    width: usize,
    height: usize,
    components: u8,
}

impl TopRows {
    /// Reads the markers up to the first scan; `None` when the file must decode in full.
    fn find(bytes: &[u8]) -> Option<TopRows> {
        let mut at = MAGIC.len() - 1;
        let mut frame: Option<TopRows> = None;
        loop {
            if *bytes.get(at)? != 0xFF {
                return None;
            }
            while *bytes.get(at + 1)? == 0xFF {
                at += 1; // fill bytes
            }
            let marker = *bytes.get(at + 1)?;
            let len = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]) as usize;
            let segment = bytes.get(at + 4..(at + 2 + len).max(at + 4))?;
            match marker {
                // SOF0/SOF1: precision, height, width, components, then 3 bytes per component
                // (id, sampling factors, table).
                0xC0 | 0xC1 => {
                    let components = *segment.get(5)?;
                    if *segment.first()? != 8 || segment.len() < 6 + 3 * components as usize {
                        return None;
                    }
                    let max_v = (0..components as usize).map(|c| segment[6 + 3 * c + 1] & 0x0F).max()?;
                    let max_h = (0..components as usize).map(|c| segment[6 + 3 * c + 1] >> 4).max()?;
                    frame = Some(TopRows {
                        height_at: at + 5,
                        mcu_rows: 8 * max_v.max(1) as usize,
                        max_h,
                        width: u16::from_be_bytes([segment[3], segment[4]]) as usize,
                        height: u16::from_be_bytes([segment[1], segment[2]]) as usize,
                        components,
                    });
                }
                // Every other frame type (DHT C4, JPG C8 and DAC CC are not frames).
                0xC2..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return None,
                // SOS: the first scan must hold every component.
                0xDA => {
                    let frame = frame?;
                    return (*segment.first()? == frame.components).then_some(frame);
                }
                _ => {}
            }
            at += 2 + len;
        }
    }

    /// Frame height to decode so that rows `0..rows` come out as in the full decode: one row
    /// of margin (upsampling a row of 4:2:0 chroma also reads the chroma row below), rounded
    /// up to an MCU row. Tests check every request against the full decode, and fail without
    /// the margin.
    fn cut(&self, rows: usize, height: usize) -> usize {
        (rows + 1).div_ceil(self.mcu_rows).saturating_mul(self.mcu_rows).min(height)
    }

    /// The columns `(x, width)` to ask the decoder for (`Decoder::set_crop`) so that columns
    /// `region.left..region.right` come out as in the full decode, or `None` for every column.
    ///
    /// libjpeg's cropped decode (`jpeg_crop_scanline`, which libjpeg-turbo-rs follows) starts
    /// the window on an iMCU column and treats the window's edges as the image's, so the
    /// chroma upsampling next to them repeats the edge sample instead of reading the one
    /// beyond. So the window gets [`EDGE_MARGIN`] more columns on each side, and must be at
    /// least [`MIN_WINDOW`] wide (libjpeg upsamples chroma two samples wide or less by
    /// repetition). Tests check every region of a 70-pixel-wide image on 9 layouts against the
    /// full decode, and fail without the margin.
    fn columns(&self, region: Region, width: usize) -> Option<(usize, usize)> {
        if !matches!(self.components, 1 | 3) || !matches!(self.max_h, 1 | 2) || region.left >= region.right {
            return None;
        }
        let x = region.left.saturating_sub(EDGE_MARGIN);
        let end = region.right.saturating_add(EDGE_MARGIN).min(width);
        let aligned = x / (8 * self.max_h as usize) * (8 * self.max_h as usize);
        let narrower = aligned > 0 || end < width;
        (narrower && end >= aligned + MIN_WINDOW).then_some((x, end - x))
    }
}

/// Columns decoded beyond each side of a [`Region`]: the chroma upsampling of a pixel reads the
/// chroma sample beside it, 2 pixels away at most.
const EDGE_MARGIN: usize = 2;

/// The narrowest window a [`Region`] is decoded in; narrower requests decode every column.
const MIN_WINDOW: usize = 16;

/// The part of an image a decode must give exactly: columns `left..right` of rows
/// `0..bottom`. For a crop box, everything from the top of the image down to its bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub left: usize,
    pub right: usize,
    pub bottom: usize,
}

impl Region {
    /// All of a `width x height` image.
    pub fn whole(width: usize, height: usize) -> Region {
        Region { left: 0, right: width, bottom: height }
    }
}

/// The columns [`Jpeg::decode_region_into`] wrote: each row holds `width` pixels, starting at
/// column `left` of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    pub left: usize,
    pub width: usize,
}

impl<'a> Jpeg<'a> {
    /// Reads the headers of `bytes`. Gray files decode to one channel, every other colour
    /// space (YCbCr, RGB, CMYK, YCCK) to RGB; [`rgb`](Self::rgb) asks for RGB from gray too.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, JpegError> {
        let top_rows = TopRows::find(bytes);
        // One component is gray and three are YCbCr (or RGB): the decoder would say the same.
        let told = top_rows.filter(|t| matches!(t.components, 1 | 3) && t.width > 0 && t.height > 0);
        let (decoder, width, height, gray) = match told {
            Some(t) => (None, t.width, t.height, t.components == 1),
            None => {
                let decoder = Decoder::new(bytes).map_err(JpegError::from)?;
                let (width, height) = (decoder.output_width(), decoder.output_height());
                let gray = decoder.jpeg_color_space() == ColorSpace::Grayscale;
                (Some(decoder), width, height, gray)
            }
        };
        if width == 0 || height == 0 {
            return Err(JpegError(format!("frame is {width}x{height}: expected a non-empty image")));
        }
        let format = if gray { PixelFormat::Grayscale } else { PixelFormat::Rgb };
        let frame = Frame { width, height, channels: if gray { 1 } else { 3 } };
        Ok(Jpeg { bytes, decoder, frame, format, top_rows }.with_format(format))
    }

    /// Decode to RGB whatever the file holds (gray replicated to three channels, as Pillow's
    /// `convert("RGB")` does).
    pub fn rgb(mut self) -> Self {
        self.frame.channels = 3;
        self.with_format(PixelFormat::Rgb)
    }

    fn with_format(mut self, format: PixelFormat) -> Self {
        self.format = format;
        if let Some(decoder) = &mut self.decoder {
            decoder.set_output_format(format);
        }
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
        self.check_buffer(out)?;
        self.decode_whole(out)
    }

    /// The full decode, through the decoder `parse` built or a new one.
    fn decode_whole(&self, out: &mut [u8]) -> Result<(), JpegError> {
        match &self.decoder {
            Some(decoder) => decode_with(decoder, out),
            None => decode_with(&self.decoder_on(self.bytes)?, out),
        }
    }

    /// A decoder over `bytes` (the file or its shortened copy) writing this file's format.
    fn decoder_on<'b>(&self, bytes: &'b [u8]) -> Result<Decoder<'b>, JpegError> {
        let mut decoder = Decoder::new(bytes).map_err(JpegError::from)?;
        decoder.set_output_format(self.format);
        Ok(decoder)
    }

    /// Decodes at least `region` into `out` (which holds the whole [`Frame::len`]): rows of
    /// the returned [`Columns`]' width, packed from the start of `out`, whose rows
    /// `0..region.bottom` and columns `region.left..region.right` hold exactly the pixels
    /// [`decode_into`](Self::decode_into) gives them. Everything else in `out` is
    /// unspecified (a few more decoded rows and columns, then what was there before).
    ///
    /// For a random crop this skips the entropy-coded data below the crop (about a tenth of
    /// the decoding of a 500x375 photo under RandomResizedCrop), and the upsampling and
    /// colour conversion of the columns beside it. A file whose data is not stored top to
    /// bottom in one scan (progressive, say) is decoded in full, and so are the columns of
    /// files whose chroma is subsampled other than by 1 or 2 across. Corrupt data below the
    /// cut goes unseen, as it does for any region-of-interest decoder.
    pub fn decode_region_into(&self, region: Region, out: &mut [u8]) -> Result<Columns, JpegError> {
        self.check_buffer(out)?;
        let Frame { width, height, channels } = self.frame;
        let whole = Columns { left: 0, width };
        let Some(top) = self.top_rows else {
            return self.decode_whole(out).map(|()| whole);
        };
        let (cut_height, columns) = (top.cut(region.bottom, height), top.columns(region, width));
        if cut_height == height && columns.is_none() {
            return self.decode_whole(out).map(|()| whole);
        }
        let shortened;
        let bytes = if cut_height < height {
            let mut copy = self.bytes.to_vec();
            copy[top.height_at..top.height_at + 2].copy_from_slice(&(cut_height as u16).to_be_bytes());
            shortened = copy;
            &shortened[..]
        } else {
            self.bytes
        };
        let mut decoder = self.decoder_on(bytes)?;
        let written = match columns {
            Some((x, w)) => {
                decoder.set_crop(x, w);
                // The decoder widens the window leftwards to an iMCU column: its output size says how far.
                let bytes_out = decoder.output_buffer_size().map_err(JpegError::from)?;
                let out_width = bytes_out / (cut_height * channels);
                Columns { left: x + w - out_width, width: out_width }
            }
            None => whole,
        };
        decode_with(&decoder, &mut out[..cut_height * written.width * channels])?;
        Ok(written)
    }

    /// Decodes the first `rows` rows of every column into `out` (which holds the whole
    /// [`Frame::len`]), with exactly the pixels [`decode_into`](Self::decode_into) gives them;
    /// what lies below them is unspecified: [`decode_region_into`](Self::decode_region_into)
    /// of every column.
    pub fn decode_top_into(&self, rows: usize, out: &mut [u8]) -> Result<(), JpegError> {
        self.decode_region_into(Region { left: 0, right: self.frame.width, bottom: rows }, out).map(drop)
    }

    fn check_buffer(&self, out: &[u8]) -> Result<(), JpegError> {
        let Frame { width, height, channels } = self.frame;
        if out.len() != self.frame.len() {
            return Err(JpegError(format!(
                "output buffer holds {} bytes, expected {} for {height}x{width}x{channels}",
                out.len(),
                self.frame.len()
            )));
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

/// Encodes `height x width x channels` HWC pixels (1: gray, 3: RGB) as a baseline JPEG at
/// `quality` (1..=100), colour with 4:2:0 chroma: what Pillow's `save(f, "JPEG")` and libjpeg
/// write by default, and how most photos (ImageNet's among them) are stored.
pub fn encode(pixels: &[u8], frame: Frame, quality: u8) -> Result<Vec<u8>, JpegError> {
    let Frame { width, height, channels } = frame;
    let format = match channels {
        1 => PixelFormat::Grayscale,
        3 => PixelFormat::Rgb,
        c => return Err(JpegError(format!("cannot encode {c} channels: expected 1 (gray) or 3 (RGB)"))),
    };
    if pixels.len() != frame.len() || frame.is_empty() {
        return Err(JpegError(format!(
            "{} bytes of pixels for a {height}x{width}x{channels} image: expected {} (and a non-empty image)",
            pixels.len(),
            frame.len()
        )));
    }
    let subsampling = if channels == 1 { Subsampling::S444 } else { Subsampling::S420 };
    Encoder::new(pixels, width, height, format)
        .quality(quality.clamp(1, 100))
        .subsampling(subsampling)
        .encode()
        .map_err(JpegError::from)
}

/// Decodes into `out`, which holds exactly the packed image the decoder emits.
fn decode_with(decoder: &Decoder<'_>, out: &mut [u8]) -> Result<(), JpegError> {
    // Some paths (CMYK) ask for room beyond the packed image; stage through a scratch buffer
    // then, rather than fail.
    let needed = decoder.output_buffer_size().map_err(JpegError::from)?;
    if needed <= out.len() {
        decoder.decode_image_into(out).map_err(JpegError::from)?;
    } else {
        let mut staged = vec![0u8; needed];
        decoder.decode_image_into(&mut staged).map_err(JpegError::from)?;
        let n = out.len();
        out.copy_from_slice(&staged[..n]);
    }
    Ok(())
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

    /// A `width x height` image of smooth waves plus noise, encoded by libjpeg-turbo-rs with
    /// `subsampling` (4:4:4 ... 4:1:0), optionally with restart markers or progressive.
    fn encoded(width: usize, height: usize, format: PixelFormat, subsampling: Subsampling, restart: bool, progressive: bool) -> Vec<u8> {
        let c = format.bytes_per_pixel();
        let mut state = 0x2545F491u32;
        let pixels: Vec<u8> = (0..width * height * c)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let (x, y) = ((i / c) % width, (i / c) / width);
                (128.0 + 90.0 * ((x as f64 * 0.11 + (i % c) as f64).sin() * (y as f64 * 0.07).cos()) + (state % 24) as f64)
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        let mut encoder = Encoder::new(&pixels, width, height, format).quality(90).subsampling(subsampling);
        if restart {
            encoder = encoder.restart_blocks(3);
        }
        encoder.progressive(progressive).encode().unwrap()
    }

    /// A byte the test images' last rows never hold entirely (they are noisy).
    const SENTINEL: u8 = 0xA5;

    /// The files partial decodes are checked on: every chroma layout libjpeg-turbo-rs
    /// encodes, one with restart markers, and gray (name, format, subsampling, restarts).
    const LAYOUTS: [(&str, PixelFormat, Subsampling, bool); 9] = [
        ("4:2:0", PixelFormat::Rgb, Subsampling::S420, false),
        ("4:2:2", PixelFormat::Rgb, Subsampling::S422, false),
        ("4:4:4", PixelFormat::Rgb, Subsampling::S444, false),
        ("4:4:0", PixelFormat::Rgb, Subsampling::S440, false),
        ("4:1:0", PixelFormat::Rgb, Subsampling::S410, false),
        ("4:4:1", PixelFormat::Rgb, Subsampling::S441, false),
        ("2:4", PixelFormat::Rgb, Subsampling::S24, false),
        ("4:2:0 with restart markers", PixelFormat::Rgb, Subsampling::S420, true),
        ("gray", PixelFormat::Grayscale, Subsampling::S444, false),
    ];

    #[test]
    fn top_rows_decode_exactly_as_the_full_decode_does() {
        for (name, format, subsampling, restart) in LAYOUTS {
            let (width, height) = (37, 83);
            let jpg = encoded(width, height, format, subsampling, restart, false);
            let jpeg = Jpeg::parse(&jpg).unwrap().rgb();
            let full = jpeg.decode().unwrap();
            let row = width * 3;
            let mut cuts = 0;
            for rows in 1..=height {
                let mut out = vec![SENTINEL; full.len()];
                jpeg.decode_top_into(rows, &mut out).unwrap();
                assert_eq!(out[..rows * row], full[..rows * row], "{name}: first {rows} rows");
                cuts += usize::from(out[full.len() - row..].iter().all(|&v| v == SENTINEL));
            }
            // The cut really happens: the last row is left alone unless a request comes
            // within an MCU row and the margin of the bottom.
            assert!(cuts >= height - 2 - 32, "{name}: only {cuts} of {height} requests were cut short");
        }
    }

    #[test]
    fn regions_decode_exactly_as_the_full_decode_does() {
        for (name, format, subsampling, restart) in LAYOUTS {
            let (width, height) = (70, 40);
            let jpg = encoded(width, height, format, subsampling, restart, false);
            for jpeg in [Jpeg::parse(&jpg).unwrap(), Jpeg::parse(&jpg).unwrap().rgb()] {
                let c = jpeg.frame().channels;
                let full = jpeg.decode().unwrap();
                let mut narrowed = 0;
                for bottom in [height, 9] {
                    for left in 0..width {
                        for right in left + 1..=width {
                            let mut out = vec![SENTINEL; full.len()];
                            let region = Region { left, right, bottom };
                            let cols = jpeg.decode_region_into(region, &mut out).unwrap();
                            assert!(cols.left <= left && right <= cols.left + cols.width, "{name}: {region:?} -> {cols:?}");
                            for y in 0..bottom {
                                let got = &out[(y * cols.width + left - cols.left) * c..][..(right - left) * c];
                                let want = &full[(y * width + left) * c..][..(right - left) * c];
                                assert_eq!(got, want, "{name}, {c} channels: row {y} of {region:?} ({cols:?})");
                            }
                            narrowed += usize::from(cols.width < width);
                        }
                    }
                }
                // Chroma subsampled 4 across (4:1:0) decodes every column; the others narrow
                // most windows.
                if name == "4:1:0" {
                    assert_eq!(narrowed, 0, "{name}");
                } else {
                    assert!(narrowed > 2 * 1500, "{name}: only {narrowed} of 2 x 2485 regions were decoded narrower");
                }
            }
        }
    }

    #[test]
    fn files_not_stored_top_to_bottom_decode_in_full() {
        let progressive = encoded(37, 83, PixelFormat::Rgb, Subsampling::S420, false, true);
        let jpeg = Jpeg::parse(&progressive).unwrap();
        let full = jpeg.decode().unwrap();
        let mut out = vec![SENTINEL; full.len()];
        jpeg.decode_top_into(1, &mut out).unwrap();
        assert_eq!(out, full);
        // Every fixture gives Pillow's top rows; the progressive one is decoded whole.
        for (name, (jpg, pil_rgb)) in fixtures() {
            let jpeg = Jpeg::parse(jpg).unwrap().rgb();
            let mut out = vec![SENTINEL; pil_rgb.len()];
            jpeg.decode_top_into(5, &mut out).unwrap();
            assert_eq!(out[..5 * 21 * 3], pil_rgb[..5 * 21 * 3], "{name}");
            if name == "progressive" {
                assert_eq!(out, pil_rgb);
            }
        }
    }

    #[test]
    fn a_cut_never_hides_corruption_above_it() {
        let jpg = encoded(37, 83, PixelFormat::Rgb, Subsampling::S420, false, false);
        let jpeg = Jpeg::parse(&jpg).unwrap();
        let mut out = vec![0; jpeg.frame().len()];
        // Cut the file inside its entropy-coded data: the top rows still decode if they lie
        // above the damage, and the error says what went wrong if they do not.
        let cut = &jpg[..jpg.len() * 3 / 4];
        let short = Jpeg::parse(cut).unwrap();
        assert!(short.decode_into(&mut out).is_err());
        short.decode_top_into(10, &mut out).unwrap();
        assert_eq!(out[..10 * 37 * 3], jpeg.decode().unwrap()[..10 * 37 * 3]);
        let err = short.decode_top_into(82, &mut out).unwrap_err();
        assert!(err.to_string().starts_with("JPEG: "), "{err}");
        // Every single-byte overwrite of a file that gets cut decodes or fails cleanly.
        for i in 0..jpg.len() {
            let mut bad = jpg.clone();
            bad[i] ^= 0x5A;
            let _ = Jpeg::parse(&bad).and_then(|j| j.decode_top_into(20, &mut vec![0; j.frame().len()]));
        }
    }

    #[test]
    fn encodes_color_with_4_2_0_chroma_and_decodes_back_close() {
        let frame = Frame { width: 40, height: 24, channels: 3 };
        let pixels: Vec<u8> = (0..frame.len()).map(|i| ((i / 3) % 40 * 6 + i % 3 * 10) as u8).collect();
        let jpg = encode(&pixels, frame, 95).unwrap();
        let header = Decoder::new(&jpg).unwrap().header().clone();
        let sampling: Vec<(u8, u8)> =
            header.components.iter().map(|c| (c.horizontal_sampling, c.vertical_sampling)).collect();
        assert_eq!(sampling, [(2, 2), (1, 1), (1, 1)]);
        let back = Jpeg::parse(&jpg).unwrap();
        assert_eq!(back.frame(), frame);
        let max_err = back.decode().unwrap().iter().zip(&pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(max_err <= 16, "max error {max_err}");
        let gray = Frame { channels: 1, ..frame };
        assert_eq!(Jpeg::parse(&encode(&pixels[..gray.len()], gray, 90).unwrap()).unwrap().frame(), gray);
        assert!(encode(&pixels[1..], frame, 90).unwrap_err().to_string().contains("expected 2880"));
        assert!(encode(&pixels, Frame { channels: 4, width: 30, height: 24 }, 90).is_err());
    }
}
