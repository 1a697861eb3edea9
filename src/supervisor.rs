//! The control plane: one actix actor that every worker reports to.
//!
//! It sees the lifecycle of each worker (started, finished, failed), the metrics and epoch
//! boundaries stages announce, forwards them to [`ControlListener`]s (a metrics file, a progress
//! bar), keeps the first failure, and can print the profiler table periodically while a run goes
//! on. Data never passes through it: actix mailboxes are unbounded, the data plane is bounded
//! crossbeam queues (see `docs/architecture.md`).

use crate::cancel::CancelToken;
use crate::error::PipelineError;
use crate::profiler::Profile;
use actix::prelude::*;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::time::Duration;

/// What the supervisor hears about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ControlEvent {
    WorkerStarted { stage: Arc<str>, worker: usize },
    WorkerFinished { stage: Arc<str>, worker: usize },
    WorkerFailed { stage: Arc<str>, worker: usize, cause: String, panicked: bool },
    /// A named value a stage reported at a step.
    Metric { stage: Arc<str>, name: String, step: u64, value: f64 },
    /// A stage finished an epoch.
    EpochEnd { stage: Arc<str>, epoch: u64 },
}

/// Receives every control event, on the supervisor's thread. One method.
pub trait ControlListener: Send + 'static {
    fn on_event(&mut self, event: &ControlEvent);
}

impl<F: FnMut(&ControlEvent) + Send + 'static> ControlListener for F {
    fn on_event(&mut self, event: &ControlEvent) {
        self(event)
    }
}

/// Takes a live snapshot of the run's profile (for periodic reports).
pub(crate) type Snapshot = Box<dyn Fn() -> Profile + Send>;

pub(crate) struct Supervisor {
    cancel: CancelToken,
    listeners: Vec<Box<dyn ControlListener>>,
    failure: Option<PipelineError>,
    running: usize,
    report: Option<(Duration, Snapshot)>,
}

impl Supervisor {
    pub(crate) fn new(
        cancel: CancelToken,
        listeners: Vec<Box<dyn ControlListener>>,
        report: Option<(Duration, Snapshot)>,
    ) -> Self {
        Supervisor { cancel, listeners, failure: None, running: 0, report }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some((every, _)) = &self.report {
            ctx.run_interval(*every, |act, _| {
                if let Some((_, snapshot)) = &act.report {
                    eprintln!("{}\n", snapshot());
                }
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Event(pub ControlEvent);

impl Handler<Event> for Supervisor {
    type Result = ();

    fn handle(&mut self, Event(event): Event, _: &mut Context<Self>) {
        match &event {
            ControlEvent::WorkerStarted { .. } => self.running += 1,
            ControlEvent::WorkerFinished { .. } => self.running = self.running.saturating_sub(1),
            ControlEvent::WorkerFailed { stage, worker, cause, panicked } => {
                self.running = self.running.saturating_sub(1);
                // The worker already cancelled before it let go of its queues (so downstream never
                // mistakes a failure for the end of the data); cancelling again is harmless.
                self.cancel.cancel();
                if self.failure.is_none() {
                    let (stage, worker, cause) = (stage.to_string(), *worker, cause.clone());
                    self.failure = Some(if *panicked {
                        PipelineError::StagePanicked { stage, worker, cause }
                    } else {
                        PipelineError::StageFailed { stage, worker, cause }
                    });
                }
            }
            ControlEvent::Metric { .. } | ControlEvent::EpochEnd { .. } => {}
        }
        for listener in &mut self.listeners {
            listener.on_event(&event);
        }
    }
}

/// Sent once every worker has joined: hands back the first failure and stops the actor system.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Finish {
    pub reply: Sender<Option<PipelineError>>,
}

impl Handler<Finish> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Finish, ctx: &mut Context<Self>) {
        debug_assert_eq!(self.running, 0, "every worker has joined before Finish");
        let _ = msg.reply.send(self.failure.take());
        ctx.stop();
        System::current().stop();
    }
}

/// How workers reach the supervisor.
#[derive(Clone)]
pub(crate) struct SupervisorAddr(pub Addr<Supervisor>);

impl SupervisorAddr {
    pub(crate) fn notify(&self, event: ControlEvent) {
        self.0.do_send(Event(event));
    }
}
