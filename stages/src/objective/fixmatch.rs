//! FixMatch: cross-entropy on the labeled samples plus, weighted by `lambda_u`, the strong
//! view's cross-entropy against the weak view's hard pseudo-label where its confidence passes
//! `threshold` (masked-out samples count in the mean).

use super::{pseudo_label_stats, value, Objective, StepView};
use crate::record::TrainRecord;
use candle_core::Tensor;
use protocon::{device, loss};
use protocon::{Control, StageError};

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct FixMatch {
    pub threshold: f64,
    pub lambda_u: f64,
}

impl Objective for FixMatch {
    fn name(&self) -> &str {
        "fixmatch"
    }

    fn loss(&mut self, view: &StepView, _: Option<&Control>, record: &mut TrainRecord) -> Result<Tensor, StageError> {
        let [logits_x, logits_w, logits_s] = view.logits_parts()?;
        let loss_x = loss::labeled_cross_entropy(&logits_x, view.labels, view.targets)?;
        record.loss_x = value("loss_x", &loss_x)?;
        if view.unlabeled == 0 {
            return Ok(loss_x);
        }
        let (pseudo, mask) = loss::hard_pseudo_labels(&logits_w, self.threshold)?;
        let loss_u = loss::masked_cross_entropy(&logits_s, &pseudo, &mask)?;
        record.loss_u = value("loss_u", &loss_u)?;
        let pseudo: Vec<u32> = device::download("fixmatch pseudo-labels", &pseudo)?;
        let mask: Vec<bool> = device::download::<f32>("fixmatch mask", &mask)?.iter().map(|&m| m > 0.5).collect();
        (record.mask_rate, record.pseudo_label_acc, record.pseudo_label_acc_all) = pseudo_label_stats(&pseudo, &mask, view.hidden_labels);
        Ok((loss_x + (loss_u * self.lambda_u)?)?)
    }
}
