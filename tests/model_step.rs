//! A whole WRN-28-2 training step with the fused kernels equals the same step on candle's stock
//! ops (same initial weights, same batch): logits, loss, every updated weight and every running
//! statistic, to 1e-4 relative error.

use candle_core::{Device, Tensor};
use protocon::loss;
use protocon::model::{Mode, Network};
use protocon::ops::Kernels;
use protocon::optim::{Sgd, SgdConfig};

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn fused_wrn_step_equals_stock_step() {
    let dev = Device::Cpu;
    let arch = "wrn-28-2".parse().unwrap();
    let fused = Network::new(arch, 10, None, 11, &dev).unwrap().with_kernels(Kernels::Fused);
    let stock = Network::new(arch, 10, None, 11, &dev).unwrap().with_kernels(Kernels::Stock);
    // A deterministic batch of 6 images (2 labeled + 2 weak + 2 strong in a FixMatch step).
    let values: Vec<f32> = (0..6 * 3 * 32 * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let x = Tensor::from_vec(values, (6, 3, 32, 32), &dev).unwrap();
    let labels = Tensor::new(&[3u32, 7, 1, 0, 9, 4], &dev).unwrap();

    let mut results = Vec::new();
    for net in [&fused, &stock] {
        let mut opt = Sgd::new(net.params(), SgdConfig::default());
        let logits = net.forward(&x, Mode::Train).unwrap().logits;
        let l = loss::cross_entropy(&logits, &labels).unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
        results.push((logits, l.to_scalar::<f32>().unwrap()));
    }
    assert!(max_rel(&results[0].0, &results[1].0) < 1e-4, "logits differ");
    assert!(((results[0].1 - results[1].1) / results[1].1).abs() < 1e-4, "loss {} vs {}", results[0].1, results[1].1);
    // Updated weights and running statistics: compare the change made by the step.
    let init = Network::new(arch, 10, None, 11, &dev).unwrap();
    for ((f, s), i) in fused.params().all().iter().zip(stock.params().all()).zip(init.params().all()) {
        let df = (f.var.as_tensor() - i.var.as_tensor()).unwrap();
        let ds = (s.var.as_tensor() - i.var.as_tensor()).unwrap();
        let err = max_rel(&df, &ds);
        assert!(err < 1e-4, "{}: update differs by {err}", f.name);
    }
}
