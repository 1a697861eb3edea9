//! The augmentation stages of a training pipeline: [`WeakViews`] starts a batch with the weak
//! views of every sample, [`StrongViews`] adds the strong views of the unlabeled samples. Both
//! run as worker pools; each writes its views straight into the batch as normalised f32 CHW
//! (the collate step), once.
//!
//! The weak stage loads every sample ([`Samples::load`]: a copy of an in-memory image, or a
//! file decoded per visit) and passes each unlabeled sample's pixels on in the batch, so its
//! strong view comes from the same decode; a JPEG decoded per visit is decoded only around the
//! two views' crops.
//!
//! Randomness is keyed on (run seed, epoch, sample index, view): labeled samples, which repeat
//! within an epoch, use the step in place of the epoch so each repetition is a fresh view.

use crate::augment::{AppliedOp, Augmenter, Image, Workspace};
use crate::batch::{StepPlan, TrainBatch};
use crate::samples::Samples;
use protocon::data::jpeg::Region;
use protocon::{Ctx, Stage, StageError};
use std::sync::Arc;

/// Per-channel normalisation of the data set, computed from its training pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and standard deviation per channel, on the 0..1 scale, over every pixel of `max`
    /// samples spread evenly over `samples`, or of all of them when there are no more than
    /// `max` (`usize::MAX`: the exact statistic of the set). A set decoded per visit is
    /// estimated from a spread of files, since reading all of them would take an epoch.
    /// Fails on a sample that cannot be loaded.
    pub fn of(samples: &dyn Samples, max: usize) -> Result<Normalization, StageError> {
        let n = samples.num_samples();
        let take = max.min(n);
        let (mut bytes, mut img) = (Vec::new(), Image::default());
        let mut moments: Option<Moments> = None;
        for k in 0..take {
            samples.load(k * n / take, &mut Region::whole, &mut bytes, &mut img)?;
            moments.get_or_insert_with(|| Moments::new(img.channels())).add(img.data());
        }
        Ok(moments.unwrap_or_else(|| Moments::new(1)).finish())
    }
}

/// Running per-channel sums of pixel values and their squares.
struct Moments {
    sum: Vec<f64>,
    sq: Vec<f64>,
    count: usize,
}

impl Moments {
    fn new(channels: usize) -> Self {
        Moments { sum: vec![0.0; channels], sq: vec![0.0; channels], count: 0 }
    }

    /// Adds interleaved pixels (HWC) with this accumulator's channel count.
    fn add(&mut self, pixels: &[u8]) {
        let c = self.sum.len();
        for px in pixels.chunks_exact(c) {
            for (ch, &v) in px.iter().enumerate() {
                let v = v as f64 / 255.0;
                self.sum[ch] += v;
                self.sq[ch] += v * v;
            }
        }
        self.count += pixels.len() / c;
    }

    fn finish(&self) -> Normalization {
        let n = self.count.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self.sq.iter().zip(&mean).map(|(q, m)| ((q / n - m * m).max(1e-12)).sqrt() as f32).collect();
        Normalization { mean: mean.iter().map(|&m| m as f32).collect(), std }
    }
}

/// What both augmentation stages share.
pub struct ViewSource {
    /// The training images.
    pub data: Arc<dyn Samples>,
    /// `channels x height x width` of every view the augmenter makes (and of the batch's
    /// images): an in-memory set's own image size, or the crop size a folder decoded per visit
    /// is augmented to.
    pub shape: [usize; 3],
    pub augmenter: Arc<Augmenter>,
    pub norm: Normalization,
}

/// Set when a key's epoch slot holds a step (labeled samples) rather than an epoch.
const STEP_KEYED: u64 = 1 << 63;

struct Scratch {
    ws: Workspace,
    bytes: Vec<u8>,
    src: Image,
    view: Image,
    log: Vec<AppliedOp>,
}

impl Scratch {
    fn new() -> Self {
        Scratch { ws: Workspace::new(), bytes: Vec::new(), src: Image::default(), view: Image::default(), log: Vec::new() }
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
        let augmenter = &*src.augmenter;
        let shape = src.shape;
        let len: usize = shape.iter().product();
        let n = plan.labeled.len() + 2 * plan.unlabeled.len();
        let mut images = vec![0f32; n * len];
        let mut sources = Vec::with_capacity(plan.unlabeled.len());
        let labeled = plan.labeled.iter().map(|&i| (i, STEP_KEYED | plan.step, false));
        let unlabeled = plan.unlabeled.iter().map(|&i| (i, plan.epoch, true));
        for (slot, (index, epoch, strong_too)) in labeled.chain(unlabeled).enumerate() {
            let s = &mut self.scratch;
            // An unlabeled sample's strong view is built later from these same pixels, so the
            // decode covers both views' crops.
            let keys = [Augmenter::WEAK_VIEW, Augmenter::strong_view_id(0)].map(|view| augmenter.key(epoch, index as u64, view));
            let keys = if strong_too { &keys[..] } else { &keys[..1] };
            let mut region = |w, h| augmenter.region_read(w, h, keys);
            let mut pixels = if strong_too { Image::default() } else { std::mem::take(&mut s.src) };
            data.load(index as usize, &mut region, &mut s.bytes, &mut pixels)?;
            s.log.clear();
            augmenter.weak_view(&pixels, epoch, index as u64, &mut s.ws, &mut s.view, &mut s.log);
            check_view(&s.view, shape)?;
            s.view.normalize_chw_into(&src.norm.mean, &src.norm.std, &mut images[slot * len..(slot + 1) * len]);
            if strong_too {
                sources.push(pixels);
            } else {
                s.src = pixels;
            }
        }
        let labels = plan.labeled.iter().map(|&i| data.labels()[i as usize] as u32).collect();
        let hidden_labels = plan.unlabeled.iter().map(|&i| data.labels()[i as usize] as u32).collect();
        ctx.emit(TrainBatch { plan, labels, targets: None, hidden_labels, shape, images, sources })
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
        let sources = std::mem::take(&mut batch.sources);
        if sources.len() != batch.plan.unlabeled.len() {
            return Err(StageError::msg(format!(
                "strong views: the batch carries {} decoded images for {} unlabeled samples (is the weak stage before this one?)",
                sources.len(),
                batch.plan.unlabeled.len()
            )));
        }
        for (k, (&index, pixels)) in batch.plan.unlabeled.iter().zip(&sources).enumerate() {
            let s = &mut self.scratch;
            s.log.clear();
            src.augmenter.strong_view(pixels, batch.plan.epoch, index as u64, 0, &mut s.ws, &mut s.view, &mut s.log);
            check_view(&s.view, batch.shape)?;
            let slot = first + k;
            s.view.normalize_chw_into(&src.norm.mean, &src.norm.std, &mut batch.images[slot * len..(slot + 1) * len]);
        }
        ctx.emit(batch)
    }
}
