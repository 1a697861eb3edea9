//! The memory bank (protocon.md s.3): per unlabeled sample its last refined hard pseudo-label,
//! reliability, and per head its cluster and assignment score; per head the `K x C` cluster
//! pseudo-labels, recomputed at the end of every epoch (s.5.2).
//!
//! Compact on purpose: `i16` labels, a bit per reliability, `u16` cluster ids and `f16` scores
//! are `2 + 1/8 + 4H` bytes per sample, so ImageNet (1.28M images, 3 heads) fits in about 18 MB
//! instead of the 655 MB an embedding bank would take. The scores are only used as weights of the
//! cluster pseudo-labels, where `f16`'s 3 significant digits are plenty.

use super::ProtoConError;
use candle_core::{Device, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How cluster pseudo-labels are computed from members (protocon.md s.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterLabels {
    /// `Z[k][c] ∝ cnt_c * w_c` with `w_c` the summed scores of the class-c members (the
    /// script's default).
    #[default]
    Weighted,
    /// `Z[k][c] = cnt_c / |S_k|`.
    Plain,
}

/// Sizes of the clusters at an epoch end, per head.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSizes {
    pub min: Vec<u64>,
    pub max: Vec<u64>,
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    classes: usize,
    clusters: usize,
    /// Refined hard pseudo-label per sample, -1 = never seen.
    pl: Vec<i16>,
    /// Reliability bits, one per sample.
    rel: Vec<u64>,
    /// Per head: cluster id per sample.
    assign: Vec<Vec<u16>>,
    /// Per head: assignment score per sample.
    score: Vec<Vec<f16>>,
    /// Per head: `K x C` cluster pseudo-labels.
    z: Vec<Vec<f32>>,
}

impl MemoryBank {
    /// A bank for `len` unlabeled samples: never seen, cluster 0, uniform cluster pseudo-labels.
    pub fn new(len: usize, heads: usize, clusters: usize, classes: usize) -> Result<Self, ProtoConError> {
        if classes == 0 || classes > i16::MAX as usize {
            return Err(ProtoConError::Config(format!("the memory bank holds 1 to {} classes, not {classes}", i16::MAX)));
        }
        if clusters == 0 || clusters > u16::MAX as usize + 1 {
            return Err(ProtoConError::Config(format!("the memory bank holds 1 to {} clusters per head, not {clusters}", u16::MAX as usize + 1)));
        }
        Ok(MemoryBank {
            classes,
            clusters,
            pl: vec![-1; len],
            rel: vec![0; len.div_ceil(64)],
            assign: vec![vec![0; len]; heads],
            score: vec![vec![f16::ZERO; len]; heads],
            z: vec![vec![1.0 / classes as f32; clusters * classes]; heads],
        })
    }

    pub fn len(&self) -> usize {
        self.pl.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pl.is_empty()
    }

    pub fn heads(&self) -> usize {
        self.assign.len()
    }

    fn check_slot(&self, slot: u32) -> Result<usize, ProtoConError> {
        let s = slot as usize;
        if s >= self.len() {
            return Err(ProtoConError::Shape(format!("memory bank slot {slot} out of range (the bank holds {} samples)", self.len())));
        }
        Ok(s)
    }

    /// Record head `head`'s assignment of the samples in `slots`.
    pub fn record_assignment(&mut self, head: usize, slots: &[u32], cluster: &[u32], score: &[f32]) -> Result<(), ProtoConError> {
        for ((&slot, &c), &s) in slots.iter().zip(cluster).zip(score) {
            let i = self.check_slot(slot)?;
            self.assign[head][i] = c as u16;
            self.score[head][i] = f16::from_f32(s);
        }
        Ok(())
    }

    /// Record refined hard pseudo-labels and reliabilities (protocon.md s.4.11).
    pub fn record_labels(&mut self, slots: &[u32], labels: &[u32], reliable: &[bool]) -> Result<(), ProtoConError> {
        for ((&slot, &l), &r) in slots.iter().zip(labels).zip(reliable) {
            let i = self.check_slot(slot)?;
            self.pl[i] = l as i16;
            let (word, bit) = (i / 64, i % 64);
            self.rel[word] = (self.rel[word] & !(1 << bit)) | ((r as u64) << bit);
        }
        Ok(())
    }

    /// The cluster of `slot` in `head` as last recorded.
    pub fn assignment(&self, head: usize, slot: u32) -> u32 {
        self.assign[head][slot as usize] as u32
    }

    pub fn score(&self, head: usize, slot: u32) -> f32 {
        self.score[head][slot as usize].to_f32()
    }

    /// Last refined pseudo-label of `slot`, `None` if never seen.
    pub fn pseudo_label(&self, slot: u32) -> Option<u32> {
        let l = self.pl[slot as usize];
        (l >= 0).then_some(l as u32)
    }

    pub fn reliable(&self, slot: u32) -> bool {
        let i = slot as usize;
        self.rel[i / 64] >> (i % 64) & 1 == 1
    }

    /// Share of the samples seen so far whose last pseudo-label was reliable.
    pub fn reliable_fraction(&self) -> f64 {
        let seen = self.pl.iter().filter(|&&l| l >= 0).count();
        let reliable: u32 = self.rel.iter().map(|w| w.count_ones()).sum();
        if seen == 0 {
            0.0
        } else {
            reliable as f64 / seen as f64
        }
    }

    /// Cluster pseudo-label `Z[head][k]` (`C` values).
    pub fn cluster_label(&self, head: usize, k: u32) -> &[f32] {
        let c = self.classes;
        &self.z[head][k as usize * c..(k as usize + 1) * c]
    }

    /// Replace head `head`'s cluster pseudo-labels (`K x C`).
    pub fn set_cluster_labels(&mut self, head: usize, z: Vec<f32>) -> Result<(), ProtoConError> {
        if z.len() != self.clusters * self.classes {
            return Err(ProtoConError::Shape(format!("cluster pseudo-labels: expected {} x {}", self.clusters, self.classes)));
        }
        self.z[head] = z;
        Ok(())
    }

    /// `z = mean over heads of Z[h][a_h]` for one sample with clusters `clusters[h]`, added into
    /// `out` (`C` values, zeroed by the caller).
    pub fn refined_target(&self, clusters: &[u32], out: &mut [f32]) {
        let h = clusters.len() as f32;
        for (head, &k) in clusters.iter().enumerate() {
            out.iter_mut().zip(self.cluster_label(head, k)).for_each(|(o, z)| *o += z / h);
        }
    }

    /// End of an epoch (protocon.md s.5.2): recompute every head's cluster pseudo-labels from
    /// the members' pseudo-labels and scores. A cluster with a never-seen member keeps its
    /// previous row; an empty cluster gets zeros. Returns the cluster sizes.
    pub fn end_epoch(&mut self, mode: ClusterLabels) -> ClusterSizes {
        let (k, c) = (self.clusters, self.classes);
        let mut sizes = ClusterSizes { min: Vec::new(), max: Vec::new() };
        for head in 0..self.heads() {
            let mut cnt = vec![0u64; k * c];
            let mut weight = vec![0f32; k * c];
            let mut members = vec![0u64; k];
            let mut unseen = vec![false; k];
            for ((&a, &s), &l) in self.assign[head].iter().zip(&self.score[head]).zip(&self.pl) {
                let a = a as usize;
                members[a] += 1;
                if l < 0 {
                    unseen[a] = true;
                } else {
                    cnt[a * c + l as usize] += 1;
                    weight[a * c + l as usize] += s.to_f32();
                }
            }
            let z = &mut self.z[head];
            for j in 0..k {
                if unseen[j] {
                    continue;
                }
                let row = &mut z[j * c..(j + 1) * c];
                if members[j] == 0 {
                    row.fill(0.0);
                    continue;
                }
                let (cnt, weight) = (&cnt[j * c..(j + 1) * c], &weight[j * c..(j + 1) * c]);
                match mode {
                    ClusterLabels::Weighted => {
                        let total: f32 = cnt.iter().zip(weight).map(|(&n, &w)| n as f32 * w).sum();
                        row.iter_mut().zip(cnt.iter().zip(weight)).for_each(|(r, (&n, &w))| *r = n as f32 * w / total);
                    }
                    ClusterLabels::Plain => {
                        row.iter_mut().zip(cnt).for_each(|(r, &n)| *r = n as f32 / members[j] as f32);
                    }
                }
            }
            sizes.min.push(members.iter().copied().min().unwrap_or(0));
            sizes.max.push(members.iter().copied().max().unwrap_or(0));
        }
        sizes
    }

    /// Bytes held by the bank's arrays.
    pub fn bytes(&self) -> usize {
        2 * self.pl.len()
            + 8 * self.rel.len()
            + self.assign.iter().map(|a| 2 * a.len()).sum::<usize>()
            + self.score.iter().map(|s| 2 * s.len()).sum::<usize>()
            + self.z.iter().map(|z| 4 * z.len()).sum::<usize>()
    }

    /// The bank as named tensors, for checkpoints.
    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let (n, dev) = (self.len(), &Device::Cpu);
        let mut out = vec![
            (format!("{prefix}pseudo_labels"), Tensor::from_vec(self.pl.clone(), n, dev)?),
            (format!("{prefix}reliable"), Tensor::from_vec(self.rel.iter().map(|&w| w as i64).collect::<Vec<_>>(), self.rel.len(), dev)?),
        ];
        for h in 0..self.heads() {
            let assign: Vec<u32> = self.assign[h].iter().map(|&a| a as u32).collect();
            out.push((format!("{prefix}head{h}.assignments"), Tensor::from_vec(assign, n, dev)?));
            out.push((format!("{prefix}head{h}.scores"), Tensor::from_vec(self.score[h].clone(), n, dev)?));
            out.push((format!("{prefix}head{h}.cluster_labels"), Tensor::from_slice(&self.z[h], (self.clusters, self.classes), dev)?));
        }
        Ok(out)
    }

    /// Restore what [`state`](Self::state) saved.
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        use super::tensor_vec;
        self.pl = tensor_vec::<i16>(tensors, &format!("{prefix}pseudo_labels"), self.pl.len())?;
        self.rel = tensor_vec::<i64>(tensors, &format!("{prefix}reliable"), self.rel.len())?.into_iter().map(|w| w as u64).collect();
        for h in 0..self.heads() {
            let name = |what: &str| format!("{prefix}head{h}.{what}");
            let assign = tensor_vec::<u32>(tensors, &name("assignments"), self.len())?;
            if let Some(bad) = assign.iter().find(|&&a| a as usize >= self.clusters) {
                return Err(ProtoConError::Shape(format!("{}: cluster {bad} out of range (K = {})", name("assignments"), self.clusters)));
            }
            self.assign[h] = assign.into_iter().map(|a| a as u16).collect();
            self.score[h] = tensor_vec::<f16>(tensors, &name("scores"), self.len())?;
            self.z[h] = tensor_vec::<f32>(tensors, &name("cluster_labels"), self.clusters * self.classes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_labels_by_hand() {
        // 6 samples, 1 head, 3 clusters, 2 classes.
        let mut bank = MemoryBank::new(6, 1, 3, 2).unwrap();
        let slots = [0, 1, 2, 3, 4];
        bank.record_assignment(0, &slots, &[0, 0, 0, 2, 2], &[1.0, 1.0, 2.0, 0.5, 0.5]).unwrap();
        bank.record_labels(&slots, &[0, 1, 1, 1, 1], &[true, false, true, true, false]).unwrap();
        // Slot 5 was never seen and sits in cluster 0 (the initial assignment): cluster 0 keeps
        // its uniform row. Cluster 1 is empty: zeros. Cluster 2: both class 1.
        let mut plain = bank.clone();
        let sizes = bank.end_epoch(ClusterLabels::Weighted);
        assert_eq!(bank.cluster_label(0, 0), [0.5, 0.5]);
        assert_eq!(bank.cluster_label(0, 1), [0.0, 0.0]);
        assert_eq!(bank.cluster_label(0, 2), [0.0, 1.0]);
        assert_eq!(sizes, ClusterSizes { min: vec![0], max: vec![4] });
        // Once slot 5 is seen, cluster 0 = {0: class 0 w 1; 1, 2: class 1 w 3}:
        // weighted (1*1, 2*3)/7, plain (1, 2)/3.
        bank.record_labels(&[5], &[1], &[false]).unwrap();
        bank.record_assignment(0, &[5], &[1], &[0.25]).unwrap();
        bank.end_epoch(ClusterLabels::Weighted);
        assert_eq!(bank.cluster_label(0, 0), [1.0 / 7.0, 6.0 / 7.0]);
        assert_eq!(bank.cluster_label(0, 1), [0.0, 1.0]);
        plain.record_labels(&[5], &[1], &[false]).unwrap();
        plain.record_assignment(0, &[5], &[1], &[0.25]).unwrap();
        plain.end_epoch(ClusterLabels::Plain);
        assert_eq!(plain.cluster_label(0, 0), [1.0 / 3.0, 2.0 / 3.0]);
        assert!((bank.reliable_fraction() - 3.0 / 6.0).abs() < 1e-12);
        assert!(bank.reliable(0) && !bank.reliable(1));
    }

    #[test]
    fn state_round_trip_and_size() {
        let mut bank = MemoryBank::new(100, 2, 5, 3).unwrap();
        bank.record_assignment(1, &[7, 99], &[4, 2], &[0.3, -0.7]).unwrap();
        bank.record_labels(&[7, 99], &[2, 0], &[true, true]).unwrap();
        bank.end_epoch(ClusterLabels::Weighted);
        let tensors: HashMap<_, _> = bank.state("bank.").unwrap().into_iter().collect();
        let mut back = MemoryBank::new(100, 2, 5, 3).unwrap();
        back.load_state("bank.", &tensors).unwrap();
        assert_eq!(back, bank);
        let err = MemoryBank::new(101, 2, 5, 3).unwrap().load_state("bank.", &tensors).unwrap_err().to_string();
        assert!(err.contains("bank.pseudo_labels"), "{err}");
        // 2 + 4 * 2 bytes per sample, 2 words of bits, 2 x 5 x 3 f32.
        assert_eq!(bank.bytes(), 100 * 10 + 16 + 120);
        assert!(bank.record_labels(&[100], &[0], &[true]).is_err());
    }
}
