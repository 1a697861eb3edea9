//! Fetching from local sources only (files already there, `--from`); nothing is downloaded.

use protocon::data::fetch::{sha256_file, FASHION_MNIST};
use protocon::data::{fetch, DataError, DatasetKind, FetchOptions, FetchSource};
use std::path::{Path, PathBuf};

#[path = "support/fashion_mnist.rs"]
mod fashion_mnist;
use fashion_mnist::{fashion_mnist_dir, FILES as ALL_FILES};

fn quiet() -> impl FnMut(&str) {
    |_: &str| {}
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn from_local_dir_then_already_present() {
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("fashion-mnist");
    let options = FetchOptions::offline().dir(&dir).from(fashion_mnist_dir());
    let mut lines = Vec::new();
    let report = fetch(DatasetKind::FashionMnist, &options, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert_eq!(report.dir, dir);
    assert_eq!(report.files.len(), 4);
    for ((name, source), published) in report.files.iter().zip(FASHION_MNIST.files) {
        assert_eq!(name, published.name, "recipe order");
        assert_eq!(*source, FetchSource::LocalDir(fashion_mnist_dir()));
        assert_eq!(sha256_file(&dir.join(name)).unwrap(), published.sha256);
    }
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(lines.iter().any(|l| l.contains("looking in")), "{lines:?}");
    assert_eq!(names_in(&dir), ALL_FILES, "no temporary files left");

    // Second run: everything verified in place, `from` not needed.
    let report = fetch(DatasetKind::FashionMnist, &FetchOptions::offline().dir(&dir), &mut quiet()).unwrap();
    assert!(report.files.iter().all(|(_, s)| *s == FetchSource::AlreadyPresent), "{:?}", report.files);
}

/// A copy of the fixture with one byte of the test labels changed; returns its directory and
/// the corrupted file's SHA-256.
fn corrupted_copy(root: &Path) -> (PathBuf, String) {
    let from = root.join("from");
    // Nested one level down: `from` is searched recursively.
    let nested = from.join("fashion-mnist");
    std::fs::create_dir_all(&nested).unwrap();
    for name in ALL_FILES {
        std::fs::copy(fashion_mnist_dir().join(name), nested.join(name)).unwrap();
    }
    let bad = nested.join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&bad).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let hash = sha256_file(&bad).unwrap();
    (from, hash)
}

#[test]
fn hash_mismatch_skips_the_file_and_reports_both_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, bad_hash) = corrupted_copy(tmp.path());
    let dir = tmp.path().join("target");
    let e = fetch(DatasetKind::FashionMnist, &FetchOptions::offline().dir(&dir).from(&from), &mut quiet()).unwrap_err();
    let text = e.to_string();
    match &e {
        DataError::FetchFailed { missing, .. } => assert_eq!(missing, &["t10k-labels-idx1-ubyte.gz"]),
        other => panic!("expected FetchFailed, got {other}"),
    }
    assert!(text.contains("SHA-256 mismatch"), "{text}");
    assert!(text.contains("expected 8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"), "{text}");
    assert!(text.contains(&format!("found {bad_hash}")), "{text}");
    // The three good files were installed; the bad one was not, and nothing partial remains.
    assert_eq!(
        names_in(&dir),
        ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    );
}

#[test]
fn corrupt_file_in_place_is_replaced_from_a_good_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("target");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), b"not the labels").unwrap();
    let report =
        fetch(DatasetKind::FashionMnist, &FetchOptions::offline().dir(&dir).from(fashion_mnist_dir()), &mut quiet())
            .unwrap();
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(report.skipped[0].contains("train-labels-idx1-ubyte.gz") && report.skipped[0].contains("will be replaced"));
    assert_eq!(
        sha256_file(&dir.join("train-labels-idx1-ubyte.gz")).unwrap(),
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    );
}

#[test]
fn offline_without_sources_fails_listing_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(DatasetKind::FashionMnist, &FetchOptions::offline().dir(tmp.path()), &mut quiet()).unwrap_err();
    match e {
        DataError::FetchFailed { missing, .. } => assert_eq!(missing.len(), 4),
        other => panic!("expected FetchFailed, got {other}"),
    }
}

#[test]
fn datasets_without_a_recipe_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = fetch(DatasetKind::Cifar10, &FetchOptions::offline().dir(tmp.path()), &mut quiet()).unwrap_err();
    assert!(matches!(e, DataError::FetchUnsupported { .. }), "{e}");
    assert!(e.to_string().contains("only fashion-mnist"), "{e}");
}
