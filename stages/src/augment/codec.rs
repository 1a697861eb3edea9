//! Decoding encoded files (JPEG, PNG) into an [`Image`], and encoding for previews and
//! benchmark fixtures. JPEG goes through [`protocon::data::jpeg`] (Pillow's pixels, the
//! fastest decoder we measured), everything else through the `image` crate.
//!
//! Decoding writes straight into the caller's buffer when the file's pixels are already
//! 8-bit gray or RGB (the common case), so a reader worker allocates nothing per image.

use super::{enhance, AugmentError, Image};
use protocon::data::jpeg::{self, Columns, Frame, Jpeg, JpegError, Region};
use image::{ColorType, ExtendedColorType, ImageDecoder, ImageEncoder, ImageReader};
use std::io::Cursor;

/// Decodes `bytes` (format guessed from the content) into `out` with `channels` channels
/// (1: gray, converted with PIL's luma; 3: RGB, gray files replicated).
pub fn decode_into(bytes: &[u8], out: &mut Image, channels: usize) -> Result<(), AugmentError> {
    decode_region_into(bytes, out, channels, Region::whole)
}

/// Like [`decode_into`], but only `region(width, height)` of the image need come out as in
/// the full decode. A JPEG file then stops decoding below it and may decode only a window of
/// columns around it ([`Jpeg::decode_region_into`]): `out` is then that window
/// ([`Image::window`]), with the full height, and its rows below the region unspecified.
/// Give it [`Augmenter::region_read`](super::Augmenter::region_read) of the views to be
/// built, and they come out exactly as from the full decode.
pub fn decode_region_into(
    bytes: &[u8],
    out: &mut Image,
    channels: usize,
    region: impl FnOnce(usize, usize) -> Region,
) -> Result<(), AugmentError> {
    if channels != 1 && channels != 3 {
        return Err(AugmentError::Channels(channels));
    }
    let columns = if jpeg::is_jpeg(bytes) {
        Some(decode_jpeg_into(bytes, out, region)?)
    } else {
        decode_other_into(bytes, out)?;
        None
    };
    // Per pixel, so it converts the window's packed rows at the start of the buffer too.
    convert_channels(out, channels);
    if let Some(columns) = columns.filter(|c| c.width < out.width()) {
        out.narrow_to_window(columns.left, columns.width);
    }
    Ok(())
}

/// JPEG through [`protocon::data::jpeg`]: the pixels Pillow decodes the file to, written
/// straight into `out` (sized for the whole image), `region(width, height)` at least.
fn decode_jpeg_into(
    bytes: &[u8],
    out: &mut Image,
    region: impl FnOnce(usize, usize) -> Region,
) -> Result<Columns, AugmentError> {
    let err = |e: JpegError| AugmentError::Decode(e.to_string());
    let jpeg = Jpeg::parse(bytes).map_err(err)?;
    let frame = jpeg.frame();
    out.reshape(frame.width, frame.height, frame.channels);
    jpeg.decode_region_into(region(frame.width, frame.height), out.data_mut()).map_err(err)
}

/// Every other format `image` reads (PNG here).
fn decode_other_into(bytes: &[u8], out: &mut Image) -> Result<(), AugmentError> {
    let err = |e: &dyn std::fmt::Display| AugmentError::Decode(e.to_string());
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| err(&e))?;
    let decoder = reader.into_decoder().map_err(|e| err(&e))?;
    let (w, h) = decoder.dimensions();
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 {
        return Err(AugmentError::Empty { width: w, height: h });
    }
    match decoder.color_type() {
        ColorType::Rgb8 => {
            out.reshape(w, h, 3);
            decoder.read_image(out.data_mut()).map_err(|e| err(&e))?;
        }
        ColorType::L8 => {
            out.reshape(w, h, 1);
            decoder.read_image(out.data_mut()).map_err(|e| err(&e))?;
        }
        _ => {
            let rgb = image::DynamicImage::from_decoder(decoder).map_err(|e| err(&e))?.to_rgb8();
            out.set_pixels(w, h, 3, rgb.as_raw())?;
        }
    }
    Ok(())
}

