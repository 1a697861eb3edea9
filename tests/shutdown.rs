//! At the end of the data every message is consumed exactly once, buffered state is flushed,
//! and every thread the pipeline started has joined.

mod common;

use common::{thread_count, Collect, Numbers, Pass};
use protocon::{Ctx, Pipeline, Stage, StageError, StageSpec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Buffers inputs and emits them in groups of `size` (like collate), flushing the rest at the end.
struct Group {
    size: usize,
    buffer: Vec<u64>,
}

impl Stage for Group {
    type In = u64;
    type Out = Vec<u64>;
    fn process(&mut self, x: u64, ctx: &mut Ctx<Vec<u64>>) -> Result<(), StageError> {
        self.buffer.push(x);
        if self.buffer.len() == self.size {
            ctx.emit(std::mem::take(&mut self.buffer))?;
        }
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx<Vec<u64>>) -> Result<(), StageError> {
        if !self.buffer.is_empty() {
            ctx.emit(std::mem::take(&mut self.buffer))?;
        }
        Ok(())
    }
}

/// Splits groups back into items.
struct Ungroup;

impl Stage for Ungroup {
    type In = Vec<u64>;
    type Out = u64;
    fn process(&mut self, xs: Vec<u64>, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
        xs.into_iter().try_for_each(|x| ctx.emit(x))
    }
}

// One test function: thread counts are per process, so the cases run in sequence.
#[test]
fn every_item_is_consumed_exactly_once_and_every_thread_joins() {
    let threads_before = thread_count();
    for (items, workers) in [(0u64, 1usize), (1, 3), (10_007, 3), (5_000, 1)] {
        let produced = Arc::new(AtomicU64::new(0));
        let sink = Collect::default();
        let mut p = Pipeline::builder();
        let pr = produced.clone();
        let numbers = p.source(StageSpec::new("numbers").queue(3), move |_| Ok(Numbers::new(Some(items), pr.clone())));
        let passed = p.stage(StageSpec::new("pass").workers(workers).queue(5), numbers, |_| {
            Ok(Pass(Duration::ZERO))
        });
        let grouped = p.stage(StageSpec::new("group").workers(workers).queue(2), passed, |_| {
            Ok(Group { size: 7, buffer: Vec::new() })
        });
        let items_again = p.stage(StageSpec::new("ungroup").workers(2).queue(4), grouped, |_| Ok(Ungroup));
        let s = sink.clone();
        p.sink(StageSpec::new("sink").workers(2), items_again, move |_| Ok(s.clone()));
        let report = p.run().expect("clean run");

        let mut got = sink.items.lock().unwrap().clone();
        got.sort_unstable();
        let want: Vec<u64> = (0..items).collect();
        assert_eq!(produced.load(Ordering::SeqCst), items);
        assert_eq!(got, want, "{items} items through {workers} workers");
        assert_eq!(sink.finished.load(Ordering::SeqCst), 2, "each sink worker finishes once");
        let sink_profile = report.profile.stages.last().unwrap();
        assert_eq!(sink_profile.items_in, items);
        assert_eq!(report.profile.stages[0].items_out, items);
        assert_eq!(thread_count(), threads_before, "threads left behind after {items} items");
    }
}
