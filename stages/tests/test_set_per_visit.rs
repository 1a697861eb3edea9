//! A test set read from an image folder's files at each evaluation holds, and scores, exactly
//! what the folder decoded at load with the same options holds, whatever the number of
//! decoding threads.

use candle_core::Device;
use protocon::data::{folder, Fit, Labelled, LoadOptions, Subset};
use protocon::model::{Arch, Network, NetworkOptions};
use protocon_stages::test_set::TestSet;
use protocon_stages::views::Normalization;

mod common;
use common::{temp_folder, truncate_a_file};

const SIDE: usize = 40;

fn pixels(test: &TestSet, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = vec![0u8; range.len() * SIDE * SIDE * 3];
    test.images_into(range, &mut out).unwrap();
    out
}

fn net() -> Network {
    Network::build(Arch::CnnSmall, 2, None, 7, &Device::Cpu, &NetworkOptions { bn_momentum: 0.1, ..Default::default() }).unwrap()
}

#[test]
fn files_decoded_per_evaluation_equal_the_folder_decoded_at_load() {
    let (dir, files) = temp_folder();
    let norm = Normalization { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] };
    let net = net();
    let mut fitted = Vec::new();
    for fit in [Fit::CenterCrop, Fit::Resize] {
        let options = LoadOptions::new().size(SIDE, SIDE).fit(fit);
        let at_load = TestSet::new(folder::load_dir(dir.path(), Subset::Train, &options, "folder:test").unwrap(), norm.clone());
        let want = at_load.evaluate(&net, 500).unwrap();
        for threads in [1, 3] {
            let per_visit = TestSet::per_visit(files.clone(), [SIDE, SIDE], &options, threads, norm.clone());
            assert_eq!(per_visit.shape(), (SIDE, SIDE, 3));
            assert_eq!(per_visit.labels(), at_load.labels());
            assert_eq!(per_visit.classes(), at_load.classes());
            for range in [0..8, 3..8, 1..2] {
                assert!(pixels(&per_visit, range.clone()) == pixels(&at_load, range.clone()), "{fit:?}, {threads} threads, {range:?}");
            }
            // Chunks of 3 images over 3 threads (one file each), then a last chunk of 2.
            for chunk in [3, 500] {
                let got = per_visit.evaluate(&net, chunk).unwrap();
                assert_eq!((got.accuracy, &got.confusion), (want.accuracy, &want.confusion), "{fit:?}, chunk {chunk}");
            }
        }
        fitted.push(pixels(&at_load, 0..8));
    }
    assert!(fitted[0] != fitted[1], "a centre crop and a resize of the same files should differ");
}

#[test]
fn a_test_file_that_cannot_be_decoded_fails_the_evaluation_naming_it() {
    let (dir, files) = temp_folder();
    truncate_a_file(dir.path());
    let norm = Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] };
    let test = TestSet::per_visit(files, [SIDE, SIDE], &LoadOptions::new().fit(Fit::CenterCrop), 2, norm);
    let err = test.evaluate(&net(), 4).unwrap_err().to_string();
    assert!(err.contains("dog/3.jpg") && err.contains("JPEG"), "{err}");
}
