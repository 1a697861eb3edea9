//! The in-memory labelled image set that every reader produces.

use super::DataError;
use std::fmt;
use std::str::FromStr;

/// Which of a data set's published parts to load.
///
/// Named `Subset` rather than "split" because [`Split`](super::Split) is the labeled/unlabeled
/// partition made for semi-supervised training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subset {
    /// The training part (e.g. 60 000 images of Fashion-MNIST).
    Train,
    /// The held-out test part (e.g. 10 000 images of Fashion-MNIST).
    Test,
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subset::Train => "train",
            Subset::Test => "test",
        })
    }
}

impl FromStr for Subset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Subset::Train),
            "test" => Ok(Subset::Test),
            other => Err(format!("unknown subset `{other}`: expected `train` or `test`")),
        }
    }
}

/// Labelled u8 images of one size, held in one contiguous buffer.
///
/// Images are `height x width x channels`, row-major with interleaved channels (HWC), the
/// layout the augmentation stages work on. Sample `i` keeps index `i` for the life of the data
/// set: label splits, memory banks and pseudo-labels all refer to samples by this index, so
/// every reader fixes an order that does not depend on the file system (file order, sorted
/// names).
///
/// Invariants, checked by [`Dataset::new`]: `pixels.len() == len * height * width * channels`,
/// one label per image, every label `< classes.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    name: String,
    height: usize,
    width: usize,
    channels: usize,
    pixels: Vec<u8>,
    labels: Vec<u16>,
    classes: Vec<String>,
    coarse: Option<CoarseLabels>,
}

/// A second, coarser labelling of the same samples (CIFAR-100's 20 superclasses).
#[derive(Debug, Clone, PartialEq)]
pub struct CoarseLabels {
    /// One coarse label per sample.
    pub labels: Vec<u16>,
    /// Names of the coarse classes; every label is below its length.
    pub classes: Vec<String>,
}

impl Dataset {
    /// A data set from its parts, checked for consistency.
    ///
    /// `pixels` holds `labels.len()` images of `height x width x channels` bytes each, in HWC
    /// order; every label must be below `classes.len()`.
    pub fn new(
        name: impl Into<String>,
        (height, width, channels): (usize, usize, usize),
        pixels: Vec<u8>,
        labels: Vec<u16>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let inconsistent = |reason: String| DataError::Inconsistent { name: name.clone(), reason };
        if height == 0 || width == 0 || channels == 0 {
            return Err(inconsistent(format!("image size {height}x{width}x{channels}: expected non-zero dimensions")));
        }
        let expected = labels.len().checked_mul(height * width * channels);
        if expected != Some(pixels.len()) {
            return Err(inconsistent(format!(
                "{} labels of {height}x{width}x{channels} images need {} pixel bytes, found {}",
                labels.len(),
                labels.len() as u128 * (height * width * channels) as u128,
                pixels.len()
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes.len()) {
            return Err(inconsistent(format!("sample {i}: label {l} out of range: expected < {}", classes.len())));
        }
        Ok(Dataset { name, height, width, channels, pixels, labels, classes, coarse: None })
    }

    /// Attaches a coarse labelling (one label per sample, each below `coarse.classes.len()`).
    pub fn with_coarse_labels(mut self, coarse: CoarseLabels) -> Result<Self, DataError> {
        if coarse.labels.len() != self.len() {
            return Err(DataError::Inconsistent {
                name: self.name.clone(),
                reason: format!(
                    "{} coarse labels for {} samples: expected one per sample",
                    coarse.labels.len(),
                    self.len()
                ),
            });
        }
        if let Some((i, &l)) = coarse.labels.iter().enumerate().find(|(_, &l)| l as usize >= coarse.classes.len()) {
            return Err(DataError::Inconsistent {
                name: self.name.clone(),
                reason: format!("sample {i}: coarse label {l} out of range: expected < {}", coarse.classes.len()),
            });
        }
        self.coarse = Some(coarse);
        Ok(self)
    }

    /// Swaps in the coarse labels as the labels (the fine ones become the coarse labelling), so
    /// that CIFAR-100 can be trained on its 20 superclasses. `None` when there is no coarse
    /// labelling.
    pub fn into_coarse(mut self) -> Option<Self> {
        let coarse = self.coarse.take()?;
        let fine = CoarseLabels {
            labels: std::mem::replace(&mut self.labels, coarse.labels),
            classes: std::mem::replace(&mut self.classes, coarse.classes),
        };
        self.coarse = Some(fine);
        Some(self)
    }

    /// Only the first `n` samples (all of them when `n >= len`): quick experiments, and splits
    /// that match a run's `data.train_limit`.
    pub fn truncate(mut self, n: usize) -> Self {
        if n < self.len() {
            self.pixels.truncate(n * self.height * self.width * self.channels);
            self.labels.truncate(n);
            if let Some(c) = &mut self.coarse {
                c.labels.truncate(n);
            }
        }
        self
    }

    /// The name the data set was loaded under (the spec string for [`DatasetSpec::load`]).
    ///
    /// [`DatasetSpec::load`]: super::DatasetSpec::load
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the data set (e.g. to record the spec string it was loaded from).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Channels per pixel (1 for grey, 3 for RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Bytes per image: `height * width * channels`.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The HWC bytes of sample `i`. Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The label of sample `i`. Panics if `i >= len()`, like slice indexing.
    pub fn label(&self, i: usize) -> u16 {
        self.labels[i]
    }

    /// All labels, by sample index.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// All images, back to back, by sample index.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Class names; label `l` names class `classes()[l]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The coarse labelling, where the data set has one (CIFAR-100).
    pub fn coarse_labels(&self) -> Option<&CoarseLabels> {
        self.coarse.as_ref()
    }

    /// Takes the data set apart: `(pixels, labels)`, for code that moves the buffers on.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u16>) {
        (self.pixels, self.labels)
    }

    /// The same samples with every image replaced by `f(image)`, each of the new shape.
    pub(crate) fn map_images(
        self,
        (height, width, channels): (usize, usize, usize),
        mut f: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), DataError>,
    ) -> Result<Self, DataError> {
        let mut pixels = Vec::with_capacity(self.len() * height * width * channels);
        for i in 0..self.len() {
            f(self.image(i), &mut pixels)?;
        }
        let coarse = self.coarse;
        let data = Dataset::new(self.name, (height, width, channels), pixels, self.labels, self.classes)?;
        Ok(Dataset { coarse, ..data })
    }
}
