//! `protocon train` / `eval` end to end on a Fashion-MNIST subset (configs/smoke.toml).

mod common;
use common::*;
use std::path::Path;

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
        for f in ["config.toml", "split.json", "checkpoint.safetensors", "profile.txt", "curves.png"] {
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
    // Two TensorBoard files; the resumed one starts with a SessionLog START after the checkpoint's
    // 6 steps, so TensorBoard drops what the first process logged past them.
    let mut files: Vec<_> = std::fs::read_dir(&resumed).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().contains("tfevents")).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let second = protocon_stages::tensorboard::read_events(&std::fs::read(&files[1]).unwrap()).unwrap();
    assert_eq!((second[1].step, second[1].session_log.as_ref().map(|l| l.status)), (7, Some(1)));
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

#[test]
fn bench_pipeline_with_a_config_times_the_same_steps_end_to_end_and_compute_only() {
    let data = format!("data.dataset=fashion-mnist:{}", data_dir().display());
    let config = smoke();
    let o = protocon(&[
        "bench", "pipeline", "--config", config.to_str().unwrap(), "--steps", "4", "--warmup", "1", "--set", &data, "--json",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let (e2e, co) = (v["end_to_end_ms_per_step"].as_f64().unwrap(), v["compute_only_ms_per_step"].as_f64().unwrap());
    assert!(e2e > 0.0 && co > 0.0, "{v}");
    assert!((v["ratio"].as_f64().unwrap() - e2e / co).abs() < 1e-9);
    assert_eq!(v["steps"], 4);
    // Same batches, same initial weights: the two runs trained the same steps.
    assert_eq!(v["identical_losses"], true, "{v}");
    assert_eq!(v["threads"]["compute"], 1, "configs/smoke.toml sets threads.compute = 1");
    assert_eq!((v["threads"]["weak_workers"].as_u64(), v["threads"]["strong_workers"].as_u64()), (Some(1), Some(1)));
    let stages: Vec<&str> = v["profile"]["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stages, ["sampler", "weak-augment", "strong-augment", "compute", "metrics"]);
    // 1 + 4 steps of compute, and 5 training records out of it: no evaluation record.
    let stage = |name: &str| v["profile"]["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(stage("compute")["items_in"], 5);
    assert_eq!(stage("metrics")["items_in"], 5, "an evaluation ran inside the benchmark");
}

/// An image folder of JPEG files (and one PNG) of several sizes: train/ and test/, two classes
/// told apart by colour.
#[test]
fn an_image_folder_decoded_per_sample_trains_the_same_with_any_worker_count() {
    let root = temp("jpeg-folder");
    write_jpeg_folder(&root);
    let dataset = format!("data.dataset=folder:{}", root.display());
    let per_sample: Vec<String> = [
        dataset.as_str(),
        "data.decode=\"per-sample\"",
        "data.labels_per_class=2",
        "train.labeled_batch=4",
        "train.steps=6",
        "train.eval_every=3",
        "augment.weak=[{ name = \"random_resized_crop\", size = 32 }, \"flip\"]",
        "augment.strong=[{ name = \"random_resized_crop\", size = 32 }, \"randaugment\", \"flip\", \"cutout\"]",
    ]
    .iter()
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect();
    let run = |name: &str, extra: &[&str]| {
        let out = temp(name);
        let mut args: Vec<&str> = per_sample.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        ok(&train(&out, &args));
        let rs = records(&out);
        // `protocon eval` reads the test files per visit as training's evaluation did (8 images),
        // and scores the final EMA model as its last evaluation did.
        let e = protocon(&["eval", "--checkpoint", out.to_str().unwrap(), "--json"]);
        ok(&e);
        let e: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        let last = rs.iter().rev().find(|r| r["kind"] == "eval").unwrap();
        assert_eq!((e["images"].as_u64(), &e["accuracy"]), (Some(8), &last["test_acc_ema"]), "{e}");
        std::fs::remove_dir_all(&out).ok();
        rs
    };
    let smoke_path = smoke().display().to_string();
    let one = run("per-sample-1", &[]);
    let two = run("per-sample-2", &["--set", "threads.weak_workers=2", "--set", "threads.strong_workers=2"]);
    assert_eq!(losses(&one).len(), 6);
    assert!(losses(&one).iter().all(|l| l.is_finite()), "{:?}", losses(&one));
    let evals: Vec<_> = one.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.len(), 2, "evaluated at steps 3 and 6 on the 8 test images");
    assert_eq!(comparable(&one), comparable(&two), "per-sample views depend on the worker count");

    // The preview shows what training sees: views of the files at their own size, and the
    // original resized into a 32x32 cell; the same bytes with 1 and 2 workers.
    let preview = temp("per-sample-preview");
    std::fs::create_dir_all(&preview).unwrap();
    let mut grids = Vec::new();
    for workers in ["1", "2"] {
        let png = preview.join(format!("grid{workers}.png"));
        let mut args = vec!["data", "preview", "--config", smoke_path.as_str(), "--out", png.to_str().unwrap()];
        args.extend_from_slice(&["--samples", "3", "--strong", "2", "--scale", "1", "--workers", workers]);
        args.extend(per_sample.iter().map(String::as_str));
        ok(&protocon(&args));
        grids.push(std::fs::read(&png).unwrap());
    }
    assert_eq!(grids[0], grids[1], "the preview depends on the number of workers");
    let grid = image::load_from_memory(&grids[0]).unwrap().to_rgb8();
    assert_eq!(grid.dimensions(), (2 + 4 * 34, 2 + 3 * 34), "4 columns and 3 rows of 32 px cells, 2 px apart");
    // Row 0 is the first file of class "blue": its original's cell is blue.
    let (mut r, mut b) = (0u32, 0u32);
    for y in 2..34 {
        for x in 2..34 {
            let p = grid.get_pixel(x, y);
            (r, b) = (r + p[0] as u32, b + p[2] as u32);
        }
    }
    assert!(b > 3 * r, "original cell: red {r}, blue {b}");
    std::fs::remove_dir_all(&preview).ok();

    // Chains that keep each file's own size cannot fill a batch of 32x32 images: refused before
    // the run starts, naming the key.
    let out = temp("per-sample-bad");
    let mut args: Vec<&str> = per_sample.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--set", "augment.weak=[\"crop_flip\"]"]);
    let o = train(&out, &args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("augment.weak") && err.contains("random_resized_crop"), "{err}");
    // Only folders have a file per sample.
    let o = train(&out, &["--set", "data.decode=\"per-sample\""]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("data.decode") && err.contains("folder:"), "{err}");
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&root).ok();
}

/// With stderr not a terminal (a log file), progress comes as lines: every `log_every` steps
/// unless the last line is younger than `--log-seconds`, and always at the last step. The runs'
/// wall time (`elapsed_s`) then shows in `protocon compare`.
#[test]
fn progress_lines_reach_a_log_file_and_compare_reads_the_runs() {
    let data = format!("data.dataset=fashion-mnist:{}", data_dir().display());
    let config = smoke();
    let run = |out: &Path, seconds: &str, seed: &str| {
        let o = protocon(&[
            "train", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--set", &data, "--set", "train.log_every=2",
            "--set", &format!("seed={seed}"), "--log-seconds", seconds,
        ]);
        ok(&o);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let (every, rare) = (temp("lines-every"), temp("lines-rare"));
    let log = run(&every, "0", "0");
    let steps: Vec<&str> = log.lines().filter(|l| l.starts_with("step ") && l.contains(" img/s  ETA ")).collect();
    let want: Vec<String> = (1..=6).map(|i| format!("step {}/12 ({:.0}%)", 2 * i, 100.0 * (2 * i) as f64 / 12.0)).collect();
    assert_eq!(steps.len(), 6, "{log}");
    for (line, want) in steps.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()) && line.contains("loss ") && line.contains("mask "), "{line}");
    }
    // The eval after step 6 shows in the lines that follow it.
    assert!(steps[3].contains("test EMA") && !steps[2].contains("test EMA"), "{log}");
    // An hour between lines: only the first and the last step.
    let log = run(&rare, "3600", "1");
    let steps: Vec<&str> = log.lines().filter(|l| l.starts_with("step ") && l.contains(" img/s  ETA ")).collect();
    assert!(steps.len() == 2 && steps[0].starts_with("step 2/12 ") && steps[1].starts_with("step 12/12 "), "{log}");

    // Wall time in the train lines, growing.
    let elapsed: Vec<f64> = records(&every).iter().filter(|r| r["kind"] == "train").map(|r| r["elapsed_s"].as_f64().unwrap()).collect();
    assert!(elapsed.len() == 6 && elapsed.windows(2).all(|w| w[1] > w[0]) && elapsed[0] > 0.0, "{elapsed:?}");
    // TensorBoard: the run directory's event file holds the same losses, at steps trained.
    let events: Vec<_> = std::fs::read_dir(&every).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().contains("tfevents")).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let events = protocon_stages::tensorboard::read_events(&std::fs::read(&events[0]).unwrap()).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let tb_losses: Vec<(i64, f32)> = events
        .iter()
        .filter_map(|e| Some((e.step, e.summary.as_ref()?.value.iter().find(|v| v.tag == "train/loss")?.simple_value?)))
        .collect();
    let want: Vec<(i64, f32)> =
        records(&every).iter().filter(|r| r["kind"] == "train").map(|r| (r["step"].as_i64().unwrap() + 1, r["loss"].as_f64().unwrap() as f32)).collect();
    assert_eq!(tb_losses, want);
    let o = protocon(&["compare", "--csv", every.to_str().unwrap(), rare.to_str().unwrap()]);
    ok(&o);
    let csv = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header, two runs and their mean: {csv}");
    let last_ema = |dir: &Path| records(dir).iter().rev().find(|r| r["kind"] == "eval").unwrap()["test_acc_ema"].as_f64().unwrap();
    let row0: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&row0[..5], ["fixmatch", "smoke", "0", "12", "12"], "{csv}");
    assert!((row0[5].parse::<f64>().unwrap() - 100.0 * last_ema(&every)).abs() < 1e-3, "{csv}");
    assert!((row0[9].parse::<f64>().unwrap() - elapsed[5]).abs() < 1e-2, "{csv}");
    assert!(lines[3].starts_with("fixmatch,smoke,mean,"), "{csv}");
    std::fs::remove_dir_all(&every).ok();
    std::fs::remove_dir_all(&rare).ok();
}
