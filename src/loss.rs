//! Loss terms shared by the supervised, FixMatch and ProtoCon pipelines.
//!
//! All reductions are means over the whole batch (masked-out samples count in the
//! denominator), as FixMatch and ProtoCon compute `mean_b mask_b * H(...)`.

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy of `logits` (`N x C`) against class indices `labels` (`N`, u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?.squeeze(1)?;
    picked.neg()?.mean_all()
}

/// The labeled loss: cross-entropy against class indices `labels`, or, when a batch stage
/// made soft targets (`N x C`, rows summing to one: MixUp and its kind), `mean_b
/// H(targets_b, softmax(logits_b))`. With one-hot targets both give the same value.
pub fn labeled_cross_entropy(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
    match targets {
        None => cross_entropy(logits, labels),
        Some(t) => {
            let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            (t.to_dtype(logp.dtype())?.detach() * logp)?.sum(1)?.neg()?.mean_all()
        }
    }
}

/// `mean_b mask_b * H(target_b, softmax(logits_b))` with soft targets (`N x C`, rows summing to
/// one) and a 0/1 `mask` (`N`). Targets are treated as constants.
pub fn masked_soft_cross_entropy(logits: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let per_sample = (target.detach() * logp)?.sum(1)?.neg()?;
    (per_sample * mask.detach())?.mean_all()
}

/// `mean_b mask_b * CE(logits_b, labels_b)`: FixMatch's unlabeled loss with hard pseudo-labels.
pub fn masked_cross_entropy(logits: &Tensor, labels: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked.neg()? * mask.detach())?.mean_all()
}

/// FixMatch pseudo-labels from weak-view logits: (argmax, mask = max prob >= `threshold`),
/// computed without gradient.
pub fn hard_pseudo_labels(weak_logits: &Tensor, threshold: f64) -> Result<(Tensor, Tensor)> {
    let probs = candle_nn::ops::softmax(&weak_logits.detach(), D::Minus1)?;
    let labels = probs.argmax(D::Minus1)?;
    let mask = probs.max(D::Minus1)?.ge(threshold)?.to_dtype(weak_logits.dtype())?;
    Ok((labels, mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f64], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn cross_entropy_by_hand() {
        // Row 0: logits (0, ln 3) -> p = (1/4, 3/4); label 1 -> -ln(3/4).
        // Row 1: logits (0, 0) -> p = (1/2, 1/2); label 0 -> ln 2.
        let logits = t(&[0.0, 3f64.ln(), 0.0, 0.0], (2, 2));
        let labels = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let want = (-(0.75f64).ln() + 2f64.ln()) / 2.0;
        let got = cross_entropy(&logits, &labels).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12);

        let mask = Tensor::new(&[1.0f64, 0.0], &Device::Cpu).unwrap();
        let got = masked_cross_entropy(&logits, &labels, &mask).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - -(0.75f64).ln() / 2.0).abs() < 1e-12, "masked-out rows count in the mean");

        // Soft labeled targets: one-hot rows give the hard value; a half-half row on row 0 gives
        // -(ln(1/4) + ln(3/4)) / 2 there.
        let one_hot = t(&[0.0, 1.0, 1.0, 0.0], (2, 2));
        let got = labeled_cross_entropy(&logits, &labels, Some(&one_hot)).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12);
        let mixed = t(&[0.5, 0.5, 1.0, 0.0], (2, 2));
        let got = labeled_cross_entropy(&logits, &labels, Some(&mixed)).unwrap().to_scalar::<f64>().unwrap();
        let want_mixed = (-((0.25f64).ln() + (0.75f64).ln()) / 2.0 + 2f64.ln()) / 2.0;
        assert!((got - want_mixed).abs() < 1e-12, "{got} vs {want_mixed}");

        let target = t(&[0.5, 0.5, 1.0, 0.0], (2, 2));
        let mask = Tensor::new(&[1.0f64, 1.0], &Device::Cpu).unwrap();
        let want = (-(0.5 * 0.25f64.ln() + 0.5 * 0.75f64.ln()) + 2f64.ln()) / 2.0;
        let got = masked_soft_cross_entropy(&logits, &target, &mask).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12);
    }

    #[test]
    fn pseudo_labels_threshold_on_max_probability() {
        // softmax of (0, ln 19) = (0.05, 0.95): exactly at tau 0.95 -> kept; (0, 0) -> dropped.
        let logits = t(&[0.0, 19f64.ln(), 0.0, 0.0], (2, 2));
        let (labels, mask) = hard_pseudo_labels(&logits, 0.95 - 1e-12).unwrap();
        assert_eq!(labels.to_vec1::<u32>().unwrap(), [1, 0]);
        assert_eq!(mask.to_vec1::<f64>().unwrap(), [1.0, 0.0]);
    }
}
