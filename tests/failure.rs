//! A stage that errors or panics stops the whole pipeline promptly, naming itself; nothing hangs
//! and no downstream stage mistakes the failure for the end of the data.

mod common;

use common::{Collect, Numbers, Pass};
use protocon::{Control, Ctx, Pipeline, PipelineError, Sink, Stage, StageError, StageSpec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum How {
    Error,
    Panic,
}

#[derive(Debug, thiserror::Error)]
#[error("checksum mismatch in item {0}")]
struct BadItem(u64);

struct Explode {
    at: u64,
    how: How,
    when: Arc<Mutex<Option<Instant>>>,
}

impl Stage for Explode {
    type In = u64;
    type Out = u64;
    fn process(&mut self, x: u64, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
        if x == self.at {
            *self.when.lock().unwrap() = Some(Instant::now());
            match self.how {
                How::Error => return Err(StageError::failed(BadItem(x))),
                How::Panic => panic!("boom at item {x}"),
            }
        }
        ctx.emit(x)
    }
}

/// Endless source -> pass (2 workers) -> explode -> pass -> slow sink; the endless source and
/// the small queues make sure threads are blocked on both full and empty queues at failure time.
fn run_failing(how: How) -> (PipelineError, Duration, Collect) {
    let when = Arc::new(Mutex::new(None));
    let sink = Collect::default();
    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers").queue(2), move |_| Ok(Numbers::new(None, produced.clone())));
    let a = p.stage(StageSpec::new("pass").workers(2).queue(2), numbers, |_| Ok(Pass(Duration::ZERO)));
    let w = when.clone();
    let b = p.stage(StageSpec::new("explode").queue(2), a, move |_| {
        Ok(Explode { at: 200, how, when: w.clone() })
    });
    let c = p.stage(StageSpec::new("after").queue(2), b, |_| Ok(Pass(Duration::from_micros(200))));
    let s = sink.clone();
    p.sink(StageSpec::new("sink"), c, move |_| Ok(s.clone()));
    let err = p.run().expect_err("the pipeline must fail");
    let failed_at = when.lock().unwrap().expect("the failure happened");
    (err, failed_at.elapsed(), sink)
}

#[test]
fn an_erroring_stage_stops_the_pipeline_with_its_name_and_cause() {
    let start = Instant::now();
    let (err, stop_latency, sink) = run_failing(How::Error);
    assert_eq!(err.stage(), Some("explode"));
    assert!(matches!(err, PipelineError::StageFailed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("`explode`") && text.contains("checksum mismatch in item 200"), "{text}");
    assert!(stop_latency < Duration::from_secs(1), "stopped {stop_latency:?} after the failure");
    assert_eq!(sink.finished.load(Ordering::SeqCst), 0, "a failure is not the end of the data");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_panicking_stage_stops_the_pipeline_with_its_name_and_message() {
    let start = Instant::now();
    let (err, stop_latency, sink) = run_failing(How::Panic);
    assert_eq!(err.stage(), Some("explode"));
    assert!(matches!(err, PipelineError::StagePanicked { .. }), "{err:?}");
    assert!(err.to_string().contains("boom at item 200"), "{err}");
    assert!(stop_latency < Duration::from_secs(1), "stopped {stop_latency:?} after the panic");
    assert_eq!(sink.finished.load(Ordering::SeqCst), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
}

struct FailingSink;

impl Sink for FailingSink {
    type In = u64;
    fn consume(&mut self, x: u64, _: &Control) -> Result<(), StageError> {
        if x == 10 {
            return Err(StageError::msg("disk full"));
        }
        Ok(())
    }
}

#[test]
fn a_failing_sink_releases_a_producer_blocked_on_a_full_queue() {
    let start = Instant::now();
    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers").queue(1), move |_| Ok(Numbers::new(None, produced.clone())));
    p.sink(StageSpec::new("writer"), numbers, |_| Ok(FailingSink));
    let err = p.run().unwrap_err();
    assert_eq!(err.stage(), Some("writer"));
    assert!(err.to_string().contains("disk full"));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_factory_error_is_a_stage_failure() {
    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers"), move |_| Ok(Numbers::new(None, produced.clone())));
    p.sink(StageSpec::new("model"), numbers, |_| -> Result<Collect, StageError> {
        Err(StageError::msg("weights file missing"))
    });
    let err = p.run().unwrap_err();
    assert_eq!(err.stage(), Some("model"));
    assert!(err.to_string().contains("weights file missing"));
}

/// A cause with a source: the pipeline's error names both, and `StageError` is a
/// `std::error::Error` that hands the cause's chain on (displays as the cause, `source` is the
/// cause's source), so `anyhow` prints each link once.
#[test]
fn a_stage_error_keeps_its_source_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read shard 3")]
    struct ShardError(#[source] std::io::Error);
    let cause = || ShardError(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));

    let e = StageError::failed(cause());
    assert_eq!(e.to_string(), "cannot read shard 3");
    let source = std::error::Error::source(&e).expect("the cause's source");
    assert_eq!(source.to_string(), "no such file");
    assert_eq!(protocon::error::error_chain(&e), "cannot read shard 3: no such file");

    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers"), move |_| Ok(Numbers::new(None, produced.clone())));
    p.sink(StageSpec::new("reader"), numbers, move |_| -> Result<Collect, StageError> { Err(StageError::failed(cause())) });
    let err = p.run().unwrap_err();
    assert!(err.to_string().contains("cannot read shard 3: no such file"), "{err}");
}

#[test]
fn a_stop_handle_cancels_an_endless_run() {
    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers").queue(4), move |_| Ok(Numbers::new(None, produced.clone())));
    let slow = p.stage(StageSpec::new("slow"), numbers, |_| Ok(Pass(Duration::from_millis(1))));
    p.sink(StageSpec::new("sink"), slow, |_| Ok(Collect::default()));
    let stop = p.stop_handle();
    let start = Instant::now();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stop.stop();
    });
    let err = p.run().unwrap_err();
    assert!(matches!(err, PipelineError::Stopped { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn wiring_mistakes_are_reported_before_anything_runs() {
    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let _dangling = p.source(StageSpec::new("numbers"), move |_| Ok(Numbers::new(Some(3), produced.clone())));
    let err = p.run().unwrap_err();
    assert!(err.to_string().contains("queue `numbers.out` has no consumer"), "{err}");

    let mut p = Pipeline::builder();
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers").queue(0), move |_| Ok(Numbers::new(Some(3), produced.clone())));
    p.sink(StageSpec::new("sink").workers(0), numbers, |_| Ok(Collect::default()));
    let err = p.run().unwrap_err().to_string();
    assert!(err.contains("capacity 0"), "{err}");
}
