//! Data sets: readers for the published formats, load-time options, label-scarce splits, and
//! fetching.
//!
//! Every reader produces a [`Dataset`]: u8 images in HWC layout with a label each and a stable
//! sample index (file order, sorted names), which label splits and pseudo-labels refer to.
//! Readers check headers, counts and sizes against each other, so a truncated download or a
//! mixed-up directory is a [`DataError`] naming the file and what was expected, never a panic
//! or quietly wrong images.
//!
//! ```no_run
//! use protocon::data::{DatasetSpec, Fit, LoadOptions, Split, Subset};
//! # fn main() -> Result<(), protocon::data::DataError> {
//! let spec: DatasetSpec = "fashion-mnist:data/fashion-mnist".parse()?;
//! let options = LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad);
//! let train = spec.load(Subset::Train, &options)?;
//! let split = Split::balanced(&train, 4, 0)?; // 4 labels per class, seed 0
//! assert_eq!(split.labeled().len(), 4 * train.num_classes());
//! # Ok(()) }
//! ```

mod atomic;
pub mod cifar;
mod dataset;
mod error;
pub mod fetch;
mod files;
pub mod folder;
pub mod idx;
pub mod jpeg;
mod labels;
mod spec;
mod split;
mod transform;

pub use cifar::CifarKind;
pub use dataset::{CoarseLabels, Dataset, Subset};
pub use error::DataError;
pub use fetch::{fetch, FetchOptions, FetchReport, FetchSource};
pub use files::ImageFiles;
pub use folder::FileDecoder;
pub use labels::{LabelSet, Labelled};
pub use spec::{default_data_root, DatasetKind, DatasetSpec, DATA_ENV, FASHION_MNIST_CLASSES, MNIST_CLASSES};
pub use split::{labels_sha256, Split, SPLIT_FORMAT_VERSION};
pub use transform::{Fit, LoadOptions};
