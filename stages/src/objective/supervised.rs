//! Supervised-only: cross-entropy on the labeled samples; the unlabeled ones (if any) are unused.

use super::{value, Objective, StepView};
use crate::record::TrainRecord;
use candle_core::Tensor;
use protocon::loss;
use protocon::{Control, StageError};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervised;

impl Objective for Supervised {
    fn name(&self) -> &str {
        "supervised"
    }

    fn loss(&mut self, view: &StepView, _: Option<&Control>, record: &mut TrainRecord) -> Result<Tensor, StageError> {
        let loss_x = loss::labeled_cross_entropy(&view.logits.narrow(0, 0, view.labeled)?, view.labels, view.targets)?;
        record.loss_x = value("loss_x", &loss_x)?;
        Ok(loss_x)
    }
}
