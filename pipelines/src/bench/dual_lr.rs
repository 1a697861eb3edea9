//! `protocon bench dual-lr`: ProtoCon's online constrained k-means (protocon.md s.4.2, s.5) run
//! over a trained model's projections of the training images, for a grid of unlabeled batch
//! sizes b and cluster counts K, each with the paper's dual learning rate (20) and with
//! `dual_lr = "auto"` (or any rates given), in the same run.
//!
//! The projections are computed once (inference mode, no augmentation) and held fixed, so what
//! differs between rows is the clustering alone: whether the duals or the similarities decide
//! the assignments. Per row it reports the cluster sizes against the lower bound gamma N / K,
//! the share of assignments the duals changed (the cluster the similarity alone would have
//! picked is not the one chosen), the clusters' purity against the true labels, and the accuracy
//! of the cluster pseudo-labels (built from the classifier's pseudo-labels as in training), next
//! to the nearest-prototype accuracy of the same projections: the class information the
//! projections carry, which class-aligned clusters should follow.

use protocon_pipelines::trained::TrainedModel;
use crate::train::load_data;
use protocon::data::{Labelled, Subset};
use protocon::protocon::kmeans::similarities;
use protocon::protocon::prior::softmax_rows;
use protocon::protocon::{argmax_rows, ClusterLabels, ConstrainedKMeans, DualLr, KMeansConfig, MemoryBank, Prototypes};
use protocon_stages::test_set::TestSet;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A ProtoCon checkpoint (file or run directory): the raw model's projections and classifier.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Unlabeled samples per clustering step.
    #[arg(long, value_delimiter = ',', default_values_t = [56, 112, 448])]
    batch: Vec<usize>,
    /// Clusters K.
    #[arg(long, value_delimiter = ',', default_values_t = [29, 100, 250])]
    clusters: Vec<usize>,
    /// Dual learning rates to compare: numbers or `auto`.
    #[arg(long, value_delimiter = ',', default_values = ["20", "auto"])]
    dual_lr: Vec<String>,
    /// Passes over the images; the figures are those of the last one.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Seed of the centroids and of the sampling order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One (b, K, lambda) of the grid.
#[derive(Debug, Serialize)]
struct Row {
    batch: usize,
    clusters: usize,
    dual_lr_setting: String,
    dual_lr: f32,
    /// Smallest and largest cluster after the last epoch, and the lower bound gamma N / K.
    min_size: u64,
    max_size: u64,
    size_bound: f64,
    /// Share of the last epoch's assignments that differ from the similarity-only argmax.
    dual_decided: f64,
    /// Sum over clusters of their largest true class, over N.
    purity: f64,
    /// `argmax` of each sample's cluster pseudo-label against its true label.
    cluster_label_acc: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch.contains(&0) || args.clusters.contains(&0) || args.epochs == 0 {
        anyhow::bail!("--batch, --clusters and --epochs must be at least 1");
    }
    let settings: Vec<DualLr> = args
        .dual_lr
        .iter()
        .map(|s| match s.as_str() {
            "auto" => Ok(DualLr::Auto),
            v => v.parse::<f32>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(DualLr::Fixed)
                .ok_or_else(|| anyhow::anyhow!("--dual-lr: expected `auto` or a number >= 0, got `{v}`")),
        })
        .collect::<anyhow::Result<_>>()?;
    let model = TrainedModel::load(&args.checkpoint, true, true)?;
    let data = load_data(&model.config, Subset::Train)?;
    let set = TestSet::new(data, model.norm.clone());
    let (n, c, d) = (set.num_samples(), model.classes, model.config.protocon.projection_dim);
    let gamma = model.config.protocon.gamma;
    let threshold = model.config.train.threshold as f32;

    let (mut q, mut pl, mut reliable) = (Vec::with_capacity(n * d), Vec::with_capacity(n), Vec::with_capacity(n));
    set.forward_chunks(&model.net, TestSet::CHUNK, |_, out| {
        let projection = out.projection.as_ref().expect("loaded with the projection head");
        q.extend(projection.flatten_all()?.to_vec1::<f32>()?);
        let probs = softmax_rows(&out.logits.flatten_all()?.to_vec1::<f32>()?, c);
        for row in probs.chunks(c) {
            let (best, p) = row.iter().enumerate().fold((0, f32::MIN), |a, (j, &v)| if v > a.1 { (j, v) } else { a });
            pl.push(best as u32);
            reliable.push(p >= threshold);
        }
        Ok(())
    })?;
    let truth: Vec<u32> = set.labels().iter().map(|&y| y as u32).collect();
    let accuracy = |pred: &[u32]| pred.iter().zip(&truth).filter(|(p, y)| p == y).count() as f64 / n as f64;
    let classifier_acc = accuracy(&pl);
    // For unit vectors the mean pairwise cosine is |mean q|^2 (up to the i = j terms): near 1,
    // the projections have collapsed to one direction and no similarity can tell clusters apart.
    let mut mean_q = vec![0f64; d];
    for row in q.chunks(d) {
        mean_q.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64 / n as f64);
    }
    let mean_cosine = mean_q.iter().map(|m| m * m).sum::<f64>();
    let prototype_acc = accuracy(&nearest_prototype(&q, &pl, &reliable, c, d));

    let mut rows = Vec::new();
    for &b in &args.batch {
        for &k in &args.clusters {
            for &setting in &settings {
                rows.push(cluster(&q, &pl, &reliable, &truth, b, k, setting, gamma, c, args.epochs, args.seed)?);
            }
        }
    }

    if args.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": model.path, "step": model.step, "images": n, "epochs": args.epochs,
                "classifier_acc": classifier_acc, "prototype_acc": prototype_acc, "mean_cosine": mean_cosine, "rows": rows})
        );
        return Ok(());
    }
    println!(
        "{} (step {}): {n} training images, d = {d}, gamma {gamma}, {} epoch(s) per row, seed {}",
        model.path.display(),
        model.step,
        args.epochs,
        args.seed
    );
    println!(
        "classifier pseudo-label accuracy {:.1}%, nearest-prototype accuracy {:.1}% (what the projections carry), \
         mean cosine between projections {mean_cosine:.3}",
        100.0 * classifier_acc,
        100.0 * prototype_acc
    );
    println!("|   b |   K | dual_lr | min / max size (bound) | decided by duals | purity | cluster-label acc. |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {:>3} | {:>3} | {:>7} | {} / {} ({:.0}) | {:.1}% | {:.1}% | {:.1}% |",
            r.batch,
            r.clusters,
            format!("{} ({:.2})", r.dual_lr_setting, r.dual_lr),
            r.min_size,
            r.max_size,
            r.size_bound,
            100.0 * r.dual_decided,
            100.0 * r.purity,
            100.0 * r.cluster_label_acc
        );
    }
    Ok(())
}

