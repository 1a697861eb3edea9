//! Naming a data set in one string: `fashion-mnist:DIR`, `cifar10:DIR`, `folder:PATH`, ...
//!
//! Configs, split files and the command line all name data sets the same way, so a split made
//! with `protocon data split --dataset cifar10:/data/c10` records exactly what to load again.

use super::{cifar, folder, idx, CifarKind, DataError, Dataset, ImageFiles, LabelSet, LoadOptions, Subset};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Environment variable naming the directory that holds the data sets.
pub const DATA_ENV: &str = "PROTOCON_DATA";

/// Where data sets live when no directory is given: `$PROTOCON_DATA` if set and non-empty,
/// else `./data`.
pub fn default_data_root() -> PathBuf {
    match std::env::var_os(DATA_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("data"),
    }
}

/// The formats and data sets a spec can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Fashion-MNIST: 28x28 grey, 10 classes, IDX files.
    FashionMnist,
    /// MNIST digits: 28x28 grey, 10 classes, IDX files.
    Mnist,
    /// CIFAR-10: 32x32 RGB, 10 classes, binary batches.
    Cifar10,
    /// CIFAR-100: 32x32 RGB, 100 fine classes (20 coarse), binary files.
    Cifar100,
    /// A directory of PNG/JPEG files, one subdirectory per class.
    Folder,
}

impl DatasetKind {
    /// All kinds, in the order they are listed in messages.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    /// The name used in spec strings and as the default subdirectory.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }

    /// The kind a spec name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A data set named by kind and location; (de)serialized as its string form.
///
/// `KIND:PATH` names a directory; a built-in `KIND` alone means
/// `$PROTOCON_DATA/KIND` (or `./data/KIND`), resolved when loading, so a spec written without a
/// path follows the environment. `folder` always needs a path.
///
/// ```
/// use protocon::data::{DatasetKind, DatasetSpec};
/// let spec: DatasetSpec = "cifar10:/data/c10".parse().unwrap();
/// assert_eq!(spec.kind(), DatasetKind::Cifar10);
/// assert_eq!(spec.to_string(), "cifar10:/data/c10");
/// assert!("folder".parse::<DatasetSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetSpec {
    kind: DatasetKind,
    dir: Option<PathBuf>,
}

impl DatasetSpec {
    /// A spec for `kind` at `dir`.
    pub fn new(kind: DatasetKind, dir: impl Into<PathBuf>) -> Self {
        DatasetSpec { kind, dir: Some(dir.into()) }
    }

    /// What the spec names.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// The directory as written, `None` for the default location.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The directory to read: the one written, or the default location of a built-in kind.
    pub fn resolved_dir(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None => default_data_root().join(self.kind.name()),
        }
    }

    /// Loads a subset and applies `options` (grey to RGB, target size). The data set is named
    /// by the spec string, which label splits record.
    pub fn load(&self, subset: Subset, options: &LoadOptions) -> Result<Dataset, DataError> {
        let dir = self.resolved_dir();
        let name = self.to_string();
        let data = match self.kind {
            DatasetKind::FashionMnist => idx::load_dir(&dir, subset, &name, names(&FASHION_MNIST_CLASSES))?,
            DatasetKind::Mnist => idx::load_dir(&dir, subset, &name, names(&MNIST_CLASSES))?,
            DatasetKind::Cifar10 => cifar::load_dir(&dir, CifarKind::Cifar10, subset, &name)?,
            DatasetKind::Cifar100 => cifar::load_dir(&dir, CifarKind::Cifar100, subset, &name)?,
            // Folders are fitted per file while decoding, and always decoded to RGB.
            DatasetKind::Folder => return folder::load_dir(&dir, subset, options, &name),
        };
        options.apply(data)
    }

    /// The labels of a subset, for drawing or checking a label split: an image folder's come
    /// from its directory listing without decoding a file (so its images may differ in size);
    /// the built-in formats are read whole, as [`load`](Self::load) does.
    pub fn load_labels(&self, subset: Subset) -> Result<LabelSet, DataError> {
        match self.kind {
            DatasetKind::Folder => folder::load_labels(&self.resolved_dir(), subset, &self.to_string()),
            _ => self.load(subset, &LoadOptions::new()).map(LabelSet::from),
        }
    }

    /// The files of a subset of an image folder, listed but not decoded
    /// ([`folder::files`]); the built-in formats are single files holding every image, so they
    /// have no per-sample files and are an error.
    pub fn files(&self, subset: Subset) -> Result<ImageFiles, DataError> {
        match self.kind {
            DatasetKind::Folder => folder::files(&self.resolved_dir(), subset, &self.to_string()),
            _ => Err(DataError::Spec {
                spec: self.to_string(),
                reason: "only an image folder (`folder:PATH`) has one file per sample to decode when it is visited; \
                         the built-in formats are decoded at load"
                    .into(),
            }),
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dir {
            Some(dir) => write!(f, "{}:{}", self.kind, dir.display()),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl FromStr for DatasetSpec {
    type Err = DataError;

    fn from_str(spec: &str) -> Result<Self, DataError> {
        let fail = |reason: String| DataError::Spec { spec: spec.to_string(), reason };
        let known = || DatasetKind::ALL.map(|k| k.name()).join(", ");
        let (name, dir) = match spec.split_once(':') {
            Some((name, dir)) => (name, Some(dir)),
            None => (spec, None),
        };
        let kind = DatasetKind::from_name(name).ok_or_else(|| {
            fail(format!("unknown data set `{name}`: expected one of {} (as NAME or NAME:PATH)", known()))
        })?;
        match dir {
            Some("") => Err(fail("empty path after `:`".into())),
            Some(dir) => Ok(DatasetSpec::new(kind, dir)),
            None if kind == DatasetKind::Folder => Err(fail("`folder` needs a path: `folder:PATH`".into())),
            None => Ok(DatasetSpec { kind, dir: None }),
        }
    }
}

impl Serialize for DatasetSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// MNIST class names (the digits), in label order.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for kind in DatasetKind::ALL {
            let with_dir = format!("{kind}:some/dir");
            let spec: DatasetSpec = with_dir.parse().unwrap();
            assert_eq!((spec.kind(), spec.dir()), (kind, Some(Path::new("some/dir"))));
            assert_eq!(spec.to_string(), with_dir);
        }
        let spec: DatasetSpec = "mnist".parse().unwrap();
        assert_eq!(spec.dir(), None);
        assert_eq!(spec.to_string(), "mnist");
        assert!(spec.resolved_dir().ends_with("mnist"));
    }

    #[test]
    fn keeps_colons_in_the_path() {
        let spec: DatasetSpec = "folder:C:/images".parse().unwrap();
        assert_eq!(spec.dir(), Some(Path::new("C:/images")));
    }

    #[test]
    fn rejects_unknown_names_and_empty_paths() {
        let e = "imagenet:/x".parse::<DatasetSpec>().unwrap_err().to_string();
        assert!(e.contains("`imagenet`") && e.contains("fashion-mnist, mnist, cifar10, cifar100, folder"), "{e}");
        assert!("cifar10:".parse::<DatasetSpec>().is_err());
    }

    #[test]
    fn serde_is_the_string_form() {
        let spec: DatasetSpec = serde_json::from_str("\"cifar100:/d\"").unwrap();
        assert_eq!(spec, DatasetSpec::new(DatasetKind::Cifar100, "/d"));
        assert_eq!(serde_json::to_string(&spec).unwrap(), "\"cifar100:/d\"");
        assert!(serde_json::from_str::<DatasetSpec>("\"nope\"").is_err());
    }
}
