//! The fused conv2d and its gradients against candle's stock conv2d and finite differences.

mod ops_support;

use candle_core::{DType, Tensor};
use ops_support::{
    assert_close, finite_difference_err, report, tensor, to_f64, var, weighted_sum, Rng,
};
use protocon::ops;

/// (input N x C x H x W, weight K x C x kh x kw, stride, padding): odd sizes, stride 2,
/// 1x1 (with and without stride), no padding, padding 2, batch 1, channel counts not
/// multiples of 8.
const CASES: &[([usize; 4], [usize; 4], usize, usize)] = &[
    ([2, 3, 7, 9], [5, 3, 3, 3], 1, 1),
    ([1, 5, 7, 9], [6, 5, 3, 3], 2, 1),
    ([3, 10, 8, 8], [12, 10, 1, 1], 1, 0),
    ([2, 7, 9, 7], [3, 7, 1, 1], 2, 0),
    ([1, 4, 5, 5], [2, 4, 3, 3], 1, 0),
    ([5, 3, 6, 6], [4, 3, 3, 3], 2, 1),
    ([2, 9, 4, 11], [7, 9, 3, 3], 1, 2),
    // Large enough that each image is processed in several bands of output rows.
    ([2, 40, 33, 31], [5, 40, 3, 3], 1, 1),
    ([1, 64, 35, 31], [6, 64, 3, 3], 2, 1),
];

struct Case {
    x: Vec<f64>,
    w: Vec<f64>,
    r: Vec<f64>,
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    y_shape: Vec<usize>,
    stride: usize,
    padding: usize,
}

impl Case {
    fn new(
        rng: &mut Rng,
        (x_shape, w_shape, stride, padding): ([usize; 4], [usize; 4], usize, usize),
    ) -> Self {
        let x = rng.values(x_shape.iter().product(), 1.0, 0.0);
        let w = rng.values(w_shape.iter().product(), 0.5, 0.0);
        let ho = (x_shape[2] + 2 * padding - w_shape[2]) / stride + 1;
        let wo = (x_shape[3] + 2 * padding - w_shape[3]) / stride + 1;
        let y_shape = vec![x_shape[0], w_shape[0], ho, wo];
        let r = rng.values(y_shape.iter().product(), 1.0, 0.0);
        Self {
            x,
            w,
            r,
            x_shape,
            w_shape,
            y_shape,
            stride,
            padding,
        }
    }

    /// Output, input gradient and weight gradient of `Σ conv(x, w) * r`.
    fn run(
        &self,
        dtype: DType,
        conv: impl Fn(&Tensor, &Tensor, usize, usize) -> candle_core::Result<Tensor>,
    ) -> [Tensor; 3] {
        let x = var(&self.x, &self.x_shape, dtype);
        let w = var(&self.w, &self.w_shape, dtype);
        let y = conv(&x, &w, self.stride, self.padding).unwrap();
        let r = tensor(&self.r, &self.y_shape, dtype);
        let grads = weighted_sum(&y, &r).unwrap().backward().unwrap();
        [
            y,
            grads.get(&x).unwrap().clone(),
            grads.get(&w).unwrap().clone(),
        ]
    }

    fn label(&self) -> String {
        format!(
            "x{:?} w{:?} s{} p{}",
            self.x_shape, self.w_shape, self.stride, self.padding
        )
    }
}

