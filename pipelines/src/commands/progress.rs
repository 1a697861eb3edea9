//! Progress of `protocon train` as log lines, for when stderr is not a terminal (a run under
//! nohup or a scheduler writing to a file, where the bar would draw nothing) or with `--quiet`.
//!
//! A line comes with a train record (every `train.log_every` steps) when at least
//! `min_interval` has passed since the last line, so a fast run does not flood its log and a slow
//! one still reports every `log_every` steps: whichever is rarer. The last step always gets one.

use protocon_stages::record::{EvalRecord, TrainRecord};
use std::time::{Duration, Instant};

/// Decides when to write a progress line and writes it.
pub struct ProgressLines {
    total: u64,
    images_per_step: usize,
    min_interval: Duration,
    /// The first train record seen (step, time): the ETA's rate is measured from it.
    first: Option<(u64, Instant)>,
    last_line: Option<Instant>,
    /// The last evaluation: (step, EMA test accuracy).
    last_eval: Option<(u64, f64)>,
}

impl ProgressLines {
    /// `total` steps of `images_per_step` images each; at most one line per `min_interval`.
    pub fn new(total: u64, images_per_step: usize, min_interval: Duration) -> Self {
        ProgressLines { total, images_per_step, min_interval, first: None, last_line: None, last_eval: None }
    }

    /// The line for a train record seen at `now`, or `None` when the last line is younger than
    /// the interval (the run's last step always gets a line).
    pub fn train(&mut self, t: &TrainRecord, now: Instant) -> Option<String> {
        let done = t.step + 1;
        let first = *self.first.get_or_insert((t.step, now));
        let last_step = done >= self.total;
        if !last_step && self.last_line.is_some_and(|l| now.duration_since(l) < self.min_interval) {
            return None;
        }
        self.last_line = Some(now);
        let remaining = self.total.saturating_sub(done);
        // From the wall time since the first record (evaluations and checkpoints included, as the
        // user waits for them); before a second record, from this record's images/s.
        let per_step = if t.step > first.0 {
            now.duration_since(first.1).as_secs_f64() / (t.step - first.0) as f64
        } else {
            self.images_per_step as f64 / t.images_per_s.max(1e-9)
        };
        let mut line = format!(
            "step {done}/{} ({:.0}%)  {:.0} img/s  ETA {}  loss {:.4}  mask {:.2}",
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            t.images_per_s,
            clock(per_step * remaining as f64),
            t.loss,
            t.mask_rate
        );
        if let Some((step, acc)) = self.last_eval {
            line.push_str(&format!("  test EMA {:.2}% (step {})", 100.0 * acc, step + 1));
        }
        Some(line)
    }

    /// Remember an evaluation for the next lines, and give its own line.
    pub fn eval(&mut self, e: &EvalRecord) -> String {
        self.last_eval = Some((e.step, e.test_acc_ema));
        format!(
            "step {}: test accuracy {:.2}% (EMA {:.2}%), best {:.2}% (EMA {:.2}%)",
            e.step + 1,
            100.0 * e.test_acc,
            100.0 * e.test_acc_ema,
            100.0 * e.best_test_acc,
            100.0 * e.best_test_acc_ema
        )
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, images_per_s: f64) -> TrainRecord {
        TrainRecord { images_per_s, loss: 1.5, mask_rate: 0.25, ..TrainRecord::new(step, 0, 0.03) }
    }

    #[test]
    fn lines_come_at_most_once_per_interval_and_always_at_the_last_step() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = ProgressLines::new(100, 120, Duration::from_secs(10));
        // 120 images per step at 60 img/s: 2 s per step, 90 steps left = 180 s.
        assert_eq!(p.train(&record(9, 60.0), at(0)).unwrap(), "step 10/100 (10%)  60 img/s  ETA 3m00s  loss 1.5000  mask 0.25");
        assert!(p.train(&record(19, 60.0), at(5)).is_none(), "5 s after the last line");
        // 20 steps in 12 s since the first record: 0.6 s per step, 70 left = 42 s.
        let line = p.train(&record(29, 200.0), at(12)).unwrap();
        assert!(line.starts_with("step 30/100 (30%)  200 img/s  ETA 42s"), "{line}");
        p.eval(&EvalRecord { step: 29, test_acc: 0.5, test_acc_ema: 0.6125, best_test_acc: 0.5, best_test_acc_ema: 0.6125 });
        assert!(p.train(&record(39, 200.0), at(13)).is_none());
        let last = p.train(&record(99, 200.0), at(14)).unwrap();
        assert!(last.starts_with("step 100/100 (100%)") && last.contains("ETA 0s") && last.ends_with("test EMA 61.25% (step 30)"), "{last}");
    }

    #[test]
    fn clock_reads_like_a_clock() {
        assert_eq!((clock(5.4), clock(65.0), clock(3723.0), clock(-1.0)), ("5s".into(), "1m05s".into(), "1h02m03s".into(), "0s".into()));
    }
}
