//! IDX files, the format of MNIST and Fashion-MNIST, gzipped or plain.
//!
//! Layout (big-endian): a magic number `0x0000_08_NN` (`08` = unsigned bytes, `NN` = number of
//! dimensions), one u32 per dimension, then the bytes. Images are `0x00000803` (count, rows,
//! columns), labels `0x00000801` (count). Whether a file is gzipped is decided by its first two
//! bytes (`1f 8b`), not by its name, so a file decompressed in place by a tool keeps working.

use super::{DataError, Dataset, Subset};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of u8 images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The file names (without `.gz`) of a subset's images and labels, as published.
pub fn file_stems(subset: Subset) -> (&'static str, &'static str) {
    match subset {
        Subset::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Subset::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// Loads a subset of an MNIST-style directory holding the four IDX files, gzipped or not.
///
/// `name` names the data set in the result and in messages; `classes` gives the class names
/// (their count bounds the labels).
pub fn load_dir(dir: &Path, subset: Subset, name: &str, classes: Vec<String>) -> Result<Dataset, DataError> {
    let (images_stem, labels_stem) = file_stems(subset);
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            expected: format!(
                "a {name} directory holding {images_stem}.gz and {labels_stem}.gz \
                 (run `protocon data fetch` or pass the directory as `{name}:DIR`)"
            ),
        });
    }
    let images = find_file(dir, images_stem, &format!("the {name} {subset} images"))?;
    let labels = find_file(dir, labels_stem, &format!("the {name} {subset} labels"))?;
    load_files(&images, &labels, name, classes)
}

/// `dir/stem.gz`, else `dir/stem`, else an error naming both.
fn find_file(dir: &Path, stem: &str, what: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(DataError::Missing { path: gz, expected: format!("{what}, `{stem}.gz` or `{stem}`") })
}

/// Loads an IDX image file and its IDX label file into one data set.
pub fn load_files(images: &Path, labels: &Path, name: &str, classes: Vec<String>) -> Result<Dataset, DataError> {
    let (count, height, width, pixels) = read_images(images)?;
    let raw_labels = read_labels(labels)?;
    if raw_labels.len() != count {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: count,
            labels: labels.to_path_buf(),
            label_count: raw_labels.len(),
        });
    }
    if let Some((index, &label)) = raw_labels.iter().enumerate().find(|(_, &l)| l as usize >= classes.len()) {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            label: label.into(),
            num_classes: classes.len(),
        });
    }
    let labels = raw_labels.into_iter().map(u16::from).collect();
    Dataset::new(name, (height, width, 1), pixels, labels, classes)
}

/// Reads an IDX image file: `(count, height, width, pixels)`, pixels row-major, image after
/// image.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let mut data = read_maybe_gzipped(path)?;
    let dims = header(path, &data, IMAGES_MAGIC, "IDX u8 images, 3 dimensions")?;
    let [count, height, width] = [dims[0], dims[1], dims[2]];
    let header_len = 16u64;
    let expected = header_len + count * height * width;
    if data.len() as u64 != expected {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: format!(
                "{expected} bytes ({header_len}-byte header + {count} images of {height}x{width}){}",
                decompressed_note(path)
            ),
            found: data.len() as u64,
        });
    }
    if height == 0 || width == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            field: "image size",
            expected: "non-zero rows and columns".into(),
            found: format!("{height}x{width}"),
        });
    }
    data.drain(..header_len as usize);
    Ok((count as usize, height as usize, width as usize, data))
}

/// Reads an IDX label file: one byte per sample.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut data = read_maybe_gzipped(path)?;
    let dims = header(path, &data, LABELS_MAGIC, "IDX u8 labels, 1 dimension")?;
    let count = dims[0];
    let expected = 8 + count;
    if data.len() as u64 != expected {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: format!("{expected} bytes (8-byte header + {count} labels){}", decompressed_note(path)),
            found: data.len() as u64,
        });
    }
    data.drain(..8);
    Ok(data)
}

fn decompressed_note(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "gz") {
        " after decompression"
    } else {
        ""
    }
}

/// Checks the magic number and returns the dimensions (as u64, so products cannot overflow for
/// any u32 header values of up to 2 dimensions; 3 are checked).
fn header(path: &Path, data: &[u8], magic: u32, what: &'static str) -> Result<Vec<u64>, DataError> {
    let be = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    if data.len() < 4 {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: "at least 4 bytes (the magic number)".into(),
            found: data.len() as u64,
        });
    }
    let found = be(0);
    if found != magic {
        return Err(DataError::BadMagic { path: path.to_path_buf(), what, expected: magic, found });
    }
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    if data.len() < header_len {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: format!("at least {header_len} bytes (the header of {ndims} dimensions)"),
            found: data.len() as u64,
        });
    }
    let dims: Vec<u64> = (0..ndims).map(|d| u64::from(be(4 + 4 * d))).collect();
    // 3 u32 factors can reach 2^96: refuse what cannot be a real file before multiplying.
    let total = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if !matches!(total, Some(t) if t <= u64::from(u32::MAX) * 64) {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            field: "dimensions",
            expected: "a plausible size".into(),
            found: format!("{dims:?}"),
        });
    }
    Ok(dims)
}

/// The file's bytes, decompressed if it starts with the gzip magic.
pub(crate) fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    // The uncompressed size sits in the trailer (mod 2^32); a good first guess for capacity.
    let hint = raw
        .len()
        .checked_sub(4)
        .map_or(0, |at| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize);
    let mut out = Vec::with_capacity(hint.min(raw.len().saturating_mul(64)));
    GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip { path: path.to_path_buf(), source: e })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_file(count: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [count, h, w] {
            v.extend(d.to_be_bytes());
        }
        v.extend(pixels);
        v
    }

    #[test]
    fn reads_hand_made_images_and_rejects_an_extra_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-images");
        std::fs::write(&path, images_file(2, 1, 2, &[1, 2, 3, 4])).unwrap();
        let (n, h, w, px) = read_images(&path).unwrap();
        assert_eq!((n, h, w, px), (2, 1, 2, vec![1, 2, 3, 4]));

        std::fs::write(&path, images_file(2, 1, 2, &[1, 2, 3, 4, 5])).unwrap();
        let e = read_images(&path).unwrap_err().to_string();
        assert!(e.contains("expected 20 bytes") && e.contains("found 21 bytes"), "{e}");
    }

    #[test]
    fn absurd_dimensions_are_a_header_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-images");
        std::fs::write(&path, images_file(u32::MAX, u32::MAX, u32::MAX, &[])).unwrap();
        let e = read_images(&path).unwrap_err();
        assert!(matches!(e, DataError::BadHeader { field: "dimensions", .. }), "{e}");
    }
}
