//! Readers of the data module: IDX (Fashion-MNIST), CIFAR binary, image folders, and the
//! load-time options. Expected numbers for Fashion-MNIST were computed independently with
//! Python's `gzip` and `struct` from the same files.

use protocon::data::{cifar, idx, jpeg, DataError, Dataset, DatasetKind, DatasetSpec, Fit, Labelled, LoadOptions, Subset};
use std::io::Read;
use std::path::{Path, PathBuf};

#[path = "support/fashion_mnist.rs"]
mod fashion_mnist;
use fashion_mnist::fashion_mnist_dir;

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// Writes the test subset's two files, plain (decompressed), into `dir`.
fn plain_test_files(dir: &Path) -> (PathBuf, PathBuf) {
    let src = fashion_mnist_dir();
    let images = dir.join("t10k-images-idx3-ubyte");
    let labels = dir.join("t10k-labels-idx1-ubyte");
    std::fs::write(&images, gunzip(&src.join("t10k-images-idx3-ubyte.gz"))).unwrap();
    std::fs::write(&labels, gunzip(&src.join("t10k-labels-idx1-ubyte.gz"))).unwrap();
    (images, labels)
}

// ---------------------------------------------------------------- IDX / Fashion-MNIST

#[test]
fn fashion_mnist_train_matches_an_independent_decode() {
    let spec = DatasetSpec::new(DatasetKind::FashionMnist, fashion_mnist_dir());
    let train = spec.load(Subset::Train, &LoadOptions::new()).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!((train.height(), train.width(), train.channels()), (28, 28, 1));
    assert_eq!(train.labels()[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(train.classes()[train.label(0) as usize], "Ankle boot");
    assert_eq!(train.classes()[train.label(1) as usize], "T-shirt/top");
    assert_eq!(sum(train.image(0)), 76_247);
    assert_eq!(sum(train.image(1)), 84_598);
    assert_eq!(train.image(0)[14 * 28 + 10..14 * 28 + 16], [0, 0, 237, 226, 217, 223]);
    assert_eq!(sum(train.image(59_999)), 16_684);
    let mut per_class = [0usize; 10];
    train.labels().iter().for_each(|&l| per_class[l as usize] += 1);
    assert_eq!(per_class, [6000; 10]);
    assert_eq!(train.name(), spec.to_string());
}

#[test]
fn fashion_mnist_test_subset_gzipped_and_plain_are_identical() {
    let gz = DatasetSpec::new(DatasetKind::FashionMnist, fashion_mnist_dir())
        .load(Subset::Test, &LoadOptions::new())
        .unwrap();
    assert_eq!(gz.len(), 10_000);
    assert_eq!(gz.labels()[..5], [9, 2, 1, 1, 6]);
    assert_eq!(gz.label(9_999), 5);
    assert_eq!(sum(gz.image(0)), 33_456);

    let dir = tempfile::tempdir().unwrap();
    plain_test_files(dir.path());
    let plain =
        DatasetSpec::new(DatasetKind::FashionMnist, dir.path()).load(Subset::Test, &LoadOptions::new()).unwrap();
    assert_eq!(plain.pixels(), gz.pixels());
    assert_eq!(plain.labels(), gz.labels());
}

#[test]
fn truncated_gzip_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = fashion_mnist_dir();
    std::fs::copy(src.join("t10k-images-idx3-ubyte.gz"), dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let bytes = std::fs::read(src.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let cut = dir.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e =
        DatasetSpec::new(DatasetKind::FashionMnist, dir.path()).load(Subset::Test, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::Gzip { ref path, .. } if *path == cut), "{e}");
    assert!(e.to_string().contains("t10k-labels-idx1-ubyte.gz"), "{e}");
}

#[test]
fn truncated_plain_images_report_expected_and_found_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = plain_test_files(dir.path());
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let e = idx::load_files(&images, &labels, "t", vec!["c".into(); 10]).unwrap_err();
    let text = e.to_string();
    // 16-byte header + 10 000 images of 28 x 28 = 7 840 016 bytes.
    assert!(text.contains("expected 7840016 bytes") && text.contains("found 7839916 bytes"), "{text}");
    assert!(text.contains(&images.display().to_string()), "{text}");
}

#[test]
fn wrong_magic_names_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let (_, labels) = plain_test_files(dir.path());
    // A label file where the images are expected.
    let e = idx::load_files(&labels, &labels, "t", vec!["c".into(); 10]).unwrap_err();
    assert!(matches!(e, DataError::BadMagic { expected: 0x803, found: 0x801, .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("expected 0x00000803") && text.contains("found 0x00000801"), "{text}");
    assert!(text.contains("t10k-labels-idx1-ubyte"), "{text}");
}

#[test]
fn label_count_mismatch_names_both_files_and_counts() {
    let src = fashion_mnist_dir();
    let images = src.join("t10k-images-idx3-ubyte.gz");
    let labels = src.join("train-labels-idx1-ubyte.gz");
    let e = idx::load_files(&images, &labels, "t", vec!["c".into(); 10]).unwrap_err();
    assert!(matches!(e, DataError::CountMismatch { image_count: 10_000, label_count: 60_000, .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("t10k-images-idx3-ubyte.gz") && text.contains("train-labels-idx1-ubyte.gz"), "{text}");
}

#[test]
fn label_out_of_range_names_sample_and_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = plain_test_files(dir.path());
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[8 + 123] = 10;
    std::fs::write(&labels, bytes).unwrap();
    let e = idx::load_files(&images, &labels, "t", vec!["c".into(); 10]).unwrap_err();
    assert!(matches!(e, DataError::LabelOutOfRange { index: 123, label: 10, num_classes: 10, .. }), "{e}");
}

#[test]
fn missing_directory_and_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("nowhere");
    let e = DatasetSpec::new(DatasetKind::Mnist, &absent).load(Subset::Train, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::Missing { ref path, .. } if *path == absent), "{e}");

    // Images present, labels absent.
    plain_test_files(dir.path());
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let e = DatasetSpec::new(DatasetKind::Mnist, dir.path()).load(Subset::Test, &LoadOptions::new()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("t10k-labels-idx1-ubyte.gz") && text.contains("not found"), "{text}");
}

// ---------------------------------------------------------------- options

#[test]
fn grey_to_rgb_and_pad_28_to_32_keep_pixels_in_place() {
    let spec = DatasetSpec::new(DatasetKind::FashionMnist, fashion_mnist_dir());
    let native = spec.load(Subset::Test, &LoadOptions::new()).unwrap();
    let options = LoadOptions::new().rgb(true).size(32, 32).fit(Fit::Pad);
    let padded = spec.load(Subset::Test, &options).unwrap();
    assert_eq!((padded.len(), padded.height(), padded.width(), padded.channels()), (10_000, 32, 32, 3));
    assert_eq!(padded.labels(), native.labels());
    for i in [0, 1, 9_999] {
        let (src, dst) = (native.image(i), padded.image(i));
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside { src[(y - 2) * 28 + (x - 2)] } else { 0 };
                for c in 0..3 {
                    assert_eq!(dst[(y * 32 + x) * 3 + c], want, "image {i} at ({y},{x},{c})");
                }
            }
        }
    }
    assert_eq!(sum(padded.image(0)), 3 * 33_456);
}

