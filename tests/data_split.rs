//! Label-scarce splits: balance, partition, reproducibility, the split file and its checks.

use protocon::data::{labels_sha256, DataError, Dataset, DatasetKind, DatasetSpec, LoadOptions, Split, Subset};
use std::path::PathBuf;

#[path = "support/fashion_mnist.rs"]
mod fashion_mnist;

/// A 1x1 grey data set with the given labels.
fn tiny(labels: Vec<u16>, num_classes: usize) -> Dataset {
    let pixels = labels.iter().map(|&l| l as u8).collect();
    let classes = (0..num_classes).map(|c| format!("class{c}")).collect();
    Dataset::new("tiny", (1, 1, 1), pixels, labels, classes).unwrap()
}

/// Classes of 5, 8 and 12 samples, interleaved.
fn uneven() -> Dataset {
    let labels = [vec![0u16; 5], vec![1; 8], vec![2; 12]].concat();
    // Interleave deterministically so classes are not contiguous.
    let n = labels.len();
    let order: Vec<usize> = (0..n).map(|i| (i * 7) % n).collect(); // 7 is coprime to 25
    tiny(order.into_iter().map(|i| labels[i]).collect(), 3)
}

fn fashion_mnist_test() -> Dataset {
    DatasetSpec::new(DatasetKind::FashionMnist, fashion_mnist::fashion_mnist_dir()).load(Subset::Test, &LoadOptions::new()).unwrap()
}

#[test]
fn balanced_takes_exactly_n_per_class_and_partitions_all_indices() {
    let data = uneven();
    let split = Split::balanced(&data, 4, 11).unwrap();
    let mut per_class = [0; 3];
    for &i in split.labeled() {
        per_class[data.label(i) as usize] += 1;
    }
    assert_eq!(per_class, [4, 4, 4]);
    assert_eq!(split.unlabeled().len(), 25 - 12);
    let mut all: Vec<usize> = split.labeled().iter().chain(split.unlabeled()).copied().collect();
    assert!(split.labeled().windows(2).all(|w| w[0] < w[1]));
    assert!(split.unlabeled().windows(2).all(|w| w[0] < w[1]));
    all.sort_unstable();
    assert_eq!(all, (0..25).collect::<Vec<_>>(), "disjoint and covering");
    assert_eq!((split.seed(), split.labels_per_class(), split.num_classes(), split.num_samples()), (11, 4, 3, 25));
    assert_eq!(split.dataset(), "tiny");
}

#[test]
fn whole_class_taken_when_n_equals_its_size() {
    let data = uneven();
    let split = Split::balanced(&data, 5, 0).unwrap();
    let class0: Vec<usize> = (0..data.len()).filter(|&i| data.label(i) == 0).collect();
    assert!(class0.iter().all(|i| split.labeled().contains(i)));
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let data = fashion_mnist_test();
    let a = Split::balanced(&data, 4, 0).unwrap();
    let b = Split::balanced(&data, 4, 0).unwrap();
    let c = Split::balanced(&data, 4, 1).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.labeled().len(), 40);
    assert_ne!(a.labeled(), c.labeled());
    // Independent: sha256 of the 10 000 test labels as u32 LE, computed with Python's hashlib.
    assert_eq!(a.labels_sha256(), "53fdd09ed9cbcd893df0e3b0af7802f2d62457de11c87273d4b4186f4992a40c");
}

// The draw is specified (PCG32 seed expansion of `seed_from_u64`, the ChaCha8 stream, partial
// Fisher-Yates with Lemire bounded draws), so a split made by one build must be made again by
// any other. The expected indices below come from an independent Python implementation of
// that specification (PCG32, ChaCha8 quarter rounds, Lemire), not from this crate's output.

#[test]
fn split_matches_reference_implementation_on_a_toy_set() {
    let data = tiny((0..20).map(|i| (i % 2) as u16).collect(), 2);
    let split = Split::balanced(&data, 2, 42).unwrap();
    assert_eq!(split.labeled(), [9, 12, 13, 18]);
}

