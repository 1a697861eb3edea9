//! Wiring stages into a pipeline and running it.
//!
//! ```
//! use protocon::{Control, Ctx, Pipeline, Sink, Source, Stage, StageError, StageSpec};
//!
//! struct Count(u64);
//! impl Source for Count {
//!     type Out = u64;
//!     fn next(&mut self, _: &Control) -> Result<Option<u64>, StageError> {
//!         self.0 += 1;
//!         Ok((self.0 <= 100).then_some(self.0))
//!     }
//! }
//! struct Square;
//! impl Stage for Square {
//!     type In = u64;
//!     type Out = u64;
//!     fn process(&mut self, x: u64, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
//!         ctx.emit(x * x)
//!     }
//! }
//! struct Sum(std::sync::Arc<std::sync::atomic::AtomicU64>);
//! impl Sink for Sum {
//!     type In = u64;
//!     fn consume(&mut self, x: u64, _: &Control) -> Result<(), StageError> {
//!         self.0.fetch_add(x, std::sync::atomic::Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
//! let mut p = Pipeline::builder();
//! let numbers = p.source(StageSpec::new("count").queue(8), |_| Ok(Count(0)));
//! let squares = p.stage(StageSpec::new("square").workers(2).queue(8), numbers, |_| Ok(Square));
//! let t = total.clone();
//! p.sink(StageSpec::new("sum"), squares, move |_| Ok(Sum(t.clone())));
//! let report = p.run().unwrap();
//! assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 338_350);
//! assert_eq!(report.profile.stages.len(), 3);
//! ```

use crate::cancel::CancelToken;
use crate::error::{PipelineError, StageError};
use crate::message::Message;
use crate::profiler::{Profile, QueueProfile, StageProfile, WorkerStats};
use crate::stage::{send, Control, Ctx, Sink, Source, Stage, WorkerInfo};
use crate::supervisor::{ControlEvent, ControlListener, Finish, Supervisor, SupervisorAddr};
use crate::trace::{DepthSample, SpanRecorder, Trace, WorkerTrack};
use actix::{Actor, System};
use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Name, worker count and output-queue capacity of a stage.
#[derive(Debug, Clone)]
pub struct StageSpec {
    name: String,
    workers: usize,
    queue: usize,
}

impl StageSpec {
    /// One worker and an output queue of 16 messages by default.
    pub fn new(name: impl Into<String>) -> Self {
        StageSpec { name: name.into(), workers: 1, queue: 16 }
    }
    /// Number of threads running this stage, each with its own instance.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
    /// Capacity of the stage's output queue, in messages.
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }
}

/// The receiving end of a queue, to be handed to the stage that consumes it.
#[must_use = "a queue needs a consumer: pass the port to `stage` or `sink`"]
pub struct Port<T> {
    queue: usize,
    rx: Receiver<T>,
}

/// A sending end of a side queue made with [`PipelineBuilder::queue`], for stages with more
/// than one output (a stage keeps a clone in its state). The queue ends when every clone is
/// dropped, so do not keep one outside the stages.
pub struct QueueSender<T> {
    tx: Sender<T>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender { tx: self.tx.clone() }
    }
}

impl<T: Message> QueueSender<T> {
    /// Send with backpressure; the time blocked counts as the calling worker's blocked time.
    pub fn send(&self, item: T, control: &Control) -> Result<(), StageError> {
        let mut no_spans = SpanRecorder::new(None);
        send(&self.tx, item, &control.cancel, &control.stats, &mut no_spans)
    }
}

/// Running totals of a queue's sampled depth.
#[derive(Default)]
struct QueueGauge {
    sum: AtomicU64,
    samples: AtomicU64,
    max: AtomicUsize,
}

struct QueueEntry {
    name: String,
    capacity: usize,
    consumed: bool,
    gauge: Arc<QueueGauge>,
    depth: Box<dyn Fn() -> usize + Send>,
}

/// What starting a stage's workers needs.
struct Launch {
    cancel: CancelToken,
    supervisor: SupervisorAddr,
    origin: Instant,
    tracing: bool,
}

type Launcher = Box<dyn FnOnce(&Launch) -> Result<Vec<JoinHandle<WorkerTrack>>, PipelineError>>;

struct StageEntry {
    name: Arc<str>,
    input_queue: Option<usize>,
    stats: Vec<Arc<WorkerStats>>,
    launch: Launcher,
}