#[test]
fn grey_to_rgb_alone_triples_each_pixel() {
    let data = Dataset::new("t", (1, 2, 1), vec![7, 250], vec![0], vec!["a".into()]).unwrap();
    let rgb = LoadOptions::new().rgb(true).apply(data).unwrap();
    assert_eq!(rgb.channels(), 3);
    assert_eq!(rgb.image(0), &[7, 7, 7, 250, 250, 250]);
}

// ---------------------------------------------------------------- CIFAR

/// A CIFAR record whose planes encode (record id, channel, position) so HWC conversion can be
/// checked pixel by pixel.
fn cifar_pixel(id: usize, channel: usize, p: usize) -> u8 {
    ((id * 31 + channel * 101 + p * 7) % 251) as u8
}

fn cifar_record(labels: &[u8], id: usize) -> Vec<u8> {
    let mut rec = labels.to_vec();
    for channel in 0..3 {
        rec.extend((0..1024).map(|p| cifar_pixel(id, channel, p)));
    }
    rec
}

fn write_cifar10(dir: &Path) {
    // 5 training batches of 2 records, ids 0..10, labels id % 10; test batch of 1 record.
    for b in 0..5 {
        let mut bytes = Vec::new();
        for k in 0..2 {
            let id = b * 2 + k;
            bytes.extend(cifar_record(&[(id % 10) as u8], id));
        }
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[3], 100)).unwrap();
}

