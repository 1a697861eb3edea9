//! How many threads the fused CPU kernels use, and the pool they run on.
//!
//! The kernels run on a private rayon pool rather than the global one, so that data-loading
//! stages that use rayon for augmentation do not compete with the compute stage for the same
//! workers. Inside a kernel, work is split over the images of the batch first; only when the
//! batch has fewer images than threads does `gemm` get the remaining threads
//! (`gemm::Parallelism::Rayon`), because per-image GEMMs at CIFAR sizes are too small to split
//! without losing more to synchronisation than is gained.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Thread count asked for with [`set_num_threads`]; 0 means "use the default".
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// The pool and the thread count it was built with, rebuilt when the count changes.
static POOL: Mutex<Option<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

/// Sets the number of threads the fused CPU kernels in [`crate::ops`] use.
///
/// `0` restores the default: `RAYON_NUM_THREADS` when set, otherwise the number of physical
/// cores (the same rule candle uses for its own CPU kernels, so that both sides of a
/// fused-vs-stock comparison get the same threads). Takes effect at the next kernel call.
pub fn set_num_threads(threads: usize) {
    REQUESTED.store(threads, Ordering::Relaxed);
}

/// The number of threads the fused CPU kernels use (see [`set_num_threads`]).
pub fn num_threads() -> usize {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => candle_core::utils::get_num_threads().max(1),
        n => n,
    }
}

/// Runs `work` on the kernel pool, or on the calling thread when one thread is configured
/// (a pool of one would only add a hand-off).
pub(crate) fn run<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let threads = num_threads();
    if threads == 1 {
        return work();
    }
    match pool(threads) {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((built_with, pool)) = guard.as_ref() {
        if *built_with == threads {
            return Some(Arc::clone(pool));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("protocon-ops-{i}"))
        .build()
        .ok()
        .map(Arc::new)?;
    *guard = Some((threads, Arc::clone(&pool)));
    Some(pool)
}

/// How a batch of `batch` independent images is split over the configured threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSplit {
    /// Images each task processes one after the other (the last task may get fewer).
    pub images_per_task: usize,
    /// Number of tasks, at most the number of threads.
    pub tasks: usize,
    /// Parallelism for the GEMMs inside one task: the threads the tasks leave idle.
    pub gemm: gemm::Parallelism,
}

impl BatchSplit {
    pub(crate) fn new(batch: usize) -> Self {
        let threads = num_threads();
        let tasks = threads.min(batch).max(1);
        let images_per_task = batch.div_ceil(tasks).max(1);
        let tasks = batch.div_ceil(images_per_task).max(1);
        let spare = threads / tasks;
        let gemm = if spare > 1 {
            gemm::Parallelism::Rayon(spare)
        } else {
            gemm::Parallelism::None
        };
        Self {
            images_per_task,
            tasks,
            gemm,
        }
    }
}
