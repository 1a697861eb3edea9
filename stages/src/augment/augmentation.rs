//! The plug-in point: [`Augmentation`], the context it runs in, and the record of what ran.
//!
//! A custom augmentation is one type with one required method (`apply`), like ripgrep's
//! `Matcher` or candle's `Module` (docs/style.md); `apply_from` and `region_read` are
//! optional shortcuts for ops that crop (read the source in place; let a JPEG decode only
//! around the crop). Everything else an op may need comes through
//! [`AugContext`]: its random stream (keyed on the sample, never on the worker), a scratch
//! image to avoid allocating, and a way to report what it did for previews.

use super::{AugRng, CropBox, Image};
use std::fmt;
use std::sync::Arc;

/// One augmentation step: transforms an image in place.
///
/// Implementations must draw every random number from `ctx.rng()` (so the output depends
/// only on the run seed, epoch, sample index and view) and must not keep per-call state in
/// `self` (one value is shared by all workers, hence `Send + Sync`).
///
/// Closures `Fn(&mut Image, &mut AugContext)` implement it too.
///
/// ```
/// use protocon_stages::augment::{AugContext, Augmentation, Image};
///
/// /// Inverts every pixel with probability `p`.
/// struct Invert { p: f64 }
///
/// impl Augmentation for Invert {
///     fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
///         if !ctx.rng().chance(self.p) {
///             return ctx.record_skipped();
///         }
///         img.data_mut().iter_mut().for_each(|v| *v = 255 - *v);
///     }
/// }
/// ```
pub trait Augmentation: Send + Sync {
    /// Transforms `img` in place.
    ///
    /// * `img`: the view being built; ops may change its size (crops, resizes) but not its
    ///   channel count.
    /// * `ctx`: the op's random stream, a scratch buffer and the applied-ops record. If the op
    ///   records nothing, the chain records it under its registered name; an op that decided
    ///   not to act calls [`AugContext::record_skipped`].
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>);

    /// Builds the result from `src` into `out`: how a chain runs its first op, on the decoded
    /// sample that every view of it shares.
    ///
    /// The default copies `src` into `out`, then calls [`Augmentation::apply`]. Ops that crop
    /// or resize override it to read `src` directly, which saves copying the whole source
    /// (about 30 us per view of a 500x375 photo); an override must give the same output.
    fn apply_from(&self, src: &Image, out: &mut Image, ctx: &mut AugContext<'_>) {
        out.copy_from(src);
        self.apply(out, ctx);
    }

    /// The box of a `width x height` source that [`Augmentation::apply_from`] will read when
    /// `rng` is the stream it will be given; `None` (the default) means it may read any pixel.
    ///
    /// A decoder then stops below the box and may decode only a window of columns around
    /// it ([`Chain::region_read`](super::Chain::region_read)): a random crop of a photo never
    /// pays for decoding the rest. An override must make the same draws `apply_from` makes, so
    /// that it describes the very crop `apply_from` will take, and `apply_from` must then
    /// accept a source that is such a window ([`Image::window`]): full height, with only the
    /// box's rows and columns guaranteed.
    fn region_read(&self, width: usize, height: usize, rng: &mut AugRng) -> Option<CropBox> {
        let _ = (width, height, rng);
        None
    }
}

impl<F> Augmentation for F
where
    F: Fn(&mut Image, &mut AugContext<'_>) + Send + Sync,
{
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        self(img, ctx)
    }
}

/// Per-worker buffers reused from one image to the next, so that augmenting allocates
/// nothing once warm. Make one per worker thread (ripgrep's `build_parallel` factory
/// pattern); it is not shared.
pub struct Workspace {
    pub(crate) scratch: Image,
    pub(crate) resizer: fast_image_resize::Resizer,
    pub(crate) floats: Vec<f32>,
}