fn assert_hwc(data: &Dataset, i: usize, id: usize) {
    let img = data.image(i);
    for p in 0..1024 {
        for c in 0..3 {
            assert_eq!(img[p * 3 + c], cifar_pixel(id, c, p), "sample {i} pixel {p} channel {c}");
        }
    }
}

#[test]
fn cifar10_planes_become_hwc_in_file_order() {
    let root = tempfile::tempdir().unwrap();
    // The archive's own subdirectory is found from its parent.
    let dir = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    write_cifar10(&dir);
    let spec = DatasetSpec::new(DatasetKind::Cifar10, root.path());
    let train = spec.load(Subset::Train, &LoadOptions::new()).unwrap();
    assert_eq!((train.len(), train.height(), train.width(), train.channels()), (10, 32, 32, 3));
    assert_eq!(train.labels(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(train.classes()[9], "truck");
    for i in 0..10 {
        assert_hwc(&train, i, i);
    }
    // Pixel (y=0, x=1) of sample 0 is plane position 1: R = 7, G = 108, B = 209.
    assert_eq!(&train.image(0)[3..6], &[7, 108, 209]);
    let test = spec.load(Subset::Test, &LoadOptions::new()).unwrap();
    assert_eq!(test.labels(), &[3]);
    assert_hwc(&test, 0, 100);
}

#[test]
fn cifar10_truncated_record_and_missing_batch_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    let batch = dir.path().join("data_batch_4.bin");
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..bytes.len() - 1]).unwrap();
    let spec = DatasetSpec::new(DatasetKind::Cifar10, dir.path());
    let e = spec.load(Subset::Train, &LoadOptions::new()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DataError::WrongSize { found: 6145, .. }), "{text}");
    assert!(text.contains("data_batch_4.bin") && text.contains("multiple of 3073"), "{text}");

    std::fs::remove_file(&batch).unwrap();
    let e = spec.load(Subset::Train, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::Missing { ref path, .. } if *path == batch), "{e}");
}

#[test]
fn cifar10_label_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path());
    std::fs::write(dir.path().join("test_batch.bin"), cifar_record(&[10], 0)).unwrap();
    let e = cifar::load_dir(dir.path(), cifar::CifarKind::Cifar10, Subset::Test, "t").unwrap_err();
    assert!(matches!(e, DataError::LabelOutOfRange { index: 0, label: 10, num_classes: 10, .. }), "{e}");
}

#[test]
fn cifar100_uses_fine_labels_and_keeps_coarse_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = cifar_record(&[19, 99], 0);
    bytes.extend(cifar_record(&[4, 0], 1));
    std::fs::write(dir.path().join("test.bin"), bytes).unwrap();
    let test = DatasetSpec::new(DatasetKind::Cifar100, dir.path()).load(Subset::Test, &LoadOptions::new()).unwrap();
    assert_eq!(test.labels(), &[99, 0]);
    assert_eq!(test.num_classes(), 100);
    assert_eq!((test.classes()[99].as_str(), test.classes()[0].as_str()), ("worm", "apple"));
    assert_hwc(&test, 1, 1);
    let coarse = test.coarse_labels().unwrap();
    assert_eq!(coarse.labels, [19, 4]);
    assert_eq!(coarse.classes[19], "vehicles_2");

    let by_superclass = test.into_coarse().unwrap();
    assert_eq!((by_superclass.labels(), by_superclass.num_classes()), (&[19u16, 4][..], 20));
    assert_eq!(by_superclass.coarse_labels().unwrap().labels, [99, 0]);

    // A record of 3073 bytes is one byte short of a CIFAR-100 record.
    std::fs::write(dir.path().join("test.bin"), cifar_record(&[1], 0)).unwrap();
    let e = DatasetSpec::new(DatasetKind::Cifar100, dir.path()).load(Subset::Test, &LoadOptions::new()).unwrap_err();
    assert!(e.to_string().contains("multiple of 3074"), "{e}");
}

