//! Built-in protocon stages. Each module holds one stage (or one concept), its configuration
//! and its tests.
//!
//! * [`sampler`]: which samples each step uses (a source).
//! * [`views`]: weak and strong augmentation worker pools that collate the batch.
//! * [`samples`]: where those pools get pixels: an in-memory data set or files decoded per visit.
//! * [`compute`]: forward, losses, backward, optimizer, EMA, evaluation, checkpoints.
//! * [`augment`]: the augmentation ops, chains and plug-in registry the view stages run.

pub mod augment;
pub mod batch;
pub mod cluster;
pub mod compute;
pub mod metrics;
pub mod sampler;
pub mod samples;
pub mod views;