#[test]
fn matches_stock_conv2d_in_f64_and_f32() {
    let mut rng = Rng::new(0x5eed_c0de);
    for &spec in CASES {
        let case = Case::new(&mut rng, spec);
        let stock = case.run(DType::F64, ops::reference::conv2d);
        let fused64 = case.run(DType::F64, ops::conv2d);
        let fused32 = case.run(DType::F32, ops::conv2d);
        for (i, name) in ["output", "input grad", "weight grad"].iter().enumerate() {
            let e64 = assert_close(name, &fused64[i], &stock[i], 1e-12);
            let e32 = assert_close(name, &fused32[i], &stock[i], 1e-4);
            report(&format!("conv2d {} {name} f64", case.label()), e64);
            report(&format!("conv2d {} {name} f32", case.label()), e32);
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(42);
    for &spec in CASES {
        let case = Case::new(&mut rng, spec);
        let [_, dx, dw] = case.run(DType::F64, ops::conv2d);
        let loss = |x: &[f64], w: &[f64]| {
            let y = ops::conv2d(
                &tensor(x, &case.x_shape, DType::F64),
                &tensor(w, &case.w_shape, DType::F64),
                case.stride,
                case.padding,
            )
            .unwrap();
            let r = tensor(&case.r, &case.y_shape, DType::F64);
            weighted_sum(&y, &r).unwrap().to_scalar::<f64>().unwrap()
        };
        let ex = finite_difference_err(&mut rng, &case.x, &to_f64(&dx), 40, |x| loss(x, &case.w));
        let ew = finite_difference_err(&mut rng, &case.w, &to_f64(&dw), 40, |w| loss(&case.x, w));
        report(
            &format!("conv2d {} input grad vs finite differences", case.label()),
            ex,
        );
        report(
            &format!("conv2d {} weight grad vs finite differences", case.label()),
            ew,
        );
        assert!(ex < 1e-7 && ew < 1e-7, "{}: {ex:e} {ew:e}", case.label());
    }
}

/// Stride 2 where `(W + 2p - k) % s != 0` (an even size with a 3x3 kernel and padding 1).
/// Stock candle 0.11.1's backward derives the output padding of its transposed convolution
/// from the height alone, so on the non-square 35x30 input its input gradient is one column
/// short and finite differences are the only reference.
#[test]
fn stride_two_with_unread_border_matches_finite_differences() {
    let mut rng = Rng::new(2024);
    for spec in [
        ([1, 24, 35, 30], [6, 24, 3, 3], 2, 1),
        ([2, 5, 8, 8], [4, 5, 3, 3], 2, 1),
    ] {
        let case = Case::new(&mut rng, spec);
        let [_, dx, dw] = case.run(DType::F64, ops::conv2d);
        assert_eq!(dx.dims(), case.x_shape);
        let loss = |x: &[f64], w: &[f64]| {
            let y = ops::conv2d(
                &tensor(x, &case.x_shape, DType::F64),
                &tensor(w, &case.w_shape, DType::F64),
                case.stride,
                case.padding,
            )
            .unwrap();
            weighted_sum(&y, &tensor(&case.r, &case.y_shape, DType::F64))
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let ex = finite_difference_err(&mut rng, &case.x, &to_f64(&dx), 60, |x| loss(x, &case.w));
        let ew = finite_difference_err(&mut rng, &case.w, &to_f64(&dw), 40, |w| loss(&case.x, w));
        report(
            &format!("conv2d {} grads vs finite differences", case.label()),
            ex.max(ew),
        );
        assert!(ex < 1e-7 && ew < 1e-7, "{}: {ex:e} {ew:e}", case.label());
    }
}

/// A network's first convolution reads data: no input gradient is computed or returned, and
/// the weight gradient is unchanged.
#[test]
fn constant_input_gets_no_gradient() {
    let mut rng = Rng::new(7);
    let case = Case::new(&mut rng, CASES[1]);
    let x = tensor(&case.x, &case.x_shape, DType::F32);
    let w = var(&case.w, &case.w_shape, DType::F32);
    let r = tensor(&case.r, &case.y_shape, DType::F32);
    let grads = weighted_sum(&ops::conv2d(&x, &w, case.stride, case.padding).unwrap(), &r)
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&x).is_none());
    let stock = case.run(DType::F64, ops::reference::conv2d);
    assert_close("weight grad", grads.get(&w).unwrap(), &stock[2], 1e-4);
}

/// The split over threads (images per task, then GEMM threads when the batch is smaller than
/// the thread count) must not change the result beyond rounding.
#[test]
fn thread_counts_agree() {
    let mut rng = Rng::new(99);
    for spec in [CASES[0], CASES[1], CASES[5]] {
        let case = Case::new(&mut rng, spec);
        let stock = case.run(DType::F64, ops::reference::conv2d);
        for threads in [1, 3, 8] {
            ops::set_num_threads(threads);
            let fused = case.run(DType::F64, ops::conv2d);
            for i in 0..3 {
                assert_close(
                    &format!("{} threads={threads} #{i}", case.label()),
                    &fused[i],
                    &stock[i],
                    1e-12,
                );
            }
        }
        ops::set_num_threads(0);
    }
}

/// Non-contiguous operands (a transposed view) are made contiguous, not misread.
#[test]
fn strided_input_is_read_correctly() {
    let mut rng = Rng::new(3);
    let x = tensor(
        &rng.values(2 * 3 * 9 * 7, 1.0, 0.0),
        &[2, 3, 9, 7],
        DType::F32,
    )
    .transpose(2, 3)
    .unwrap();
    let w = tensor(
        &rng.values(4 * 3 * 3 * 3, 1.0, 0.0),
        &[4, 3, 3, 3],
        DType::F32,
    );
    let fused = ops::conv2d(&x, &w, 2, 1).unwrap();
    let stock = ops::reference::conv2d(&x, &w, 2, 1).unwrap();
    assert_close("transposed input", &fused, &stock, 1e-5);
}
