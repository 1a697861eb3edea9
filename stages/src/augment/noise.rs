//! Example plug-in: additive Gaussian noise (registered as `gaussian_noise`).
//!
//! Written only against the public plug-in surface ([`Augmentation`], [`AugContext`],
//! [`Image`], [`AugmentRegistry::register_params`]) exactly as code outside this crate would
//! write it, to show (and test) that a custom augmentation needs nothing else:
//!
//! ```toml
//! strong = ["crop", "randaugment", "flip", "cutout", { name = "gaussian_noise", std = 8.0 }]
//! ```

use crate::augment::{AugContext, AugmentError, AugmentRegistry, Augmentation, Image};
use serde::Deserialize;

/// Adds N(0, std^2) noise to every byte, rounded and clipped, with probability `p` per image.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaussianNoise {
    /// Standard deviation in pixel levels (0..=255 scale).
    pub std: f64,
    /// Probability of adding noise to an image.
    pub p: f64,
}

impl Default for GaussianNoise {
    fn default() -> Self {
        GaussianNoise { std: 8.0, p: 1.0 }
    }
}

impl Augmentation for GaussianNoise {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        if !ctx.rng().chance(self.p) {
            return ctx.record_skipped();
        }
        let mut values = img.data_mut().chunks_exact_mut(2);
        for pair in &mut values {
            let (a, b) = ctx.rng().normal_pair();
            pair[0] = (f64::from(pair[0]) + a * self.std).round().clamp(0.0, 255.0) as u8;
            pair[1] = (f64::from(pair[1]) + b * self.std).round().clamp(0.0, 255.0) as u8;
        }
        if let [last] = values.into_remainder() {
            let a = ctx.rng().normal();
            *last = (f64::from(*last) + a * self.std).round().clamp(0.0, 255.0) as u8;
        }
        ctx.record(Some(self.std as f32));
    }
}

/// Registers `gaussian_noise` in `registry`.
pub fn register(registry: &mut AugmentRegistry) {
    registry.register_params("gaussian_noise", |noise: GaussianNoise| {
        if !(noise.std >= 0.0 && noise.std.is_finite()) {
            return Err(AugmentError::bad_params("gaussian_noise", format!("std {} must be >= 0", noise.std)));
        }
        if !(0.0..=1.0).contains(&noise.p) {
            return Err(AugmentError::bad_params("gaussian_noise", format!("p {} is not in [0, 1]", noise.p)));
        }
        Ok(noise)
    });
}
