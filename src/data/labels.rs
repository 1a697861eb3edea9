//! What a label split needs of a data set: its name, one label per sample and the class names.
//!
//! Drawing or checking a split never looks at pixels, so [`Split`](super::Split) works on any
//! [`Labelled`] value. An image folder's labels come from listing its directories
//! ([`DatasetSpec::load_labels`](super::DatasetSpec::load_labels)), without decoding a file: a
//! split of a large folder, or of one whose images differ in size, needs no decode and no
//! target size.

use super::Dataset;

/// A data set's labelling, as label splits see it.
pub trait Labelled {
    /// The data set's name (the spec string it was loaded from), which split files record.
    fn name(&self) -> &str;
    /// One label per sample, by sample index; each below `classes().len()`.
    fn labels(&self) -> &[u16];
    /// Class names, by label.
    fn classes(&self) -> &[String];

    /// Number of samples.
    fn num_samples(&self) -> usize {
        self.labels().len()
    }

    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.classes().len()
    }
}

/// Labels and class names without pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    name: String,
    labels: Vec<u16>,
    classes: Vec<String>,
}

impl LabelSet {
    /// Every label must be below `classes.len()` (the readers guarantee it).
    pub(crate) fn new(name: String, labels: Vec<u16>, classes: Vec<String>) -> Self {
        debug_assert!(labels.iter().all(|&l| (l as usize) < classes.len()));
        LabelSet { name, labels, classes }
    }

    /// Keeps the first `n` samples (all of them when there are fewer), as
    /// [`Dataset::truncate`] does.
    pub fn truncate(mut self, n: usize) -> Self {
        self.labels.truncate(n);
        self
    }
}

impl From<Dataset> for LabelSet {
    fn from(data: Dataset) -> Self {
        LabelSet::new(data.name().to_string(), data.labels().to_vec(), data.classes().to_vec())
    }
}

impl Labelled for LabelSet {
    fn name(&self) -> &str {
        &self.name
    }
    fn labels(&self) -> &[u16] {
        &self.labels
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Labelled for Dataset {
    fn name(&self) -> &str {
        Dataset::name(self)
    }
    fn labels(&self) -> &[u16] {
        Dataset::labels(self)
    }
    fn classes(&self) -> &[String] {
        Dataset::classes(self)
    }
}