#[test]
fn split_matches_reference_implementation_on_fashion_mnist_test() {
    let split = Split::balanced(&fashion_mnist_test(), 4, 0).unwrap();
    #[rustfmt::skip]
    assert_eq!(split.labeled(), [
        122, 579, 605, 1417, 1667, 1694, 3142, 3378, 3591, 3848, 4173, 4561, 4615, 4669, 5214,
        5249, 5285, 5753, 5762, 5893, 6353, 6851, 6868, 7121, 7198, 7369, 7484, 7501, 7607, 7721,
        8230, 8516, 8655, 8801, 8900, 9183, 9485, 9491, 9546, 9656,
    ]);
}

#[test]
fn class_too_small_is_an_error_naming_the_class() {
    let e = Split::balanced(&uneven(), 6, 0).unwrap_err();
    assert!(matches!(e, DataError::ClassTooSmall { label: 0, available: 5, requested: 6, .. }), "{e}");
    assert!(e.to_string().contains("class0"), "{e}");
}

#[test]
fn json_round_trip_and_recorded_fields() {
    let data = uneven();
    let split = Split::balanced(&data, 3, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.json");
    split.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 11, "one line per field plus braces:\n{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["dataset"], "tiny");
    assert_eq!(json["seed"], 5);
    assert_eq!(json["labels_per_class"], 3);
    assert_eq!(json["num_classes"], 3);
    assert_eq!(json["labels_sha256"], labels_sha256(data.labels()));
    assert_eq!(json["labeled"].as_array().unwrap().len(), 9);
    assert_eq!(Split::load(&path, &data).unwrap(), split);
}

/// Saves `split`, edits its JSON with `edit`, and loads it against `data`.
fn load_edited(split: &Split, data: &Dataset, edit: impl FnOnce(&mut serde_json::Value)) -> (PathBuf, DataError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.json");
    let mut json = serde_json::to_value(split).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let e = Split::load(&path, data).unwrap_err();
    (path, e)
}

#[test]
fn checksum_mismatch_names_file_and_both_hashes() {
    let data = uneven();
    let split = Split::balanced(&data, 3, 5).unwrap();
    // Same size and classes, one label changed: only the checksum can tell.
    let mut labels = data.labels().to_vec();
    labels.swap(0, 1);
    assert_ne!(labels[0], labels[1]);
    let other = tiny(labels, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.json");
    split.save(&path).unwrap();
    let e = Split::load(&path, &other).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DataError::ChecksumMismatch { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(split.labels_sha256()) && text.contains(&labels_sha256(other.labels())), "{text}");
}

#[test]
fn tampered_split_files_are_rejected_with_the_reason() {
    let data = uneven();
    let split = Split::balanced(&data, 3, 5).unwrap();
    let first_unlabeled = split.unlabeled()[0];

    let (path, e) = load_edited(&split, &data, |j| {
        j["labeled"].as_array_mut().unwrap().push(first_unlabeled.into());
        let mut v: Vec<u64> = j["labeled"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        v.sort_unstable();
        j["labeled"] = v.into();
    });
    assert!(e.to_string().contains("both labeled and unlabeled"), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    let (_, e) = load_edited(&split, &data, |j| j["unlabeled"].as_array_mut().unwrap().push(25.into()));
    assert!(e.to_string().contains("index 25 out of range: expected < 25"), "{e}");

    let (_, e) = load_edited(&split, &data, |j| {
        j["unlabeled"].as_array_mut().unwrap().remove(0);
    });
    assert!(e.to_string().contains(&format!("index {first_unlabeled} is neither")), "{e}");

    let (_, e) = load_edited(&split, &data, |j| j["num_samples"] = 24.into());
    assert!(e.to_string().contains("split has 24, data set has 25"), "{e}");

    let (_, e) = load_edited(&split, &data, |j| j["labels_per_class"] = 4.into());
    assert!(e.to_string().contains("expected labels_per_class = 4"), "{e}");

    let (_, e) = load_edited(&split, &data, |j| j["extra"] = 1.into());
    assert!(matches!(e, DataError::SplitParse { .. }), "{e}");
}

#[test]
fn a_folder_split_needs_only_the_listing_and_fits_the_loaded_folder() {
    // Images of several sizes (a folder that cannot load without a target size): the listing
    // alone labels them, in the order the loader uses.
    let root = tempfile::tempdir().unwrap();
    for (class, sizes) in [("cat", [(8u32, 6u32), (5, 9), (8, 6)]), ("ant", [(4, 4), (7, 3), (4, 4)])] {
        std::fs::create_dir(root.path().join(class)).unwrap();
        for (i, (w, h)) in sizes.into_iter().enumerate() {
            image::RgbImage::from_pixel(w, h, image::Rgb([i as u8 * 50, 0, 0]))
                .save(root.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let spec = DatasetSpec::new(DatasetKind::Folder, root.path());
    let labels = spec.load_labels(Subset::Train).unwrap();
    assert_eq!(protocon::data::Labelled::num_samples(&labels), 6);
    let split = Split::balanced(&labels, 2, 5).unwrap();
    assert_eq!(split.dataset(), spec.to_string());
    let path = root.path().join("split.json");
    split.save(&path).unwrap();
    // The loaded folder (brought to one size) has the same labels: the split file fits it.
    let data = spec.load(Subset::Train, &LoadOptions::new().size(4, 4)).unwrap();
    assert_eq!(protocon::data::Labelled::labels(&labels), data.labels());
    assert_eq!(data.classes(), ["ant", "cat"]);
    assert_eq!(Split::load(&path, &data).unwrap(), split);
    // Without a size the folder itself refuses to load, but its labels were enough.
    assert!(spec.load(Subset::Train, &LoadOptions::new()).is_err());
}

/// By fraction (ImageNet's 1% and 10%): `max(1, round(f x n_c))` per class, drawn as the balanced
/// split draws, so the classes' first members match the balanced split's with the same counts.
/// Classes of 5, 8 and 12 at 0.3: round(1.5) = 2, round(2.4) = 2, round(3.6) = 4; at 0.01: 1 each.
#[test]
fn by_fraction_takes_a_share_of_each_class_and_its_file_is_checked() {
    let data = uneven();
    let count = |split: &Split| {
        let mut per_class = [0; 3];
        for &i in split.labeled() {
            per_class[data.label(i) as usize] += 1;
        }
        per_class
    };
    let split = Split::by_fraction(&data, 0.3, 5).unwrap();
    assert_eq!(count(&split), [2, 2, 4]);
    assert_eq!((split.label_fraction(), split.labels_per_class(), split.unlabeled().len()), (Some(0.3), 0, 25 - 8));
    assert_eq!(count(&Split::by_fraction(&data, 0.01, 5).unwrap()), [1, 1, 1]);
    assert_eq!(count(&Split::by_fraction(&data, 1.0, 5).unwrap()), [5, 8, 12]);
    // Class 0 is drawn first from the same stream: its 2 match a balanced split of 2.
    let class0 = |s: &Split| s.labeled().iter().copied().filter(|&i| data.label(i) == 0).collect::<Vec<_>>();
    assert_eq!(class0(&split), class0(&Split::balanced(&data, 2, 5).unwrap()));
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(matches!(Split::by_fraction(&data, bad, 0), Err(DataError::BadFraction { .. })), "{bad}");
    }

    let dir = std::env::temp_dir().join(format!("protocon-split-fraction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("split.json");
    split.save(&path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"label_fraction\": 0.3"));
    assert_eq!(Split::load(&path, &data).unwrap(), split);
    // A file whose counts do not follow its fraction is refused with the rule.
    let text = std::fs::read_to_string(&path).unwrap().replace("\"label_fraction\": 0.3", "\"label_fraction\": 0.5");
    std::fs::write(&path, text).unwrap();
    let e = Split::load(&path, &data).unwrap_err().to_string();
    assert!(e.contains("round(0.5 x 5)") && e.contains("expected"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
