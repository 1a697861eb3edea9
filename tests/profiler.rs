//! The profiler names a stage made 10x slower as the bottleneck, and the trace file is valid
//! Chrome trace-event JSON with one track per stage worker.

mod common;

use common::{Collect, Numbers, Pass};
use protocon::{ControlEvent, Ctx, Pipeline, Stage, StageError, StageSpec};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn a_ten_times_slower_stage_is_the_bottleneck_and_the_trace_has_a_track_per_worker() {
    let dir = std::env::temp_dir().join(format!("protocon-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace_path = dir.join("run.trace.json");

    let base = Duration::from_micros(100);
    let mut p = Pipeline::builder();
    p.trace(&trace_path);
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers").queue(8), move |_| Ok(Numbers::new(Some(300), produced.clone())));
    let decode = p.stage(StageSpec::new("decode").workers(2).queue(8), numbers, move |_| Ok(Pass(base)));
    let augment = p.stage(StageSpec::new("augment").queue(8), decode, move |_| Ok(Pass(base * 10)));
    let collate = p.stage(StageSpec::new("collate").queue(8), augment, move |_| Ok(Pass(base)));
    p.sink(StageSpec::new("sink"), collate, |_| Ok(Collect::default()));
    let report = p.run().unwrap();

    let profile = &report.profile;
    assert_eq!(profile.bottleneck().unwrap().name, "augment");
    let table = profile.to_string();
    assert!(table.lines().last().unwrap() == "bottleneck: augment", "{table}");
    assert!(table.lines().next().unwrap().contains("busy %"), "{table}");
    let augment = &profile.stages[2];
    assert!(augment.busy_fraction(profile.wall_s) > 0.8, "{augment:?}");
    let collate = &profile.stages[3];
    assert!(collate.starved_fraction(profile.wall_s) > 0.5, "downstream of the bottleneck starves");
    let numbers = &profile.stages[0];
    assert!(numbers.blocked_fraction(profile.wall_s) > 0.5, "upstream of the bottleneck blocks");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace_path).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let mut tracks: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (e["tid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap().to_owned()))
        .collect();
    tracks.sort();
    let names: Vec<&str> = tracks.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["numbers#0", "decode#0", "decode#1", "augment#0", "collate#0", "sink#0"]);
    for (tid, name) in &tracks {
        let work = events.iter().filter(|e| e["ph"] == "X" && e["tid"] == *tid && e["name"] == "work").count();
        assert!(work > 0, "track {name} has no work spans");
    }
    let augment_tid = tracks.iter().find(|(_, n)| n == "augment#0").unwrap().0;
    let augment_work = events.iter().filter(|e| e["ph"] == "X" && e["tid"] == augment_tid && e["name"] == "work");
    assert_eq!(augment_work.count(), 300, "one span per item");
    let counters = events.iter().filter(|e| e["ph"] == "C" && e["name"] == "queue augment.out").count();
    assert!(counters > 10, "queue depth counters sampled ({counters})");
    std::fs::remove_dir_all(&dir).ok();
}

struct Reporter;

impl Stage for Reporter {
    type In = u64;
    type Out = u64;
    fn process(&mut self, x: u64, ctx: &mut Ctx<u64>) -> Result<(), StageError> {
        ctx.metric("value", x, x as f64 * 0.5);
        if x % 10 == 9 {
            ctx.epoch_end(x / 10);
        }
        ctx.emit(x)
    }
}

#[test]
fn metrics_and_epoch_boundaries_reach_listeners_in_order() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut p = Pipeline::builder();
    let e = events.clone();
    p.listener(move |event: &ControlEvent| e.lock().unwrap().push(event.clone()));
    let produced = Arc::new(AtomicU64::new(0));
    let numbers = p.source(StageSpec::new("numbers"), move |_| Ok(Numbers::new(Some(30), produced.clone())));
    let reported = p.stage(StageSpec::new("reporter"), numbers, |_| Ok(Reporter));
    p.sink(StageSpec::new("sink"), reported, |_| Ok(Collect::default()));
    p.run().unwrap();

    let events = events.lock().unwrap();
    let metrics: Vec<(u64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            ControlEvent::Metric { name, step, value, .. } if name == "value" => Some((*step, *value)),
            _ => None,
        })
        .collect();
    assert_eq!(metrics, (0..30).map(|x| (x, x as f64 * 0.5)).collect::<Vec<_>>());
    let epochs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ControlEvent::EpochEnd { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, [0, 1, 2]);
    let started = events.iter().filter(|e| matches!(e, ControlEvent::WorkerStarted { .. })).count();
    let finished = events.iter().filter(|e| matches!(e, ControlEvent::WorkerFinished { .. })).count();
    assert_eq!((started, finished), (3, 3));
}
