//! The `protocon` binary: subcommands listed, unfinished ones refuse with exit code 2, and
//! `bench pipeline` names the slow stage.

use std::process::Command;

fn protocon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_protocon")).args(args).output().expect("binary runs")
}

#[test]
fn help_lists_the_four_subcommands() {
    let out = protocon(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["train", "eval", "data", "bench"] {
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
    let data = std::env::var_os("PROTOCON_TEST_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fashion-mnist"));
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
