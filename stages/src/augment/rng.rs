//! Counter-based randomness: every draw is a pure function of
//! (run seed, epoch, sample index, view, op slot).
//!
//! architecture.md ("Determinism") asks that the same seed give the same augmented pixels
//! whatever the number of workers or the order in which they pick up samples. A shared
//! generator (or one per worker) cannot give that; a generator *derived from the sample's
//! coordinates* can. We use ChaCha8 as a keyed stream cipher: the 256-bit key is
//! `seed | epoch | index | view` (four little-endian u64s) and the 64-bit stream number is
//! the op's slot in its chain. ChaCha needs no key schedule, so building one per op costs
//! about one 256-byte block of output, and distinct keys or streams give independent
//! streams.
//!
//! The draws ([`AugRng::uniform`], [`AugRng::below`], ...) are implemented here rather than
//! taken from `rand`'s distributions, so a `rand` upgrade cannot silently change the pixels
//! of a recorded run.

use rand_chacha::ChaCha8Rng;
use rand_core::{Infallible, Rng as _, SeedableRng, TryRng};

/// Coordinates of one augmented view: which run, epoch, sample and view it belongs to.
///
/// `view` 0 is the weak view; strong view `k` (0-based) is `1 + k` (see
/// [`Augmenter`](super::Augmenter)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DrawKey {
    /// The run's seed.
    pub seed: u64,
    /// Epoch (one pass over the unlabeled set).
    pub epoch: u64,
    /// Index of the sample in its data set.
    pub index: u64,
    /// Which view of the sample.
    pub view: u32,
}

impl DrawKey {
    /// The key of view `view` of sample `index` in `epoch` of the run seeded with `seed`.
    pub fn new(seed: u64, epoch: u64, index: u64, view: u32) -> DrawKey {
        DrawKey { seed, epoch, index, view }
    }

    /// The 32 key bytes: seed, epoch, index and view as little-endian u64s.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0..8].copy_from_slice(&self.seed.to_le_bytes());
        k[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        k[16..24].copy_from_slice(&self.index.to_le_bytes());
        k[24..32].copy_from_slice(&u64::from(self.view).to_le_bytes());
        k
    }

    /// The generator for op slot `slot` of this view.
    pub fn rng(self, slot: u64) -> AugRng {
        AugRng::new(self, slot)
    }
}

/// The random stream of one op slot of one view. Implements [`rand_core::TryRng`]
/// (hence `rand::Rng`), so plug-ins may also use `rand`'s distributions.
#[derive(Clone, Debug)]
pub struct AugRng {
    inner: ChaCha8Rng,
}

impl AugRng {
    /// The stream for op slot `slot` of the view `key`.
    pub fn new(key: DrawKey, slot: u64) -> AugRng {
        let mut inner = ChaCha8Rng::from_seed(key.to_bytes());
        inner.set_stream(slot);
        AugRng { inner }
    }

    /// 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    /// 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1), with 53 random bits (every value a multiple of 2^-53).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline]
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// True with probability `p` (always for p >= 1, never for p <= 0).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Uniform integer in [0, n), exactly uniform (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// When `n` is 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "AugRng::below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform integer in [lo, hi] (both ends included).
    ///
    /// # Panics
    /// When `lo > hi`.
    #[inline]
    pub fn int_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "AugRng::int_inclusive({lo}, {hi})");
        let span = (hi.wrapping_sub(lo) as u64).wrapping_add(1);
        if span == 0 {
            // The whole i64 range.
            return self.next_u64() as i64;
        }
        lo.wrapping_add(self.below(span) as i64)
    }

    /// Two independent standard normal values (Box-Muller).
    #[inline]
    pub fn normal_pair(&mut self) -> (f64, f64) {
        // 1 - uniform() is in (0, 1]: the logarithm stays finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        (r * theta.cos(), r * theta.sin())
    }

    /// One standard normal value.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        self.normal_pair().0
    }
}

impl TryRng for AugRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.inner.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.inner.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_coordinates_same_stream_and_any_coordinate_changes_it() {
        let key = DrawKey::new(7, 2, 1234, 1);
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = key.rng(3);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = key.rng(3);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        for other in [
            DrawKey::new(8, 2, 1234, 1).rng(3),
            DrawKey::new(7, 3, 1234, 1).rng(3),
            DrawKey::new(7, 2, 1235, 1).rng(3),
            DrawKey::new(7, 2, 1234, 0).rng(3),
            key.rng(4),
        ] {
            let mut o = other;
            assert_ne!(o.next_u64(), a[0]);
        }
    }

    #[test]
    fn below_and_int_inclusive_stay_in_range_and_hit_every_value() {
        let mut r = DrawKey::new(1, 0, 0, 0).rng(0);
        let mut seen = [0u32; 9];
        for _ in 0..9000 {
            let v = r.int_inclusive(1, 9);
            assert!((1..=9).contains(&v));
            seen[(v - 1) as usize] += 1;
        }
        // 1000 expected per value; 5 sigma is about 150.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
    }

    #[test]
    fn uniform_mean_and_normal_moments() {
        let mut r = DrawKey::new(2, 0, 0, 0).rng(0);
        let n = 20000;
        let mean = (0..n).map(|_| r.uniform()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    }
}
