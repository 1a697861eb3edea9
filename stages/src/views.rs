//! The augmentation stages of a training pipeline: [`WeakViews`] starts a batch with the weak
//! views of every sample, [`StrongViews`] adds the strong views of the unlabeled samples. Both
//! read the same decoded pixels (the in-memory data set) and run as worker pools; each writes
//! its views straight into the batch as normalised f32 CHW (the collate step), once.
//!
//! Randomness is keyed on (run seed, epoch, sample index, view): labeled samples, which repeat
//! within an epoch, use the step in place of the epoch so each repetition is a fresh view.

use crate::augment::{AppliedOp, Augmenter, Image, Workspace};
use crate::batch::{StepPlan, TrainBatch};
use protocon::data::Dataset;
use protocon::{Ctx, Stage, StageError};
use std::sync::Arc;

/// Per-channel normalisation of the data set, computed from its training pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and standard deviation per channel over every pixel of `data`, on the 0..1 scale.
    pub fn of(data: &Dataset) -> Normalization {
        let c = data.channels();
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for px in data.pixels().chunks_exact(c) {
            for (ch, &v) in px.iter().enumerate() {
                let v = v as f64 / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
        let n = (data.pixels().len() / c).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| ((q / n - m * m).max(1e-12)).sqrt() as f32).collect();
        Normalization { mean: mean.iter().map(|&m| m as f32).collect(), std }
    }
}

/// What both augmentation stages share.
pub struct ViewSource {
    pub data: Arc<Dataset>,
    pub augmenter: Arc<Augmenter>,
    pub norm: Normalization,
}

/// Set when a key's epoch slot holds a step (labeled samples) rather than an epoch.
const STEP_KEYED: u64 = 1 << 63;

struct Scratch {
    ws: Workspace,
    src: Image,
    view: Image,
    log: Vec<AppliedOp>,
}

impl Scratch {
    fn new() -> Self {
        Scratch { ws: Workspace::new(), src: Image::default(), view: Image::default(), log: Vec::new() }
    }

    fn load(&mut self, data: &Dataset, index: u32) -> Result<(), StageError> {
        self.src.set_pixels(data.width(), data.height(), data.channels(), data.image(index as usize))?;
        Ok(())
    }
}

/// Shape of the normalised images, checked against what the augmenter produces.
fn check_view(view: &Image, shape: [usize; 3]) -> Result<(), StageError> {
    if [view.channels(), view.height(), view.width()] != shape {
        return Err(StageError::msg(format!(
            "augmented view is {}x{}x{} (CxHxW), expected {}x{}x{}: the augmentation chain must keep the image size",
            view.channels(), view.height(), view.width(), shape[0], shape[1], shape[2]
        )));
    }
    Ok(())
}

/// First augmentation stage: `StepPlan` in, `TrainBatch` with weak views out.
pub struct WeakViews {
    source: Arc<ViewSource>,
    scratch: Scratch,
}

impl WeakViews {
    pub fn new(source: Arc<ViewSource>) -> Self {
        WeakViews { source, scratch: Scratch::new() }
    }
}

impl Stage for WeakViews {
    type In = StepPlan;
    type Out = TrainBatch;

    fn process(&mut self, plan: StepPlan, ctx: &mut Ctx<TrainBatch>) -> Result<(), StageError> {
        let src = &*self.source;
        let data = &*src.data;
        let shape = [data.channels(), data.height(), data.width()];
        let len: usize = shape.iter().product();
        let n = plan.labeled.len() + 2 * plan.unlabeled.len();
        let mut images = vec![0f32; n * len];
        let labeled = plan.labeled.iter().map(|&i| (i, STEP_KEYED | plan.step));
        let unlabeled = plan.unlabeled.iter().map(|&i| (i, plan.epoch));
        for (slot, (index, epoch)) in labeled.chain(unlabeled).enumerate() {
            let s = &mut self.scratch;
            s.load(data, index)?;
            s.log.clear();
            src.augmenter.weak_view(&s.src, epoch, index as u64, &mut s.ws, &mut s.view, &mut s.log);
            check_view(&s.view, shape)?;
            s.view.normalize_chw_into(&src.norm.mean, &src.norm.std, &mut images[slot * len..(slot + 1) * len]);
        }
        let labels = plan.labeled.iter().map(|&i| data.label(i as usize) as u32).collect();
        let hidden_labels = plan.unlabeled.iter().map(|&i| data.label(i as usize) as u32).collect();
        ctx.emit(TrainBatch { plan, labels, hidden_labels, shape, images })
    }
}

/// Second augmentation stage: fills in the strong views of the unlabeled samples.
pub struct StrongViews {
    source: Arc<ViewSource>,
    scratch: Scratch,
}

impl StrongViews {
    pub fn new(source: Arc<ViewSource>) -> Self {
        StrongViews { source, scratch: Scratch::new() }
    }
}

impl Stage for StrongViews {
    type In = TrainBatch;
    type Out = TrainBatch;

    fn process(&mut self, mut batch: TrainBatch, ctx: &mut Ctx<TrainBatch>) -> Result<(), StageError> {
        let src = &*self.source;
        let len = batch.image_len();
        let first = batch.plan.labeled.len() + batch.plan.unlabeled.len();
        for (k, &index) in batch.plan.unlabeled.iter().enumerate() {
            let s = &mut self.scratch;
            s.load(&src.data, index)?;
            s.log.clear();
            src.augmenter.strong_view(&s.src, batch.plan.epoch, index as u64, 0, &mut s.ws, &mut s.view, &mut s.log);
            check_view(&s.view, batch.shape)?;
            let slot = first + k;
            s.view.normalize_chw_into(&src.norm.mean, &src.norm.std, &mut batch.images[slot * len..(slot + 1) * len]);
        }
        ctx.emit(batch)
    }
}