/// Builds a pipeline: stages in order, each with its workers and output queue.
pub struct PipelineBuilder {
    stages: Vec<StageEntry>,
    queues: Vec<QueueEntry>,
    listeners: Vec<Box<dyn ControlListener>>,
    trace: Option<PathBuf>,
    sample_every: Duration,
    report_every: Option<Duration>,
    cancel: CancelToken,
    wiring_errors: Vec<String>,
}

/// Entry point: `Pipeline::builder()`.
pub struct Pipeline;

impl Pipeline {
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            stages: Vec::new(),
            queues: Vec::new(),
            listeners: Vec::new(),
            trace: None,
            sample_every: Duration::from_millis(1),
            report_every: None,
            cancel: CancelToken::new(),
            wiring_errors: Vec::new(),
        }
    }
}

/// What a completed run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub profile: Profile,
    /// Present when tracing was enabled.
    pub trace: Option<Trace>,
}

/// Stops a running pipeline from outside (Ctrl-C, a time limit).
#[derive(Clone)]
pub struct StopHandle {
    cancel: CancelToken,
}

impl StopHandle {
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

const MAX_DEPTH_SAMPLES_TRACED: usize = 200_000;

impl PipelineBuilder {
    /// Add a source stage; returns its output queue.
    pub fn source<S, F>(&mut self, spec: StageSpec, factory: F) -> Port<S::Out>
    where
        S: Source,
        F: Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync + 'static,
    {
        let (tx, port) = self.new_queue::<S::Out>(format!("{}.out", spec.name), spec.queue);
        let factory = Arc::new(factory);
        self.add_stage(&spec, None, move |info, control, spans| {
            let factory = factory.clone();
            let tx = tx.clone();
            move || run_source(&*factory, info, control, tx, spans)
        });
        port
    }

    /// Add a stage reading `input`; returns its output queue.
    pub fn stage<S, F>(&mut self, spec: StageSpec, input: Port<S::In>, factory: F) -> Port<S::Out>
    where
        S: Stage,
        F: Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync + 'static,
    {
        let (tx, port) = self.new_queue::<S::Out>(format!("{}.out", spec.name), spec.queue);
        let input_queue = self.consume(&spec.name, input.queue);
        let rx = input.rx;
        let factory = Arc::new(factory);
        self.add_stage(&spec, input_queue, move |info, control, spans| {
            let (factory, tx, rx) = (factory.clone(), tx.clone(), rx.clone());
            move || run_stage(&*factory, info, control, rx, tx, spans)
        });
        port
    }

    /// Add a sink reading `input`.
    pub fn sink<S, F>(&mut self, spec: StageSpec, input: Port<S::In>, factory: F)
    where
        S: Sink,
        F: Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync + 'static,
    {
        let input_queue = self.consume(&spec.name, input.queue);
        let rx = input.rx;
        let factory = Arc::new(factory);
        self.add_stage(&spec, input_queue, move |info, control, spans| {
            let (factory, rx) = (factory.clone(), rx.clone());
            move || run_sink(&*factory, info, control, rx, spans)
        });
    }

    /// A side queue, for a stage that sends to more than one place (capture the sender in its
    /// factory; pass the port to the consuming stage).
    pub fn queue<T: Message>(&mut self, name: impl Into<String>, capacity: usize) -> (QueueSender<T>, Port<T>) {
        let (tx, port) = self.new_queue(name.into(), capacity);
        (QueueSender { tx }, port)
    }

    /// Forward every control event (metrics, epochs, lifecycle, failures) to `listener`.
    pub fn listener(&mut self, listener: impl ControlListener) -> &mut Self {
        self.listeners.push(Box::new(listener));
        self
    }

    /// Write a Chrome trace-event JSON file at the end of the run.
    pub fn trace(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.trace = Some(path.into());
        self
    }

    /// How often queue depths are sampled (default 1 ms).
    pub fn sample_every(&mut self, every: Duration) -> &mut Self {
        self.sample_every = every.max(Duration::from_micros(50));
        self
    }

    /// Print the profiler table to stderr every `every` while the run goes on.
    pub fn report_every(&mut self, every: Duration) -> &mut Self {
        self.report_every = Some(every);
        self
    }

    /// A handle that stops the run from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { cancel: self.cancel.clone() }
    }

    fn new_queue<T: Message>(&mut self, name: String, capacity: usize) -> (Sender<T>, Port<T>) {
        if capacity == 0 {
            self.wiring_errors.push(format!("queue `{name}` has capacity 0; it must hold at least one message"));
        }
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let probe = rx.clone();
        self.queues.push(QueueEntry {
            name,
            capacity: capacity.max(1),
            consumed: false,
            gauge: Arc::default(),
            depth: Box::new(move || probe.len()),
        });
        (tx, Port { queue: self.queues.len() - 1, rx })
    }

