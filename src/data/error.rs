//! Errors of the data sets, label splits and fetching.

use std::path::PathBuf;

/// Why a data set, a label split or a fetch could not be had.
///
/// Every variant about a file names the file, and every variant about a content names what was
/// expected and what was found: a truncated download or a mixed-up directory must be fixable
/// from the message alone, without a debugger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    // -- files and directories --
    /// A file or directory that the reader needs is not there.
    #[error("{path}: not found (expected {expected})")]
    Missing { path: PathBuf, expected: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A gzip file could not be decompressed (corrupt or truncated).
    #[error("{path}: corrupt or truncated gzip stream: {source}")]
    Gzip { path: PathBuf, source: std::io::Error },

    // -- file contents --
    /// The magic number of a file is not the one of its format.
    #[error("{path}: wrong magic number: expected {expected:#010x} ({what}), found {found:#010x}")]
    BadMagic { path: PathBuf, what: &'static str, expected: u32, found: u32 },
    /// A header field has a value the format does not allow.
    #[error("{path}: bad header: {field}: expected {expected}, found {found}")]
    BadHeader { path: PathBuf, field: &'static str, expected: String, found: String },
    /// The file's length does not match what its header or record size implies.
    #[error("{path}: wrong size: expected {expected}, found {found} bytes")]
    WrongSize { path: PathBuf, expected: String, found: u64 },
    /// An image file and its label file disagree on the number of samples.
    #[error("{images} has {image_count} images but {labels} has {label_count} labels; expected equal counts")]
    CountMismatch { images: PathBuf, image_count: usize, labels: PathBuf, label_count: usize },
    /// A label is not below the number of classes.
    #[error("{path}: sample {index}: label {label} out of range: expected < {num_classes}")]
    LabelOutOfRange { path: PathBuf, index: usize, label: u32, num_classes: usize },
    /// An image file could not be decoded.
    #[error("{path}: could not decode image: {source}")]
    Image { path: PathBuf, source: image::ImageError },
    /// A JPEG file could not be decoded.
    #[error("{path}: could not decode image: {source}")]
    Jpeg { path: PathBuf, source: super::jpeg::JpegError },
    /// An image does not have the size of the others and no target size was configured.
    #[error("{path}: image is {found}, expected {expected} like the first image; set a target size to resize")]
    ImageSize { path: PathBuf, expected: String, found: String },
    /// A class directory holds no image files.
    #[error("{path}: class directory holds no PNG or JPEG files")]
    EmptyClass { path: PathBuf },
    /// A test class directory whose name is not a class of the train directory.
    #[error("{path}: class directory not found among the classes of {train} (expected one of {known})")]
    UnknownClass { path: PathBuf, train: PathBuf, known: String },

    // -- options and data set specs --
    /// An image cannot be brought to the requested size the requested way.
    #[error("cannot fit a {from} image to {to}: {reason}")]
    Fit { from: String, to: String, reason: String },
    /// A data set spec string could not be parsed.
    #[error("invalid data set spec `{spec}`: {reason}")]
    Spec { spec: String, reason: String },
    /// The in-memory data set is inconsistent (pixel or label counts).
    #[error("data set `{name}`: {reason}")]
    Inconsistent { name: String, reason: String },

    // -- label splits --
    /// A class has fewer samples than the requested number of labels per class.
    #[error("class {label} ({class}) has {available} samples, fewer than the {requested} labels per class requested")]
    ClassTooSmall { label: u32, class: String, available: usize, requested: usize },
    /// A label fraction outside (0, 1].
    #[error("label fraction {fraction}: expected a number in (0, 1]")]
    BadFraction { fraction: f64 },
    /// A split file could not be parsed.
    #[error("{path}: not a valid split file: {source}")]
    SplitParse { path: PathBuf, source: serde_json::Error },
    /// A split file does not fit the data set it is used with.
    #[error("{path}: split does not fit data set `{dataset}`: {reason}")]
    SplitInvalid { path: PathBuf, dataset: String, reason: String },
    /// The labels of the data set are not those the split was made from.
    #[error(
        "{path}: label checksum mismatch for data set `{dataset}`: split expects {expected}, data set has {found}"
    )]
    ChecksumMismatch { path: PathBuf, dataset: String, expected: String, found: String },

    // -- fetching --
    /// No fetch recipe is known for this data set.
    #[error("cannot fetch `{name}`: only {supported} can be fetched; place the files yourself")]
    FetchUnsupported { name: String, supported: String },
    /// A file's SHA-256 is not the published one.
    #[error("{path}: SHA-256 mismatch: expected {expected}, found {found}")]
    HashMismatch { path: PathBuf, expected: String, found: String },
    /// No source could provide all files.
    #[error("could not fetch {dataset} into {dir}: still missing {missing:?}; tried: {tried}")]
    FetchFailed { dataset: String, dir: PathBuf, missing: Vec<String>, tried: String },
}

impl DataError {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}
