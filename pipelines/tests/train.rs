//! `protocon train` / `eval` end to end on a Fashion-MNIST subset (configs/smoke.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("PROTOCON_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fashion-mnist"));
    assert!(dir.join("train-images-idx3-ubyte.gz").exists(), "Fashion-MNIST not found in {}; set PROTOCON_TEST_DATA", dir.display());
    dir
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("protocon-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn protocon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protocon")).args(args).output().expect("binary runs")
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let data = format!("data.dataset=fashion-mnist:{}", data_dir().display());
    let config = smoke();
    let mut args = vec!["train", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--set", &data];
    args.extend_from_slice(extra);
    protocon(&args)
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn losses(rs: &[serde_json::Value]) -> Vec<f64> {
    rs.iter().filter(|r| r["kind"] == "train").map(|r| r["loss"].as_f64().unwrap()).collect()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn fixmatch_and_supervised_train_and_the_loss_falls() {
    for algorithm in ["fixmatch", "supervised"] {
        let out = temp(algorithm);
        let algo = format!("algorithm={algorithm}");
        let o = train(&out, &["--set", &algo, "--set", "train.steps=16"]);
        ok(&o);
        let rs = records(&out);
        let l = losses(&rs);
        assert_eq!(l.len(), 16);
        let first: f64 = l[..4].iter().sum::<f64>() / 4.0;
        let last: f64 = l[12..].iter().sum::<f64>() / 4.0;
        assert!(last < first, "{algorithm}: loss did not fall: {l:?}");
        let evals: Vec<_> = rs.iter().filter(|r| r["kind"] == "eval").collect();
        assert!(!evals.is_empty() && evals.iter().all(|e| e["test_acc"].as_f64().unwrap() > 0.0));
        for f in ["config.toml", "split.json", "checkpoint.safetensors", "profile.txt"] {
            assert!(out.join(f).exists(), "{f} missing");
        }
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("bottleneck:"), "{text}");
        if algorithm == "supervised" {
            assert!(!text.contains("strong-augment"), "supervised runs without the strong view stage");
            assert!(rs.iter().filter(|r| r["kind"] == "train").all(|r| r["loss_u"] == 0.0));
        }
        // The checkpoint evaluates to the accuracy the run logged last.
        let e = protocon(&["eval", "--checkpoint", out.to_str().unwrap(), "--data", &format!("fashion-mnist:{}", data_dir().display()), "--json"]);
        ok(&e);
        let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        let confusion: u64 = v["confusion"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|x| x.as_u64().unwrap()).sum();
        assert_eq!(confusion, 10_000);
        std::fs::remove_dir_all(&out).ok();
    }
}

/// Metrics lines without the wall-clock field.
fn comparable(rs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    rs.iter()
        .cloned()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("images_per_s");
            r
        })
        .collect()
}

#[test]
fn resume_gives_the_same_metrics_as_an_uninterrupted_run() {
    let straight = temp("straight");
    ok(&train(&straight, &["--set", "train.steps=12"]));
    let resumed = temp("resumed");
    // First half: a run of 12 steps stopped after 6 (its checkpoint is written at step 6).
    let first_half = train(&resumed, &["--set", "train.steps=12", "--set", "train.inject_nan_at_step=7"]);
    assert!(!first_half.status.success(), "the first half must stop at step 7");
    ok(&train(&resumed, &["--set", "train.steps=12", "--resume", resumed.to_str().unwrap()]));
    let (a, b) = (records(&straight), records(&resumed));
    assert_eq!(a.len(), b.len());
    assert_eq!(comparable(&a), comparable(&b), "metrics after resume differ");
    std::fs::remove_dir_all(&straight).ok();
    std::fs::remove_dir_all(&resumed).ok();
}

#[test]
fn a_nan_loss_stops_the_run_with_the_step_and_keeps_the_checkpoint() {
    let out = temp("nan");
    let o = train(&out, &["--set", "train.inject_nan_at_step=8"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`compute`") && err.contains("step 8") && err.contains("loss is NaN"), "{err}");
    // The checkpoint of step 6 survives intact.
    let e = protocon(&["eval", "--checkpoint", out.to_str().unwrap(), "--json"]);
    ok(&e);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["step"], 6);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let out = temp("bad");
    // Unknown config key.
    let o = train(&out, &["--set", "train.stepz=3"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("smoke.toml") && err.contains("stepz"), "{err}");

    // Missing data directory (and fetching switched off).
    let o = protocon(&["train", "--quiet", "--config", smoke().to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--set", "data.dataset=fashion-mnist:/nonexistent/fmnist", "--set", "data.fetch=false"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/fmnist"), "{err}");

    // Corrupt data file: a truncated copy of the training images.
    let corrupt = out.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    for f in ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(data_dir().join(f), corrupt.join(f)).unwrap();
    }
    let bytes = std::fs::read(data_dir().join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(corrupt.join("train-images-idx3-ubyte.gz"), &bytes[..bytes.len() / 3]).unwrap();
    let o = protocon(&["train", "--quiet", "--config", smoke().to_str().unwrap(), "--out", out.join("run").to_str().unwrap(),
        "--set", &format!("data.dataset=fashion-mnist:{}", corrupt.display()), "--set", "data.fetch=false"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    std::fs::remove_dir_all(&out).ok();
}
