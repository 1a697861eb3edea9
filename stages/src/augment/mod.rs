//! Native weak and strong augmentation (protocon.md s.2) on 8-bit HWC images.
//!
//! * [`Image`]: interleaved gray or RGB pixels.
//! * Ops with PIL semantics, byte-identical to Pillow where Pillow defines the op:
//!   [`tone`] (AutoContrast, Equalize, Posterize, Solarize), [`enhance`] (Brightness, Color,
//!   Contrast, Sharpness), [`geometry`] (Rotate, Shear, Translate, flips); plus [`crop`]
//!   (reflect-pad crop, RandomResizedCrop), [`cutout`], [`blur`], [`simclr`].
//! * [`RandAugment`]: the FixMatch 14-op pool with its magnitude table.
//! * Randomness: [`DrawKey`] / [`AugRng`], a counter-based stream per
//!   (seed, epoch, sample, view, op slot), so outputs do not depend on worker count or order.
//! * Plug-ins: [`Augmentation`] (one method), [`AugmentRegistry`] (names -> factories),
//!   [`AugmentConfig`] (the `[augment]` TOML table) -> [`Chain`]s -> [`Augmenter`].
//! * [`noise`]: an example plug-in written against the public API only.
//!
//! ```
//! use protocon_stages::augment::{AugmentConfig, AugmentRegistry, AugmentedViews, Image, Workspace};
//!
//! let config = AugmentConfig::from_toml_str(r#"
//!     weak = ["crop_flip"]
//!     strong = ["crop", { name = "randaugment", n = 2, p = 0.5 }, "flip", "cutout"]
//! "#).unwrap();
//! let augmenter = config.build(42, &AugmentRegistry::with_builtins()).unwrap();
//!
//! let sample = Image::filled(32, 32, 3, 200).unwrap();
//! let (mut ws, mut views) = (Workspace::new(), AugmentedViews::new());
//! augmenter.views(&sample, /* epoch */ 0, /* index */ 17, &mut ws, &mut views);
//! assert_eq!(views.strong.len(), 1);
//! assert_eq!((views.weak.width(), views.weak.height()), (32, 32));
//! println!("{}", views.describe());
//! ```

mod augmentation;
mod augmenter;
pub mod blur;
mod chain;
pub mod codec;
mod config;
pub mod crop;
pub mod cutout;
pub mod enhance;
mod error;
pub mod geometry;
mod image;
pub mod noise;
pub mod randaugment;
mod registry;
mod rng;
pub mod simclr;
pub mod tone;

pub use augmentation::{AppliedOp, AugContext, Augmentation, OpName, Workspace};
pub use augmenter::{AugmentedViews, Augmenter};
pub use chain::Chain;
pub use config::{AugmentConfig, OpSpec};
pub use crop::{CropBox, CropFlip, HorizontalFlip, RandomResizedCrop, ReflectCrop};
pub use cutout::Cutout;
pub use error::AugmentError;
pub use image::Image;
pub use noise::GaussianNoise;
pub use randaugment::{OpParam, RandAugment, RandAugmentOp};
pub use registry::{AugmentFactory, AugmentRegistry};
pub use rng::{AugRng, DrawKey};
pub use simclr::SimclrStrong;
