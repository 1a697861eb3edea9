//! [`Chain`]: an ordered list of named augmentations that builds one view.

use super::{AppliedOp, AugContext, Augmentation, CropBox, DrawKey, Image, OpName, Workspace};
use std::fmt;
use std::sync::Arc;

struct Element {
    name: Arc<str>,
    op: Box<dyn Augmentation>,
}

/// The ops that make one kind of view (weak or strong), applied in order.
///
/// Element `i` draws from the random stream of slot `i` of the view's [`DrawKey`], so an
/// element's randomness does not depend on what the elements before it drew (inserting an
/// element does shift the slots of those after it).
#[derive(Default)]
pub struct Chain {
    elements: Vec<Element>,
}

impl Chain {
    /// An empty chain (the identity).
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Appends `op` under `name` (the name previews show when the op records nothing).
    pub fn push(&mut self, name: &str, op: impl Augmentation + 'static) {
        self.push_boxed(name, Box::new(op));
    }

    /// Appends an already boxed op.
    pub fn push_boxed(&mut self, name: &str, op: Box<dyn Augmentation>) {
        self.elements.push(Element { name: Arc::from(name), op });
    }

    /// Builder form of [`Chain::push`].
    pub fn with(mut self, name: &str, op: impl Augmentation + 'static) -> Chain {
        self.push(name, op);
        self
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the chain has no element.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Element names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().map(|e| &*e.name)
    }

    /// Applies every element to `img` in place.
    ///
    /// * `key`: the view's coordinates; element `i` uses `key.rng(i)`.
    /// * `ws`: the calling worker's buffers.
    /// * `log`: applied ops are appended (it is not cleared).
    pub fn apply(&self, img: &mut Image, key: DrawKey, ws: &mut Workspace, log: &mut Vec<AppliedOp>) {
        for slot in 0..self.elements.len() {
            self.run(slot, key, ws, log, |op, ctx| op.apply(img, ctx));
        }
    }

    /// Builds the view of `src` into `out`: the same result as copying `src` into `out` and
    /// calling [`Chain::apply`], but the first element reads `src` itself
    /// ([`Augmentation::apply_from`]), so a leading crop never copies the whole source.
    pub fn apply_from(&self, src: &Image, out: &mut Image, key: DrawKey, ws: &mut Workspace, log: &mut Vec<AppliedOp>) {
        if self.elements.is_empty() {
            return out.copy_from(src);
        }
        self.run(0, key, ws, log, |op, ctx| op.apply_from(src, out, ctx));
        for slot in 1..self.elements.len() {
            self.run(slot, key, ws, log, |op, ctx| op.apply(out, ctx));
        }
    }

    /// The box of a `width x height` source that [`Chain::apply_from`] will read for the view
    /// `key`: what its first element reports ([`Augmentation::region_read`]), else the whole
    /// image. A decoder may decode only that much.
    pub fn region_read(&self, width: usize, height: usize, key: DrawKey) -> CropBox {
        let first = self.elements.first().and_then(|e| e.op.region_read(width, height, &mut key.rng(0)));
        first.unwrap_or(CropBox { left: 0, top: 0, width, height })
    }

    /// Runs element `slot` with its random stream, recording it under its name if the op
    /// recorded nothing itself.
    fn run(
        &self,
        slot: usize,
        key: DrawKey,
        ws: &mut Workspace,
        log: &mut Vec<AppliedOp>,
        op: impl FnOnce(&dyn Augmentation, &mut AugContext<'_>),
    ) {
        let element = &self.elements[slot];
        let mut ctx = AugContext::new(key.rng(slot as u64), ws, log, &element.name);
        op(&*element.op, &mut ctx);
        if !ctx.handled() {
            log.push(AppliedOp { name: OpName::Registered(element.name.clone()), magnitude: None, value: None });
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