    fn consume(&mut self, stage: &str, queue: usize) -> Option<usize> {
        let q = &mut self.queues[queue];
        if q.consumed {
            self.wiring_errors.push(format!("queue `{}` is read by more than one stage (`{stage}`)", q.name));
        }
        q.consumed = true;
        Some(queue)
    }

    /// Register a stage whose workers each run `make_body(info, control, spans)()` on a thread.
    fn add_stage<M, B>(&mut self, spec: &StageSpec, input_queue: Option<usize>, make_body: M)
    where
        M: Fn(WorkerInfo, Control, SpanRecorder) -> B + 'static,
        B: FnOnce() -> WorkerTrack + Send + 'static,
    {
        if spec.workers == 0 {
            self.wiring_errors.push(format!("stage `{}` has 0 workers; it needs at least one", spec.name));
        }
        if self.stages.iter().any(|s| *s.name == *spec.name) {
            self.wiring_errors.push(format!("two stages are named `{}`", spec.name));
        }
        let name: Arc<str> = spec.name.as_str().into();
        let workers = spec.workers.max(1);
        let stats: Vec<Arc<WorkerStats>> = (0..workers).map(|_| Arc::default()).collect();
        let (stage_name, worker_stats) = (name.clone(), stats.clone());
        let launch: Launcher = Box::new(move |launch: &Launch| {
            let mut handles = Vec::with_capacity(workers);
            for (worker, stats) in worker_stats.into_iter().enumerate() {
                let info = WorkerInfo { stage: stage_name.clone(), worker, workers };
                let control = Control {
                    info: info.clone(),
                    cancel: launch.cancel.clone(),
                    supervisor: launch.supervisor.clone(),
                    stats,
                };
                let spans = SpanRecorder::new(launch.tracing.then_some(launch.origin));
                let started = ControlEvent::WorkerStarted { stage: stage_name.clone(), worker };
                let supervisor = launch.supervisor.clone();
                let body = make_body(info, control, spans);
                let body = move || {
                    supervisor.notify(started);
                    body()
                };
                let handle = std::thread::Builder::new()
                    .name(format!("{stage_name}#{worker}"))
                    .spawn(body)
                    .map_err(|source| PipelineError::Spawn { stage: stage_name.to_string(), source })?;
                handles.push(handle);
            }
            Ok(handles)
        });
        self.stages.push(StageEntry { name, input_queue, stats, launch });
    }

