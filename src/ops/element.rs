//! The element types the fused kernels are written for, and the glue between candle's
//! `CpuStorage` and plain slices.
//!
//! The kernels are generic so that the f64 instantiation can be checked against finite
//! differences at tight tolerances; training itself runs in f32.

use std::cell::RefCell;
use std::thread::LocalKey;

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};

/// A float type the fused kernels run on: `f32` or `f64`.
pub(crate) trait Element: WithDType {
    /// This type's per-thread pool of scratch buffers (see [`super::scratch`]).
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static F32_SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static F64_SCRATCH: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Element for f32 {
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &F32_SCRATCH
    }
}

impl Element for f64 {
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &F64_SCRATCH
    }
}

/// The elements a contiguous tensor covers, in row-major order.
///
/// The public entry points make every operand contiguous before a custom op sees it, so a
/// strided layout here is a bug in this module, reported rather than silently copied.
pub(crate) fn contiguous_slice<'a, T: Element>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!(
            "protocon::ops: {what} must be contiguous, got strides {:?}",
            layout.stride()
        ),
    }
}
