//! The records a training run writes to `metrics.jsonl`: one per logged step, per evaluation
//! and per ProtoCon epoch end.

use protocon::Message;
use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(TrainRecord),
    Eval(EvalRecord),
    /// ProtoCon's end of an epoch.
    Epoch(EpochRecord),
}

impl Message for Record {}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Eval(r) => r.step,
            Record::Epoch(r) => r.step,
        }
    }
}

/// Losses and rates of one training step. `images_per_s` and `elapsed_s` are the wall-clock
/// fields (results comparisons leave them out). The
/// compute stage fills in step, epoch, learning rate, total loss and speed; the
/// [`Objective`](crate::objective::Objective) the terms and pseudo-label statistics it has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TrainRecord {
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    pub loss: f64,
    pub loss_x: f64,
    pub loss_u: f64,
    /// Share of unlabeled samples whose pseudo-label passed the threshold.
    pub mask_rate: f64,
    /// Accuracy of the pseudo-labels against the hidden true labels, over the masked samples
    /// (NaN-free: 0 when nothing passed).
    pub pseudo_label_acc: f64,
    /// Accuracy of the pseudo-labels over all unlabeled samples of the step.
    pub pseudo_label_acc_all: f64,
    pub images_per_s: f64,
    /// Seconds of wall time since the run started, evaluations included, across resumes (absent
    /// in metrics written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    /// ProtoCon's prototypical losses (labeled, unlabeled) and projection consistency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_px: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_c: Option<f64>,
    /// Whether ProtoCon refined the pseudo-labels with the clusters this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refined: Option<bool>,
    /// Accuracy of `argmax z` (the samples' cluster pseudo-labels) against the hidden labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_label_acc: Option<f64>,
    /// Accuracy of the nearest prototype of the weak projection against the hidden labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_label_acc: Option<f64>,
    /// Share of the unlabeled samples seen so far whose last pseudo-label was reliable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable_fraction: Option<f64>,
}

/// ProtoCon's end of an epoch: cluster sizes per head (from the memory bank's assignments).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// The last step of the epoch.
    pub step: u64,
    pub epoch: u64,
    pub cluster_size_min: Vec<u64>,
    pub cluster_size_max: Vec<u64>,
    pub reliable_fraction: f64,
    /// Share of the epoch's labeled images whose cluster pseudo-label was their label (what
    /// `protocon.refine_min_agreement` judges by); none before clusters have labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeled_agreement: Option<f64>,
}

/// Test accuracy of the raw and the EMA model after a step, with the best so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    pub step: u64,
    pub test_acc: f64,
    pub test_acc_ema: f64,
    pub best_test_acc: f64,
    pub best_test_acc_ema: f64,
}

impl TrainRecord {
    /// A record of `step` with every loss and rate still zero (or absent).
    pub fn new(step: u64, epoch: u64, lr: f64) -> Self {
        TrainRecord { step, epoch, lr, ..Default::default() }
    }
}
