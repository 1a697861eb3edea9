//! Image folders: `root/<class>/<file>`, PNG or JPEG.
//!
//! The sample index must not depend on the order the file system lists entries in, so classes
//! are sorted by directory name and files by file name (byte-wise). Images are decoded to RGB
//! (grey files too, so one folder may mix both) and brought to the configured size per file.
//! JPEG files decode to the pixels Pillow gives (see [`super::jpeg`]), PNG files through `image`.
//!
//! A root that holds a `train/` directory is read as `root/{train,test}/<class>/<file>`; the
//! classes are those of `train/`, so labels agree between the subsets even when the test side
//! lacks a class. Otherwise the whole root is the train subset and there is no test subset.

use super::jpeg::{self, Jpeg};
use super::transform::ImageFitter;
use super::{DataError, Dataset, ImageFiles, LabelSet, LoadOptions, Subset};
use std::path::{Path, PathBuf};

/// Image file extensions that are read (case-insensitive); other files are ignored.
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads a subset of an image folder. See the module documentation for the layout.
pub fn load_dir(root: &Path, subset: Subset, options: &LoadOptions, name: &str) -> Result<Dataset, DataError> {
    let (files, classes) = list(root, subset)?;
    let [height, width] = match options.size {
        Some(size) => size,
        None => {
            // The first file sets the size every other must have; decoding it once more is
            // cheaper to keep than a second header-only reader per format.
            let (_, (h, w)) = decode_rgb(&files[0].0)?;
            [h, w]
        }
    };
    let pixels = decode_all(&files, [height, width], options)?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    Dataset::new(name, (height, width, 3), pixels, labels, classes)
}

/// The labels of a subset of an image folder, from its directory listing alone (no file is
/// opened): the same samples, in the same order, as [`load_dir`] loads.
pub fn load_labels(root: &Path, subset: Subset, name: &str) -> Result<LabelSet, DataError> {
    Ok(files(root, subset, name)?.into_labels())
}

/// The image files of a subset of an image folder with their labels, listed but not opened:
/// the same samples, in the same order, as [`load_dir`] loads, for a reader that decodes each
/// sample when it is needed.
pub fn files(root: &Path, subset: Subset, name: &str) -> Result<ImageFiles, DataError> {
    let (files, classes) = list(root, subset)?;
    let (paths, labels) = files.into_iter().unzip();
    Ok(ImageFiles::new(LabelSet::new(name.to_string(), labels, classes), paths))
}

/// The image files of a subset with their labels, in sample order.
type LabeledFiles = Vec<(PathBuf, u16)>;

/// The image files of a subset with their labels, in sample order, and the class names.
fn list(root: &Path, subset: Subset) -> Result<(LabeledFiles, Vec<String>), DataError> {
    if !root.is_dir() {
        return Err(DataError::Missing {
            path: root.to_path_buf(),
            expected: "an image folder laid out as <class>/<image> or {train,test}/<class>/<image>".into(),
        });
    }
    let train_dir = root.join("train");
    let (class_root, subset_root) = if train_dir.is_dir() {
        let subset_root = root.join(subset.to_string());
        if !subset_root.is_dir() {
            return Err(DataError::Missing {
                path: subset_root,
                expected: format!("the {subset} subset next to {}", train_dir.display()),
            });
        }
        (train_dir, subset_root)
    } else if subset == Subset::Test {
        return Err(DataError::Missing {
            path: root.join("test"),
            expected: format!(
                "a test subset: lay {} out as train/<class>/<image> and test/<class>/<image>",
                root.display()
            ),
        });
    } else {
        (root.to_path_buf(), root.to_path_buf())
    };

    let classes = class_dirs(&class_root)?;
    if classes.is_empty() {
        return Err(DataError::Missing { path: class_root, expected: "at least one class directory".into() });
    }
    if classes.len() > usize::from(u16::MAX) {
        return Err(DataError::BadHeader {
            path: class_root,
            field: "number of classes",
            expected: format!("at most {}", u16::MAX),
            found: classes.len().to_string(),
        });
    }
    let mut files: Vec<(PathBuf, u16)> = Vec::new();
    for class in class_dirs(&subset_root)? {
        let label = classes.iter().position(|c| *c == class).ok_or_else(|| DataError::UnknownClass {
            path: subset_root.join(&class),
            train: class_root.clone(),
            known: classes.join(", "),
        })?;
        let dir = subset_root.join(&class);
        let images = image_files(&dir)?;
        if images.is_empty() {
            return Err(DataError::EmptyClass { path: dir });
        }
        files.extend(images.into_iter().map(|f| (f, label as u16)));
    }
    if files.is_empty() {
        return Err(DataError::Missing { path: subset_root, expected: "class directories with images".into() });
    }
    Ok((files, classes))
}

