//! The `protocon` binary: subcommands listed, unfinished ones refuse with exit code 2, and
//! `bench pipeline` names the slow stage.

use std::process::Command;

#[path = "../../tests/support/fashion_mnist.rs"]
mod fashion_mnist;

fn protocon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_protocon")).args(args).output().expect("binary runs")
}

#[test]
fn help_lists_the_subcommands() {
    let out = protocon(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["train", "eval", "plot", "data", "bench"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(cmd)), "{cmd} missing from\n{text}");
    }
}

#[test]
fn bench_pipeline_json_names_the_slow_stage_and_reports_overhead() {
    let out = protocon(&[
        "bench", "pipeline", "--items", "20000", "--repeats", "1", "--slow-items", "300", "--slow-stage", "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["bottleneck"]["expected"], "map-3");
    assert_eq!(v["bottleneck"]["found"], "map-3");
    let runtime = v["overhead"]["runtime_ns_per_message"]["median"].as_f64().unwrap();
    let raw = v["overhead"]["raw_channels_ns_per_message"]["median"].as_f64().unwrap();
    assert!(runtime > 0.0 && raw > 0.0);
    let ratio = v["overhead"]["ratio_runtime_over_raw"].as_f64().unwrap();
    assert!((ratio - runtime / raw).abs() < 1e-9);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let stages = v["bottleneck"]["profile"]["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 5, "source, 3 maps, sink");
}

#[test]
fn bench_pipeline_prints_the_table_and_a_bottleneck_line() {
    let out = protocon(&["bench", "pipeline", "--items", "5000", "--repeats", "1", "--slow-items", "300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("busy %") && text.contains("starved %") && text.contains("blocked %"), "{text}");
    assert!(text.lines().any(|l| l == "bottleneck: map-2"), "{text}");
}

#[test]
fn bad_bench_arguments_are_refused_with_a_reason() {
    let out = protocon(&["bench", "pipeline", "--slow-stage", "9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slow-stage must name a map stage"));
}

#[test]
fn data_preview_png_is_identical_for_one_and_two_workers() {
    let data = fashion_mnist::fashion_mnist_dir();
    let dir = std::env::temp_dir().join(format!("protocon-preview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!("data.dataset=fashion-mnist:{}", data.display());
    let mut pngs = Vec::new();
    for workers in ["1", "2"] {
        let png = dir.join(format!("grid{workers}.png"));
        let out = protocon(&["data", "preview", "--set", &spec, "--out", png.to_str().unwrap(), "--workers", workers, "--seed", "9"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        pngs.push(std::fs::read(&png).unwrap());
        let ops = std::fs::read_to_string(png.with_extension("txt")).unwrap();
        assert!(ops.contains("strong[3]: Crop") && ops.contains("Cutout"), "{ops}");
    }
    assert!(pngs[0].starts_with(b"\x89PNG"));
    assert_eq!(pngs[0], pngs[1], "the grid depends on the number of workers");
    std::fs::remove_dir_all(&dir).ok();
}

/// A small metrics file: `steps` train lines, an eval line every 5 steps.
fn write_metrics(dir: &std::path::Path, steps: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for step in 0..steps {
        let t = step as f64 / steps as f64;
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({"kind": "train", "step": step, "epoch": 0, "lr": 0.03, "loss": 2.0 - t, "loss_x": 1.5 - t,
                "loss_u": 0.5 * t, "mask_rate": t, "pseudo_label_acc": 0.8, "pseudo_label_acc_all": 0.6, "images_per_s": 50.0})
        ));
        if (step + 1) % 5 == 0 {
            text.push_str(&format!(
                "{}\n",
                serde_json::json!({"kind": "eval", "step": step, "test_acc": 0.4 + 0.3 * t, "test_acc_ema": 0.45 + 0.3 * t,
                    "best_test_acc": 0.4 + 0.3 * t, "best_test_acc_ema": 0.45 + 0.3 * t})
            ));
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
}

#[test]
fn plot_draws_one_run_or_overlays_several() {
    let root = std::env::temp_dir().join(format!("protocon-cli-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (root.join("seed-0"), root.join("seed-1"));
    write_metrics(&a, 20);
    write_metrics(&b, 30);
    let png = root.join("one.png");
    let out = protocon(&["plot", "--out", png.to_str().unwrap(), a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(image::open(&png).unwrap().to_rgb8().dimensions(), (1200, 800));
    let png = root.join("many.png");
    let out = protocon(&["plot", "--out", png.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1200, 500));
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "{} colours: blank figure?", colours.len());

    // A truncated line: the error names the file and the line.
    let mut text = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    text.insert_str(0, "{\"kind\": \"train\", \"st\n");
    std::fs::write(b.join("metrics.jsonl"), text).unwrap();
    let out = protocon(&["plot", "--out", png.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1:", b.join("metrics.jsonl").display())), "{err}");
    std::fs::remove_dir_all(&root).ok();
}
