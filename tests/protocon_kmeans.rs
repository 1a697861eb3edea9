//! Constrained k-means on deliberately imbalanced data (protocon.md s.4.2): 90% of the points in
//! one tight blob. After one epoch the dual ascent has given every cluster at least about
//! `gamma * N / K` members; plain online k-means (dual learning rate 0) on the same data, from
//! the same centroids, leaves clusters empty.

use protocon::protocon::{ClusterLabels, ConstrainedKMeans, KMeansConfig, MemoryBank};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const N: usize = 4000;
const K: usize = 10;
const D: usize = 8;
const BATCH: usize = 100;

/// Unit vectors: 90% around e0, the rest around e1, each with a little noise.
fn imbalanced(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    let mut q = Vec::with_capacity(N * D);
    for i in 0..N {
        let mut v: Vec<f32> = (0..D).map(|_| noise.sample(&mut rng)).collect();
        v[if i % 10 == 9 { 1 } else { 0 }] += 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        q.extend(v.iter().map(|x| x / n));
    }
    q
}

/// One epoch of online clustering in batches; the cluster sizes recorded in a bank.
fn epoch_sizes(dual_lr: f32) -> (u64, u64) {
    let cfg = KMeansConfig { clusters: K, heads: 1, dim: D, dual_lr, gamma: 0.9 };
    let mut km = ConstrainedKMeans::new(cfg, 7).unwrap();
    let mut bank = MemoryBank::new(N, 1, K, 2).unwrap();
    let q = imbalanced(3);
    for (b, batch) in q.chunks(BATCH * D).enumerate() {
        let slots: Vec<u32> = (b * BATCH..(b + 1) * BATCH).map(|i| i as u32).collect();
        let a = km.step(batch);
        bank.record_assignment(0, &slots, &a[0].cluster, &a[0].score).unwrap();
        bank.record_labels(&slots, &vec![0; BATCH], &vec![true; BATCH]).unwrap();
    }
    let sizes = bank.end_epoch(ClusterLabels::Plain);
    (sizes.min[0], sizes.max[0])
}

#[test]
fn duals_keep_every_cluster_populated_on_imbalanced_data() {
    let (min, max) = epoch_sizes(20.0);
    let floor = 0.9 * N as f64 / K as f64;
    // "At least about gamma N / K": the bound holds on average over the epoch's batches, so
    // allow 20% below it.
    assert!(min as f64 >= 0.8 * floor, "constrained: smallest cluster {min}, want about {floor} or more (largest {max})");
    let (plain_min, plain_max) = epoch_sizes(0.0);
    assert_eq!(plain_min, 0, "plain k-means should leave clusters empty (largest {plain_max})");
    assert!(plain_max as f64 >= 0.5 * N as f64, "plain k-means puts the big blob in one cluster ({plain_max})");
}
