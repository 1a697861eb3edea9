//! Built-in protocon stages. Each module holds one stage (or one concept), its configuration
//! and its tests.
//!
//! * [`sampler`]: which samples each step uses (a source).
//! * [`views`]: weak and strong augmentation worker pools that collate the batch.
//! * [`samples`]: where those pools get pixels: an in-memory data set or files decoded per visit.
//! * [`compute`]: forward, backward, optimizer, EMA, checkpoints; the loss is its
//!   [`objective`](objective::Objective) (supervised, FixMatch, ProtoCon, or yours).
//! * [`cluster`]: ProtoCon's clustering in a stage of its own (asynchronous mode).
//! * [`test_set`]: the test split and evaluation; [`record`]: what `metrics.jsonl` holds.
//! * [`augment`]: the augmentation ops, chains and plug-in registry the view stages run.

pub mod augment;
pub mod batch;
pub mod cluster;
pub mod compute;
pub mod metrics;
pub mod objective;
pub mod record;
pub mod sampler;
pub mod samples;
pub mod tensorboard;
pub mod test_set;
pub mod views;
