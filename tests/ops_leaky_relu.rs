//! The fused leaky-ReLU against candle-nn's and finite differences.

mod ops_support;

use candle_core::DType;
use ops_support::{
    assert_close, finite_difference_err, report, tensor, to_f64, var, weighted_sum, Rng,
};
use protocon::ops;

#[test]
fn matches_stock_leaky_relu_and_finite_differences() {
    let mut rng = Rng::new(11);
    for (shape, slope) in [
        (vec![2usize, 3, 7, 9], 0.1),
        (vec![1, 5, 3], 0.2),
        (vec![70001], 0.01),
    ] {
        let n = shape.iter().product();
        let x = rng.values(n, 1.0, 0.0);
        let r = rng.values(n, 1.0, 0.0);
        let run = |dtype: DType, f: fn(&candle_core::Tensor, f64) -> candle_core::Result<candle_core::Tensor>| {
            let xv = var(&x, &shape, dtype);
            let y = f(&xv, slope).unwrap();
            let grads = weighted_sum(&y, &tensor(&r, &shape, dtype)).unwrap().backward().unwrap();
            (y, grads.get(&xv).unwrap().clone())
        };
        let (y_stock, dx_stock) = run(DType::F64, ops::reference::leaky_relu);
        for dtype in [DType::F64, DType::F32] {
            let (y, dx) = run(dtype, ops::leaky_relu);
            let tol = if dtype == DType::F64 { 1e-15 } else { 1e-6 };
            report(
                &format!("leaky_relu {shape:?} {dtype:?} output"),
                assert_close("output", &y, &y_stock, tol),
            );
            report(
                &format!("leaky_relu {shape:?} {dtype:?} grad"),
                assert_close("grad", &dx, &dx_stock, tol),
            );
        }
        let (_, dx) = run(DType::F64, ops::leaky_relu);
        let err = finite_difference_err(&mut rng, &x, &to_f64(&dx), 50, |x| {
            let y = ops::leaky_relu(&tensor(x, &shape, DType::F64), slope).unwrap();
            weighted_sum(&y, &tensor(&r, &shape, DType::F64))
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        });
        report(
            &format!("leaky_relu {shape:?} grad vs finite differences"),
            err,
        );
        assert!(err < 1e-6, "{err:e}");
    }
}

/// PyTorch's convention at exactly zero: output 0, gradient `slope * dy`.
#[test]
fn zero_takes_the_negative_branch() {
    let x = var(&[0.0, -2.0, 3.0], &[3], DType::F32);
    let y = ops::leaky_relu(&x, 0.1).unwrap();
    assert_eq!(to_f64(&y), [0.0, -0.2f32 as f64, 3.0]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        to_f64(grads.get(&x).unwrap()),
        [0.1f32 as f64, 0.1f32 as f64, 1.0]
    );
}
