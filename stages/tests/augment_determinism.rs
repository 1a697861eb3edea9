//! Same seed, same pixels: whatever the processing order, the chunking into workers or the
//! number of threads (architecture.md, "Determinism").

use protocon_stages::augment::{
    AugmentConfig, AugmentRegistry, AugmentedViews, Augmenter, DrawKey, Image, Workspace,
};
use std::sync::Arc;

const SAMPLES: u64 = 300;

/// FNV-1a, 64 bit.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

/// A distinct, textured 32x32 RGB sample per index.
fn sample(index: u64) -> Image {
    let data = (0..32 * 32 * 3u64).map(|i| ((i * 31 + index * 17 + (i / 96) * (index % 7)) % 256) as u8).collect();
    Image::new(32, 32, 3, data).unwrap()
}

fn augmenter(seed: u64) -> Augmenter {
    let mut config = AugmentConfig::cifar();
    config.strong_views = 2;
    config.build(seed, &AugmentRegistry::with_builtins()).unwrap()
}

/// Hash of every view of the given samples (in `order`), one hash per sample, sorted by index.
fn hashes(aug: &Augmenter, epoch: u64, order: &[u64]) -> Vec<(u64, u64)> {
    let mut ws = Workspace::new();
    let mut views = AugmentedViews::new();
    let mut out: Vec<(u64, u64)> = order
        .iter()
        .map(|&index| {
            aug.views(&sample(index), epoch, index, &mut ws, &mut views);
            let mut h = 0xcbf2_9ce4_8422_2325;
            fnv(&mut h, views.weak.data());
            for s in &views.strong {
                fnv(&mut h, s.data());
            }
            (index, h)
        })
        .collect();
    out.sort();
    out
}

fn combined(hs: &[(u64, u64)]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for (i, v) in hs {
        fnv(&mut h, &i.to_le_bytes());
        fnv(&mut h, &v.to_le_bytes());
    }
    h
}

#[test]
fn order_chunking_and_threads_do_not_change_the_pixels() {
    let aug = Arc::new(augmenter(1234));
    let in_order: Vec<u64> = (0..SAMPLES).collect();
    let reference = hashes(&aug, 3, &in_order);

    // Reversed and shuffled (a fixed permutation: i * 7 mod 300 visits all of 0..300).
    let reversed: Vec<u64> = in_order.iter().rev().copied().collect();
    assert_eq!(hashes(&aug, 3, &reversed), reference);
    let shuffled: Vec<u64> = (0..SAMPLES).map(|i| i * 7 % SAMPLES).collect();
    assert_eq!(hashes(&aug, 3, &shuffled), reference);

    // Chunked over 1, 3 and 4 threads, each with its own workspace; strided chunks too.
    for workers in [1usize, 3, 4] {
        let mut handles = Vec::new();
        for w in 0..workers {
            let aug = aug.clone();
            let mine: Vec<u64> = (0..SAMPLES).filter(|i| (*i as usize) % workers == w).collect();
            handles.push(std::thread::spawn(move || hashes(&aug, 3, &mine)));
        }
        let mut all: Vec<(u64, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        assert_eq!(combined(&all), combined(&reference), "{workers} workers");
    }
}

#[test]
fn seed_epoch_and_view_all_matter() {
    let aug = augmenter(1234);
    let idx: Vec<u64> = (0..50).collect();
    let base = hashes(&aug, 0, &idx);
    assert_ne!(combined(&hashes(&augmenter(1235), 0, &idx)), combined(&base), "seed");
    assert_ne!(combined(&hashes(&aug, 1, &idx)), combined(&base), "epoch");
    // The two strong views of one sample differ (different view ids), and differ from weak.
    let mut ws = Workspace::new();
    let mut views = AugmentedViews::new();
    let mut differ = 0;
    for i in 0..50 {
        aug.views(&sample(i), 0, i, &mut ws, &mut views);
        assert_eq!(views.strong.len(), 2);
        differ += usize::from(views.strong[0] != views.strong[1]);
    }
    assert!(differ >= 45, "strong views should almost always differ: {differ}/50");
}

#[test]
fn chains_reading_the_source_equal_copy_then_apply() {
    // `Chain::apply_from` lets a leading crop read the decoded sample in place; it must give
    // what copying the sample and applying the chain gives, with the same applied-ops log.
    let registry = AugmentRegistry::with_builtins();
    let mut configs = vec![AugmentConfig::cifar(), AugmentConfig::large(24), AugmentConfig::simclr(24)];
    // A chain whose first op has no override (the default `apply_from`).
    configs.push(AugmentConfig::from_toml_str("weak = [\"flip\", \"crop\"]\nstrong = [\"cutout\"]").unwrap());
    let mut ws = Workspace::new();
    for config in configs {
        for specs in [&config.weak, &config.strong] {
            let chain = registry.build_chain(specs).unwrap();
            for index in 0..60 {
                let src = sample(index);
                let key = DrawKey::new(77, 1, index, 0);
                let (mut direct, mut direct_log) = (Image::filled(3, 3, 3, 9).unwrap(), Vec::new());
                chain.apply_from(&src, &mut direct, key, &mut ws, &mut direct_log);
                let (mut copied, mut copied_log) = (src.clone(), Vec::new());
                chain.apply(&mut copied, key, &mut ws, &mut copied_log);
                assert_eq!(direct, copied, "{:?} sample {index}", chain);
                assert_eq!(direct_log, copied_log, "{:?} sample {index}", chain);
            }
        }
    }
}

#[test]
fn reused_buffers_give_the_same_result_as_fresh_ones() {
    let aug = augmenter(9);
    let mut ws = Workspace::new();
    let mut views = AugmentedViews::new();
    // Dirty the buffers with a large image first.
    aug.views(&Image::filled(64, 48, 3, 3).unwrap(), 0, 999, &mut ws, &mut views);
    aug.views(&sample(5), 2, 5, &mut ws, &mut views);
    let mut fresh = AugmentedViews::new();
    aug.views(&sample(5), 2, 5, &mut Workspace::new(), &mut fresh);
    assert_eq!(views.weak, fresh.weak);
    assert_eq!(views.strong, fresh.strong);
    assert_eq!(views.describe(), fresh.describe());
}
