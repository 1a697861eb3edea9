//! The fused batch norm (alone and with leaky-ReLU), training and inference mode, against
//! candle's stock ops, a hand computation of the running statistics, and finite differences.

mod ops_support;

use candle_core::{DType, Tensor};
use ops_support::{
    assert_close, finite_difference_err, report, tensor, to_f64, var, weighted_sum, Rng,
};
use protocon::ops::{self, BatchNormOptions, Kernels};

/// Odd spatial sizes, batch 1, 1x1 spatial with three values per channel, a 2-d input,
/// channel counts not multiples of 8. (Two values per channel would make the input gradient
/// vanish analytically, `xhat = ±1` whatever `x` is, leaving only f32 rounding to compare.)
const SHAPES: &[&[usize]] = &[
    &[4, 3, 5, 7],
    &[1, 5, 3, 3],
    &[8, 16, 2, 2],
    &[3, 6],
    &[3, 17, 1, 1],
];

const MOMENTUM: f64 = 0.3;

struct Case {
    shape: Vec<usize>,
    channels: usize,
    x: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    r: Vec<f64>,
    options: BatchNormOptions,
}

/// Output, gradients of x, gamma, beta, and the running mean and variance after the step.
struct Outcome {
    tensors: [Tensor; 6],
}

const NAMES: [&str; 6] = [
    "output",
    "x grad",
    "gamma grad",
    "beta grad",
    "running mean",
    "running var",
];

impl Case {
    fn new(rng: &mut Rng, shape: &[usize], slope: Option<f64>) -> Self {
        let channels = shape[1];
        let n = shape.iter().product();
        Self {
            shape: shape.to_vec(),
            channels,
            // A mean far from zero against the spread: the statistics must not cancel.
            x: rng.values(n, 3.0, 2.0),
            gamma: rng.values(channels, 0.5, 1.0),
            beta: rng.values(channels, 0.3, 0.0),
            running_mean: rng.values(channels, 0.1, 0.0),
            running_var: rng.values(channels, 0.5, 1.0),
            r: rng.values(n, 1.0, 0.0),
            options: BatchNormOptions {
                momentum: MOMENTUM,
                eps: 1e-5,
                leaky_relu_slope: slope,
            },
        }
    }

    fn run(&self, dtype: DType, kernels: Kernels, train: bool) -> Outcome {
        let x = var(&self.x, &self.shape, dtype);
        let gamma = var(&self.gamma, &[self.channels], dtype);
        let beta = var(&self.beta, &[self.channels], dtype);
        let rm = var(&self.running_mean, &[self.channels], dtype);
        let rv = var(&self.running_var, &[self.channels], dtype);
        let y = if train {
            kernels.batch_norm_train(&x, &gamma, &beta, &rm, &rv, &self.options)
        } else {
            kernels.batch_norm_eval(&x, &gamma, &beta, &rm, &rv, &self.options)
        }
        .unwrap();
        let grads = weighted_sum(&y, &tensor(&self.r, &self.shape, dtype))
            .unwrap()
            .backward()
            .unwrap();
        let g = |t: &Tensor| grads.get(t).unwrap().clone();
        Outcome {
            tensors: [
                y.clone(),
                g(&x),
                g(&gamma),
                g(&beta),
                rm.as_tensor().clone(),
                rv.as_tensor().clone(),
            ],
        }
    }

