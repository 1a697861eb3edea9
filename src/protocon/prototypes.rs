//! Class prototypes (protocon.md s.4.11 and s.5.3): per class the normalised mean of the
//! projections accumulated during an epoch — labeled weak projections under their labels and
//! reliable unlabeled weak projections under their pseudo-labels. They are constant within an
//! epoch and start at zero, so before the first epoch end the prototype logits are all zero and
//! `Lp_x`, `Lp_u` equal `log C` times their masks and pass no gradient.

use super::kmeans::normalize;
use super::{tensor_vec, ProtoConError};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Prototypes {
    classes: usize,
    dim: usize,
    /// `C x d`, the prototypes in use.
    p: Vec<f32>,
    /// `C x d` sums and `C` counts of this epoch.
    sum: Vec<f32>,
    count: Vec<u64>,
}

impl Prototypes {
    pub fn new(classes: usize, dim: usize) -> Self {
        Prototypes { classes, dim, p: vec![0.0; classes * dim], sum: vec![0.0; classes * dim], count: vec![0; classes] }
    }

    /// Add the rows of `q` (`n x d`) under `labels`.
    pub fn accumulate(&mut self, q: &[f32], labels: &[u32]) {
        let d = self.dim;
        for (row, &l) in q.chunks(d).zip(labels) {
            let l = l as usize;
            self.sum[l * d..(l + 1) * d].iter_mut().zip(row).for_each(|(s, x)| *s += x);
            self.count[l] += 1;
        }
    }

    /// `P_c = normalize(sum_c / count_c)` for classes seen this epoch (others keep theirs);
    /// the accumulators start over.
    pub fn end_epoch(&mut self) {
        let d = self.dim;
        for c in (0..self.classes).filter(|&c| self.count[c] > 0) {
            let n = self.count[c] as f32;
            let p = &mut self.p[c * d..(c + 1) * d];
            p.iter_mut().zip(&self.sum[c * d..(c + 1) * d]).for_each(|(p, s)| *p = s / n);
            normalize(p);
        }
        self.sum.fill(0.0);
        self.count.fill(0);
    }

    /// Each row of `q` (`n x d`)'s nearest prototype in use (largest `q . P_c`).
    pub fn nearest(&self, q: &[f32]) -> Vec<u32> {
        super::argmax_rows(&super::kmeans::similarities(q, &self.p, self.dim), self.classes)
    }

    /// The prototypes in use, `C x d` row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.p
    }

    pub fn sums(&self) -> &[f32] {
        &self.sum
    }

    pub fn counts(&self) -> &[u64] {
        &self.count
    }

    /// Whether any prototype is set (after the first epoch end with data).
    pub fn any(&self) -> bool {
        self.p.iter().any(|&x| x != 0.0)
    }

    pub fn bytes(&self) -> usize {
        8 * self.p.len() + 8 * self.count.len()
    }

    pub fn state(&self, prefix: &str) -> candle_core::Result<Vec<(String, Tensor)>> {
        let (c, d, dev) = (self.classes, self.dim, &Device::Cpu);
        Ok(vec![
            (format!("{prefix}prototypes"), Tensor::from_slice(&self.p, (c, d), dev)?),
            (format!("{prefix}sum"), Tensor::from_slice(&self.sum, (c, d), dev)?),
            (format!("{prefix}count"), Tensor::from_vec(self.count.iter().map(|&n| n as i64).collect::<Vec<_>>(), c, dev)?),
        ])
    }

    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<(), ProtoConError> {
        self.p = tensor_vec::<f32>(tensors, &format!("{prefix}prototypes"), self.p.len())?;
        self.sum = tensor_vec::<f32>(tensors, &format!("{prefix}sum"), self.sum.len())?;
        self.count = tensor_vec::<i64>(tensors, &format!("{prefix}count"), self.count.len())?.into_iter().map(|n| n as u64).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_then_normalise_and_unseen_classes_keep_theirs() {
        let mut p = Prototypes::new(3, 2);
        p.accumulate(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], &[0, 0, 2]);
        p.end_epoch();
        let s = 0.5f32.sqrt();
        assert_eq!(p.matrix(), [s, s, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(p.counts(), [0, 0, 0]);
        p.accumulate(&[0.0, -1.0], &[1]);
        p.end_epoch();
        assert_eq!(p.matrix(), [s, s, 0.0, -1.0, 0.0, 1.0]);
    }
}
