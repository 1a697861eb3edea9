//! [`AugmentConfig`]: the `[augment]` table of a run configuration.
//!
//! ```toml
//! [augment]
//! weak = ["crop_flip"]
//! strong = ["crop", { name = "randaugment", n = 2, p = 0.5 }, "flip", "cutout"]
//! strong_views = 1
//! ```
//!
//! Each chain element is an op name, or a table with `name` and the op's parameters; the
//! names are looked up in an [`AugmentRegistry`].

use super::{AugmentError, AugmentRegistry, Augmenter};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One chain element in a configuration: an op name and its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    /// The registered op name.
    pub name: String,
    /// Parameters (the element's table without `name`); empty for a bare name.
    pub params: toml::Table,
}

impl OpSpec {
    /// A bare op name (default parameters).
    pub fn named(name: &str) -> OpSpec {
        OpSpec { name: name.to_string(), params: toml::Table::new() }
    }

    /// Sets one parameter.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> OpSpec {
        self.params.insert(key.to_string(), value.into());
        self
    }
}

impl<'de> Deserialize<'de> for OpSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OpSpec, D::Error> {
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = OpSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an augmentation name, or a table with `name` and the op's parameters")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OpSpec, E> {
                Ok(OpSpec::named(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OpSpec, A::Error> {
                let mut name = None;
                let mut params = toml::Table::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "name" {
                        if name.is_some() {
                            return Err(de::Error::duplicate_field("name"));
                        }
                        name = Some(map.next_value::<String>()?);
                    } else {
                        let value = map.next_value::<toml::Value>()?;
                        params.insert(key, value);
                    }
                }
                let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
                Ok(OpSpec { name, params })
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

impl Serialize for OpSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.params.is_empty() {
            return serializer.serialize_str(&self.name);
        }
        let mut map = serializer.serialize_map(Some(self.params.len() + 1))?;
        map.serialize_entry("name", &self.name)?;
        for (k, v) in &self.params {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Weak and strong chains and how many strong views each sample gets.
///
/// Defaults are the CIFAR setting of protocon.md s.2 ([`AugmentConfig::cifar`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Ops of the weak view, in order.
    #[serde(default = "default_weak")]
    pub weak: Vec<OpSpec>,
    /// Ops of every strong view, in order.
    #[serde(default = "default_strong")]
    pub strong: Vec<OpSpec>,
    /// Strong views per sample (ProtoCon and FixMatch use 1).
    #[serde(default = "default_strong_views")]
    pub strong_views: usize,
}

fn default_weak() -> Vec<OpSpec> {
    AugmentConfig::cifar().weak
}

fn default_strong() -> Vec<OpSpec> {
    AugmentConfig::cifar().strong
}

fn default_strong_views() -> usize {
    1
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig::cifar()
    }
}

impl AugmentConfig {
    /// CIFAR-size images: weak = reflect-pad crop + flip; strong = crop, RandAugment
    /// (n = 2, p = 0.5), flip, Cutout (16 px at 32x32).
    pub fn cifar() -> AugmentConfig {
        AugmentConfig {
            weak: vec![OpSpec::named("crop_flip")],
            strong: ["crop", "randaugment", "flip", "cutout"].map(OpSpec::named).to_vec(),
            strong_views: 1,
        }
    }

    /// Large images with the FixMatch strong view: weak = RandomResizedCrop(`size`) + flip;
    /// strong = RandomResizedCrop(`size`), RandAugment, flip, Cutout.
    pub fn large(size: usize) -> AugmentConfig {
        let rrc = OpSpec::named("random_resized_crop").with("size", size as i64);
        AugmentConfig {
            weak: vec![rrc.clone(), OpSpec::named("flip")],
            strong: vec![rrc, OpSpec::named("randaugment"), OpSpec::named("flip"), OpSpec::named("cutout")],
            strong_views: 1,
        }
    }

    /// Large images with the SimCLR strong view (protocon.md s.2, ImageNet / DomainNet):
    /// weak = RandomResizedCrop(`size`) + flip; strong = RandomResizedCrop(`size`) + SimCLR
    /// color/blur ops (with their own flip).
    pub fn simclr(size: usize) -> AugmentConfig {
        let rrc = OpSpec::named("random_resized_crop").with("size", size as i64);
        AugmentConfig {
            weak: vec![rrc.clone(), OpSpec::named("flip")],
            strong: vec![rrc, OpSpec::named("simclr")],
            strong_views: 1,
        }
    }

    /// Parses the contents of an `[augment]` table (keys `weak`, `strong`, `strong_views`).
    pub fn from_toml_str(text: &str) -> Result<AugmentConfig, AugmentError> {
        toml::from_str(text).map_err(|e| AugmentError::Config(e.to_string().trim_end().to_string()))
    }

    /// Builds the [`Augmenter`] for a run seeded with `seed`, looking every op up in
    /// `registry` (errors name the unknown op or the bad parameter).
    pub fn build(&self, seed: u64, registry: &AugmentRegistry) -> Result<Augmenter, AugmentError> {
        let weak = registry.build_chain(&self.weak)?;
        let strong = registry.build_chain(&self.strong)?;
        Ok(Augmenter::new(seed, weak, strong).with_strong_views(self.strong_views))
    }
}
