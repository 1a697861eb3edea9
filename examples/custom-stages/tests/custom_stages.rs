//! The example trains through the library with its own op and batch stage: both act, the
//! MixUp targets reach the loss (a run without MixUp differs), and training completes.

use protocon_custom_stages::{train_with_custom_stages, Counters};
use protocon_pipelines::config::{RunConfig, DEFAULT_CONFIG};
use std::path::Path;
use std::sync::atomic::Ordering;

/// `root/{train,test}/<class>/<i>.png`: 3 classes of flat-coloured 32x32 images with a
/// class-dependent stripe.
fn synthetic_folder(root: &Path) {
    for (subset, n) in [("train", 12u8), ("test", 4)] {
        for class in 0..3u8 {
            let dir = root.join(subset).join(format!("class{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let stripe = (x as u8 / 4 + class) % 3 == 0;
                    let base = [40 + 60 * class, 200 - 50 * class, 10 * i];
                    image::Rgb(if stripe { [255 - base[0], base[1] / 2, 255 - base[2]] } else { base }.map(|v| v.wrapping_add(y as u8)))
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

fn config(root: &Path, extra: &[&str]) -> RunConfig {
    let mut sets: Vec<String> = vec![
        format!("data.dataset=\"folder:{}\"", root.display()),
        "data.size=32".into(),
        "data.labels_per_class=2".into(),
        "algorithm=\"fixmatch\"".into(),
        "train.steps=6".into(),
        "train.labeled_batch=4".into(),
        "train.unlabeled_ratio=2".into(),
        "train.eval_every=0".into(),
        "train.log_every=1".into(),
        "threads.compute=1".into(),
        r#"augment.strong=[{ name = "channel_shuffle", p = 1.0 }, "flip"]"#.into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::parse(DEFAULT_CONFIG, "test", &sets).unwrap()
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"kind\":\"train\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss_x"].as_f64().unwrap()
        })
        .collect()
}

#[test]
fn a_custom_op_and_a_mixup_stage_train_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_folder(&dir.path().join("data"));
    let counters = Counters::default();
    let run = dir.path().join("run");
    let summary = train_with_custom_stages(config(&dir.path().join("data"), &[]), &run, 0.4, &counters).unwrap();
    assert_eq!(summary.steps_done, 6);
    // 6 steps x 8 unlabeled images (mu = 2, B = 4), each strong view shuffled (p = 1), plus the
    // one view the run builds before it starts to check the chain's output size.
    assert_eq!(counters.shuffled_views.load(Ordering::Relaxed), 6 * 8 + 1);
    assert_eq!(counters.mixed_batches.load(Ordering::Relaxed), 6);
    let mixed = losses(&run);
    assert_eq!(mixed.len(), 6);
    assert!(mixed.iter().all(|l| l.is_finite()));

    // The same run with MixUp at alpha -> 0 (l folds to 1: no mixing) gives other labeled
    // losses from the first step on: the stage's images and soft targets reach the loss.
    let plain = dir.path().join("plain");
    let counters = Counters::default();
    train_with_custom_stages(config(&dir.path().join("data"), &[]), &plain, 1e-6, &counters).unwrap();
    let unmixed = losses(&plain);
    assert_ne!(mixed[0], unmixed[0], "MixUp changed nothing");
}

#[test]
fn an_unknown_op_is_refused_before_training_with_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_folder(&dir.path().join("data"));
    // Without the example's registry, `channel_shuffle` is unknown to the built-in one.
    let Err(err) = protocon_pipelines::TrainingRun::new(config(&dir.path().join("data"), &[]))
        .run(protocon_pipelines::TrainOptions::new(dir.path().join("run")))
    else {
        panic!("trained with an op the registry does not know")
    };
    let msg = format!("{err:#}");
    assert!(msg.contains("channel_shuffle") && msg.contains("cutout"), "{msg}");
}
