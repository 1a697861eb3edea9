//! ProtoCon through the whole pipeline on a small Fashion-MNIST subset: epochs end, clusters
//! and prototypes label samples, refinement switches on, and a run resumed in the middle of an
//! epoch (after an epoch end, with refinement on) gives the same metrics as an uninterrupted one,
//! so the memory bank, the clustering and the prototypes are restored exactly.

mod common;
use common::*;

/// 400 training images: 40 labeled, 360 unlabeled, 16 per step: 22 steps per epoch. Refinement
/// by the epoch alone (no labeled-agreement gate), from epoch 1.
const PROTOCON: [&str; 14] = [
    "--set", "algorithm=protocon",
    "--set", "data.train_limit=400",
    "--set", "protocon.refine_after_epochs=1",
    "--set", "protocon.refine_min_agreement=0",
    "--set", "protocon.min_cluster_size=40",
    "--set", "train.checkpoint_every=6",
    "--set", "train.steps=30",
];

#[test]
fn protocon_trains_and_resumes_mid_epoch_exactly() {
    let straight = temp("protocon-straight");
    ok(&train(&straight, &PROTOCON));
    let a = records(&straight);
    let epochs: Vec<_> = a.iter().filter(|r| r["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 1, "one epoch end in 30 steps of 22");
    assert_eq!(epochs[0]["step"], 21);
    // 9 clusters of 360 samples: the duals keep every cluster populated.
    assert!(epochs[0]["cluster_size_min"][0].as_u64().unwrap() > 0, "{}", epochs[0]);
    let train_lines: Vec<_> = a.iter().filter(|r| r["kind"] == "train").collect();
    for r in &train_lines {
        let after = r["step"].as_u64().unwrap() > 21;
        assert_eq!(r["refined"].as_bool().unwrap(), after, "refinement from epoch 1: {r}");
        assert_eq!(r.get("cluster_label_acc").is_some(), after, "cluster pseudo-labels exist after the first epoch end: {r}");
        assert!(r["loss_c"].as_f64().unwrap().is_finite() && r["loss_px"].as_f64().unwrap().is_finite());
    }
    // Before the first epoch end the prototypes are zero: Lp_x = ln 10 exactly (to f32).
    assert!((train_lines[0]["loss_px"].as_f64().unwrap() - 10f64.ln()).abs() < 1e-5);
    assert!((train_lines[25]["loss_px"].as_f64().unwrap() - 10f64.ln()).abs() > 1e-3, "prototypes set at the epoch end");

    // Stop at step 25 (NaN): the last checkpoint is after step 24, in epoch 1.
    let resumed = temp("protocon-resumed");
    let first = train(&resumed, &[&PROTOCON[..], &["--set", "train.inject_nan_at_step=25"]].concat());
    assert!(!first.status.success(), "the first part must stop at step 25");
    ok(&train(&resumed, &[&PROTOCON[..], &["--resume", resumed.to_str().unwrap()]].concat()));
    let b = records(&resumed);
    assert_eq!(comparable(&a), comparable(&b), "metrics after a mid-epoch resume differ");
    std::fs::remove_dir_all(&straight).ok();
    std::fs::remove_dir_all(&resumed).ok();
}

/// With the labeled-agreement gate (the default preset's 0.5), refinement waits for an epoch in
/// which the labeled images' cluster labels were measured: the first epoch end (step 21) only
/// creates the cluster labels, so within 30 steps nothing is refined, and the epoch record says
/// that no agreement was measured yet.
#[test]
fn the_agreement_gate_keeps_refinement_off_until_an_epoch_was_measured() {
    let out = temp("protocon-gated");
    // The later `--set` wins.
    ok(&train(&out, &[&PROTOCON[..], &["--set", "protocon.refine_min_agreement=0.5"]].concat()));
    let r = records(&out);
    std::fs::remove_dir_all(&out).ok();
    let epoch = r.iter().find(|r| r["kind"] == "epoch").expect("an epoch end");
    assert!(epoch.get("labeled_agreement").is_none(), "{epoch}");
    let trains: Vec<_> = r.iter().filter(|r| r["kind"] == "train").collect();
    assert!(trains.iter().any(|t| t.get("cluster_label_acc").is_some()), "cluster labels exist after step 21");
    assert!(trains.iter().all(|t| t["refined"] == false), "no refinement before a measured epoch");
}

/// Asynchronous clustering: the same run whatever the staleness bound; identical to the
/// synchronous run until refinement reads a cluster (epoch 1), and the profiler shows the
/// cluster stage.
#[test]
fn asynchronous_clustering_is_deterministic_and_matches_sync_before_refinement() {
    let run = |name: &str, staleness: &str| {
        let out = temp(name);
        let s = format!("protocon.staleness={staleness}");
        ok(&train(&out, &[&PROTOCON[..], &["--set", &s]].concat()));
        let r = records(&out);
        let profile = std::fs::read_to_string(out.join("profile.txt")).unwrap();
        std::fs::remove_dir_all(&out).ok();
        (r, profile)
    };
    let (sync, sync_profile) = run("protocon-sync", "0");
    let (one, profile) = run("protocon-async1", "1");
    let (three, _) = run("protocon-async3", "3");
    assert!(profile.lines().any(|l| l.starts_with("cluster")), "{profile}");
    assert!(!sync_profile.lines().any(|l| l.starts_with("cluster")), "{sync_profile}");
    assert_eq!(comparable(&one), comparable(&three), "the staleness bound must not change the run");
    let epoch0 = |rs: &[serde_json::Value]| -> Vec<serde_json::Value> {
        comparable(rs).into_iter().filter(|r| r["step"].as_u64().unwrap() <= 21 && r["kind"] != "eval").collect()
    };
    assert_eq!(epoch0(&sync), epoch0(&one), "epoch 0 does not depend on the clustering mode");
    assert_ne!(comparable(&sync), comparable(&one), "refinement reads last epoch's clusters in async mode");
}

/// `protocon inspect` on a short ProtoCon run writes both galleries and the JSON, and the images
/// it shows as nearest to each prototype are the nearest: recomputed here from the checkpoint's
/// prototypes and the raw network's projections of the test set, taken in chunks of 7 rather
/// than the evaluation's 128. A FixMatch checkpoint gets the classifier rows only.
#[test]
fn inspect_shows_the_images_nearest_each_prototype() {
    use candle_core::Device;
    use protocon::checkpoint::Checkpoint;
    use protocon::data::Labelled;
    use protocon_pipelines::train::test_set;
    use protocon_pipelines::trained::TrainedModel;

    let run = temp("inspect-protocon");
    ok(&train(&run, &[&PROTOCON[..], &["--set", "train.steps=24"]].concat()));
    let out = run.join("inspect");
    ok(&protocon(&["inspect", "--checkpoint", run.to_str().unwrap(), "--out", out.to_str().unwrap(), "--k", "5", "--clusters", "2"]));
    for f in ["prototypes.png", "clusters.png"] {
        assert!(std::fs::read(out.join(f)).unwrap().starts_with(b"\x89PNG"), "{f}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("inspect.json")).unwrap()).unwrap();

    let model = TrainedModel::load(&run, true, true).unwrap();
    let test = test_set(&model.config, model.norm.clone()).unwrap();
    let ck = Checkpoint::load(&run.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let prototypes: Vec<Vec<f32>> = ck.tensors["protocon.prototypes.prototypes"].to_vec2().unwrap();
    let mut z: Vec<Vec<f32>> = Vec::new();
    test.forward_chunks(&model.net, 7, |_, o| {
        z.extend(o.projection.as_ref().unwrap().to_vec2::<f32>()?);
        Ok(())
    })
    .unwrap();
    assert_eq!(z.len(), test.num_samples());
    let classes = json["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 10);
    for (c, class) in classes.iter().enumerate() {
        let sims: Vec<f64> = z.iter().map(|v| v.iter().zip(&prototypes[c]).map(|(a, b)| (*a as f64) * (*b as f64)).sum()).collect();
        let mut order: Vec<usize> = (0..sims.len()).collect();
        order.sort_by(|&a, &b| sims[b].total_cmp(&sims[a]));
        let picks = class["nearest_to_prototype"].as_array().unwrap();
        assert_eq!(picks.len(), 5);
        let fifth = sims[order[4]];
        for p in picks {
            let i = p["index"].as_u64().unwrap() as usize;
            assert!((p["score"].as_f64().unwrap() - sims[i]).abs() < 1e-4, "class {c}: image {i}");
            assert!(sims[i] >= fifth - 1e-4, "class {c}: image {i} ({}) is not among the 5 nearest (5th: {fifth})", sims[i]);
            assert_eq!(p["label"].as_u64().unwrap(), test.labels()[i] as u64);
        }
    }
    // Clusters: every unlabeled image in one cluster of the head, and the rows that were drawn.
    let clusters = json["clusters"].as_array().unwrap();
    assert_eq!(clusters.iter().map(|c| c["size"].as_u64().unwrap()).sum::<u64>(), 360);
    assert!(clusters.iter().filter(|c| !c["shown"].as_array().unwrap().is_empty()).count() >= 2);

    let fixmatch = temp("inspect-fixmatch");
    ok(&train(&fixmatch, &[]));
    let out = fixmatch.join("inspect");
    ok(&protocon(&["inspect", "--checkpoint", fixmatch.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    assert!(out.join("classifier.png").is_file() && !out.join("clusters.png").exists() && !out.join("prototypes.png").exists());
    std::fs::remove_dir_all(&run).ok();
    std::fs::remove_dir_all(&fixmatch).ok();
}

/// The paper's ImageNet recipe (`configs/imagenet-1pct-protocon.toml`: ResNet-50, per-sample
/// JPEG decoding, SimCLR-style strong views, 3 clustering heads, asynchronous clustering) trains
/// on a tiny JPEG folder, with only the sizes scaled down: 64 px views, 2 + 2 + 2 images per
/// step, K from a minimum cluster size of 4. Its 1% label fraction labels one image per class.
#[test]
fn the_imagenet_recipe_trains_resnet50_on_a_jpeg_folder() {
    let root = temp("imagenet-jpegs");
    write_jpeg_folder(&root);
    let out = temp("imagenet-run");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/imagenet-1pct-protocon.toml");
    let dataset = format!("data.dataset=folder:{}", root.display());
    let sets = [
        dataset.as_str(),
        "data.size=64",
        "train.labeled_batch=2",
        "train.unlabeled_ratio=1",
        "train.steps=3",
        "train.eval_every=3",
        "train.log_every=1",
        "train.checkpoint_every=3",
        "protocon.min_cluster_size=4",
        "threads.compute=1",
        "threads.weak_workers=1",
        "threads.strong_workers=1",
        "augment.weak=[{ name = \"random_resized_crop\", size = 64 }, \"flip\"]",
        "augment.strong=[{ name = \"random_resized_crop\", size = 64 }, \"simclr\"]",
    ];
    let mut args = vec!["train", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let o = protocon(&args);
    ok(&o);
    let rs = records(&out);
    let trains: Vec<_> = rs.iter().filter(|r| r["kind"] == "train").collect();
    assert_eq!(trains.len(), 3, "{rs:?}");
    let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap();
    assert_eq!((split["label_fraction"].as_f64(), split["labeled"].as_array().unwrap().len()), (Some(0.01), 2));
    assert!(trains.iter().all(|r| r["loss"].as_f64().unwrap().is_finite() && r["loss_c"].is_number()), "{trains:?}");
    let effective = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(effective.contains("arch = \"resnet50\""), "{effective}");
    let e = protocon(&["eval", "--checkpoint", out.to_str().unwrap(), "--json"]);
    ok(&e);
    let e: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(e["images"], 8);
    std::fs::remove_dir_all(&root).ok();
    std::fs::remove_dir_all(&out).ok();
}

/// The other large-image recipes start on a folder of JPEGs too, sizes scaled down as above:
/// mini-ImageNet's (decoded into memory, CIFAR-style crops and RandAugment on 84 px images,
/// here 32 px) and DomainNet clipart's (per-sample decoding, SimCLR-style views, a label
/// fraction). Each keeps its ResNet-50, d = 128 and 3 heads, and takes two steps.
#[test]
fn the_mini_imagenet_and_domainnet_recipes_train_on_a_jpeg_folder() {
    let root = temp("recipes-jpegs");
    write_jpeg_folder(&root);
    let dataset = format!("data.dataset=folder:{}", root.display());
    let common = [
        dataset.as_str(),
        "train.labeled_batch=2",
        "train.unlabeled_ratio=1",
        "train.steps=2",
        "train.eval_every=2",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "protocon.min_cluster_size=4",
        "threads.compute=1",
        "threads.weak_workers=1",
        "threads.strong_workers=1",
    ];
    let recipes: [(&str, &[&str]); 2] = [
        ("mini-imagenet-40-protocon.toml", &["data.size=32", "data.labels_per_class=1"]),
        (
            "domainnet-clipart-protocon.toml",
            &[
                "data.size=64",
                "augment.weak=[{ name = \"random_resized_crop\", size = 64 }, \"flip\"]",
                "augment.strong=[{ name = \"random_resized_crop\", size = 64 }, \"simclr\"]",
            ],
        ),
    ];
    for (file, own) in recipes {
        let out = temp(&format!("recipe-{file}"));
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(file);
        let mut args = vec!["train", "--quiet", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
        for s in common.iter().chain(own) {
            args.extend(["--set", s]);
        }
        ok(&protocon(&args));
        let rs = records(&out);
        let trains: Vec<_> = rs.iter().filter(|r| r["kind"] == "train").collect();
        assert_eq!(trains.len(), 2, "{file}: {rs:?}");
        assert!(trains.iter().all(|r| r["loss"].as_f64().unwrap().is_finite() && r["loss_c"].is_number()), "{file}: {trains:?}");
        let effective = std::fs::read_to_string(out.join("config.toml")).unwrap();
        for want in ["arch = \"resnet50\"", "heads = 3", "projection_dim = 128"] {
            assert!(effective.contains(want), "{file}: no {want} in {effective}");
        }
        let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap();
        assert_eq!(split["labeled"].as_array().unwrap().len(), 2, "{file}: one label per class");
        std::fs::remove_dir_all(&out).ok();
    }
    std::fs::remove_dir_all(&root).ok();
}
