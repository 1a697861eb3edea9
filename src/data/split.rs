//! Label-scarce splits: N labeled samples per class, the rest unlabeled.
//!
//! Semi-supervised results are compared at a fixed number of labels per class (e.g. 4, 25, 400
//! on CIFAR-10) and a seed. A split is therefore derived from `(data set, N, seed)` alone and can
//! be made again by training code, and it is also written to a JSON file so that a run can be
//! repeated exactly even if the derivation changes. The file carries a checksum of the data
//! set's labels, so using it with another data set (or another version of it) fails loudly
//! instead of training on the wrong labels.

use super::{atomic, DataError, Labelled};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Version of the split file layout written by [`Split::save`].
pub const SPLIT_FORMAT_VERSION: u32 = 1;

/// A partition of a data set's sample indices into labeled and unlabeled ones.
///
/// Invariants (checked by [`Split::load`]): `labeled` and `unlabeled` are sorted, disjoint and
/// together cover `0..num_samples`; each class has exactly `labels_per_class` labeled samples;
/// `labels_sha256` is [`labels_sha256`] of the data set's labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    version: u32,
    dataset: String,
    seed: u64,
    labels_per_class: usize,
    num_classes: usize,
    num_samples: usize,
    labels_sha256: String,
    labeled: Vec<usize>,
    unlabeled: Vec<usize>,
    /// A split by fraction ([`Split::by_fraction`]; `labels_per_class` is then 0): each class
    /// has `max(1, round(fraction x its size))` labeled samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label_fraction: Option<f64>,
}

impl Split {
    /// Draws `labels_per_class` samples of every class, reproducibly from `seed`.
    ///
    /// For each class in label order, a partial Fisher-Yates shuffle of the class's sample
    /// indices (ascending) takes the first `labels_per_class`, all classes drawing from one
    /// `ChaCha8Rng::seed_from_u64(seed)` stream. The bounded draws are done here, not by `rand`,
    /// because `rand` does not promise that its shuffles stay the same across versions, while
    /// ChaCha8's output stream is fixed by its specification.
    ///
    /// Fails with [`DataError::ClassTooSmall`] if a class has fewer samples than requested.
    pub fn balanced(data: &(impl Labelled + ?Sized), labels_per_class: usize, seed: u64) -> Result<Split, DataError> {
        let by_class = members_by_class(data);
        if let Some((label, members)) = by_class.iter().enumerate().find(|(_, m)| m.len() < labels_per_class) {
            return Err(DataError::ClassTooSmall {
                label: label as u32,
                class: data.classes()[label].clone(),
                available: members.len(),
                requested: labels_per_class,
            });
        }
        let counts = vec![labels_per_class; by_class.len()];
        Ok(Self::draw(data, by_class, &counts, seed, labels_per_class, None))
    }

