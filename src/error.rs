//! Errors of the stage runtime.

use std::fmt;

/// What a stage returns when it cannot go on.
///
/// `Cancelled` is not a failure of the stage: the pipeline is being stopped (another stage
/// failed, or the user asked to stop) and the stage should unwind. The errors of this crate,
/// candle's, I/O and JSON errors convert into `Failed` with `?`; other crates add `From` for
/// their own error types ([`StageError::failed`] wraps any error). `StageError` is itself a
/// `std::error::Error` that is transparent over its cause: it displays as the cause, and its
/// `source` is the cause's, so `anyhow` and `#[source]` fields keep the whole chain.
pub enum StageError {
    /// The pipeline is shutting down; return promptly.
    Cancelled,
    /// The stage failed; the cause is reported with the stage's name.
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StageError {
    /// A failure described by a message.
    pub fn msg(message: impl Into<String>) -> Self {
        StageError::Failed(message.into().into())
    }

    /// A failure caused by `error` (its source chain kept).
    pub fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StageError::Failed(Box::new(error))
    }
}

/// `?` on these errors in stage code makes a [`StageError::Failed`].
macro_rules! failed_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for StageError {
            fn from(error: $t) -> Self {
                StageError::failed(error)
            }
        })*
    };
}

failed_from!(
    candle_core::Error,
    std::io::Error,
    serde_json::Error,
    crate::checkpoint::CheckpointError,
    crate::data::DataError,
    crate::protocon::ProtoConError,
    PipelineError,
);

impl fmt::Debug for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageError::Cancelled => f.write_str("cancelled"),
            StageError::Failed(cause) => fmt::Display::fmt(cause, f),
        }
    }
}

impl std::error::Error for StageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StageError::Cancelled => None,
            StageError::Failed(cause) => cause.source(),
        }
    }
}

/// `error` and its sources, joined by ": " (what a log line or a flattened cause shows).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why a pipeline did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    // -- failures of a stage --
    /// A stage returned an error.
    #[error("stage `{stage}` (worker {worker}) failed: {cause}")]
    StageFailed { stage: String, worker: usize, cause: String },
    /// A stage panicked.
    #[error("stage `{stage}` (worker {worker}) panicked: {cause}")]
    StagePanicked { stage: String, worker: usize, cause: String },

    // -- lifecycle --
    /// The run was stopped from outside (e.g. Ctrl-C) before the data ended.
    #[error("pipeline stopped: {reason}")]
    Stopped { reason: String },

    // -- wiring and set-up --
    /// The pipeline was wired wrongly (a queue without consumer, a duplicate stage name, ...).
    #[error("pipeline wiring: {0}")]
    Wiring(String),
    /// A thread could not be started.
    #[error("could not start thread for stage `{stage}`: {source}")]
    Spawn { stage: String, source: std::io::Error },
    /// Writing the trace file failed.
    #[error("could not write trace file {path}: {source}")]
    Trace { path: std::path::PathBuf, source: std::io::Error },
}

impl PipelineError {
    /// The stage that failed, where the error is a stage failure.
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::StageFailed { stage, .. } | PipelineError::StagePanicked { stage, .. } => {
                Some(stage)
            }
            _ => None,
        }
    }
}
