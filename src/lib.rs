//! Core of protocon: the stage runtime (bounded queues, supervisor, profiler) on which the
//! augmentation, compute and clustering stages and the training pipelines are built.
//!
//! Dependencies point one way: `protocon-pipelines` -> `protocon-stages` -> this crate.
//! The data plane is threads exchanging owned messages over bounded `crossbeam-channel`
//! queues; the control plane (lifecycle, epoch boundaries, metrics, failures) is an actix
//! actor, the [`supervisor::Supervisor`]. See `docs/architecture.md` for why.

pub mod cancel;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod ema;
pub mod error;
pub mod loss;
pub mod message;
pub mod model;
pub mod optim;
pub mod ops;
pub mod pipeline;
pub mod profiler;
pub mod protocon;
pub mod rss;
pub mod schedule;
pub mod stage;
pub mod supervisor;
pub mod trace;

pub use cancel::CancelToken;
pub use error::{PipelineError, StageError};
pub use message::Message;
pub use pipeline::{Pipeline, PipelineBuilder, Port, QueueSender, RunReport, StageSpec};
pub use profiler::{Profile, QueueProfile, StageProfile};
pub use stage::{Control, Ctx, Sink, Source, Stage, WorkerInfo};
pub use supervisor::{ControlEvent, ControlListener};
