//! Prompt, hang-free cancellation of every thread of a pipeline.

use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shared stop signal.
///
/// Blocking operations select on [`CancelToken::receiver`] together with their queue: the
/// receiver never yields a message, but dropping the one sender disconnects it, which wakes every
/// `select!` at once. So a thread blocked on a full or empty queue is released within
/// microseconds of [`CancelToken::cancel`], without polling.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

struct Inner {
    flag: AtomicBool,
    trigger: Mutex<Option<Sender<()>>>,
    signal: Receiver<()>,
}

impl CancelToken {
    pub fn new() -> Self {
        let (trigger, signal) = crossbeam_channel::bounded(0);
        CancelToken {
            inner: Arc::new(Inner {
                flag: AtomicBool::new(false),
                trigger: Mutex::new(Some(trigger)),
                signal,
            }),
        }
    }

    /// Stop the pipeline. Idempotent.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let mut trigger = self.inner.trigger.lock().unwrap_or_else(|e| e.into_inner());
        trigger.take();
    }

    /// Whether [`cancel`](Self::cancel) has been called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// A receiver that becomes ready (disconnected) once cancelled; use it in `select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.signal
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn cancel_wakes_a_blocked_select() {
        let token = CancelToken::new();
        let (_tx, rx) = crossbeam_channel::bounded::<u32>(1);
        let t = token.clone();
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            crossbeam_channel::select! {
                recv(rx) -> _ => panic!("no message was sent"),
                recv(t.receiver()) -> _ => start.elapsed(),
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!token.is_cancelled());
        token.cancel();
        token.cancel();
        let waited = waiter.join().unwrap();
        assert!(token.is_cancelled());
        assert!(waited < Duration::from_secs(1), "woke after {waited:?}");
    }
}
