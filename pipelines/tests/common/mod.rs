//! Helpers shared by the binary's integration tests: the test data, temporary run
//! directories, running `protocon train` on configs/smoke.toml, reading metrics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../../tests/support/fashion_mnist.rs"]
mod fashion_mnist;

/// Fashion-MNIST for the tests (see `tests/support/fashion_mnist.rs` for where it is looked for).
pub fn data_dir() -> PathBuf {
    fashion_mnist::fashion_mnist_dir()
}

pub fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("protocon-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn protocon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protocon")).args(args).output().expect("binary runs")
}

/// `protocon train --quiet --config configs/smoke.toml --out OUT` on the test data, plus `extra`.
pub fn train(out: &Path, extra: &[&str]) -> Output {
    let data = format!("data.dataset=fashion-mnist:{}", data_dir().display());
    let config = smoke();
    let mut args = vec!["train", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--set", &data];
    args.extend_from_slice(extra);
    protocon(&args)
}

pub fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn losses(rs: &[serde_json::Value]) -> Vec<f64> {
    rs.iter().filter(|r| r["kind"] == "train").map(|r| r["loss"].as_f64().unwrap()).collect()
}

pub fn ok(out: &Output) {
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Metrics lines without the wall-clock fields.
pub fn comparable(rs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    rs.iter()
        .cloned()
        .map(|mut r| {
            let fields = r.as_object_mut().unwrap();
            fields.remove("images_per_s");
            fields.remove("elapsed_s");
            r
        })
        .collect()
}

/// A tiny image folder: `train/` 12 and `test/` 4 images of two tinted classes, JPEGs of several
/// sizes and one PNG per class.
pub fn write_jpeg_folder(root: &std::path::Path) {
    use protocon_stages::augment::{codec, Image};
    for (subset, count) in [("train", 12), ("test", 4)] {
        for (class, tint) in [("blue", [30u8, 60, 200]), ("red", [200, 50, 40])] {
            let dir = root.join(subset).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let (w, h) = (48 + 8 * (i % 4), 40 + 6 * (i % 3));
                let px = (0..w * h * 3).map(|k| tint[k % 3].saturating_add(((k * 7919 + i) % 41) as u8)).collect();
                let img = Image::new(w, h, 3, px).unwrap();
                let (name, bytes) = if i == 5 {
                    (format!("{i}.png"), codec::encode_png(&img).unwrap())
                } else {
                    (format!("{i}.jpg"), codec::encode_jpeg(&img, 90).unwrap())
                };
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}