    /// Draws `max(1, round(fraction x n_c))` of the `n_c` samples of every class (ImageNet's 1%
    /// and 10% settings), reproducibly from `seed`, the way [`balanced`](Self::balanced) draws.
    /// `fraction` must be in (0, 1]; an empty class gets none.
    pub fn by_fraction(data: &(impl Labelled + ?Sized), fraction: f64, seed: u64) -> Result<Split, DataError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(DataError::BadFraction { fraction });
        }
        let by_class = members_by_class(data);
        let counts: Vec<usize> = by_class.iter().map(|m| fraction_count(fraction, m.len())).collect();
        Ok(Self::draw(data, by_class, &counts, seed, 0, Some(fraction)))
    }

    /// For each class in label order, a partial Fisher-Yates shuffle of its members takes the
    /// first `counts[c]`, all classes drawing from one ChaCha8 stream of `seed`.
    fn draw(
        data: &(impl Labelled + ?Sized),
        by_class: Vec<Vec<usize>>,
        counts: &[usize],
        seed: u64,
        labels_per_class: usize,
        label_fraction: Option<f64>,
    ) -> Split {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut labeled = Vec::with_capacity(counts.iter().sum());
        for (mut members, &count) in by_class.into_iter().zip(counts) {
            for k in 0..count {
                let j = k + below(&mut rng, (members.len() - k) as u64) as usize;
                members.swap(k, j);
            }
            labeled.extend_from_slice(&members[..count]);
        }
        labeled.sort_unstable();
        let unlabeled = complement(&labeled, data.num_samples());
        Split {
            version: SPLIT_FORMAT_VERSION,
            dataset: data.name().to_string(),
            seed,
            labels_per_class,
            num_classes: data.num_classes(),
            num_samples: data.num_samples(),
            labels_sha256: labels_sha256(data.labels()),
            labeled,
            unlabeled,
            label_fraction,
        }
    }

    /// Reads a split file and checks it against `data`: sizes, index ranges, disjointness and
    /// coverage, balance, and the label checksum. Errors name the file and the mismatch.
    pub fn load(path: impl AsRef<Path>, data: &(impl Labelled + ?Sized)) -> Result<Split, DataError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let split: Split =
            serde_json::from_slice(&text).map_err(|e| DataError::SplitParse { path: path.to_path_buf(), source: e })?;
        split.check(data).map_err(|e| match e {
            Mismatch::Checksum { expected, found } => DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                dataset: data.name().to_string(),
                expected,
                found,
            },
            Mismatch::Other(reason) => {
                DataError::SplitInvalid { path: path.to_path_buf(), dataset: data.name().to_string(), reason }
            }
        })?;
        Ok(split)
    }

    /// Writes the split as JSON, atomically (a temporary file renamed into place), so a crash
    /// never leaves a half-written split behind. One field per line, each index list on one
    /// line: readable header, and 60 000 indices do not become 60 000 lines.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        atomic::write(path.as_ref(), self.to_json().as_bytes())
    }

    /// The JSON text [`save`](Self::save) writes.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("version", json(&self.version)),
            ("dataset", json(&self.dataset)),
            ("seed", json(&self.seed)),
            ("labels_per_class", json(&self.labels_per_class)),
            ("num_classes", json(&self.num_classes)),
            ("num_samples", json(&self.num_samples)),
            ("labels_sha256", json(&self.labels_sha256)),
            ("labeled", json(&self.labeled)),
            ("unlabeled", json(&self.unlabeled)),
        ];
        if let Some(f) = self.label_fraction {
            fields.insert(4, ("label_fraction", json(&f)));
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("  \"{k}\": {v}")).collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    fn check(&self, data: &(impl Labelled + ?Sized)) -> Result<(), Mismatch> {
        let other = |s: String| Err(Mismatch::Other(s));
        if self.version != SPLIT_FORMAT_VERSION {
            return other(format!("format version: expected {SPLIT_FORMAT_VERSION}, found {}", self.version));
        }
        if self.num_samples != data.num_samples() {
            return other(format!("number of samples: split has {}, data set has {}", self.num_samples, data.num_samples()));
        }
        if self.num_classes != data.num_classes() {
            return other(format!(
                "number of classes: split has {}, data set has {}",
                self.num_classes,
                data.num_classes()
            ));
        }
        let found = labels_sha256(data.labels());
        if found != self.labels_sha256 {
            return Err(Mismatch::Checksum { expected: self.labels_sha256.clone(), found });
        }
        let mut seen = vec![false; data.num_samples()];
        for (list, name) in [(&self.labeled, "labeled"), (&self.unlabeled, "unlabeled")] {
            if let Some(w) = list.windows(2).find(|w| w[0] >= w[1]) {
                return other(format!("{name} indices must be strictly increasing, found {} then {}", w[0], w[1]));
            }
            for &i in list.iter() {
                match seen.get_mut(i) {
                    None => return other(format!("{name} index {i} out of range: expected < {}", data.num_samples())),
                    Some(true) => return other(format!("index {i} is both labeled and unlabeled")),
                    Some(s) => *s = true,
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return other(format!(
                "index {missing} is neither labeled nor unlabeled (expected the two lists to cover 0..{})",
                data.num_samples()
            ));
        }
        let mut per_class = vec![0usize; data.num_classes()];
        for &i in &self.labeled {
            per_class[data.labels()[i] as usize] += 1;
        }
        let sizes: Vec<usize> = members_by_class(data).iter().map(Vec::len).collect();
        for (c, &n) in per_class.iter().enumerate() {
            let (expected, rule) = match self.label_fraction {
                Some(f) => (fraction_count(f, sizes[c]), format!("max(1, round({f} x {}))", sizes[c])),
                None => (self.labels_per_class, "labels_per_class".to_string()),
            };
            if n != expected {
                return other(format!("class {c} has {n} labeled samples, expected {rule} = {expected}"));
            }
        }
        Ok(())
    }

    /// The spec string of the data set the split was made from.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The seed the labeled samples were drawn with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Labeled samples per class (0 for a split by fraction).
    pub fn labels_per_class(&self) -> usize {
        self.labels_per_class
    }

    /// The fraction of each class that is labeled, for a split made by [`Split::by_fraction`].
    pub fn label_fraction(&self) -> Option<f64> {
        self.label_fraction
    }

    /// Number of classes of the data set.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of samples of the data set.
    pub fn num_samples(&self) -> usize {
        self.num_samples
    }

    /// [`labels_sha256`] of the data set's labels.
    pub fn labels_sha256(&self) -> &str {
        &self.labels_sha256
    }

    /// Indices of the labeled samples, ascending.
    pub fn labeled(&self) -> &[usize] {
        &self.labeled
    }

    /// Indices of the unlabeled samples, ascending.
    pub fn unlabeled(&self) -> &[usize] {
        &self.unlabeled
    }
}

enum Mismatch {
    Checksum { expected: String, found: String },
    Other(String),
}

/// SHA-256 (lower-case hex) of all labels in sample-index order, each as a 4-byte
/// little-endian integer.
///
/// All labels rather than only the labeled ones: the unlabeled indices matter too (they are
/// what pseudo-labels and the evaluation of pseudo-label accuracy refer to), and hashing all of
/// them also catches a reordered data set whose labeled samples happen to agree.
pub fn labels_sha256(labels: &[u16]) -> String {
    let mut hasher = Sha256::new();
    for &l in labels {
        hasher.update(u32::from(l).to_le_bytes());
    }
    hex(&hasher.finalize())
}

/// Compact JSON of a value that always serializes (numbers, strings, index lists).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("numbers, strings and index lists serialize")
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uniform in `0..bound` (`bound > 0`), without modulo bias: Lemire's multiply-and-reject
/// ("Fast Random Integer Generation in an Interval", 2019).
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    let mut m = u128::from(rng.next_u64()) * u128::from(bound);
    if (m as u64) < bound {
        let threshold = bound.wrapping_neg() % bound;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(bound);
        }
    }
    (m >> 64) as u64
}