// ---------------------------------------------------------------- image folders

fn solid_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn folder_orders_classes_and_files_by_name_and_resizes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for class in ["dog", "ant", "cat", ".hidden"] {
        std::fs::create_dir(r.join(class)).unwrap();
    }
    solid_png(&r.join("cat/b.png"), 5, 7, [10, 200, 30]);
    let solid = [90u8, 90, 200].repeat(16 * 16);
    let jpg = jpeg::encode(&solid, jpeg::Frame { width: 16, height: 16, channels: 3 }, 90).unwrap();
    std::fs::write(r.join("cat/a.jpg"), jpg).unwrap();
    image::GrayImage::from_pixel(3, 3, image::Luma([77])).save(r.join("ant/1.png")).unwrap();
    solid_png(&r.join("dog/x.PNG"), 8, 8, [1, 2, 3]);
    std::fs::write(r.join("dog/README.txt"), "not an image").unwrap();
    solid_png(&r.join(".hidden/h.png"), 8, 8, [0, 0, 0]);

    let spec: DatasetSpec = format!("folder:{}", r.display()).parse().unwrap();
    let data = spec.load(Subset::Train, &LoadOptions::new().size(8, 8)).unwrap();
    assert_eq!(data.classes(), &["ant", "cat", "dog"]);
    assert_eq!(data.len(), 4);
    assert_eq!(data.labels(), &[0, 1, 1, 2]); // ant/1.png, cat/a.jpg, cat/b.png, dog/x.PNG
    assert_eq!((data.height(), data.width(), data.channels()), (8, 8, 3));
    // Resizing a solid image keeps it solid; PNG is lossless, grey becomes R = G = B.
    assert_eq!(data.image(0), [77u8; 3].repeat(64).as_slice());
    assert_eq!(data.image(2), [10u8, 200, 30].repeat(64).as_slice());
    assert_eq!(data.image(3), [1u8, 2, 3].repeat(64).as_slice());
    // JPEG is lossy: close to the colour, not equal.
    for px in data.image(1).chunks(3) {
        for (got, want) in px.iter().zip([90u8, 90, 200]) {
            assert!(got.abs_diff(want) <= 6, "{px:?}");
        }
    }
    assert!(spec.load(Subset::Test, &LoadOptions::new()).is_err(), "no test subset in a flat folder");

    // Listed for decoding per visit: the same samples in the same order, nothing decoded.
    let files = spec.files(Subset::Train).unwrap();
    assert_eq!((files.labels(), files.classes()), (data.labels(), data.classes()));
    let names: Vec<_> = (0..4).map(|i| files.path(i).strip_prefix(r).unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["ant/1.png", "cat/a.jpg", "cat/b.png", "dog/x.PNG"]);
    let mut bytes = vec![1, 2, 3];
    files.read_into(2, &mut bytes).unwrap();
    assert_eq!(bytes, std::fs::read(r.join("cat/b.png")).unwrap());
    std::fs::remove_file(r.join("cat/b.png")).unwrap();
    let err = files.read_into(2, &mut bytes).unwrap_err().to_string();
    assert!(err.contains("cat/b.png"), "{err}");
    assert_eq!(files.clone().truncate(2).num_samples(), 2);
    // The built-in formats have no file per sample.
    let err = "fashion-mnist:/x".parse::<DatasetSpec>().unwrap().files(Subset::Train).unwrap_err().to_string();
    assert!(err.contains("folder:"), "{err}");
}

