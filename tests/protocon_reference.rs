//! ProtoCon's state machine (protocon.md s.4-5) against recorded outputs of an independent
//! PyTorch implementation (`benches/reference/protocon_reference.py`, fixture
//! `tests/fixtures/protocon_reference.json`): 8 steps over 40 unlabeled samples, 2 heads of 4
//! clusters, with an epoch end after step 4 and refinement on in epoch 1. Every assignment,
//! score, dual, centroid, counter, refined pseudo-label, mask, loss term, gradient, prior,
//! centre, prototype and bank entry must agree to 1e-5 (relative above 1).

use candle_core::{Device, Tensor, Var};
use protocon::protocon::{
    ClassPrior, ClusterLabels, ConstrainedKMeans, LossWeights, MaskFrom, MemoryBank, PriorCorrection, ProtoCon, ProtoConConfig,
    StepInputs,
};
use serde_json::Value;

const TOL: f64 = 1e-5;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocon_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Bool(b) => vec![*b as u8 as f64],
        other => panic!("not numeric: {other}"),
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    flat(v).into_iter().map(|x| x as f32).collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    flat(v).into_iter().map(|x| x as u32).collect()
}

#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOL * w.abs().max(1.0), "{what}[{i}]: got {g}, want {w}\n got {got:?}\nwant {want:?}");
    }
}

fn as64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn matrix(v: &Value, dev: &Device) -> Var {
    let rows = v.as_array().unwrap().len();
    let data = f32s(v);
    Var::from_tensor(&Tensor::from_vec(data.clone(), (rows, data.len() / rows), dev).unwrap()).unwrap()
}

fn config(c: &Value) -> ProtoConConfig {
    let get = |k: &str| c[k].as_f64().unwrap();
    ProtoConConfig {
        classes: get("C") as usize,
        dim: get("d") as usize,
        clusters: get("K") as usize,
        heads: get("H") as usize,
        samples: get("N") as usize,
        temperature: get("T") as f32,
        target_temperature: get("T") as f32 / 5.0,
        dual_lr: get("lambda") as f32,
        gamma: get("gamma") as f32,
        alpha: get("alpha") as f32,
        threshold: get("tau") as f32,
        refine_after_epochs: 1,
        refine_min_agreement: 0.0,
        prior: PriorCorrection::Debias {
            margin: get("debias") as f32,
            strong_margin: get("debias") as f32,
            momentum: get("pbar_momentum") as f32,
        },
        cluster_labels: ClusterLabels::Weighted,
        center_momentum: get("qbar_momentum") as f32,
        weights: LossWeights::default(),
        mask_from: MaskFrom::Refined,
        target: protocon::protocon::Target::Soft,
        seed: 0,
    }
}

fn check_bank(what: &str, pc: &ProtoCon, bank: &Value) {
    let n = pc.bank().len() as u32;
    let pl: Vec<f64> = (0..n).map(|i| pc.bank().pseudo_label(i).map_or(-1.0, |l| l as f64)).collect();
    close(&format!("{what} pl"), &pl, &flat(&bank["pl"]));
    let rel: Vec<f64> = (0..n).map(|i| pc.bank().reliable(i) as u8 as f64).collect();
    close(&format!("{what} rel"), &rel, &flat(&bank["rel"]));
    let heads = pc.bank().heads();
    for h in 0..heads {
        let a: Vec<f64> = (0..n).map(|i| pc.bank().assignment(h, i) as f64).collect();
        close(&format!("{what} a[{h}]"), &a, &flat(&bank["a"][h]));
        // Both sides store f16, so the stored scores agree exactly.
        let s: Vec<f64> = (0..n).map(|i| pc.bank().score(h, i) as f64).collect();
        close(&format!("{what} s[{h}]"), &s, &flat(&bank["s"][h]));
    }
}

fn check_clustering(what: &str, pc: &ProtoCon, r: &Value) {
    for h in 0..pc.config().heads {
        close(&format!("{what} duals[{h}]"), &as64(pc.kmeans().duals(h)), &flat(&r["duals"][h]));
        close(&format!("{what} centroids[{h}]"), &as64(pc.kmeans().centroids(h)), &flat(&r["centroids"][h]));
        let counts: Vec<f64> = pc.kmeans().counts(h).iter().map(|&c| c as f64).collect();
        close(&format!("{what} counters[{h}]"), &counts, &flat(&r["counters"][h]));
    }
}

