//! The messages of a training pipeline: what a step will use, and the collated batch.

use crate::augment::Image;
use protocon::Message;

/// The samples of one training step, decided by the sampler (a pure function of seed and step).
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// 0-based step.
    pub step: u64,
    /// Epoch (pass over the unlabeled set; over the labeled set when there is none).
    pub epoch: u64,
    /// Data-set indices of the labeled samples.
    pub labeled: Vec<u32>,
    /// Data-set indices of the unlabeled samples.
    pub unlabeled: Vec<u32>,
    /// Their positions in the unlabeled list: the samples' slots in ProtoCon's memory bank.
    pub unlabeled_slots: Vec<u32>,
}

impl Message for StepPlan {
    fn bytes(&self) -> usize {
        4 * (self.labeled.len() + 2 * self.unlabeled.len())
    }
}

/// A collated batch: normalised f32 images, CHW, laid out as
/// `[labeled weak ; unlabeled weak ; unlabeled strong]` (one forward pass over all of them, so
/// BatchNorm statistics cover the concatenation, protocon.md s.1).
#[derive(Debug, Clone)]
pub struct TrainBatch {
    pub plan: StepPlan,
    /// Labels of the labeled samples.
    pub labels: Vec<u32>,
    /// Soft targets of the labeled samples, `labeled x classes` values with rows summing to
    /// one, when a batch stage mixed images (MixUp, CutMix); `None`: `labels` are the targets.
    /// Lx trains towards them; whatever else needs a class (ProtoCon's prototypes) keeps
    /// `labels`, which such a stage sets to each row's largest class.
    pub targets: Option<Vec<f32>>,
    /// True labels of the unlabeled samples: never used for training, only to report
    /// pseudo-label accuracy.
    pub hidden_labels: Vec<u32>,
    /// `channels x height x width` of one image.
    pub shape: [usize; 3],
    /// `images() * C * H * W` values.
    pub images: Vec<f32>,
    /// The decoded pixels of each unlabeled sample, from which the weak stage built its weak
    /// view and the strong stage builds its strong view (so both views come from one decode);
    /// emptied by the strong stage. For a JPEG decoded per visit only a window of columns
    /// spanning the two crops ([`Image::window`]), down to the lower one, holds the image.
    pub sources: Vec<Image>,
}

impl TrainBatch {
    /// Number of images in the batch: labeled + 2 x unlabeled.
    pub fn images(&self) -> usize {
        self.plan.labeled.len() + 2 * self.plan.unlabeled.len()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Message for TrainBatch {
    fn bytes(&self) -> usize {
        4 * self.images.len() + self.sources.iter().map(|s| s.data().len()).sum::<usize>()
    }
}
