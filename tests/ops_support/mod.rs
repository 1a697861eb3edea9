//! Shared fixtures of the `ops_*` integration tests: a seeded generator, tensor builders, and
//! the two independent checks every fused op is held to (candle's stock ops, and central
//! finite differences).

#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};

/// SplitMix64: a seeded, dependency-free source of test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    pub fn values(&mut self, n: usize, scale: f64, offset: f64) -> Vec<f64> {
        (0..n).map(|_| offset + scale * self.uniform()).collect()
    }

    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn tensor(data: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub fn var(data: &[f64], shape: &[usize], dtype: DType) -> Var {
    Var::from_tensor(&tensor(data, shape, dtype)).unwrap()
}

pub fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest absolute difference relative to the largest magnitude of `want`: a relative error
/// that stays meaningful for the elements of `want` that happen to be near zero.
pub fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

/// Asserts `got` is within `tol` of `want` (see [`max_rel_err`]) and returns the error.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let err = max_rel_err(&to_f64(got), &to_f64(want));
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
    err
}

/// `Σ y * r`: a scalar loss whose gradient with respect to `y` is the fixed random `r`.
pub fn weighted_sum(y: &Tensor, r: &Tensor) -> Result<Tensor> {
    (y * r)?.sum_all()
}

/// Central differences of `loss` at `samples` random coordinates of `x`, against `grad`;
/// returns the largest error relative to the largest gradient magnitude.
pub fn finite_difference_err(
    rng: &mut Rng,
    x: &[f64],
    grad: &[f64],
    samples: usize,
    loss: impl Fn(&[f64]) -> f64,
) -> f64 {
    let h = 1e-6;
    let scale = grad.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    let mut point = x.to_vec();
    let mut worst = 0.0f64;
    for _ in 0..samples.min(x.len()).max(1) {
        let i = rng.index(x.len());
        point[i] = x[i] + h;
        let up = loss(&point);
        point[i] = x[i] - h;
        let down = loss(&point);
        point[i] = x[i];
        let numeric = (up - down) / (2.0 * h);
        worst = worst.max((numeric - grad[i]).abs() / scale);
    }
    worst
}

/// Records a measured error so `cargo test -- --nocapture` shows the margins, not only passes.
pub fn report(what: &str, err: f64) {
    println!("{what:<60} max rel err {err:.2e}");
}
