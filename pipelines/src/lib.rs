//! protocon's pipelines as a library: configs ([`config::RunConfig`]), training runs
//! ([`TrainingRun`]: the data, the stage wiring, and the augmentation ops, batch stages and
//! objective a caller plugs in), training curves ([`curves`]) and run comparison ([`compare`]). The `protocon` program is a
//! command-line front end over this crate; `examples/custom-stages` trains with a custom
//! augmentation op and a MixUp batch stage through it without touching the project.

pub mod compare;
pub mod config;
pub mod inspect;
pub mod curves;
pub mod train;
pub mod trained;

pub use train::{Feed, Prepared, RunInfo, TrainOptions, TrainSummary, TrainingRun};
