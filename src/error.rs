//! Errors of the stage runtime.

use std::fmt;

/// What a stage returns when it cannot go on.
///
/// `Cancelled` is not a failure of the stage: the pipeline is being stopped (another stage
/// failed, or the user asked to stop) and the stage should unwind. Any other error converts into
/// `Failed` with `?`, so stage code can use its own typed errors.
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
}

/// The "cancelled" cause of [`StageError::into_error`].
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl StageError {
    /// The cause as an error value with its source chain (for `anyhow` in a binary, or a
    /// library error's `#[source]`): `StageError` itself cannot implement `std::error::Error`,
    /// since its blanket `From` lets any error convert into it with `?`.
    pub fn into_error(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        match self {
            StageError::Cancelled => Box::new(Cancelled),
            StageError::Failed(cause) => cause,
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StageError {
    fn from(error: E) -> Self {
        StageError::Failed(Box::new(error))
    }
}

impl fmt::Debug for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageError::Cancelled => f.write_str("cancelled"),
            StageError::Failed(cause) => {
                write!(f, "{cause}")?;
                let mut source = cause.source();
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
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