/// Converts between gray and RGB in place (no-op when already `channels`).
fn convert_channels(img: &mut Image, channels: usize) {
    match (img.channels(), channels) {
        (3, 1) => {
            let (w, h) = (img.width(), img.height());
            let data = img.data_mut();
            for i in 0..w * h {
                data[i] = enhance::luma(data[3 * i], data[3 * i + 1], data[3 * i + 2]);
            }
            img.reshape(w, h, 1);
        }
        (1, 3) => {
            let (w, h) = (img.width(), img.height());
            img.reshape(w, h, 3);
            let data = img.data_mut();
            for i in (0..w * h).rev() {
                let v = data[i];
                data[3 * i..3 * i + 3].fill(v);
            }
        }
        _ => {}
    }
}

fn color_type(img: &Image) -> ExtendedColorType {
    if img.channels() == 1 {
        ExtendedColorType::L8
    } else {
        ExtendedColorType::Rgb8
    }
}

/// Encodes as baseline JPEG at `quality` (1..=100), colour with 4:2:0 chroma as Pillow and
/// libjpeg write by default ([`jpeg::encode`]).
pub fn encode_jpeg(img: &Image, quality: u8) -> Result<Vec<u8>, AugmentError> {
    let frame = Frame { width: img.width(), height: img.height(), channels: img.channels() };
    jpeg::encode(img.data(), frame, quality).map_err(|e| AugmentError::Encode(e.to_string()))
}

/// Encodes as PNG (lossless; for previews).
pub fn encode_png(img: &Image) -> Result<Vec<u8>, AugmentError> {
    let mut buf = Vec::new();
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(img.data(), img.width() as u32, img.height() as u32, color_type(img))
        .map_err(|e| AugmentError::Encode(e.to_string()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_is_exact_and_channels_convert() {
        let img = Image::new(3, 2, 3, (0..18).map(|v| v * 14).collect()).unwrap();
        let png = encode_png(&img).unwrap();
        let mut back = Image::default();
        decode_into(&png, &mut back, 3).unwrap();
        assert_eq!(back, img);
        decode_into(&png, &mut back, 1).unwrap();
        assert_eq!((back.width(), back.height(), back.channels()), (3, 2, 1));
        assert_eq!(back.pixel(0, 0)[0], enhance::luma(0, 14, 28));
    }

    #[test]
    fn jpeg_round_trip_is_close() {
        let img = Image::new(16, 16, 3, (0..768).map(|i| ((i / 3) % 16 * 8) as u8).collect()).unwrap();
        let jpg = encode_jpeg(&img, 95).unwrap();
        let mut back = Image::default();
        decode_into(&jpg, &mut back, 3).unwrap();
        assert_eq!((back.width(), back.height(), back.channels()), (16, 16, 3));
        let max_err = img.data().iter().zip(back.data()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(max_err <= 12, "max error {max_err}");
    }

    #[test]
    fn jpeg_decodes_to_pillows_pixels() {
        // Recorded by `randaugment_pil.py record-jpeg`: Pillow's `convert("RGB")` of each file.
        let rgb420 = include_bytes!("../../../tests/fixtures/jpeg/rgb420.jpg");
        let gray = include_bytes!("../../../tests/fixtures/jpeg/gray.jpg");
        let pil_rgb420 = include_bytes!("../../../tests/fixtures/jpeg/rgb420.rgb");
        let pil_gray = include_bytes!("../../../tests/fixtures/jpeg/gray.rgb");
        let mut out = Image::default();
        decode_into(rgb420, &mut out, 3).unwrap();
        assert_eq!((out.width(), out.height(), out.channels()), (21, 13, 3));
        assert_eq!(out.data(), &pil_rgb420[..]);
        // Gray stays one channel (Pillow's "L"), and replicates to RGB when asked.
        decode_into(gray, &mut out, 1).unwrap();
        let pil_l: Vec<u8> = pil_gray.iter().step_by(3).copied().collect();
        assert_eq!(out.data(), &pil_l[..]);
        decode_into(gray, &mut out, 3).unwrap();
        assert_eq!(out.data(), &pil_gray[..]);
    }

    #[test]
    fn jpeg_cut_inside_its_headers_is_a_named_error() {
        let img = Image::new(64, 48, 3, (0..64 * 48 * 3).map(|i| (i * 13 % 255) as u8).collect()).unwrap();
        let jpg = encode_jpeg(&img, 90).unwrap();
        let mut out = Image::default();
        // Cut inside the headers: nothing to decode.
        let err = decode_into(&jpg[..40], &mut out, 3).unwrap_err();
        assert!(matches!(err, AugmentError::Decode(ref m) if m.starts_with("JPEG")), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut out = Image::default();
        assert!(matches!(decode_into(b"not an image", &mut out, 3), Err(AugmentError::Decode(_))));
    }
}
