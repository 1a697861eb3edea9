//! ResNet-18 and ResNet-50 against torchvision: the same weights (a formula both sides evaluate,
//! see `benches/reference/resnet_fixture.py`), one training-mode forward pass on a 2 x 3 x 64 x 64
//! batch, cross-entropy, backward. Recorded from torchvision 0.29 / PyTorch 2.15 CPU in
//! `tests/fixtures/resnet/`: every parameter's name and shape (torchvision's layout), the logits,
//! the loss, the first BatchNorm's running statistics and, per parameter, its gradient's sum of
//! absolute values and four sampled elements.
//!
//! Both sides compute in f64 (why: the script's docstring; a batch of 2 at 64 px is
//! ill-conditioned in f32). Tolerances: 1e-6 relative to the largest logit for the logits and the
//! loss (ResNet-18 agrees to 1e-8; ResNet-50's last-stage BatchNorm over 8 values still turns f64
//! rounding into 1.6e-7), 1e-8 for the running statistics, 1e-5 for the gradients (relative to
//! the parameter's largest absolute gradient for the samples). A layer wired differently from
//! torchvision's moves these by 1e-3 or more.

use candle_core::{DType, Device, Tensor};
use protocon::loss;
use protocon::model::{Arch, Mode, Network, NetworkOptions};
use serde_json::Value;

fn fixture(arch: &str) -> Value {
    let path = format!("{}/tests/fixtures/resnet/{arch}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `offset + scale * sqrt(2) * sin(12.9898 * i + phase)` for `i` in `0..n`, as the script.
fn formula(n: usize, phase: f64, scale: f64, offset: f64) -> Vec<f64> {
    (0..n).map(|i| offset + scale * 2f64.sqrt() * (12.9898 * i as f64 + phase).sin()).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn check(arch: &str) {
    let fx = fixture(arch);
    let dev = Device::Cpu;
    let classes = fx["classes"].as_u64().unwrap() as usize;
    let options = NetworkOptions { bn_momentum: f(&fx["bn_momentum"]), dtype: DType::F64, ..Default::default() };
    let net = Network::build(arch.parse::<Arch>().unwrap(), classes, None, 0, &dev, &options).unwrap();

    // Same names and shapes as torchvision's parameters, in any order (our store also holds the
    // BatchNorm running statistics, torchvision's buffers).
    let trainable: Vec<_> = net.params().trainable().collect();
    let params = fx["params"].as_array().unwrap();
    assert_eq!(trainable.len(), params.len(), "{arch}: parameter count");
    for p in params {
        let name = p["name"].as_str().unwrap();
        let ours = trainable.iter().find(|q| q.name == name).unwrap_or_else(|| panic!("{arch}: no parameter {name}"));
        let shape: Vec<usize> = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(ours.var.dims(), shape.as_slice(), "{arch}: {name}");
        let values = formula(shape.iter().product(), f(&p["phase"]), f(&p["scale"]), f(&p["offset"]));
        ours.var.set(&Tensor::from_vec(values, shape.as_slice(), &dev).unwrap()).unwrap();
    }

    let input = &fx["input"];
    let shape: Vec<usize> = input["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let x = Tensor::from_vec(formula(shape.iter().product(), f(&input["phase"]), f(&input["scale"]), 0.0), shape.as_slice(), &dev).unwrap();
    let labels: Vec<u32> = fx["labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as u32).collect();
    let labels = Tensor::new(labels.as_slice(), &dev).unwrap();

    let logits = net.forward(&x, Mode::Train).unwrap().logits;
    let ours: Vec<Vec<f64>> = logits.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let want: Vec<Vec<f64>> = fx["logits"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(f).collect()).collect();
    let scale = want.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in ours.iter().flatten().zip(want.iter().flatten()) {
        assert!((a - b).abs() <= 1e-6 * scale, "{arch}: logit {a} against torchvision's {b}");
    }
    let l = loss::cross_entropy(&logits, &labels).unwrap();
    let lv = l.to_scalar::<f64>().unwrap();
    assert!((lv - f(&fx["loss"])).abs() <= 1e-6 * f(&fx["loss"]).abs(), "{arch}: loss {lv} against {}", fx["loss"]);

    // The stem's BatchNorm moved its running statistics by momentum 0.1 (unbiased variance).
    let bn1 = |n: &str| -> Vec<f64> {
        let p = net.params().all().iter().find(|p| p.name == n).unwrap();
        p.var.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    };
    for (key, name) in [("bn1_running_mean", "bn1.running_mean"), ("bn1_running_var", "bn1.running_var")] {
        for (a, b) in bn1(name).iter().zip(fx[key].as_array().unwrap()) {
            assert!((a - f(b)).abs() <= 1e-8 * (1.0 + f(b).abs()), "{arch}: {name} {a} against {b}");
        }
    }

    let grads = l.backward().unwrap();
    for p in params {
        let name = p["name"].as_str().unwrap();
        let var = &trainable.iter().find(|q| q.name == name).unwrap().var;
        let g: Vec<f64> = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{arch}: no gradient for {name}")).flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        let want = &p["grad"];
        let max_abs = f(&want["max_abs"]);
        let abs_sum: f64 = g.iter().map(|v| v.abs()).sum();
        assert!((abs_sum - f(&want["abs_sum"])).abs() <= 1e-5 * f(&want["abs_sum"]) + 1e-15, "{arch}: {name}: sum |grad| {abs_sum} against {}", want["abs_sum"]);
        for (at, v) in want["at"].as_array().unwrap().iter().zip(want["values"].as_array().unwrap()) {
            let (i, v) = (at.as_u64().unwrap() as usize, f(v));
            assert!((g[i] - v).abs() <= 1e-5 * max_abs + 1e-15, "{arch}: {name}[{i}]: grad {} against {v}", g[i]);
        }
    }
}

#[test]
fn resnet18_matches_torchvision() {
    check("resnet18");
}

#[test]
fn resnet50_matches_torchvision() {
    check("resnet50");
}
