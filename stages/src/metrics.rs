//! The metrics sink: appends each [`Record`] as one JSON line to `metrics.jsonl` (flushed per
//! line, so a crashed run keeps what it logged), writes its numbers to a TensorBoard event file
//! when given one, and hands it to an observer (a progress bar).

use crate::record::Record;
use crate::tensorboard::{record_scalars, EventWriter};
use protocon::{Control, Sink, StageError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Sees each record after it is written.
pub type Observer = Box<dyn FnMut(&Record) + Send>;

pub struct MetricsSink {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    observer: Option<Observer>,
    tensorboard: Option<EventWriter>,
}

impl MetricsSink {
    /// Append to `path` (created if missing).
    pub fn append(path: &Path, observer: Option<Observer>) -> Result<Self, StageError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| StageError::msg(format!("cannot open metrics file {}: {e}", path.display())))?;
        Ok(MetricsSink { path: path.to_owned(), file: std::io::BufWriter::new(file), observer, tensorboard: None })
    }

    /// Also write each record's scalars to a TensorBoard event file.
    pub fn with_tensorboard(mut self, events: EventWriter) -> Self {
        self.tensorboard = Some(events);
        self
    }
}

impl Sink for MetricsSink {
    type In = Record;

    fn consume(&mut self, record: Record, _: &Control) -> Result<(), StageError> {
        let line = serde_json::to_string(&record)?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| StageError::msg(format!("writing {}: {e}", self.path.display())))?;
        if let Some(events) = &mut self.tensorboard {
            let (step, scalars) = record_scalars(&record);
            events.scalars(step, &scalars).map_err(|e| StageError::msg(format!("writing {}: {e}", events.path().display())))?;
        }
        if let Some(observe) = &mut self.observer {
            observe(&record);
        }
        Ok(())
    }
}

/// Drop the lines of `path` after step `step` (exclusive of `step`'s records: keeps steps `< step`),
/// so a resumed run continues the file where its checkpoint left off. Rewritten atomically.
pub fn truncate_after(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Record>(l).map(|r| r.step() < step).unwrap_or(false)
        })
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    std::fs::rename(tmp, path)
}
