//! [`AugmentRegistry`]: augmentation names a configuration may use, each with a factory
//! that turns the op's TOML parameters into an [`Augmentation`].

use super::{
    noise, AugmentError, Augmentation, Chain, CropFlip, Cutout, HorizontalFlip, OpSpec, RandAugment, RandomResizedCrop,
    ReflectCrop, SimclrStrong,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Builds one augmentation from its parameters (the op's TOML table without `name`).
pub type AugmentFactory = dyn Fn(&toml::Table) -> Result<Box<dyn Augmentation>, AugmentError> + Send + Sync;

/// Named augmentation factories.
///
/// [`AugmentRegistry::with_builtins`] (also `Default`) knows:
///
/// | name                  | op                                        |
/// |-----------------------|-------------------------------------------|
/// | `identity`            | nothing                                   |
/// | `crop`                | [`ReflectCrop`]                           |
/// | `flip`                | [`HorizontalFlip`]                        |
/// | `crop_flip`           | [`CropFlip`] (the CIFAR weak view)        |
/// | `random_resized_crop` | [`RandomResizedCrop`]                     |
/// | `randaugment`         | [`RandAugment`]                           |
/// | `cutout`              | [`Cutout`]                                |
/// | `simclr`              | [`SimclrStrong`]                          |
/// | `gaussian_noise`      | [`noise::GaussianNoise`] (example plug-in) |
///
/// Custom ops are added with [`AugmentRegistry::register_params`] (typed parameters) or
/// [`AugmentRegistry::register`] (raw TOML table).
pub struct AugmentRegistry {
    factories: BTreeMap<String, Box<AugmentFactory>>,
}

/// Parameters of ops that take none: any key is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl AugmentRegistry {
    /// A registry that knows no op.
    pub fn empty() -> AugmentRegistry {
        AugmentRegistry { factories: BTreeMap::new() }
    }

    /// A registry with the built-in ops (see the type's table).
    pub fn with_builtins() -> AugmentRegistry {
        let mut r = AugmentRegistry::empty();
        r.register_params("identity", |_: NoParams| Ok(|_: &mut super::Image, _: &mut super::AugContext<'_>| {}));
        r.register_params("crop", ReflectCrop::validated);
        r.register_params("flip", HorizontalFlip::validated);
        r.register_params("crop_flip", CropFlip::validated);
        r.register_params("random_resized_crop", RandomResizedCrop::validated);
        r.register_params("randaugment", RandAugment::validated);
        r.register_params("cutout", Cutout::validated);
        r.register_params("simclr", SimclrStrong::validated);
        noise::register(&mut r);
        r
    }

    /// Registers (or replaces) `name` with a factory reading the raw parameter table.
    ///
    /// * `name`: what a configuration writes, e.g. `"gaussian_noise"`.
    /// * `factory`: receives the op's table minus `name` (empty for a bare name) and returns
    ///   the op, or an error naming the problem.
    pub fn register<F>(&mut self, name: impl Into<String>, factory: F)
    where
        F: Fn(&toml::Table) -> Result<Box<dyn Augmentation>, AugmentError> + Send + Sync + 'static,
    {
        self.factories.insert(name.into(), Box::new(factory));
    }

    /// Registers (or replaces) `name` with typed parameters: the table is deserialized into
    /// `P` (use `#[serde(default, deny_unknown_fields)]` so misspelt keys are errors and a
    /// bare name means defaults), then `build` checks it and makes the op.
    pub fn register_params<P, A, F>(&mut self, name: &str, build: F)
    where
        P: DeserializeOwned,
        A: Augmentation + 'static,
        F: Fn(P) -> Result<A, AugmentError> + Send + Sync + 'static,
    {
        let op = name.to_string();
        self.register(name, move |table: &toml::Table| {
            let params: P = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e| AugmentError::bad_params(&op, e.to_string().trim_end()))?;
            Ok(Box::new(build(params)?) as Box<dyn Augmentation>)
        });
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds the op a spec names.
    ///
    /// Errors: [`AugmentError::UnknownOp`] (listing the known names) or the factory's error.
    pub fn build(&self, spec: &OpSpec) -> Result<Box<dyn Augmentation>, AugmentError> {
        match self.factories.get(&spec.name) {
            Some(factory) => factory(&spec.params),
            None => Err(AugmentError::UnknownOp {
                name: spec.name.clone(),
                known: self.names().map(str::to_string).collect(),
            }),
        }
    }

    /// Builds a chain, one element per spec, in order.
    pub fn build_chain(&self, specs: &[OpSpec]) -> Result<Chain, AugmentError> {
        let mut chain = Chain::new();
        for spec in specs {
            chain.push_boxed(spec.name.as_str(), self.build(spec)?);
        }
        Ok(chain)
    }
}

impl Default for AugmentRegistry {
    fn default() -> Self {
        AugmentRegistry::with_builtins()
    }
}

impl fmt::Debug for AugmentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
