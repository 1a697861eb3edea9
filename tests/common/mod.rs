//! Small stages shared by the runtime's integration tests.
#![allow(dead_code)]

use protocon::{Control, Ctx, Sink, Source, Stage, StageError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Burn CPU for `d`.
pub fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

/// Emits 0..end (or forever when `end` is None).
pub struct Numbers {
    pub next: u64,
    pub end: Option<u64>,
    pub produced: Arc<AtomicU64>,
}

impl Numbers {
    pub fn new(end: Option<u64>, produced: Arc<AtomicU64>) -> Self {
        Numbers { next: 0, end, produced }
    }
}

impl Source for Numbers {
    type Out = u64;
    fn next(&mut self, _: &Control) -> Result<Option<u64>, StageError> {
        if Some(self.next) == self.end {
            return Ok(None);
        }
        self.next += 1;
        self.produced.fetch_add(1, Ordering::SeqCst);
        Ok(Some(self.next - 1))
    }
}

/// Passes items through after `work` of CPU time.
pub struct Pass(pub Duration);

impl Stage for Pass {
    type In = u64;
    type Out = u64;
    fn process(&mut self, x: u64, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
        spin(self.0);
        ctx.emit(x)
    }
}

/// Collects everything it receives; records whether `finish` ran.
#[derive(Clone, Default)]
pub struct Collect {
    pub items: Arc<Mutex<Vec<u64>>>,
    pub finished: Arc<AtomicU64>,
}

impl Sink for Collect {
    type In = u64;
    fn consume(&mut self, x: u64, _: &Control) -> Result<(), StageError> {
        self.items.lock().unwrap().push(x);
        Ok(())
    }
    fn finish(&mut self, _: &Control) -> Result<(), StageError> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Threads of this process right now (from /proc/self/status).
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}
