//! `protocon bench bank`: what ProtoCon's memory bank and clustering state cost at ImageNet
//! scale — bytes held (goal <= 25 MB for 1.28M images, 1000 classes, 3 heads of 267 clusters) and
//! the per-step clustering time at batch 448 — against the baseline they replace: an `N x d` f32
//! embedding bank, allocated and filled in the same run so its resident size is measured too.

use super::Spread;
use anyhow::ensure;
use protocon::protocon::{ProtoCon, ProtoConConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Unlabeled images N (ImageNet: 1,281,167).
    #[arg(long, default_value_t = 1_281_167)]
    samples: usize,
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Clusters per head K (ImageNet 1%: N / 4800 = 267).
    #[arg(long, default_value_t = 267)]
    clusters: usize,
    #[arg(long, default_value_t = 3)]
    heads: usize,
    /// Projection dimension d.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Unlabeled images per step.
    #[arg(long, default_value_t = 448)]
    batch: usize,
    /// Timed clustering steps (after 5 untimed ones); the median is reported.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn unit_rows(rows: usize, dim: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
    let mut q: Vec<f32> = (0..rows * dim).map(|_| StandardNormal.sample(rng)).collect();
    for row in q.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    q
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.samples >= args.batch && args.batch > 0 && args.steps > 0, "need --samples >= --batch > 0 and --steps > 0");
    let cfg = ProtoConConfig::paper(args.classes, args.dim, args.clusters, args.heads, args.samples);
    let rss_before = protocon::rss::current_rss_bytes();
    let mut pc = ProtoCon::new(cfg)?;
    let bytes = pc.bytes();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // Touch every entry once (one epoch of bookkeeping), so resident memory is what a run holds.
    // In chunks, so no sample-sized temporary inflates the resident figure.
    let reliable = vec![true; 4096];
    for start in (0..args.samples).step_by(4096) {
        let slots: Vec<u32> = (start as u32..(start + 4096).min(args.samples) as u32).collect();
        let labels: Vec<u32> = slots.iter().map(|&i| i % args.classes as u32).collect();
        pc.bank().record_labels(&slots, &labels, &reliable[..slots.len()])?;
    }
    let rss_bank = protocon::rss::current_rss_bytes();

    let q = unit_rows(args.batch, args.dim, &mut rng);
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..5 + args.steps {
        let start = (i * args.batch) % (args.samples - args.batch + 1);
        let slots: Vec<u32> = (start as u32..(start + args.batch) as u32).collect();
        let t = Instant::now();
        std::hint::black_box(pc.cluster(&slots, &q)?);
        if i >= 5 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let step = Spread::of(&times);
    let t = Instant::now();
    let sizes = pc.end_epoch();
    let epoch_end = t.elapsed().as_secs_f64();

    // Baseline: the embedding bank ProtoCon's compact bank replaces (N x d f32), filled.
    let embedding_bytes = args.samples * args.dim * 4;
    let rss_base = protocon::rss::current_rss_bytes();
    let embeddings = vec![1f32; args.samples * args.dim];
    std::hint::black_box(&embeddings);
    let rss_embed = protocon::rss::current_rss_bytes();
    let resident = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
    let (bank_resident, embed_resident) = (resident(rss_before, rss_bank), resident(rss_base, rss_embed));
    drop(embeddings);

    let ratio = bytes as f64 / embedding_bytes as f64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "bank",
                "samples": args.samples, "classes": args.classes, "clusters": args.clusters, "heads": args.heads,
                "dim": args.dim, "batch": args.batch,
                "bytes": bytes,
                "resident_bytes": bank_resident,
                "embedding_bank_bytes": embedding_bytes,
                "embedding_bank_resident_bytes": embed_resident,
                "ratio_bytes_over_embedding_bank": ratio,
                "step_ms": step.median * 1e3, "step_ms_min": step.min * 1e3, "step_ms_max": step.max * 1e3,
                "epoch_end_ms": epoch_end * 1e3,
                "cluster_size_min": sizes.min, "cluster_size_max": sizes.max,
            })
        );
    } else {
        println!(
            "ProtoCon state for N = {}, C = {}, {} heads x K = {}, d = {}:",
            args.samples, args.classes, args.heads, args.clusters, args.dim
        );
        println!(
            "  bank + clustering + prototypes: {:.2} MB ({} bytes; resident growth {:.2} MB)",
            mb(bytes as f64),
            bytes,
            bank_resident.map_or(f64::NAN, |b| mb(b as f64))
        );
        println!(
            "  baseline N x d f32 embedding bank: {:.2} MB (resident growth {:.2} MB); ratio {:.3}x",
            mb(embedding_bytes as f64),
            embed_resident.map_or(f64::NAN, |b| mb(b as f64)),
            ratio
        );
        println!(
            "  clustering step at batch {} ({} heads): {:.3} ms median ({:.3}..{:.3}, {} steps); epoch end {:.1} ms",
            args.batch,
            args.heads,
            step.median * 1e3,
            step.min * 1e3,
            step.max * 1e3,
            args.steps,
            epoch_end * 1e3
        );
    }
    Ok(())
}