/// Names of the non-hidden subdirectories, sorted.
fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The PNG/JPEG files of a class directory, sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_image && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes and fits every file, in order, on all cores; the first failing file (by index) is
/// reported.
fn decode_all(files: &[(PathBuf, u16)], size: [usize; 2], options: &LoadOptions) -> Result<Vec<u8>, DataError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len()).max(1);
    let chunk = files.len().div_ceil(workers);
    let parts: Vec<Result<Vec<u8>, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    // Without a configured size every file must have the first's: silently
                    // resizing to an accidental size would hide a mixed-up folder.
                    let mut decoder = FileDecoder { any_size: options.size.is_some(), ..FileDecoder::new(size, options) };
                    let mut out = Vec::with_capacity(part.len() * size[0] * size[1] * 3);
                    for (path, _) in part {
                        decoder.decode(path, &mut out)?;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut pixels = Vec::with_capacity(files.len() * size[0] * size[1] * 3);
    for part in parts {
        pixels.extend(part?);
    }
    Ok(pixels)
}

/// Decodes image files to RGB and brings each to one size, as [`load_dir`] does to every file
/// of a folder: for a reader that decodes files one at a time (an evaluation over a folder too
/// large to hold decoded), with the same pixels the whole-folder load gives. Keeps the resizer
/// of the last source size between files.
pub struct FileDecoder {
    options: LoadOptions,
    size: [usize; 2],
    /// Bring files of any size to `size` (else a file of another size is an error).
    any_size: bool,
    fitter: Option<((usize, usize), ImageFitter)>,
}

impl FileDecoder {
    /// Brings every file to `size` (`[height, width]`) the way `options.fit` says; RGB always.
    pub fn new(size: [usize; 2], options: &LoadOptions) -> Self {
        let options = LoadOptions { size: Some(size), rgb: false, ..options.clone() };
        FileDecoder { options, size, any_size: true, fitter: None }
    }

    /// Reads and decodes the file at `path` and appends it, brought to the size, to `out`.
    pub fn decode(&mut self, path: &Path, out: &mut Vec<u8>) -> Result<(), DataError> {
        let [height, width] = self.size;
        let (image, shape) = decode_rgb(path)?;
        if !self.any_size && shape != (height, width) {
            return Err(DataError::ImageSize {
                path: path.to_path_buf(),
                expected: format!("{height}x{width}"),
                found: format!("{}x{}", shape.0, shape.1),
            });
        }
        let naming_the_file = |e| match e {
            DataError::Fit { from, to, reason } => DataError::Fit { from: format!("{from} ({})", path.display()), to, reason },
            other => other,
        };
        let fitter = match &mut self.fitter {
            Some((s, f)) if *s == shape => f,
            slot => {
                let f = ImageFitter::new(&self.options, (shape.0, shape.1, 3)).map_err(naming_the_file)?;
                &mut slot.insert((shape, f)).1
            }
        };
        fitter.fit(&image, out).map_err(naming_the_file)
    }
}

/// Reads and decodes one file to RGB, returning its pixels (HWC) and (height, width). The format
/// is told by the content, not the extension.
fn decode_rgb(path: &Path) -> Result<(Vec<u8>, (usize, usize)), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if jpeg::is_jpeg(&bytes) {
        let jpeg_error = |source| DataError::Jpeg { path: path.to_path_buf(), source };
        let jpeg = Jpeg::parse(&bytes).map_err(jpeg_error)?.rgb();
        let pixels = jpeg.decode().map_err(jpeg_error)?;
        return Ok((pixels, (jpeg.frame().height, jpeg.frame().width)));
    }
    let image = image::load_from_memory(&bytes)
        .map_err(|e| DataError::Image { path: path.to_path_buf(), source: e })?
        .into_rgb8();
    let shape = (image.height() as usize, image.width() as usize);
    Ok((image.into_raw(), shape))
}