/// The sample indices of each class, ascending, in label order.
fn members_by_class(data: &(impl Labelled + ?Sized)) -> Vec<Vec<usize>> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); data.num_classes()];
    for (i, &label) in data.labels().iter().enumerate() {
        by_class[label as usize].push(i);
    }
    by_class
}

/// Labeled samples of a class of `size` at `fraction`: `max(1, round(fraction x size))`, none
/// for an empty class.
fn fraction_count(fraction: f64, size: usize) -> usize {
    if size == 0 {
        0
    } else {
        ((fraction * size as f64).round() as usize).clamp(1, size)
    }
}

/// `0..n` minus the sorted `taken`.
fn complement(taken: &[usize], n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n - taken.len());
    let mut next = taken.iter().peekable();
    for i in 0..n {
        if next.peek() == Some(&&i) {
            next.next();
        } else {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_uniform_enough_on_a_small_bound() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[below(&mut rng, 3) as usize] += 1;
        }
        // Each count ~ Binomial(30000, 1/3): sd ~ 82, so 500 is > 6 sd.
        assert!(counts.iter().all(|&c| (c as i64 - 10_000).abs() < 500), "{counts:?}");
    }

    #[test]
    fn labels_sha256_matches_a_hand_encoding() {
        // Labels [1, 258] as u32 LE: 01 00 00 00 02 01 00 00.
        let direct = hex(&Sha256::digest([1u8, 0, 0, 0, 2, 1, 0, 0]));
        assert_eq!(labels_sha256(&[1, 258]), direct);
        assert_eq!(direct.len(), 64);
    }
}