impl Workspace {
    /// Empty buffers; they grow to the largest image seen.
    pub fn new() -> Workspace {
        Workspace {
            scratch: Image::default(),
            resizer: fast_image_resize::Resizer::new(),
            floats: Vec::new(),
        }
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl fmt::Debug for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workspace").field("scratch_bytes", &self.scratch.data().len()).finish()
    }
}

/// What one op slot may use while it runs.
pub struct AugContext<'a> {
    rng: AugRng,
    workspace: &'a mut Workspace,
    log: &'a mut Vec<AppliedOp>,
    element: &'a Arc<str>,
    handled: bool,
}

impl<'a> AugContext<'a> {
    pub(crate) fn new(
        rng: AugRng,
        workspace: &'a mut Workspace,
        log: &'a mut Vec<AppliedOp>,
        element: &'a Arc<str>,
    ) -> AugContext<'a> {
        AugContext { rng, workspace, log, element, handled: false }
    }

    /// This op's random stream (keyed on seed, epoch, sample, view and the op's slot).
    pub fn rng(&mut self) -> &mut AugRng {
        &mut self.rng
    }

    /// A second image buffer with unspecified contents, for ops that cannot work in place:
    /// write the result into it, then `std::mem::swap(img, ctx.scratch())`.
    pub fn scratch(&mut self) -> &mut Image {
        &mut self.workspace.scratch
    }

    /// Records that this op was applied, under its registered name, with an optional value
    /// (the parameter actually used: a factor, an angle, a size).
    pub fn record(&mut self, value: Option<f32>) {
        self.handled = true;
        self.log.push(AppliedOp { name: OpName::Registered(self.element.clone()), magnitude: None, value });
    }

    /// Records that this op decided not to act (e.g. lost its coin flip): nothing is listed.
    pub fn record_skipped(&mut self) {
        self.handled = true;
    }

    /// Records a built-in sub-op (e.g. one RandAugment pick) with its magnitude and value.
    pub(crate) fn record_builtin(&mut self, name: &'static str, magnitude: Option<u8>, value: Option<f32>) {
        self.handled = true;
        self.log.push(AppliedOp { name: OpName::Builtin(name), magnitude, value });
    }

    /// Replaces `img` with what `build` writes from it into the scratch image (the old pixels
    /// become the scratch): how an op that has [`Augmentation::apply_from`] runs in place.
    pub(crate) fn rebuild(&mut self, img: &mut Image, build: impl FnOnce(&Image, &mut Image, &mut Self)) {
        let mut out = std::mem::take(&mut self.workspace.scratch);
        build(img, &mut out, self);
        self.workspace.scratch = std::mem::replace(img, out);
    }

    /// Both the scratch image and the resizer, for built-in ops.
    pub(crate) fn workspace(&mut self) -> &mut Workspace {
        self.workspace
    }

    /// Whether the op recorded anything (or declared it skipped).
    pub(crate) fn handled(&self) -> bool {
        self.handled
    }
}

/// Name of an applied op: a built-in's fixed name or a chain element's registered name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpName {
    /// A built-in op or RandAugment pick, e.g. `"Rotate"`.
    Builtin(&'static str),
    /// The name a chain element was registered under, e.g. `"gaussian_noise"`.
    Registered(Arc<str>),
}

impl OpName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        match self {
            OpName::Builtin(s) => s,
            OpName::Registered(s) => s,
        }
    }
}

impl fmt::Display for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One op that changed a view, for previews and debugging.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedOp {
    /// Which op.
    pub name: OpName,
    /// RandAugment's integer magnitude (out of 10), where the op has one.
    pub magnitude: Option<u8>,
    /// The parameter actually used (signed where the op draws a sign): a factor, degrees,
    /// pixels, bits, a threshold.
    pub value: Option<f32>,
}

impl fmt::Display for AppliedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        match (self.magnitude, self.value) {
            (Some(m), Some(v)) => write!(f, "(m={m}, {v})"),
            (Some(m), None) => write!(f, "(m={m})"),
            (None, Some(v)) => write!(f, "({v})"),
            (None, None) => Ok(()),
        }
    }
}