/// Class prototypes as in training (protocon.md s.4.11, s.5.3): the normalised mean projection
/// of the reliable samples under their pseudo-labels; each sample's nearest one.
fn nearest_prototype(q: &[f32], pl: &[u32], reliable: &[bool], c: usize, d: usize) -> Vec<u32> {
    let mut protos = Prototypes::new(c, d);
    for ((row, &l), _) in q.chunks(d).zip(pl).zip(reliable).filter(|(_, &r)| r) {
        protos.accumulate(row, &[l]);
    }
    protos.end_epoch();
    protos.nearest(q)
}

/// `epochs` passes of the constrained k-means over `q` in shuffled batches of `b` (the last,
/// partial batch of a pass is dropped, as the training sampler's steps are whole), the bank
/// recording assignments and pseudo-labels as in training; figures of the last pass.
#[allow(clippy::too_many_arguments)]
fn cluster(
    q: &[f32],
    pl: &[u32],
    reliable: &[bool],
    truth: &[u32],
    b: usize,
    k: usize,
    setting: DualLr,
    gamma: f32,
    c: usize,
    epochs: usize,
    seed: u64,
) -> anyhow::Result<Row> {
    let n = truth.len();
    let d = q.len() / n;
    if b > n {
        anyhow::bail!("--batch {b} is larger than the {n} images");
    }
    let dual_lr = setting.resolve(b, k);
    let mut kmeans = ConstrainedKMeans::new(KMeansConfig { clusters: k, heads: 1, dim: d, dual_lr, gamma }, seed)?;
    let mut bank = MemoryBank::new(n, 1, k, c)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut decided, mut seen) = (0usize, 0usize);
    let mut sizes = None;
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        for slots in order.chunks_exact(b) {
            let qb: Vec<f32> = slots.iter().flat_map(|&i| q[i as usize * d..(i as usize + 1) * d].iter().copied()).collect();
            let assignment = kmeans.assign(&qb);
            if epoch + 1 == epochs {
                let nearest = similarities(&qb, kmeans.centroids(0), d);
                decided += argmax_rows(&nearest, k).iter().zip(&assignment[0].cluster).filter(|(n, a)| n != a).count();
                seen += slots.len();
            }
            kmeans.update(&qb, &assignment);
            bank.record_assignment(0, slots, &assignment[0].cluster, &assignment[0].score)?;
            let labels: Vec<u32> = slots.iter().map(|&i| pl[i as usize]).collect();
            let rel: Vec<bool> = slots.iter().map(|&i| reliable[i as usize]).collect();
            bank.record_labels(slots, &labels, &rel)?;
        }
        kmeans.end_epoch();
        sizes = Some(bank.end_epoch(ClusterLabels::Weighted));
    }
    let sizes = sizes.expect("at least one epoch");
    // Purity and cluster-label accuracy over the samples the bank has an assignment for.
    let mut counts = vec![0u64; k * c];
    let mut correct = 0usize;
    let visited: Vec<usize> = (0..n).filter(|&i| bank.pseudo_label(i as u32).is_some()).collect();
    for &i in &visited {
        let a = bank.assignment(0, i as u32) as usize;
        counts[a * c + truth[i] as usize] += 1;
        correct += (argmax_rows(bank.cluster_label(0, a as u32), c)[0] == truth[i]) as usize;
    }
    let purity = counts.chunks(c).map(|r| r.iter().copied().max().unwrap_or(0)).sum::<u64>() as f64 / visited.len() as f64;
    Ok(Row {
        batch: b,
        clusters: k,
        dual_lr_setting: setting.to_string(),
        dual_lr,
        min_size: sizes.min[0],
        max_size: sizes.max[0],
        size_bound: gamma as f64 * visited.len() as f64 / k as f64,
        dual_decided: decided as f64 / seen.max(1) as f64,
        purity,
        cluster_label_acc: correct as f64 / visited.len() as f64,
    })
}