fn z_rows(bank: &MemoryBank, heads: usize, clusters: u32) -> Vec<f64> {
    (0..heads).flat_map(|h| (0..clusters).flat_map(move |k| as64(bank.cluster_label(h, k)))).collect()
}

#[test]
fn protocon_matches_the_pytorch_reference() {
    let fx = fixture();
    let cfg = config(&fx["config"]);
    let (heads, clusters, classes) = (cfg.heads, cfg.clusters, cfg.classes);
    let dev = Device::Cpu;
    let init: Vec<Vec<f32>> = fx["init_centroids"].as_array().unwrap().iter().map(f32s).collect();
    let kmeans = ConstrainedKMeans::with_centroids(cfg.kmeans(), init).unwrap();
    let mut pc = ProtoCon::with_kmeans(cfg.clone(), kmeans).unwrap();
    let mut da = ClassPrior::new(PriorCorrection::DistributionAlignment { window: fx["config"]["da_queue"].as_u64().unwrap() as usize }, classes);

    for r in fx["steps"].as_array().unwrap() {
        let step = r["step"].as_u64().unwrap();
        let what = format!("step {step}");
        close(&format!("{what} prototypes in use"), &as64(pc.prototypes.matrix()), &flat(&r["prototypes"]));
        let slots = u32s(&r["indices"]);
        let q_w = f32s(&r["q_w"]);
        // Scores before f16 storage, from the same (pure) assignment `cluster` makes.
        let before_update = pc.kmeans().assign(&q_w);
        for (h, a) in before_update.iter().enumerate() {
            close(&format!("{what} score[{h}]"), &as64(&a.score), &flat(&r["score"][h]));
        }
        let assigned = pc.cluster(&slots, &q_w).unwrap();
        for h in 0..heads {
            let a: Vec<f64> = assigned[h].iter().map(|&a| a as f64).collect();
            close(&format!("{what} assign[{h}]"), &a, &flat(&r["assign"][h]));
        }
        check_clustering(&what, &pc, r);

        let (pw_da, _) = da.pseudo_labels(&f32s(&r["p_w"]));
        close(&format!("{what} pw (distribution alignment)"), &as64(&pw_da), &flat(&r["pw_da"]));

        let (p_x, p_w, p_s) = (matrix(&r["p_x"], &dev), matrix(&r["p_w"], &dev), matrix(&r["p_s"], &dev));
        let (q_x, q_wt, q_s) = (matrix(&r["q_x"], &dev), matrix(&r["q_w"], &dev), matrix(&r["q_s"], &dev));
        let labels = Tensor::new(u32s(&r["labels"]).as_slice(), &dev).unwrap();
        let inputs = StepInputs {
            targets_x: None,
            logits_x: p_x.as_tensor(),
            logits_w: p_w.as_tensor(),
            logits_s: p_s.as_tensor(),
            q_x: q_x.as_tensor(),
            q_w: q_wt.as_tensor(),
            q_w_host: None,
            q_s: q_s.as_tensor(),
            labels: &labels,
            slots: &slots,
            epoch: r["epoch"].as_u64().unwrap(),
        };
        let out = pc.step(&inputs, &assigned).unwrap();
        assert_eq!(out.refined, r["refine"].as_bool().unwrap(), "{what}: refinement");
        close(&format!("{what} p_hat"), &as64(&out.p_hat), &flat(&r["p_hat"]));
        let mask: Vec<f64> = out.mask.iter().map(|&m| m as u8 as f64).collect();
        close(&format!("{what} mask"), &mask, &flat(&r["mask"]));
        let t = out.terms;
        for (name, got) in [("loss_x", t.x), ("loss_px", t.px), ("loss_u", t.u), ("loss_pu", t.pu), ("loss_c", t.c)] {
            close(&format!("{what} {name}"), &[got], &[r[name].as_f64().unwrap()]);
        }
        close(&format!("{what} loss"), &[out.loss.to_scalar::<f32>().unwrap() as f64], &[r["loss"].as_f64().unwrap()]);
        let grads = out.loss.backward().unwrap();
        for (name, var) in [("grad_p_x", &p_x), ("grad_p_s", &p_s), ("grad_q_x", &q_x), ("grad_q_s", &q_s)] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            close(&format!("{what} {name}"), &as64(&g), &flat(&r[name]));
        }
        assert!(grads.get(p_w.as_tensor()).is_none() && grads.get(q_wt.as_tensor()).is_none(), "{what}: the weak view is a target");
        close(&format!("{what} pbar"), &as64(&pc.prior.estimate()), &flat(&r["pbar"]));
        close(&format!("{what} qbar"), &as64(pc.center()), &flat(&r["qbar"]));

        if step == 4 {
            let e = &fx["epoch_end"];
            close("epoch end: prototype sums", &as64(pc.prototypes.sums()), &flat(&e["proto_sum_before_reset"]));
            let counts: Vec<f64> = pc.prototypes.counts().iter().map(|&c| c as f64).collect();
            close("epoch end: prototype counts", &counts, &flat(&e["proto_count_before_reset"]));
            let mut plain = pc.bank().clone();
            plain.end_epoch(ClusterLabels::Plain);
            close("epoch end: plain Z", &z_rows(&plain, heads, clusters as u32), &flat(&e["z_plain"]));
            let sizes = pc.end_epoch();
            close("epoch end: weighted Z", &z_rows(&pc.bank(), heads, clusters as u32), &flat(&e["z_weighted"]));
            let (min, max): (Vec<f64>, Vec<f64>) = e["cluster_sizes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    let s = flat(h);
                    (s.iter().copied().fold(f64::MAX, f64::min), s.iter().copied().fold(0.0, f64::max))
                })
                .unzip();
            close("epoch end: min cluster size", &sizes.min.iter().map(|&v| v as f64).collect::<Vec<_>>(), &min);
            close("epoch end: max cluster size", &sizes.max.iter().map(|&v| v as f64).collect::<Vec<_>>(), &max);
            close("epoch end: prototypes", &as64(pc.prototypes.matrix()), &flat(&e["prototypes"]));
            check_bank("epoch end: bank", &pc, &e["bank"]);
            assert!(pc.kmeans().counts(0).iter().all(|&c| c == 0), "counters reset");
        }
    }
    let f = &fx["final"];
    check_bank("final bank", &pc, &f["bank"]);
    check_clustering("final", &pc, f);
    close("final pbar", &as64(&pc.prior.estimate()), &flat(&f["pbar"]));
    close("final qbar", &as64(pc.center()), &flat(&f["qbar"]));
    close("final prototype sums", &as64(pc.prototypes.sums()), &flat(&f["proto_sum"]));
    let counts: Vec<f64> = pc.prototypes.counts().iter().map(|&c| c as f64).collect();
    close("final prototype counts", &counts, &flat(&f["proto_count"]));
    close("final Z", &z_rows(&pc.bank(), heads, clusters as u32), &flat(&f["z"]));
}

