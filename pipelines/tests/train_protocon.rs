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