    /// `Σ bn(x; gamma, beta) * r` in f64 with the fused kernels.
    fn loss(&self, x: &[f64], gamma: &[f64], beta: &[f64], train: bool) -> f64 {
        let c = [self.channels];
        let (rm, rv) = (
            var(&self.running_mean, &c, DType::F64),
            var(&self.running_var, &c, DType::F64),
        );
        let (x, gamma, beta) = (
            tensor(x, &self.shape, DType::F64),
            tensor(gamma, &c, DType::F64),
            tensor(beta, &c, DType::F64),
        );
        let y = if train {
            ops::batch_norm_train(&x, &gamma, &beta, &rm, &rv, &self.options)
        } else {
            ops::batch_norm_eval(&x, &gamma, &beta, &rm, &rv, &self.options)
        }
        .unwrap();
        weighted_sum(&y, &tensor(&self.r, &self.shape, DType::F64))
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The running statistics after one training step, computed by hand.
    fn expected_running_stats(&self) -> (Vec<f64>, Vec<f64>) {
        let spatial: usize = self.shape[2..].iter().product();
        let (mut means, mut vars) = (vec![], vec![]);
        for c in 0..self.channels {
            let values: Vec<f64> = (0..self.shape[0])
                .flat_map(|n| self.x[(n * self.channels + c) * spatial..][..spatial].to_vec())
                .collect();
            let m = values.len() as f64;
            let mean = values.iter().sum::<f64>() / m;
            let unbiased = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
            means.push((1.0 - MOMENTUM) * self.running_mean[c] + MOMENTUM * mean);
            vars.push((1.0 - MOMENTUM) * self.running_var[c] + MOMENTUM * unbiased);
        }
        (means, vars)
    }

    fn label(&self, train: bool) -> String {
        let mode = if train { "train" } else { "eval" };
        format!(
            "batch_norm {mode} {:?} slope {:?}",
            self.shape, self.options.leaky_relu_slope
        )
    }
}

fn cases(seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    SHAPES
        .iter()
        .flat_map(|shape| [None, Some(0.1)].map(|slope| (shape, slope)))
        .map(|(shape, slope)| Case::new(&mut rng, shape, slope))
        .collect()
}

fn compare_with_stock(train: bool) {
    for case in cases(if train { 1 } else { 2 }) {
        let stock = case.run(DType::F64, Kernels::Stock, train);
        let fused64 = case.run(DType::F64, Kernels::Fused, train);
        let fused32 = case.run(DType::F32, Kernels::Fused, train);
        for (i, name) in NAMES.iter().enumerate() {
            let what = format!("{} {name}", case.label(train));
            let e64 = assert_close(&what, &fused64.tensors[i], &stock.tensors[i], 1e-10);
            let e32 = assert_close(&what, &fused32.tensors[i], &stock.tensors[i], 1e-4);
            report(&format!("{} {name} f64", case.label(train)), e64);
            report(&format!("{} {name} f32", case.label(train)), e32);
        }
    }
}

#[test]
fn training_mode_matches_stock_ops() {
    compare_with_stock(true);
}

#[test]
fn inference_mode_matches_stock_ops() {
    compare_with_stock(false);
}

/// PyTorch's update: `running = (1 - m) * running + m * batch`, unbiased batch variance.
#[test]
fn running_statistics_follow_pytorch_momentum_convention() {
    for case in cases(3) {
        let (mean, var) = case.expected_running_stats();
        let outcome = case.run(DType::F64, Kernels::Fused, true);
        let e_mean = ops_support::max_rel_err(&to_f64(&outcome.tensors[4]), &mean);
        let e_var = ops_support::max_rel_err(&to_f64(&outcome.tensors[5]), &var);
        report(
            &format!("{} running stats vs hand computation", case.label(true)),
            e_mean.max(e_var),
        );
        assert!(e_mean < 1e-12 && e_var < 1e-12, "{e_mean:e} {e_var:e}");
        let untouched = case.run(DType::F64, Kernels::Fused, false);
        assert_eq!(
            to_f64(&untouched.tensors[4]),
            case.running_mean,
            "eval must not update"
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(5);
    for train in [true, false] {
        for case in cases(4) {
            let outcome = case.run(DType::F64, Kernels::Fused, train);
            let [_, dx, dgamma, dbeta, ..] = &outcome.tensors;
            let ex = finite_difference_err(&mut rng, &case.x, &to_f64(dx), 30, |x| {
                case.loss(x, &case.gamma, &case.beta, train)
            });
            let eg = finite_difference_err(&mut rng, &case.gamma, &to_f64(dgamma), 8, |g| {
                case.loss(&case.x, g, &case.beta, train)
            });
            let eb = finite_difference_err(&mut rng, &case.beta, &to_f64(dbeta), 8, |b| {
                case.loss(&case.x, &case.gamma, b, train)
            });
            report(
                &format!("{} grads vs finite differences", case.label(train)),
                ex.max(eg).max(eb),
            );
            assert!(
                ex < 1e-6 && eg < 1e-6 && eb < 1e-6,
                "{}: {ex:e} {eg:e} {eb:e}",
                case.label(train)
            );
        }
    }
}

/// One value per channel has no variance: an error, as in PyTorch.
#[test]
fn single_value_per_channel_is_rejected_in_training() {
    let x = tensor(&[1.0, 2.0, 3.0], &[1, 3, 1, 1], DType::F32);
    let ones = var(&[1.0; 3], &[3], DType::F32);
    let zeros = var(&[0.0; 3], &[3], DType::F32);
    let err = ops::batch_norm_train(
        &x,
        &ones,
        &zeros,
        &zeros,
        &ones,
        &BatchNormOptions::default(),
    );
    assert!(err.is_err());
}
