//! [`Augmenter`]: one sample's decoded pixels in, its weak view and K strong views out,
//! every view a pure function of (seed, epoch, sample index, view).
//!
//! This is what the augmentation worker pool runs (architecture.md: "the strong and weak
//! views of one image are produced from the same decoded pixels"). It is `Send + Sync`:
//! share one behind an `Arc` and give each worker its own [`Workspace`] and
//! [`AugmentedViews`] to reuse.

use super::{AppliedOp, Chain, DrawKey, Image, Workspace};
use protocon::data::jpeg::Region;
use std::fmt;

/// The weak and strong chains of a run, and its seed.
pub struct Augmenter {
    seed: u64,
    weak: Chain,
    strong: Chain,
    strong_views: usize,
}

/// The views of one sample and the ops that made them; reused from sample to sample.
#[derive(Clone, Debug, Default)]
pub struct AugmentedViews {
    /// The weak view.
    pub weak: Image,
    /// The strong views, `strong_views` of them.
    pub strong: Vec<Image>,
    /// Ops applied to the weak view, in order.
    pub weak_ops: Vec<AppliedOp>,
    /// Ops applied to each strong view, in order.
    pub strong_ops: Vec<Vec<AppliedOp>>,
}

impl AugmentedViews {
    /// Empty buffers (they grow on first use).
    pub fn new() -> AugmentedViews {
        AugmentedViews::default()
    }

    /// One line per view listing its ops, e.g. `strong[0]: Crop, Rotate(m=5, -15), Cutout(16)`.
    pub fn describe(&self) -> String {
        let line = |label: String, ops: &[AppliedOp]| {
            let list: Vec<String> = ops.iter().map(ToString::to_string).collect();
            format!("{label}: {}", if list.is_empty() { "-".to_string() } else { list.join(", ") })
        };
        let mut out = vec![line("weak".into(), &self.weak_ops)];
        for (k, ops) in self.strong_ops.iter().enumerate() {
            out.push(line(format!("strong[{k}]"), ops));
        }
        out.join("\n")
    }
}

impl Augmenter {
    /// The view number of the weak view in [`DrawKey::view`].
    pub const WEAK_VIEW: u32 = 0;

    /// An augmenter with one strong view per sample.
    pub fn new(seed: u64, weak: Chain, strong: Chain) -> Augmenter {
        Augmenter { seed, weak, strong, strong_views: 1 }
    }

    /// Sets the number of strong views per sample.
    pub fn with_strong_views(mut self, k: usize) -> Augmenter {
        self.strong_views = k;
        self
    }

    /// The run seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Strong views per sample.
    pub fn strong_views(&self) -> usize {
        self.strong_views
    }

    /// The weak chain.
    pub fn weak(&self) -> &Chain {
        &self.weak
    }

    /// The strong chain.
    pub fn strong(&self) -> &Chain {
        &self.strong
    }

    /// The [`DrawKey::view`] of strong view `k` (0-based): `1 + k`.
    pub fn strong_view_id(k: usize) -> u32 {
        1 + k as u32
    }

    /// The draw key of view `view` of sample `index` in `epoch` under this run's seed.
    pub fn key(&self, epoch: u64, index: u64, view: u32) -> DrawKey {
        DrawKey::new(self.seed, epoch, index, view)
    }

    /// Builds one view into `out` (resized as needed): the weak chain for
    /// [`Augmenter::WEAK_VIEW`], the strong chain for any other view id. Applied ops are
    /// appended to `log`.
    pub fn view(&self, src: &Image, key: DrawKey, ws: &mut Workspace, out: &mut Image, log: &mut Vec<AppliedOp>) {
        self.chain(key).apply_from(src, out, key, ws, log);
    }

    /// The part of a `width x height` source [`Augmenter::view`] will read to build each of
    /// the views `keys` from one decode: every row down to the lowest of their boxes
    /// ([`Chain::region_read`] of each view's chain), the columns from the leftmost box's left
    /// edge to the rightmost's right edge (nothing for no view). A decoder may decode only that.
    pub fn region_read(&self, width: usize, height: usize, keys: &[DrawKey]) -> Region {
        let boxes = keys.iter().map(|&key| self.chain(key).region_read(width, height, key));
        boxes.fold(Region { left: usize::MAX, right: 0, bottom: 0 }, |r, b| Region {
            left: r.left.min(b.left),
            right: r.right.max(b.left + b.width),
            bottom: r.bottom.max(b.top + b.height),
        })
    }

    /// The chain that builds the view `key`.
    fn chain(&self, key: DrawKey) -> &Chain {
        if key.view == Self::WEAK_VIEW {
            &self.weak
        } else {
            &self.strong
        }
    }

    /// Builds the weak view of sample `index` in `epoch` into `out`; applied ops are
    /// appended to `log`.
    pub fn weak_view(
        &self,
        src: &Image,
        epoch: u64,
        index: u64,
        ws: &mut Workspace,
        out: &mut Image,
        log: &mut Vec<AppliedOp>,
    ) {
        self.view(src, self.key(epoch, index, Self::WEAK_VIEW), ws, out, log);
    }

    /// Builds strong view `k` (0-based) of sample `index` in `epoch` into `out`; applied ops
    /// are appended to `log`.
    #[allow(clippy::too_many_arguments)] // the view's coordinates plus the worker's buffers
    pub fn strong_view(
        &self,
        src: &Image,
        epoch: u64,
        index: u64,
        k: usize,
        ws: &mut Workspace,
        out: &mut Image,
        log: &mut Vec<AppliedOp>,
    ) {
        self.view(src, self.key(epoch, index, Self::strong_view_id(k)), ws, out, log);
    }

    /// Builds the weak view and every strong view of one sample from the same `src` pixels
    /// into `out` (buffers and logs are reused; previous contents are replaced).
    pub fn views(&self, src: &Image, epoch: u64, index: u64, ws: &mut Workspace, out: &mut AugmentedViews) {
        out.weak_ops.clear();
        self.view(src, self.key(epoch, index, Self::WEAK_VIEW), ws, &mut out.weak, &mut out.weak_ops);
        out.strong.resize_with(self.strong_views, Image::default);
        out.strong_ops.resize_with(self.strong_views, Vec::new);
        for k in 0..self.strong_views {
            out.strong_ops[k].clear();
            let key = self.key(epoch, index, Self::strong_view_id(k));
            self.view(src, key, ws, &mut out.strong[k], &mut out.strong_ops[k]);
        }
    }
}

impl fmt::Debug for Augmenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Augmenter")
            .field("seed", &self.seed)
            .field("weak", &self.weak)
            .field("strong", &self.strong)
            .field("strong_views", &self.strong_views)
            .finish()
    }
}
