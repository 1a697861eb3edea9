//! Where the tests find Fashion-MNIST (they never download it). Shared by the core's and the
//! binary's integration tests through `#[path]`, so both look in the same places, in this order:
//!
//! 1. `$PROTOCON_TEST_DATA` (a directory holding the four `.gz` files);
//! 2. `$PROTOCON_DATA/fashion-mnist`, where `protocon train` and `protocon data fetch` put it
//!    when `PROTOCON_DATA` is set;
//! 3. `<repository>/data/fashion-mnist`, where they put it otherwise (run from the repository);
//! 4. `<repository>/../shared/data/fashion-mnist`, the workplace's read-only copy;
//! 5. `/usr/share/datasets/fashion-mnist`, the Debian package `dataset-fashion-mnist`.
//!
//! When none has the files, the test fails with the one command that fetches them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The four files of the data set; a candidate directory counts only when it has all of them.
pub const FILES: [&str; 4] =
    ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"];

/// The repository root, from the test crate's manifest directory (the root crate or a member).
fn repository() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("tests/support/fashion_mnist.rs").is_file() {
        manifest.to_path_buf()
    } else {
        manifest.parent().expect("a workspace member has a parent").to_path_buf()
    }
}

/// The candidate directories, in the order they are tried.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("PROTOCON_TEST_DATA").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("PROTOCON_DATA").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d).join("fashion-mnist"));
    }
    let root = repository();
    dirs.push(root.join("data/fashion-mnist"));
    dirs.push(root.join("../shared/data/fashion-mnist"));
    dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
    dirs
}

/// The first candidate holding all four files; panics naming every place looked at and the
/// command that puts the data in place.
pub fn fashion_mnist_dir() -> PathBuf {
    let dirs = candidates();
    if let Some(d) = std::env::var_os("PROTOCON_TEST_DATA").filter(|d| !d.is_empty()) {
        // Set on purpose: a wrong directory is an error, not a reason to look elsewhere.
        let d = PathBuf::from(d);
        let missing: Vec<&str> = FILES.iter().copied().filter(|f| !d.join(f).is_file()).collect();
        assert!(missing.is_empty(), "PROTOCON_TEST_DATA={} lacks {}", d.display(), missing.join(", "));
        return d;
    }
    if let Some(found) = dirs.iter().find(|d| FILES.iter().all(|f| d.join(f).is_file())) {
        return found.clone();
    }
    let looked: Vec<String> = dirs.iter().map(|d| format!("  {}", d.display())).collect();
    panic!(
        "Fashion-MNIST not found; looked in:\n{}\nGet it (verified, into ./data/fashion-mnist) with:\n  \
         cargo run --release -- data fetch fashion-mnist\nfrom the repository root, or run the README's \
         test command `scripts/test.sh`, which does that first. PROTOCON_TEST_DATA=DIR points the tests at \
         another copy.",
        looked.join("\n")
    )
}
