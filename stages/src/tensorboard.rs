//! TensorBoard scalars: the metrics records as an event file that `tensorboard --logdir runs/`
//! reads, beside `metrics.jsonl`.
//!
//! An event file is a sequence of TFRecords (a little-endian u64 length, the masked CRC-32C of
//! those 8 bytes, the data, the masked CRC-32C of the data), each holding one `tensorflow.Event`
//! protobuf. The protobuf messages are the few fields of `event.proto` and `summary.proto` that
//! scalars use, encoded by `prost`; the CRC is the `crc32c` crate's.
//!
//! Why not a TensorBoard crate: `tensorboard-rs` (last release March 2022, its repository marked
//! inactive) pulls `image` 0.23 and `protobuf` 2 (RUSTSEC-2024-0437); `syntaxdot-summary` is a
//! 2021 beta on `prost` 0.7; `tfrecord` brings TensorFlow's whole protobuf tree. The framing is
//! the only part none of the maintained crates below covers.

use crate::record::Record;
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `tensorflow.Event`: the fields written here.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "6")]
    pub session_log: Option<SessionLog>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value` (a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// `tensorflow.SessionLog`: a `START` at step s tells TensorBoard to drop the events after s that
/// an earlier, cut-off process wrote (a resumed run).
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    /// 1 = START.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// TensorFlow's CRC mask: rotate right by 15 and add a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Reads the TFRecords of an event file back, checking both CRCs of each: for tests and tools.
pub fn read_records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let bad = |what: &str| format!("record {}: {what}", records.len());
        if rest.len() < 12 {
            return Err(bad("truncated header"));
        }
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        if u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) != masked_crc(len_bytes) {
            return Err(bad("length CRC mismatch"));
        }
        if rest.len() < 16 + len {
            return Err(bad("truncated data"));
        }
        let data = &rest[12..12 + len];
        if u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes")) != masked_crc(data) {
            return Err(bad("data CRC mismatch"));
        }
        records.push(data.to_vec());
        rest = &rest[16 + len..];
    }
    Ok(records)
}

/// The events of an event file, CRCs checked: for tests and tools.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    read_records(bytes)?
        .iter()
        .enumerate()
        .map(|(i, r)| Event::decode(r.as_slice()).map_err(|e| format!("record {i}: {e}")))
        .collect()
}

/// An event file being written (`events.out.tfevents.<unix time>.protocon` in its directory).
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// A new event file in `dir` (created if missing), starting with the version record. When
    /// `resumed_at` is a step, a `SessionLog START` there makes TensorBoard drop later events
    /// of the earlier, cut-off files of this run.
    pub fn create(dir: &Path, resumed_at: Option<u64>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let wall = now();
        // Two processes of one run a second apart would share a name: add a counter then.
        let mut path = dir.join(format!("events.out.tfevents.{}.protocon", wall as u64));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("events.out.tfevents.{}.protocon.{n}", wall as u64));
            n += 1;
        }
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut w = EventWriter { path, file };
        w.write(&Event { wall_time: wall, file_version: Some("brain.Event:2".into()), ..Default::default() })?;
        if let Some(step) = resumed_at {
            w.write(&Event { wall_time: wall, step: step as i64, session_log: Some(SessionLog { status: 1 }), ..Default::default() })?;
        }
        w.file.flush()?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.file.write_all(&frame(&event.encode_to_vec()))
    }

    /// One event with `scalars` at `step`, flushed (a crashed run keeps what it wrote).
    pub fn scalars(&mut self, step: u64, scalars: &[(String, f64)]) -> std::io::Result<()> {
        if scalars.is_empty() {
            return Ok(());
        }
        let value = scalars.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32) }).collect();
        self.write(&Event { wall_time: now(), step: step as i64, summary: Some(Summary { value }), ..Default::default() })?;
        self.file.flush()
    }
}

/// A record's scalars for TensorBoard, at the number of steps trained (`step + 1`, so the
/// evaluation after 300 steps sits at 300): every number of the record as `train/<field>`,
/// `test/<field>` or `epoch/<field>` (booleans as 0 or 1; per-head lists as `<field>/head<i>`),
/// so fields an objective adds show up without a change here.
pub fn record_scalars(record: &Record) -> (u64, Vec<(String, f64)>) {
    let (group, value) = match record {
        Record::Train(r) => ("train", serde_json::to_value(r)),
        Record::Eval(r) => ("test", serde_json::to_value(r)),
        Record::Epoch(r) => ("epoch", serde_json::to_value(r)),
    };
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = value {
        for (key, v) in fields {
            if matches!(key.as_str(), "kind" | "step") {
                continue;
            }
            let tag = format!("{group}/{key}");
            match v {
                serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (tag, x))),
                serde_json::Value::Bool(b) => out.push((tag, if b { 1.0 } else { 0.0 })),
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        out.extend(item.as_f64().map(|x| (format!("{tag}/head{i}"), x)));
                    }
                }
                _ => {}
            }
        }
    }
    (record.step() + 1, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{EvalRecord, TrainRecord};

    /// The CRC-32C check value (RFC 3720 B.4: "123456789" -> 0xE3069283), then TensorFlow's mask
    /// worked by hand: rotr(0xE3069283, 15) = 0x2507C60D, + 0xA282EAD8 = 0xC78AB0E5.
    #[test]
    fn the_mask_is_tensorflows() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn frames_read_back_and_a_flipped_bit_is_caught() {
        let mut bytes = frame(b"abc");
        bytes.extend(frame(b""));
        assert_eq!(bytes.len(), 3 + 16 + 16);
        assert_eq!(&bytes[..8], &3u64.to_le_bytes());
        assert_eq!(read_records(&bytes).unwrap(), vec![b"abc".to_vec(), vec![]]);
        bytes[13] ^= 1;
        assert!(read_records(&bytes).unwrap_err().contains("data CRC"));
    }

    /// A scalar event's bytes, worked from the protobuf wire format by hand: field 1 (double,
    /// wire type 1) = 0x09 + 8 bytes, field 2 (varint) = 0x10 + 7, field 5 (message) = 0x2a +
    /// length; inside, Value (0x0a + length) with tag (0x0a 01 'x') and simple_value (0x15 +
    /// 4 bytes of 1.5f32 = 00 00 c0 3f).
    #[test]
    fn a_scalar_event_encodes_as_the_wire_format_says() {
        let e = Event {
            wall_time: 0.0,
            step: 7,
            summary: Some(Summary { value: vec![SummaryValue { tag: "x".into(), simple_value: Some(1.5) }] }),
            ..Default::default()
        };
        // proto3 leaves the zero wall_time out.
        assert_eq!(e.encode_to_vec(), [0x10, 7, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'x', 0x15, 0x00, 0x00, 0xc0, 0x3f]);
    }

    #[test]
    fn records_become_tagged_scalars_at_steps_trained() {
        let mut t = TrainRecord::new(299, 2, 0.03);
        t.loss = 1.25;
        t.refined = Some(true);
        let (step, s) = record_scalars(&Record::Train(t));
        assert_eq!(step, 300);
        let get = |k: &str| s.iter().find(|(t, _)| t == k).map(|(_, v)| *v);
        assert_eq!((get("train/loss"), get("train/lr"), get("train/refined"), get("train/epoch")), (Some(1.25), Some(0.03), Some(1.0), Some(2.0)));
        assert_eq!(get("train/step"), None);
        assert_eq!(get("train/loss_px"), None, "absent optional fields are not written");
        let (step, s) = record_scalars(&Record::Eval(EvalRecord { step: 99, test_acc: 0.5, test_acc_ema: 0.625, best_test_acc: 0.5, best_test_acc_ema: 0.625 }));
        assert_eq!((step, s.len()), (100, 4));
        assert!(s.contains(&("test/test_acc_ema".into(), 0.625)));
    }

    #[test]
    fn an_event_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), Some(40)).unwrap();
        w.scalars(41, &[("train/loss".into(), 0.75), ("train/mask_rate".into(), 0.5)]).unwrap();
        w.scalars(42, &[("train/loss".into(), 0.5)]).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        let events = read_events(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!((events[1].step, events[1].session_log.as_ref().map(|s| s.status)), (40, Some(1)));
        let values = |e: &Event| e.summary.as_ref().unwrap().value.iter().map(|v| (v.tag.clone(), v.simple_value.unwrap())).collect::<Vec<_>>();
        assert_eq!(events[2].step, 41);
        assert_eq!(values(&events[2]), [("train/loss".to_string(), 0.75), ("train/mask_rate".to_string(), 0.5)]);
        assert_eq!((events[3].step, values(&events[3])), (42, vec![("train/loss".to_string(), 0.5)]));
    }
}
