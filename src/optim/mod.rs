//! Optimizers. candle-nn's SGD has no momentum; ProtoCon and FixMatch train with Nesterov SGD.

mod sgd;

pub use sgd::{Sgd, SgdConfig};
