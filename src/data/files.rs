//! An image folder's files, listed but not decoded: for data sets too large to hold decoded
//! (ImageNet's 1.28 million images are about 190 GB of pixels at 224 x 224), whose samples are
//! read and decoded each time a pipeline visits them.

use super::{DataError, LabelSet, Labelled};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The files of one subset of an image folder with their labels, in sample order (the order
/// [`folder::load_dir`](super::folder::load_dir) loads them in, so sample indices, label
/// splits and pseudo-labels agree between the two ways of reading a folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFiles {
    labels: LabelSet,
    paths: Vec<PathBuf>,
}

impl ImageFiles {
    /// One path per label.
    pub(crate) fn new(labels: LabelSet, paths: Vec<PathBuf>) -> Self {
        debug_assert_eq!(labels.num_samples(), paths.len());
        ImageFiles { labels, paths }
    }

    /// The file of sample `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.paths[index]
    }

    /// Replaces the contents of `buf` with the bytes of sample `index`'s file (a buffer reused
    /// across samples keeps a reader from allocating per image).
    pub fn read_into(&self, index: usize, buf: &mut Vec<u8>) -> Result<(), DataError> {
        let path = self.path(index);
        buf.clear();
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(buf)).map_err(|e| DataError::io(path, e))?;
        Ok(())
    }

    /// Keeps the first `n` samples (all of them when there are fewer), as
    /// [`Dataset::truncate`](super::Dataset::truncate) does.
    pub fn truncate(mut self, n: usize) -> Self {
        self.labels = self.labels.truncate(n);
        self.paths.truncate(n);
        self
    }

    /// The labels alone.
    pub fn into_labels(self) -> LabelSet {
        self.labels
    }
}

impl Labelled for ImageFiles {
    fn name(&self) -> &str {
        self.labels.name()
    }
    fn labels(&self) -> &[u16] {
        self.labels.labels()
    }
    fn classes(&self) -> &[String] {
        self.labels.classes()
    }
}
