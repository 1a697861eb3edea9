//! Online constrained k-means (protocon.md s.4.2): per head, assignment with duals, dual
//! ascent towards a lower bound on cluster sizes, and a running-mean centroid update whose
//! counters reset every epoch.
//!
//! The duals are what keep clusters alive on imbalanced data: a cluster that receives fewer than
//! `gamma / K` of a batch gains `rho_k`, which raises every sample's score for it until it wins
//! some. Plain k-means (`dual_lr = 0`) leaves clusters empty on the same data; the tests check
//! both.

use super::ProtoConError;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::HashMap;

/// Settings of the clustering (protocon.md s.4.2 and s.6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansConfig {
    /// Clusters per head, `K`.
    pub clusters: usize,
    /// Independent clusterings, `H`.
    pub heads: usize,
    /// Projection dimension, `d`.
    pub dim: usize,
    /// Dual learning rate `lambda` (20); 0 gives plain online k-means.
    pub dual_lr: f32,
    /// Lower bound on cluster sizes as a share of the uniform size, `gamma` (0.9).
    pub gamma: f32,
}

/// One head's assignment of a batch: cluster ids and their scores `q . c_k + rho_k`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub cluster: Vec<u32>,
    pub score: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
struct Head {
    /// `K x d`, rows of unit length.
    centroids: Vec<f32>,
    /// `K`, the duals `rho`.
    duals: Vec<f32>,
    /// `K`, samples averaged into each centroid this epoch (`m`).
    counts: Vec<u64>,
}

/// `H` independent constrained k-means clusterings of `d`-dimensional unit vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstrainedKMeans {
    cfg: KMeansConfig,
    heads: Vec<Head>,
}

pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    // torch.nn.functional.normalize's eps: a zero vector stays zero.
    let norm = norm.max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// `q . c^T` for `b x d` rows against `k x d` rows (row-major), as `b x k`.
