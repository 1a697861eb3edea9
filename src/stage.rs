//! The three kinds of stage a pipeline is made of, and the context they run in.
//!
//! A stage owns its state and runs on its own thread (one instance per worker). It receives owned
//! messages from a bounded queue and sends owned messages into a bounded queue; the runtime does
//! the receiving, the profiling and the shutdown. Each trait has one required method.

use crate::cancel::CancelToken;
use crate::error::StageError;
use crate::message::Message;
use crate::profiler::WorkerStats;
use crate::supervisor::{ControlEvent, SupervisorAddr};
use crate::trace::SpanRecorder;
use crossbeam_channel::{select, Sender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

/// Produces the messages of a pipeline (a reader, a sampler, a generator).
pub trait Source: Send + 'static {
    type Out: Message;
    /// The next message, or `None` at the end of the data.
    fn next(&mut self, control: &Control) -> Result<Option<Self::Out>, StageError>;
}

/// Transforms messages; may emit zero, one or many outputs per input (collate, split, filter).
pub trait Stage: Send + 'static {
    type In: Message;
    type Out: Message;
    /// Handle one input; send results with [`Ctx::emit`].
    fn process(&mut self, input: Self::In, ctx: &mut Ctx<Self::Out>) -> Result<(), StageError>;
    /// Called once after the input queue has ended: flush what is buffered.
    fn finish(&mut self, _ctx: &mut Ctx<Self::Out>) -> Result<(), StageError> {
        Ok(())
    }
}

/// Consumes messages at the end of a pipeline.
pub trait Sink: Send + 'static {
    type In: Message;
    /// Handle one input.
    fn consume(&mut self, input: Self::In, control: &Control) -> Result<(), StageError>;
    /// Called once after the input queue has ended.
    fn finish(&mut self, _control: &Control) -> Result<(), StageError> {
        Ok(())
    }
}

/// Which worker of which stage a factory is building.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// The stage's name.
    pub stage: Arc<str>,
    /// This worker's index, `0..workers`.
    pub worker: usize,
    /// How many workers the stage has.
    pub workers: usize,
}

/// Control-plane access for a running worker: metrics, epoch boundaries, cancellation.
pub struct Control {
    pub(crate) info: WorkerInfo,
    pub(crate) cancel: CancelToken,
    pub(crate) supervisor: SupervisorAddr,
    pub(crate) stats: Arc<WorkerStats>,
}

impl Control {
    /// Which worker this is.
    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// Whether the pipeline is stopping; long-running stage code should check it and return
    /// [`StageError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Report a named value (a loss, an accuracy) to the supervisor's listeners.
    pub fn metric(&self, name: &str, step: u64, value: f64) {
        self.supervisor.notify(ControlEvent::Metric {
            stage: self.info.stage.clone(),
            name: name.to_owned(),
            step,
            value,
        });
    }

    /// Announce that this worker finished an epoch.
    pub fn epoch_end(&self, epoch: u64) {
        self.supervisor
            .notify(ControlEvent::EpochEnd { stage: self.info.stage.clone(), epoch });
    }
}

/// What a [`Stage`] gets while processing: control plus the output queue.
pub struct Ctx<Out> {
    pub(crate) control: Control,
    pub(crate) out: Sender<Out>,
    pub(crate) spans: SpanRecorder,
}

impl<Out: Message> Ctx<Out> {
    /// Send one output downstream. Blocks while the output queue is full (backpressure); the
    /// time blocked is profiled. Returns `Cancelled` when the pipeline is stopping.
    pub fn emit(&mut self, item: Out) -> Result<(), StageError> {
        send(&self.out, item, &self.control.cancel, &self.control.stats, &mut self.spans)
    }
}

impl<Out> std::ops::Deref for Ctx<Out> {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

/// Send with backpressure accounting: the fast path is a `try_send`; only a full queue starts
/// the blocked-time clock.
pub(crate) fn send<T: Message>(
    out: &Sender<T>,
    item: T,
    cancel: &CancelToken,
    stats: &WorkerStats,
    spans: &mut SpanRecorder,
) -> Result<(), StageError> {
    let bytes = item.bytes() as u64;
    match out.try_send(item) {
        Ok(()) => {}
        Err(TrySendError::Full(item)) => {
            let start = Instant::now();
            let sent = select! {
                send(out, item) -> res => res.is_ok(),
                recv(cancel.receiver()) -> _ => false,
            };
            let waited = start.elapsed();
            stats.add_blocked(waited);
            spans.record("blocked", start, waited);
            if !sent {
                return Err(StageError::Cancelled);
            }
        }
        // The consumer is gone: only happens when the pipeline is being torn down.
        Err(TrySendError::Disconnected(_)) => return Err(StageError::Cancelled),
    }
    stats.add_out(bytes);
    Ok(())
}