    /// Run to the end of the data (or the first failure) and report the profile.
    ///
    /// A stage that fails or panics cancels the whole pipeline: every worker blocked on a queue
    /// wakes at once, and the error names the stage and the cause.
    pub fn run(self) -> Result<RunReport, PipelineError> {
        if let Some(q) = self.queues.iter().find(|q| !q.consumed) {
            return Err(PipelineError::Wiring(format!("queue `{}` has no consumer", q.name)));
        }
        if let Some(e) = self.wiring_errors.first() {
            return Err(PipelineError::Wiring(e.clone()));
        }
        let PipelineBuilder { stages, queues, listeners, trace, sample_every, report_every, cancel, .. } = self;
        let origin = Instant::now();

        // Profile metadata, shared between live snapshots and the final report.
        let meta: Arc<ProfileMeta> = Arc::new(ProfileMeta {
            stages: stages
                .iter()
                .map(|s| (s.name.to_string(), s.stats.clone(), s.input_queue.map(|q| queues[q].name.clone())))
                .collect(),
            queues: queues.iter().map(|q| (q.name.clone(), q.capacity, q.gauge.clone())).collect(),
        });

        let report = report_every.map(|every| {
            let meta = meta.clone();
            (every, Box::new(move || meta.profile(origin.elapsed())) as crate::supervisor::Snapshot)
        });
        let (addr_tx, addr_rx) = crossbeam_channel::bounded(1);
        let sup_cancel = cancel.clone();
        let system = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                let system = System::new();
                let addr = system.block_on(async move { Supervisor::new(sup_cancel, listeners, report).start() });
                let _ = addr_tx.send(addr);
                system.run()
            })
            .map_err(|source| PipelineError::Spawn { stage: "supervisor".into(), source })?;
        let supervisor = SupervisorAddr(addr_rx.recv().expect("supervisor thread sends its address"));

        // Queue depth sampler.
        let (stop_sampler, sampler_stop) = crossbeam_channel::bounded::<()>(0);
        let tracing = trace.is_some();
        let probes: Vec<_> = queues.into_iter().map(|q| (q.name, q.gauge, q.depth)).collect();
        let sampler = std::thread::Builder::new()
            .name("queue-sampler".into())
            .spawn(move || sample_queues(probes, sample_every, sampler_stop, origin, tracing))
            .map_err(|source| PipelineError::Spawn { stage: "queue-sampler".into(), source })?;

        let launch = Launch { cancel: cancel.clone(), supervisor: supervisor.clone(), origin, tracing };
        let mut handles = Vec::new();
        let mut spawn_error = None;
        for stage in stages {
            match (stage.launch)(&launch) {
                Ok(h) => handles.extend(h),
                Err(e) => {
                    cancel.cancel();
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        drop(launch);
        let tracks: Vec<WorkerTrack> = handles
            .into_iter()
            .map(|h| h.join().expect("worker bodies catch panics"))
            .collect();
        let wall = origin.elapsed();
        drop(stop_sampler);
        let queue_samples = sampler.join().expect("sampler does not panic");

        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        supervisor.0.do_send(Finish { reply: reply_tx });
        let failure = reply_rx.recv().ok().flatten();
        let _ = system.join();

        let profile = meta.profile(wall);
        let trace_data = tracing.then(|| Trace { workers: tracks, queues: queue_samples });
        if let (Some(path), Some(t)) = (&trace, &trace_data) {
            t.write(path).map_err(|source| PipelineError::Trace { path: path.clone(), source })?;
        }
        if let Some(e) = spawn_error.or(failure) {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(PipelineError::Stopped { reason: "stop requested".into() });
        }
        Ok(RunReport { profile, trace: trace_data })
    }
}

struct ProfileMeta {
    stages: Vec<(String, Vec<Arc<WorkerStats>>, Option<String>)>,
    queues: Vec<(String, usize, Arc<QueueGauge>)>,
}

impl ProfileMeta {
    fn profile(&self, wall: Duration) -> Profile {
        Profile {
            wall_s: wall.as_secs_f64(),
            stages: self
                .stages
                .iter()
                .map(|(name, stats, input)| StageProfile::from_workers(name, stats, input.clone()))
                .collect(),
            queues: self
                .queues
                .iter()
                .map(|(name, capacity, g)| {
                    let samples = g.samples.load(Ordering::Relaxed);
                    let sum = g.sum.load(Ordering::Relaxed);
                    QueueProfile {
                        name: name.clone(),
                        capacity: *capacity,
                        mean_depth: if samples > 0 { sum as f64 / samples as f64 } else { 0.0 },
                        max_depth: g.max.load(Ordering::Relaxed),
                        samples,
                    }
                })
                .collect(),
        }
    }
}

type Probe = (String, Arc<QueueGauge>, Box<dyn Fn() -> usize + Send>);

fn sample_queues(
    probes: Vec<Probe>,
    every: Duration,
    stop: Receiver<()>,
    origin: Instant,
    tracing: bool,
) -> Vec<(String, Vec<DepthSample>)> {
    let mut traced: Vec<Vec<DepthSample>> = probes.iter().map(|_| Vec::new()).collect();
    loop {
        let at = origin.elapsed();
        for ((_, gauge, depth), samples) in probes.iter().zip(&mut traced) {
            let d = depth();
            gauge.sum.fetch_add(d as u64, Ordering::Relaxed);
            gauge.samples.fetch_add(1, Ordering::Relaxed);
            gauge.max.fetch_max(d, Ordering::Relaxed);
            if tracing && samples.len() < MAX_DEPTH_SAMPLES_TRACED {
                samples.push(DepthSample { at, depth: d });
            }
        }
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => break,
        }
    }
    probes.into_iter().map(|(name, ..)| name).zip(traced).collect()
}

/// Receive with starvation accounting. `Ok(None)` is the end of the data; a queue that ends
/// because the pipeline is being cancelled gives `Cancelled` instead, so a stage never
/// mistakes a failure upstream for a complete input.
fn recv<T: Message>(rx: &Receiver<T>, control: &Control, spans: &mut SpanRecorder) -> Result<Option<T>, StageError> {
    let ended = || if control.cancel.is_cancelled() { Err(StageError::Cancelled) } else { Ok(None) };
    if control.cancel.is_cancelled() {
        return Err(StageError::Cancelled);
    }
    let item = match rx.try_recv() {
        Ok(item) => item,
        Err(TryRecvError::Disconnected) => return ended(),
        Err(TryRecvError::Empty) => {
            let start = Instant::now();
            let got = select! {
                recv(rx) -> msg => msg.ok(),
                recv(control.cancel.receiver()) -> _ => return Err(StageError::Cancelled),
            };
            let waited = start.elapsed();
            control.stats.add_starved(waited);
            spans.record("starved", start, waited);
            match got {
                Some(item) => item,
                None => return ended(),
            }
        }
    };
    control.stats.add_in(item.bytes() as u64);
    Ok(Some(item))
}

