//! Chrome trace-event JSON (opens in Perfetto or chrome://tracing): one track per stage worker
//! with a span per unit of work, and a counter track per queue with its sampled depth.

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Spans kept per worker before recording stops, so a trace of a long run stays loadable
/// (about 100 bytes of JSON each). The number dropped is written into the trace's metadata.
pub const MAX_SPANS_PER_WORKER: usize = 200_000;

/// A span recorded by a worker: what, start offset from the run's origin, duration.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub name: &'static str,
    pub start: Duration,
    pub duration: Duration,
}

/// Per-worker span buffer; a no-op unless tracing was asked for.
#[derive(Debug)]
pub struct SpanRecorder {
    origin: Option<Instant>,
    spans: Vec<Span>,
    dropped: u64,
}

impl SpanRecorder {
    /// `origin` is the run's start; `None` disables recording.
    pub fn new(origin: Option<Instant>) -> Self {
        SpanRecorder { origin, spans: Vec::new(), dropped: 0 }
    }

    pub fn enabled(&self) -> bool {
        self.origin.is_some()
    }

    /// Record a span that started at `start` and lasted `duration`.
    pub fn record(&mut self, name: &'static str, start: Instant, duration: Duration) {
        let Some(origin) = self.origin else { return };
        if self.spans.len() >= MAX_SPANS_PER_WORKER {
            self.dropped += 1;
            return;
        }
        self.spans.push(Span { name, start: start.saturating_duration_since(origin), duration });
    }

    pub(crate) fn into_parts(self) -> (Vec<Span>, u64) {
        (self.spans, self.dropped)
    }
}

/// One worker's track.
#[derive(Debug, Clone)]
pub struct WorkerTrack {
    pub stage: String,
    pub worker: usize,
    pub spans: Vec<Span>,
    pub dropped: u64,
}

/// One sample of a queue's depth.
#[derive(Debug, Clone, Copy)]
pub struct DepthSample {
    pub at: Duration,
    pub depth: usize,
}

/// Everything a trace file holds.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub workers: Vec<WorkerTrack>,
    pub queues: Vec<(String, Vec<DepthSample>)>,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Trace {
    /// The trace as a Chrome trace-event JSON value (`{"traceEvents": [...]}`).
    pub fn to_json(&self) -> Value {
        let mut events = Vec::new();
        events.push(json!({"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "protocon pipeline"}}));
        for (i, w) in self.workers.iter().enumerate() {
            let tid = i + 1;
            events.push(json!({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name",
                "args": {"name": format!("{}#{}", w.stage, w.worker)}}));
            events.push(json!({"ph": "M", "pid": 1, "tid": tid, "name": "thread_sort_index",
                "args": {"sort_index": tid}}));
            for s in &w.spans {
                events.push(json!({"ph": "X", "pid": 1, "tid": tid, "name": s.name, "cat": w.stage,
                    "ts": micros(s.start), "dur": micros(s.duration)}));
            }
        }
        for (name, samples) in &self.queues {
            for s in samples {
                events.push(json!({"ph": "C", "pid": 1, "name": format!("queue {name}"),
                    "ts": micros(s.at), "args": {"depth": s.depth}}));
            }
        }
        let dropped: u64 = self.workers.iter().map(|w| w.dropped).sum();
        json!({"traceEvents": events, "displayTimeUnit": "ms",
               "otherData": {"spans_dropped": dropped, "max_spans_per_worker": MAX_SPANS_PER_WORKER}})
    }

    /// Write the trace to `path` (temp file + rename, so a reader never sees half a file).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            serde_json::to_writer(&mut f, &self.to_json())?;
            f.flush()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_recorder_keeps_nothing_and_enabled_one_caps() {
        let mut off = SpanRecorder::new(None);
        off.record("work", Instant::now(), Duration::from_micros(3));
        assert!(off.into_parts().0.is_empty());

        let origin = Instant::now();
        let mut on = SpanRecorder::new(Some(origin));
        for _ in 0..MAX_SPANS_PER_WORKER + 5 {
            on.record("work", origin, Duration::from_micros(1));
        }
        let (spans, dropped) = on.into_parts();
        assert_eq!(spans.len(), MAX_SPANS_PER_WORKER);
        assert_eq!(dropped, 5);
    }

    #[test]
    fn json_has_a_named_track_per_worker_and_counters() {
        let trace = Trace {
            workers: vec![
                WorkerTrack { stage: "a".into(), worker: 0, spans: vec![Span { name: "work", start: Duration::from_micros(5), duration: Duration::from_micros(2) }], dropped: 0 },
                WorkerTrack { stage: "a".into(), worker: 1, spans: vec![], dropped: 0 },
            ],
            queues: vec![("a.out".into(), vec![DepthSample { at: Duration::from_micros(7), depth: 3 }])],
        };
        let v = trace.to_json();
        let events = v["traceEvents"].as_array().unwrap();
        let names: Vec<_> = events.iter().filter(|e| e["name"] == "thread_name").map(|e| e["args"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a#0", "a#1"]);
        let span = events.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(span["ts"], 5.0);
        assert_eq!(span["dur"], 2.0);
        let counter = events.iter().find(|e| e["ph"] == "C").unwrap();
        assert_eq!(counter["args"]["depth"], 3);
    }
}
