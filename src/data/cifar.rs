//! CIFAR-10 and CIFAR-100, "binary version".
//!
//! A file is a sequence of fixed-size records: label byte(s), then a 32x32 image as three
//! 1024-byte planes (R, G, B). CIFAR-10 records carry 1 label byte; CIFAR-100 records carry the
//! coarse (superclass) label, then the fine label. Planes are turned into interleaved HWC here,
//! once, since every later step wants HWC.

use super::{CoarseLabels, DataError, Dataset, Subset};
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const IMAGE: usize = 3 * PLANE;

/// Which CIFAR variant a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes, 1 label byte per record; `data_batch_{1..5}.bin`, `test_batch.bin`.
    Cifar10,
    /// 100 fine classes in 20 coarse ones, 2 label bytes per record; `train.bin`, `test.bin`.
    Cifar100,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    /// Bytes per record: label bytes + 3072 pixel bytes.
    pub fn record_len(self) -> usize {
        self.label_bytes() + IMAGE
    }

    /// The subdirectory the official archive unpacks to.
    fn archive_dir(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    /// The files of a subset, in sample-index order.
    pub fn files(self, subset: Subset) -> Vec<String> {
        match (self, subset) {
            (CifarKind::Cifar10, Subset::Train) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            (CifarKind::Cifar10, Subset::Test) => vec!["test_batch.bin".into()],
            (CifarKind::Cifar100, Subset::Train) => vec!["train.bin".into()],
            (CifarKind::Cifar100, Subset::Test) => vec!["test.bin".into()],
        }
    }
}

/// Loads a subset of a CIFAR directory: either the directory holding the `.bin` files or the
/// one the archive was unpacked in (holding `cifar-10-batches-bin/` or `cifar-100-binary/`).
///
/// Class names come from the archive's name files (`batches.meta.txt`, `fine_label_names.txt`,
/// `coarse_label_names.txt`) when present, else from the published lists. CIFAR-100 is labelled
/// by its fine classes; the coarse ones are kept as [`Dataset::coarse_labels`].
pub fn load_dir(dir: &Path, kind: CifarKind, subset: Subset, name: &str) -> Result<Dataset, DataError> {
    let files = kind.files(subset);
    let dir = resolve_dir(dir, kind, &files[0])?;
    let mut pixels = Vec::new();
    let mut fine = Vec::new();
    let mut coarse = Vec::new();
    for file in &files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(DataError::Missing {
                path,
                expected: format!("{name} {subset} file `{file}` (records of {} bytes)", kind.record_len()),
            });
        }
        read_file(&path, kind, &mut pixels, &mut fine, &mut coarse)?;
    }
    match kind {
        CifarKind::Cifar10 => {
            let classes = class_names(&dir.join("batches.meta.txt"), &CIFAR10_CLASSES)?;
            Dataset::new(name, (SIDE, SIDE, 3), pixels, fine, classes)
        }
        CifarKind::Cifar100 => {
            let classes = class_names(&dir.join("fine_label_names.txt"), &CIFAR100_FINE)?;
            let coarse_classes = class_names(&dir.join("coarse_label_names.txt"), &CIFAR100_COARSE)?;
            Dataset::new(name, (SIDE, SIDE, 3), pixels, fine, classes)?
                .with_coarse_labels(CoarseLabels { labels: coarse, classes: coarse_classes })
        }
    }
}

fn resolve_dir(dir: &Path, kind: CifarKind, first: &str) -> Result<PathBuf, DataError> {
    if dir.join(first).is_file() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(kind.archive_dir());
    if nested.join(first).is_file() {
        return Ok(nested);
    }
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            expected: format!("a directory holding the CIFAR binary files (`{first}`, ...)"),
        });
    }
    // Name the file in the directory the user gave; the nested form is mentioned.
    Err(DataError::Missing {
        path: dir.join(first),
        expected: format!("`{first}` here or in `{}/`", kind.archive_dir()),
    })
}

/// Appends the records of one file: HWC pixels, fine (or only) labels and coarse labels.
fn read_file(
    path: &Path,
    kind: CifarKind,
    pixels: &mut Vec<u8>,
    fine: &mut Vec<u16>,
    coarse: &mut Vec<u16>,
) -> Result<(), DataError> {
    let data = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record = kind.record_len();
    if data.is_empty() || data.len() % record != 0 {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: format!(
                "a non-zero multiple of {record} bytes ({} label byte(s) + {IMAGE} pixel bytes per record; \
                 {} whole records and {} bytes left over)",
                kind.label_bytes(),
                data.len() / record,
                data.len() % record
            ),
            found: data.len() as u64,
        });
    }
    let start = fine.len();
    pixels.reserve(data.len() / record * IMAGE);
    for (i, rec) in data.chunks_exact(record).enumerate() {
        let (labels, planes) = rec.split_at(kind.label_bytes());
        let (label, num_classes) = match kind {
            CifarKind::Cifar10 => (labels[0], CIFAR10_CLASSES.len()),
            CifarKind::Cifar100 => {
                if labels[0] as usize >= CIFAR100_COARSE.len() {
                    return Err(DataError::LabelOutOfRange {
                        path: path.to_path_buf(),
                        index: start + i,
                        label: labels[0].into(),
                        num_classes: CIFAR100_COARSE.len(),
                    });
                }
                coarse.push(labels[0].into());
                (labels[1], CIFAR100_FINE.len())
            }
        };
        if label as usize >= num_classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index: start + i,
                label: label.into(),
                num_classes,
            });
        }
        fine.push(label.into());
        let (r, gb) = planes.split_at(PLANE);
        let (g, b) = gb.split_at(PLANE);
        pixels.extend((0..PLANE).flat_map(|p| [r[p], g[p], b[p]]));
    }
    Ok(())
}

/// Names from a one-name-per-line file if it exists (blank lines ignored), else the defaults;
/// a file with the wrong number of names is an error rather than silently shifted classes.
fn class_names(path: &Path, defaults: &[&str]) -> Result<Vec<String>, DataError> {
    if !path.is_file() {
        return Ok(defaults.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != defaults.len() {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            field: "class names",
            expected: format!("{} names, one per line", defaults.len()),
            found: format!("{} names", names.len()),
        });
    }
    Ok(names)
}

/// CIFAR-10 class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-100 coarse (superclass) names, in label order.
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100 fine class names, in label order (alphabetical, as published).
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_names_are_sorted_and_distinct() {
        // The published fine labels are the alphabetical order of the names; a typo or a
        // dropped name in the list would shift every class after it.
        assert!(CIFAR100_FINE.windows(2).all(|w| w[0] < w[1]));
        assert!(CIFAR100_COARSE.windows(2).all(|w| w[0] < w[1]));
    }
}