#[test]
fn cluster_labels_with_never_seen_and_empty_clusters() {
    let fx = fixture();
    let ns = &fx["never_seen"];
    let (k, c, n) = (ns["K"].as_u64().unwrap() as usize, ns["C"].as_u64().unwrap() as usize, ns["N"].as_u64().unwrap() as usize);
    let bank_in = &ns["bank"];
    let mut bank = MemoryBank::new(n, 1, k, c).unwrap();
    let slots: Vec<u32> = (0..n as u32).collect();
    bank.record_assignment(0, &slots, &u32s(&bank_in["a"][0]), &f32s(&bank_in["s"][0])).unwrap();
    for (slot, l) in flat(&bank_in["pl"]).into_iter().enumerate() {
        if l >= 0.0 {
            bank.record_labels(&[slot as u32], &[l as u32], &[false]).unwrap();
        }
    }
    bank.set_cluster_labels(0, f32s(&ns["z_prev"])).unwrap();
    let mut plain = bank.clone();
    bank.end_epoch(ClusterLabels::Weighted);
    plain.end_epoch(ClusterLabels::Plain);
    close("weighted Z", &z_rows(&bank, 1, k as u32), &flat(&ns["z_weighted"]));
    close("plain Z", &z_rows(&plain, 1, k as u32), &flat(&ns["z_plain"]));
}