#[test]
fn folder_without_target_size_requires_equal_sizes() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("a")).unwrap();
    solid_png(&root.path().join("a/1.png"), 4, 4, [5, 5, 5]);
    solid_png(&root.path().join("a/2.png"), 4, 4, [6, 6, 6]);
    let spec = DatasetSpec::new(DatasetKind::Folder, root.path());
    let data = spec.load(Subset::Train, &LoadOptions::new()).unwrap();
    assert_eq!((data.len(), data.height(), data.width()), (2, 4, 4));
    assert_eq!(data.image(1)[0], 6);

    let odd = root.path().join("a/3.png");
    solid_png(&odd, 5, 4, [7, 7, 7]);
    let e = spec.load(Subset::Train, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::ImageSize { ref path, .. } if *path == odd), "{e}");
    assert!(e.to_string().contains("4x5") && e.to_string().contains("expected 4x4"), "{e}");
}

#[test]
fn corrupt_image_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("a")).unwrap();
    solid_png(&root.path().join("a/1.png"), 4, 4, [5, 5, 5]);
    let bad = root.path().join("a/2.png");
    let mut bytes = std::fs::read(root.path().join("a/1.png")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, bytes).unwrap();
    let e = DatasetSpec::new(DatasetKind::Folder, root.path())
        .load(Subset::Train, &LoadOptions::new().size(4, 4))
        .unwrap_err();
    assert!(matches!(e, DataError::Image { ref path, .. } if *path == bad), "{e}");
    assert!(e.to_string().contains("2.png"), "{e}");
}

#[test]
fn truncated_jpeg_in_a_folder_is_named() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("a")).unwrap();
    let jpg = std::fs::read(fixture("jpeg/rgb420.jpg")).unwrap();
    std::fs::write(root.path().join("a/1.jpg"), &jpg).unwrap();
    let bad = root.path().join("a/2.jpg");
    std::fs::write(&bad, &jpg[..jpg.len() / 2]).unwrap();
    let e = DatasetSpec::new(DatasetKind::Folder, root.path()).load(Subset::Train, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::Jpeg { ref path, .. } if *path == bad), "{e}");
    assert!(e.to_string().contains("2.jpg") && e.to_string().contains("JPEG"), "{e}");
}

#[test]
fn folder_jpegs_hold_the_pixels_pillow_decodes() {
    // One colour and one gray JPEG, both read as RGB at their own size (21x13): the pixels are
    // Pillow's `convert("RGB")` of the files, recorded by `randaugment_pil.py record-jpeg`.
    let root = tempfile::tempdir().unwrap();
    for (class, name) in [("a", "rgb420"), ("b", "gray")] {
        std::fs::create_dir(root.path().join(class)).unwrap();
        std::fs::copy(fixture(&format!("jpeg/{name}.jpg")), root.path().join(class).join("x.jpg")).unwrap();
    }
    let data = DatasetSpec::new(DatasetKind::Folder, root.path()).load(Subset::Train, &LoadOptions::new()).unwrap();
    assert_eq!((data.len(), data.height(), data.width(), data.channels()), (2, 13, 21, 3));
    assert_eq!(data.image(0), &std::fs::read(fixture("jpeg/rgb420.rgb")).unwrap()[..]);
    assert_eq!(data.image(1), &std::fs::read(fixture("jpeg/gray.rgb")).unwrap()[..]);
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn folder_train_test_layout_shares_train_classes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["train/a", "train/b", "train/c", "test/c"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    for (i, dir) in ["train/a", "train/b", "train/c", "test/c"].iter().enumerate() {
        solid_png(&r.join(dir).join("img.png"), 2, 2, [i as u8; 3]);
    }
    let spec = DatasetSpec::new(DatasetKind::Folder, r);
    let test = spec.load(Subset::Test, &LoadOptions::new()).unwrap();
    assert_eq!((test.labels(), test.num_classes()), (&[2u16][..], 3));
    assert_eq!(test.image(0)[0], 3);

    std::fs::create_dir_all(r.join("test/zebra")).unwrap();
    solid_png(&r.join("test/zebra/z.png"), 2, 2, [0; 3]);
    let e = spec.load(Subset::Test, &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, DataError::UnknownClass { .. }), "{e}");
    assert!(e.to_string().contains("zebra") && e.to_string().contains("a, b, c"), "{e}");
}