/// Time `work` as busy time, excluding what it spent blocked on a full output queue.
fn busy<R>(control: &Control, spans: &mut SpanRecorder, work: impl FnOnce(&mut SpanRecorder) -> R) -> R {
    let blocked_before = control.stats.blocked();
    let start = Instant::now();
    let result = work(spans);
    let elapsed = start.elapsed();
    let blocked = control.stats.blocked().saturating_sub(blocked_before);
    control.stats.add_busy(elapsed.saturating_sub(blocked));
    spans.record("work", start, elapsed);
    result
}

fn run_source<S: Source>(
    factory: &(dyn Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync),
    info: WorkerInfo,
    control: Control,
    tx: Sender<S::Out>,
    mut spans: SpanRecorder,
) -> WorkerTrack {
    let mut instance: Option<S> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let source = instance.insert(factory(&info)?);
        loop {
            if control.is_cancelled() {
                return Err(StageError::Cancelled);
            }
            match busy(&control, &mut spans, |_| source.next(&control))? {
                Some(item) => send(&tx, item, &control.cancel, &control.stats, &mut spans)?,
                None => return Ok(()),
            }
        }
    }));
    conclude(control, outcome, spans, (instance, tx))
}

fn run_stage<S: Stage>(
    factory: &(dyn Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync),
    info: WorkerInfo,
    control: Control,
    rx: Receiver<S::In>,
    tx: Sender<S::Out>,
    spans: SpanRecorder,
) -> WorkerTrack {
    let mut instance: Option<S> = None;
    let mut ctx = Ctx { control, out: tx, spans };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let stage = instance.insert(factory(&info)?);
        while let Some(item) = recv(&rx, &ctx.control, &mut ctx.spans)? {
            let start_blocked = ctx.control.stats.blocked();
            let start = Instant::now();
            let result = stage.process(item, &mut ctx);
            let elapsed = start.elapsed();
            let blocked = ctx.control.stats.blocked().saturating_sub(start_blocked);
            ctx.control.stats.add_busy(elapsed.saturating_sub(blocked));
            ctx.spans.record("work", start, elapsed);
            result?;
        }
        stage.finish(&mut ctx)
    }));
    let Ctx { control, out, spans } = ctx;
    conclude(control, outcome, spans, (instance, out))
}

fn run_sink<S: Sink>(
    factory: &(dyn Fn(&WorkerInfo) -> Result<S, StageError> + Send + Sync),
    info: WorkerInfo,
    control: Control,
    rx: Receiver<S::In>,
    mut spans: SpanRecorder,
) -> WorkerTrack {
    let mut instance: Option<S> = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let sink = instance.insert(factory(&info)?);
        while let Some(item) = recv(&rx, &control, &mut spans)? {
            busy(&control, &mut spans, |_| sink.consume(item, &control))?;
        }
        sink.finish(&control)
    }));
    conclude(control, outcome, spans, instance)
}

/// Report how a worker ended. On failure the pipeline is cancelled *before* `held` (the stage
/// instance and its queue ends) is dropped, so no consumer sees a clean end of data.
fn conclude<H>(
    control: Control,
    outcome: std::thread::Result<Result<(), StageError>>,
    spans: SpanRecorder,
    held: H,
) -> WorkerTrack {
    let Control { info, cancel, supervisor, .. } = control;
    let (stage, worker) = (info.stage.clone(), info.worker);
    let failed = |cause: String, panicked: bool| {
        cancel.cancel();
        supervisor.notify(ControlEvent::WorkerFailed { stage: stage.clone(), worker, cause, panicked });
    };
    match outcome {
        Ok(Ok(())) | Ok(Err(StageError::Cancelled)) => {
            supervisor.notify(ControlEvent::WorkerFinished { stage: stage.clone(), worker })
        }
        Ok(Err(e)) => failed(crate::error::error_chain(&e), false),
        Err(payload) => {
            let cause = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".into());
            failed(cause, true)
        }
    }
    drop(held);
    let (spans, dropped) = spans.into_parts();
    WorkerTrack { stage: stage.to_string(), worker, spans, dropped }
}
