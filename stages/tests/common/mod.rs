//! An image folder for the per-visit tests: JPEG files of several sizes in two classes, and
//! one PNG.

use protocon::data::{folder, ImageFiles, Subset};
use protocon_stages::augment::{codec, Image};
use std::path::{Path, PathBuf};

/// Noisy pixels (so JPEG blocks differ) with a gradient (so crops differ).
fn photo(w: usize, h: usize, salt: usize) -> Image {
    Image::new(w, h, 3, (0..w * h * 3).map(|i| (((i * 7919 + salt) % 251) ^ (i / 3 % w)) as u8).collect()).unwrap()
}

/// Two classes of JPEG files of different sizes, and one PNG.
fn write_folder(root: &Path) {
    let sizes = [(160, 120), (96, 128), (200, 150), (120, 90), (144, 144), (170, 100), (64, 80), (180, 135)];
    for (k, &(w, h)) in sizes.iter().enumerate() {
        let class = root.join(if k % 2 == 0 { "cat" } else { "dog" });
        std::fs::create_dir_all(&class).unwrap();
        let img = photo(w, h, k);
        if k == 5 {
            std::fs::write(class.join(format!("{k}.png")), codec::encode_png(&img).unwrap()).unwrap();
        } else {
            std::fs::write(class.join(format!("{k}.jpg")), codec::encode_jpeg(&img, 90).unwrap()).unwrap();
        }
    }
}

/// The folder, written into a new temporary directory (removed when the guard drops), and its
/// files as the train subset lists them.
pub fn temp_folder() -> (tempfile::TempDir, ImageFiles) {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path());
    let files = folder::files(dir.path(), Subset::Train, "folder:test").unwrap();
    (dir, files)
}

/// Cuts `dog/3.jpg` of the folder at `root` to its first 60 bytes (inside its headers) and
/// returns its path.
#[allow(dead_code)] // not every test file that includes this module cuts a file
pub fn truncate_a_file(root: &Path) -> PathBuf {
    let bad = root.join("dog/3.jpg");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..60]).unwrap();
    bad
}
