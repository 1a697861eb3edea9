//! Buffer reuse: per-thread scratch for im2col columns, and output allocation without zeroing.
//!
//! Stock candle spends about a fifth of a training step zero-filling freshly allocated
//! buffers that are then overwritten. Here the column buffers of im2col are kept per worker
//! thread and reused from call to call (they are zeroed once, when a buffer first grows), and
//! outputs are allocated uninitialised and written exactly once by the kernel.
//!
//! Memory held: at most two buffers per kernel thread, each as large as the largest column
//! matrix seen (for WRN-28-2 on 32x32 inputs, 288 x 1024 floats, about 1.2 MB).

use std::mem::MaybeUninit;

use super::element::Element;

/// Runs `f` with a scratch buffer of exactly `len` elements taken from this thread's pool.
///
/// The contents are whatever the previous user left: callers overwrite what they read.
/// Re-entrant: a nested call takes a second buffer from the pool.
pub(crate) fn with_scratch<T: Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut buffer = T::scratch_pool()
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default();
    if buffer.len() < len {
        buffer.resize(len, T::zero());
    }
    let result = f(&mut buffer[..len]);
    T::scratch_pool().with(|pool| pool.borrow_mut().push(buffer));
    result
}

/// Allocates an output of `len` elements without zero-filling it; `init` writes it.
///
/// # Safety
/// `init` must write every element of the slice it is given when it returns `Ok`.
pub(crate) unsafe fn output_with<T, E>(
    len: usize,
    init: impl FnOnce(&mut [MaybeUninit<T>]) -> Result<(), E>,
) -> Result<Vec<T>, E> {
    let mut out = Vec::with_capacity(len);
    init(&mut out.spare_capacity_mut()[..len])?;
    // SAFETY: the caller guarantees `init` wrote all `len` elements.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Writes `value` to every element and returns the now initialised slice.
pub(crate) fn fill_init<T: Copy>(slice: &mut [MaybeUninit<T>], value: T) -> &mut [T] {
    for element in slice.iter_mut() {
        element.write(value);
    }
    // SAFETY: every element was just written; `MaybeUninit<T>` has the layout of `T`.
    unsafe { &mut *(slice as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Pointer to write into an uninitialised slice through a raw-pointer API such as `gemm`.
pub(crate) fn uninit_ptr<T>(slice: &mut [MaybeUninit<T>]) -> *mut T {
    slice.as_mut_ptr().cast()
}
