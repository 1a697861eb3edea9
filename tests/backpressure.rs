//! A fast producer feeding a slow consumer never runs ahead by more than the queues and the
//! workers can hold, and memory stays flat.

mod common;

use protocon::{Control, Ctx, Pipeline, Sink, Source, Stage, StageError, StageSpec};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;

struct Blocks {
    left: u64,
    in_flight: Arc<AtomicI64>,
}

impl Source for Blocks {
    type Out = Vec<u8>;
    fn next(&mut self, _: &Control) -> Result<Option<Vec<u8>>, StageError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // 1 MiB of touched memory per message: an unbounded queue would show in the RSS.
        Ok(Some(vec![self.left as u8; MIB]))
    }
}

struct Touch;

impl Stage for Touch {
    type In = Vec<u8>;
    type Out = Vec<u8>;
    fn process(&mut self, mut block: Vec<u8>, ctx: &mut Ctx<Vec<u8>>) -> Result<(), StageError> {
        block[0] = block[0].wrapping_add(1);
        ctx.emit(block)
    }
}

struct SlowSink {
    in_flight: Arc<AtomicI64>,
    max_in_flight: Arc<AtomicI64>,
    max_rss: Arc<AtomicU64>,
    seen: u64,
}

impl Sink for SlowSink {
    type In = Vec<u8>;
    fn consume(&mut self, block: Vec<u8>, _: &Control) -> Result<(), StageError> {
        let now = self.in_flight.load(Ordering::SeqCst);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
        self.seen += 1;
        if self.seen % 10 == 0 {
            self.max_rss.fetch_max(protocon::rss::current_rss_bytes().unwrap_or(0), Ordering::SeqCst);
        }
        drop(block);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn slow_consumer_bounds_items_in_flight_and_memory() {
    const CAPACITY: usize = 4;
    const WORKERS: usize = 3;
    const ITEMS: u64 = 400; // 400 MiB produced in all
    let in_flight = Arc::new(AtomicI64::new(0));
    let max_in_flight = Arc::new(AtomicI64::new(0));
    let max_rss = Arc::new(AtomicU64::new(0));
    let base_rss = protocon::rss::current_rss_bytes().expect("linux /proc");

    let mut p = Pipeline::builder();
    let f = in_flight.clone();
    let blocks = p.source(StageSpec::new("producer").queue(CAPACITY), move |_| {
        Ok(Blocks { left: ITEMS, in_flight: f.clone() })
    });
    let touched = p.stage(StageSpec::new("touch").workers(WORKERS).queue(CAPACITY), blocks, |_| Ok(Touch));
    let (f, m, r) = (in_flight.clone(), max_in_flight.clone(), max_rss.clone());
    p.sink(StageSpec::new("slow-consumer"), touched, move |_| {
        Ok(SlowSink { in_flight: f.clone(), max_in_flight: m.clone(), max_rss: r.clone(), seen: 0 })
    });
    let report = p.run().expect("pipeline runs");

    // Places a message can be: the producer's hand, its queue, a touch worker, the touch queue,
    // the consumer's hand.
    let bound = (1 + CAPACITY + WORKERS + CAPACITY + 1) as i64;
    let max = max_in_flight.load(Ordering::SeqCst);
    assert!(max <= bound, "{max} messages in flight, bound {bound}");
    assert!(max >= CAPACITY as i64, "the producer should have run ahead to fill the queues ({max})");
    assert_eq!(in_flight.load(Ordering::SeqCst), 0);

    let growth = max_rss.load(Ordering::SeqCst).saturating_sub(base_rss) as usize;
    assert!(
        growth < (bound as usize + 24) * MIB,
        "RSS grew by {} MiB while at most {bound} MiB can be in flight",
        growth / MIB
    );
    let producer = &report.profile.stages[0];
    assert!(producer.blocked_s > 0.1, "the producer must have been blocked by backpressure: {producer:?}");
    let q = report.profile.queue("producer.out").unwrap();
    assert!(q.max_depth <= CAPACITY && q.mean_depth > 1.0, "{q:?}");
}
