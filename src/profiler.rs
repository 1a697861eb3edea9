//! Where the time goes: per-stage busy / starved / blocked time, throughput and queue depths,
//! and the stage that limits the pipeline's throughput.

use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters one worker thread updates as it runs. Atomics, so the supervisor can print a
/// snapshot on demand while the run goes on; each worker has its own (no contention).
#[derive(Debug, Default)]
pub struct WorkerStats {
    busy_ns: AtomicU64,
    starved_ns: AtomicU64,
    blocked_ns: AtomicU64,
    items_in: AtomicU64,
    items_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl WorkerStats {
    pub(crate) fn add_busy(&self, d: Duration) {
        self.busy_ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn add_starved(&self, d: Duration) {
        self.starved_ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn add_blocked(&self, d: Duration) {
        self.blocked_ns.fetch_add(nanos(d), Ordering::Relaxed);
    }
    pub(crate) fn add_in(&self, bytes: u64) {
        self.items_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn add_out(&self, bytes: u64) {
        self.items_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn blocked(&self) -> Duration {
        Duration::from_nanos(self.blocked_ns.load(Ordering::Relaxed))
    }
}

/// What a stage did during a run (summed over its workers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageProfile {
    pub name: String,
    pub workers: usize,
    /// Time spent in the stage's own code.
    pub busy_s: f64,
    /// Time spent waiting for input (input queue empty).
    pub starved_s: f64,
    /// Time spent waiting for room in the output queue (downstream too slow).
    pub blocked_s: f64,
    pub items_in: u64,
    pub items_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Name of the queue this stage reads, if any.
    pub input_queue: Option<String>,
}

/// Depth samples of one queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueProfile {
    pub name: String,
    pub capacity: usize,
    pub mean_depth: f64,
    pub max_depth: usize,
    pub samples: u64,
}

/// The profile of a run: wall time, stages in pipeline order, queues.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Profile {
    pub wall_s: f64,
    pub stages: Vec<StageProfile>,
    pub queues: Vec<QueueProfile>,
}

impl StageProfile {
    pub(crate) fn from_workers(
        name: &str,
        workers: &[std::sync::Arc<WorkerStats>],
        input_queue: Option<String>,
    ) -> Self {
        let sum = |f: fn(&WorkerStats) -> &AtomicU64| -> u64 {
            workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
        };
        StageProfile {
            name: name.to_owned(),
            workers: workers.len(),
            busy_s: sum(|w| &w.busy_ns) as f64 * 1e-9,
            starved_s: sum(|w| &w.starved_ns) as f64 * 1e-9,
            blocked_s: sum(|w| &w.blocked_ns) as f64 * 1e-9,
            items_in: sum(|w| &w.items_in),
            items_out: sum(|w| &w.items_out),
            bytes_in: sum(|w| &w.bytes_in),
            bytes_out: sum(|w| &w.bytes_out),
            input_queue,
        }
    }

    fn fraction(&self, seconds: f64, wall_s: f64) -> f64 {
        let capacity = wall_s * self.workers.max(1) as f64;
        if capacity > 0.0 {
            (seconds / capacity).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Share of the stage's worker-time spent in its own code.
    pub fn busy_fraction(&self, wall_s: f64) -> f64 {
        self.fraction(self.busy_s, wall_s)
    }
    pub fn starved_fraction(&self, wall_s: f64) -> f64 {
        self.fraction(self.starved_s, wall_s)
    }
    pub fn blocked_fraction(&self, wall_s: f64) -> f64 {
        self.fraction(self.blocked_s, wall_s)
    }

    /// Items handled per second: inputs for stages and sinks, outputs for sources.
    pub fn items_per_s(&self, wall_s: f64) -> f64 {
        let items = if self.input_queue.is_some() { self.items_in } else { self.items_out };
        if wall_s > 0.0 {
            items as f64 / wall_s
        } else {
            0.0
        }
    }
}

impl Profile {
    /// The stage that limits throughput: the one whose workers are busiest.
    ///
    /// In a pipeline of bounded queues the slowest stage runs flat out while the stages before it
    /// block on its full input queue and the stages after it starve, so the highest busy share
    /// names it, whatever its position. Adding workers to any other stage would not help.
    pub fn bottleneck(&self) -> Option<&StageProfile> {
        self.stages.iter().max_by(|a, b| {
            a.busy_fraction(self.wall_s).total_cmp(&b.busy_fraction(self.wall_s))
        })
    }

    /// Mean depth of the queue named `name`.
    pub fn queue(&self, name: &str) -> Option<&QueueProfile> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// The profile as a JSON value with per-stage fractions and rates filled in.
    pub fn to_json(&self) -> serde_json::Value {
        let stages: Vec<_> = self
            .stages
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("profile serialises");
                let o = v.as_object_mut().expect("struct is an object");
                o.insert("busy_fraction".into(), s.busy_fraction(self.wall_s).into());
                o.insert("starved_fraction".into(), s.starved_fraction(self.wall_s).into());
                o.insert("blocked_fraction".into(), s.blocked_fraction(self.wall_s).into());
                o.insert("items_per_s".into(), s.items_per_s(self.wall_s).into());
                v
            })
            .collect();
        serde_json::json!({
            "wall_s": self.wall_s,
            "stages": stages,
            "queues": self.queues,
            "bottleneck": self.bottleneck().map(|s| s.name.clone()),
        })
    }
}

/// The profiler table: one row per stage, then `bottleneck: <stage>`.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>6}  {:>8}  {:>8}  {:>12}  {:>11}",
            "stage", "workers", "busy %", "starved %", "blocked %", "items/s", "queue depth"
        )?;
        for s in &self.stages {
            let depth = s
                .input_queue
                .as_deref()
                .and_then(|q| self.queue(q))
                .map(|q| format!("{:.1}/{}", q.mean_depth, q.capacity))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<width$}  {:>7}  {:>6.1}  {:>9.1}  {:>9.1}  {:>12.1}  {:>11}",
                s.name,
                s.workers,
                100.0 * s.busy_fraction(self.wall_s),
                100.0 * s.starved_fraction(self.wall_s),
                100.0 * s.blocked_fraction(self.wall_s),
                s.items_per_s(self.wall_s),
                depth,
            )?;
        }
        writeln!(f, "wall time: {:.3} s", self.wall_s)?;
        match self.bottleneck() {
            Some(s) => write!(f, "bottleneck: {}", s.name),
            None => write!(f, "bottleneck: -"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, workers: usize, busy: f64, input: bool) -> StageProfile {
        StageProfile {
            name: name.into(),
            workers,
            busy_s: busy,
            items_in: if input { 100 } else { 0 },
            items_out: 100,
            input_queue: input.then(|| format!("{name}.in")),
            ..Default::default()
        }
    }

    #[test]
    fn bottleneck_is_busiest_per_worker() {
        // "wide" has more busy seconds in total but four workers: 50% each; "narrow" is 90%.
        let p = Profile {
            wall_s: 2.0,
            stages: vec![stage("src", 1, 0.2, false), stage("wide", 4, 4.0, true), stage("narrow", 1, 1.8, true)],
            queues: vec![],
        };
        assert_eq!(p.bottleneck().unwrap().name, "narrow");
        assert!((p.stages[1].busy_fraction(2.0) - 0.5).abs() < 1e-12);
        assert!((p.stages[0].items_per_s(2.0) - 50.0).abs() < 1e-12);
        let table = p.to_string();
        assert!(table.ends_with("bottleneck: narrow"), "{table}");
        assert_eq!(p.to_json()["bottleneck"], "narrow");
    }
}