pub fn similarities(q: &[f32], c: &[f32], dim: usize) -> Vec<f32> {
    let (b, k) = (q.len() / dim, c.len() / dim);
    assert_eq!((q.len() % dim, c.len() % dim), (0, 0), "rows of {dim} values");
    let mut out = vec![0f32; b * k];
    if b == 0 || k == 0 {
        return out;
    }
    // SAFETY: `out` holds b x k values with row stride k; `q` is b x d (row stride d) and `c`
    // read transposed is d x k (row stride 1, column stride d); all lengths are checked above.
    unsafe {
        gemm::gemm(
            b,
            k,
            dim,
            out.as_mut_ptr(),
            1,
            k as isize,
            false,
            q.as_ptr(),
            1,
            dim as isize,
            c.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    out
}

impl ConstrainedKMeans {
    /// Centroids drawn as random unit vectors from `seed`, duals and counters at zero.
    pub fn new(cfg: KMeansConfig, seed: u64) -> Result<Self, ProtoConError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6d_6561_6e73);
        let centroids = (0..cfg.heads)
            .map(|_| {
                let mut c: Vec<f32> = (0..cfg.clusters * cfg.dim).map(|_| StandardNormal.sample(&mut rng)).collect();
                c.chunks_mut(cfg.dim).for_each(normalize);
                c
            })
            .collect();
        Self::with_centroids(cfg, centroids)
    }

    /// Start from given centroids (`heads` vectors of `K x d` values; rows are normalised).
    pub fn with_centroids(cfg: KMeansConfig, centroids: Vec<Vec<f32>>) -> Result<Self, ProtoConError> {
        if cfg.clusters == 0 || cfg.heads == 0 || cfg.dim == 0 {
            return Err(ProtoConError::Config(format!(
                "clustering needs at least one head, cluster and dimension (got {} heads, {} clusters, dimension {})",
                cfg.heads, cfg.clusters, cfg.dim
            )));
        }
        if centroids.len() != cfg.heads || centroids.iter().any(|c| c.len() != cfg.clusters * cfg.dim) {
            return Err(ProtoConError::Shape(format!(
                "centroids: expected {} heads of {} x {}",
                cfg.heads, cfg.clusters, cfg.dim
            )));
        }
        let heads = centroids
            .into_iter()
            .map(|mut c| {
                c.chunks_mut(cfg.dim).for_each(normalize);
                Head { centroids: c, duals: vec![0.0; cfg.clusters], counts: vec![0; cfg.clusters] }
            })
            .collect();
        Ok(ConstrainedKMeans { cfg, heads })
    }

    pub fn config(&self) -> &KMeansConfig {
        &self.cfg
    }

    /// Assign each row of `q` (`b x d`, unit rows) in every head: `argmax_k q . c_k + rho_k`
    /// (the first index on ties, as `torch.argmax`), with that maximum as the score.
    pub fn assign(&self, q: &[f32]) -> Vec<Assignment> {
        let k = self.cfg.clusters;
        self.heads
            .iter()
            .map(|head| {
                let sims = similarities(q, &head.centroids, self.cfg.dim);
                let (mut cluster, mut score) = (Vec::with_capacity(sims.len() / k), Vec::with_capacity(sims.len() / k));
                for row in sims.chunks(k) {
                    let (mut best, mut best_score) = (0, f32::NEG_INFINITY);
                    for (j, (s, rho)) in row.iter().zip(&head.duals).enumerate() {
                        let v = s + rho;
                        if v > best_score {
                            (best, best_score) = (j, v);
                        }
                    }
                    cluster.push(best as u32);
                    score.push(best_score);
                }
                Assignment { cluster, score }
            })
            .collect()
    }

    /// Dual ascent and the running-mean centroid update for a batch `q` with the assignments
    /// [`assign`](Self::assign) made before this update.
    pub fn update(&mut self, q: &[f32], assignments: &[Assignment]) {
        let (k, d) = (self.cfg.clusters, self.cfg.dim);
        let b = q.len() / d;
        if b == 0 {
            return;
        }
        for (head, a) in self.heads.iter_mut().zip(assignments) {
            let mut n = vec![0u64; k];
            let mut sums = vec![0f32; k * d];
            for (row, &c) in q.chunks(d).zip(&a.cluster) {
                n[c as usize] += 1;
                sums[c as usize * d..(c as usize + 1) * d].iter_mut().zip(row).for_each(|(s, x)| *s += x);
            }
            for (j, rho) in head.duals.iter_mut().enumerate() {
                *rho += self.cfg.dual_lr * (self.cfg.gamma / k as f32 - n[j] as f32 / b as f32);
                if self.cfg.gamma < 1.0 {
                    *rho = rho.max(0.0);
                }
            }
            for j in (0..k).filter(|&j| n[j] > 0) {
                let (m, m_next) = (head.counts[j] as f32, (head.counts[j] + n[j]) as f32);
                let c = &mut head.centroids[j * d..(j + 1) * d];
                c.iter_mut().zip(&sums[j * d..(j + 1) * d]).for_each(|(c, s)| *c = (m / m_next) * *c + s / m_next);
                normalize(c);
                head.counts[j] += n[j];
            }
        }
    }

    /// Assign, then update; returns the assignments.
    pub fn step(&mut self, q: &[f32]) -> Vec<Assignment> {
        let a = self.assign(q);
        self.update(q, &a);
        a
    }

    /// End of an epoch: the running means start over (protocon.md s.5.1).
    pub fn end_epoch(&mut self) {
        self.heads.iter_mut().for_each(|h| h.counts.fill(0));
    }

    pub fn centroids(&self, head: usize) -> &[f32] {
        &self.heads[head].centroids
    }

    pub fn duals(&self, head: usize) -> &[f32] {
        &self.heads[head].duals
    }

    pub fn counts(&self, head: usize) -> &[u64] {
        &self.heads[head].counts
    }

    /// Bytes of state held (centroids, duals, counters).
    pub fn bytes(&self) -> usize {
        self.heads.iter().map(|h| 4 * h.centroids.len() + 4 * h.duals.len() + 8 * h.counts.len()).sum()
    }

    /// The state as named tensors, for checkpoints.
    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let (k, d, dev) = (self.cfg.clusters, self.cfg.dim, &Device::Cpu);
        let mut out = Vec::new();
        for (i, h) in self.heads.iter().enumerate() {
            out.push((format!("{prefix}head{i}.centroids"), Tensor::from_slice(&h.centroids, (k, d), dev)?));
            out.push((format!("{prefix}head{i}.duals"), Tensor::from_slice(&h.duals, k, dev)?));
            let counts: Vec<i64> = h.counts.iter().map(|&c| c as i64).collect();
            out.push((format!("{prefix}head{i}.counts"), Tensor::from_vec(counts, k, dev)?));
        }
        Ok(out)
    }

    /// Restore what [`state`](Self::state) saved.
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        for (i, h) in self.heads.iter_mut().enumerate() {
            let name = |what: &str| format!("{prefix}head{i}.{what}");
            h.centroids = super::tensor_vec::<f32>(tensors, &name("centroids"), h.centroids.len())?;
            h.duals = super::tensor_vec::<f32>(tensors, &name("duals"), h.duals.len())?;
            h.counts = super::tensor_vec::<i64>(tensors, &name("counts"), h.counts.len())?.into_iter().map(|c| c as u64).collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(clusters: usize, dual_lr: f32) -> KMeansConfig {
        KMeansConfig { clusters, heads: 1, dim: 2, dual_lr, gamma: 0.9 }
    }

    #[test]
    fn one_step_by_hand() {
        // Centroids e1, e2; points (1,0) and (0.6,0.8) both closer to e1? (0.6 vs 0.8): the
        // second goes to e2.
        let mut km = ConstrainedKMeans::with_centroids(cfg(2, 20.0), vec![vec![1.0, 0.0, 0.0, 1.0]]).unwrap();
        let q = [1.0, 0.0, 0.6, 0.8, 0.8, 0.6];
        let a = km.step(&q);
        assert_eq!(a[0].cluster, [0, 1, 0]);
        assert_eq!(a[0].score, [1.0, 0.8, 0.8]);
        // n = (2, 1), b = 3: rho_0 = max(0, 20 (0.45 - 2/3)) = 0, rho_1 = 20 (0.45 - 1/3) = 7/3.
        assert_eq!(km.duals(0)[0], 0.0);
        assert!((km.duals(0)[1] - 20.0 * (0.45 - 1.0 / 3.0)).abs() < 1e-6);
        // First epoch: m = 0, so c_0 = normalize(mean of (1,0), (0.8,0.6)) = normalize(0.9, 0.3).
        let n = (0.9f32 * 0.9 + 0.3 * 0.3).sqrt();
        assert!((km.centroids(0)[0] - 0.9 / n).abs() < 1e-6 && (km.centroids(0)[1] - 0.3 / n).abs() < 1e-6);
        assert_eq!(&km.centroids(0)[2..], &[0.6, 0.8]);
        assert_eq!(km.counts(0), [2, 1]);
        // The dual now pulls the next point towards cluster 1 although it is nearer to c_0.
        assert_eq!(km.assign(&[1.0, 0.0])[0].cluster, [1]);
    }

    #[test]
    fn running_mean_weights_by_counts() {
        let mut km = ConstrainedKMeans::with_centroids(cfg(1, 0.0), vec![vec![1.0, 0.0]]).unwrap();
        km.step(&[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        // m = 3, then one point (0, 1): c = normalize(3/4 (1,0) + (0,1)/4) = normalize(3, 1).
        km.step(&[0.0, 1.0]);
        let n = 10f32.sqrt();
        assert!((km.centroids(0)[0] - 3.0 / n).abs() < 1e-6 && (km.centroids(0)[1] - 1.0 / n).abs() < 1e-6);
        km.end_epoch();
        assert_eq!(km.counts(0), [0]);
    }
}
