//! `protocon bench augment`: augmentation throughput, images/s in total and per thread.
//!
//! CIFAR-style (default): synthetic 32x32x3 images (or `--data DIR`), already decoded, the
//! weak view (crop + flip) or the strong view (crop, RandAugment n=2 p=0.5, flip, Cutout).
//! ImageNet-style (`--source jpeg --size 224`): every image is decoded from JPEG bytes held
//! in memory (~500x375; `--data DIR` or 64 synthetic files written to a temporary directory),
//! then RandomResizedCrop(224) + flip (+ RandAugment + Cutout for the strong view).
//!
//! `--view both` builds the weak and the strong view of every sample from one decode, as the
//! training pipeline does (rates then count samples).
//!
//! `--threads T` runs T threads, each augmenting its share with its own buffers, like the
//! augmentation worker pool. The baseline is `benches/reference/randaugment_pil.py` (PIL,
//! one thread) run separately on the same kind of images: pass its figure with
//! `--reference-images-per-s` to get the per-thread ratio printed; Python is never called
//! from here.

use super::Spread;
use anyhow::{bail, ensure, Context as _};
use protocon_stages::augment::{codec, AugRng, AugmentConfig, AugmentRegistry, Augmenter, DrawKey, Image, Workspace};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Weak,
    Strong,
    /// Weak and strong view of each sample from one decode, as the training pipeline does;
    /// rates count samples.
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Decoded pixels in memory (decoding not timed).
    Synthetic,
    /// JPEG bytes in memory, decoded per image (decoding timed).
    Jpeg,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which view to build.
    #[arg(long, value_enum, default_value_t = View::Strong)]
    view: View,
    /// Output side in pixels; with the synthetic source also the input side.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Images per timed run, split evenly across threads.
    #[arg(long, default_value_t = 20_000)]
    images: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where the pixels come from.
    #[arg(long, value_enum, default_value_t = Source::Synthetic)]
    source: Source,
    /// Directory of PNG/JPEG files to use instead of synthetic images.
    #[arg(long)]
    data: Option<PathBuf>,
    /// With `--source jpeg` and no `--data`: write the synthetic JPEGs here and keep them
    /// (to run the PIL reference on the very same files). They are 4:2:0 at quality 90, as
    /// Pillow writes by default and most photos are stored.
    #[arg(long)]
    write_jpegs: Option<PathBuf>,
    /// An augmentation config (contents of an `[augment]` table) instead of the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Run seed of the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The PIL reference's images/s (one thread) from `benches/reference/randaugment_pil.py`,
    /// to print the per-thread ratio.
    #[arg(long)]
    reference_images_per_s: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A pool of inputs: decoded images or encoded JPEG files.
enum Inputs {
    Decoded(Vec<Image>),
    Encoded(Vec<Vec<u8>>),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Inputs::Decoded(v) => v.len(),
            Inputs::Encoded(v) => v.len(),
        }
    }
}

/// Smooth color gradients with per-pixel noise: compresses like a photo, not like noise.
fn synthetic_image(w: usize, h: usize, index: u64) -> Image {
    let mut rng = AugRng::new(DrawKey::new(0xBE7C4, 0, index, 0), 0);
    let (fx, fy, phase) =
        (rng.uniform_range(0.01, 0.08), rng.uniform_range(0.01, 0.08), rng.uniform() * std::f64::consts::TAU);
    let base: [f64; 3] = std::array::from_fn(|_| rng.uniform_range(40.0, 215.0));
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for (c, b) in base.iter().enumerate() {
                let wave = ((x as f64 * fx + c as f64) + phase).sin() * ((y as f64 * fy) - phase).cos();
                let v = b + 60.0 * wave + rng.normal() * 12.0;
                data.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Image::new(w, h, 3, data).expect("sized above")
}

fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png")
        })
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no .jpg/.jpeg/.png files in {}", dir.display());
    Ok(files)
}

/// Writes `n` synthetic ~500x375 JPEGs (quality 90) into `dir`.
fn write_synthetic_jpegs(dir: &Path, n: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in 0..n {
        // Sizes vary a little around 500x375, as ImageNet's do.
        let (w, h) = (480 + (i as usize * 7) % 41, 360 + (i as usize * 5) % 31);
        let jpg = codec::encode_jpeg(&synthetic_image(w, h, i), 90)?;
        std::fs::write(dir.join(format!("synthetic_{i:03}.jpg")), jpg)?;
    }
    Ok(())
}

fn load_inputs(args: &Args) -> anyhow::Result<(Inputs, String)> {
    match (args.source, &args.data) {
        (Source::Synthetic, None) => {
            let pool = (0..256).map(|i| synthetic_image(args.size, args.size, i)).collect();
            Ok((Inputs::Decoded(pool), format!("256 synthetic {0}x{0}x3 images", args.size)))
        }
        (Source::Synthetic, Some(dir)) => {
            let mut pool = Vec::new();
            for f in image_files(dir)? {
                let mut img = Image::default();
                codec::decode_into(&std::fs::read(&f)?, &mut img, 3).with_context(|| f.display().to_string())?;
                pool.push(img);
            }
            Ok((Inputs::Decoded(pool), format!("decoded images from {}", dir.display())))
        }
        (Source::Jpeg, data) => {
            let (dir, temporary) = match (data, &args.write_jpegs) {
                (Some(dir), _) => (dir.clone(), false),
                (None, Some(keep)) => {
                    write_synthetic_jpegs(keep, 64)?;
                    (keep.clone(), false)
                }
                (None, None) => {
                    let dir = std::env::temp_dir().join(format!("protocon-bench-augment-{}", std::process::id()));
                    write_synthetic_jpegs(&dir, 64)?;
                    (dir, true)
                }
            };
            let files = image_files(&dir)?;
            let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
            let mut probe = Image::default();
            codec::decode_into(&bytes[0], &mut probe, 3).context("decoding the first file")?;
            let what = format!(
                "{} JPEG files from {} (first {}x{})",
                bytes.len(),
                if temporary { "a temporary directory".to_string() } else { dir.display().to_string() },
                probe.width(),
                probe.height()
            );
            if temporary {
                std::fs::remove_dir_all(&dir).ok();
            }
            Ok((Inputs::Encoded(bytes), what))
        }
    }
}

/// View ids: the weak view and the first strong view (`Augmenter::strong_view_id(0)`).
const WEAK: u32 = Augmenter::WEAK_VIEW;
const STRONG: u32 = 1;

/// One run: every thread builds its share of `images` samples' views; returns wall seconds.
fn run_once(aug: &Augmenter, inputs: &Inputs, view: View, images: usize, threads: usize, epoch: u64) -> f64 {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut ws = Workspace::new();
                    let (mut decoded, mut out, mut log) = (Image::default(), Image::default(), Vec::new());
                    let mut checksum = 0u64;
                    barrier.wait();
                    for i in (t..images).step_by(threads) {
                        let both = [WEAK, STRONG].map(|id| aug.key(epoch, i as u64, id));
                        let keys = match view {
                            View::Weak => &both[..1],
                            View::Strong => &both[1..],
                            View::Both => &both[..],
                        };
                        let src = match inputs {
                            Inputs::Decoded(pool) => &pool[i % pool.len()],
                            Inputs::Encoded(files) => {
                                // Decode only the part the views will read.
                                let region = |w, h| aug.region_read(w, h, keys);
                                codec::decode_region_into(&files[i % files.len()], &mut decoded, 3, region).expect("checked at load");
                                &decoded
                            }
                        };
                        log.clear();
                        for &key in keys {
                            aug.view(src, key, &mut ws, &mut out, &mut log);
                            checksum = checksum.wrapping_add(u64::from(out.data()[out.data().len() / 2]));
                        }
                    }
                    black_box(checksum)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for w in workers {
            w.join().expect("augmentation thread panicked");
        }
        start.elapsed().as_secs_f64()
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.threads >= 1, "--threads must be at least 1");
    ensure!(args.images >= args.threads, "--images must be at least --threads");
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    ensure!(args.size >= 1, "--size must be at least 1");
    debug_assert_eq!(STRONG, Augmenter::strong_view_id(0));
    if args.write_jpegs.is_some() && (args.source != Source::Jpeg || args.data.is_some()) {
        bail!("--write-jpegs goes with --source jpeg and no --data");
    }
    let config = match &args.config {
        Some(path) => AugmentConfig::from_toml_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("reading {}", path.display()))?,
        None => match args.source {
            Source::Synthetic => AugmentConfig::cifar(),
            Source::Jpeg => AugmentConfig::large(args.size),
        },
    };
    let aug = config.build(args.seed, &AugmentRegistry::with_builtins())?;
    let (inputs, what) = load_inputs(&args)?;
    ensure!(inputs.len() > 0, "no input images");

    let mut rates = Vec::new();
    for run in 0..args.warmup + args.repeats {
        let wall = run_once(&aug, &inputs, args.view, args.images, args.threads, run as u64);
        if run >= args.warmup {
            rates.push(args.images as f64 / wall);
        }
    }
    let total = Spread::of(&rates);
    let per_thread = Spread::of(&rates.iter().map(|r| r / args.threads as f64).collect::<Vec<_>>());
    let chain: Vec<&str> = match args.view {
        View::Weak => aug.weak().names().collect(),
        View::Strong => aug.strong().names().collect(),
        View::Both => aug.weak().names().chain(["|"]).chain(aug.strong().names()).collect(),
    };
    let view = format!("{:?}", args.view).to_lowercase();
    let source = format!("{:?}", args.source).to_lowercase();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let ratio = args.reference_images_per_s.map(|r| per_thread.median / r);

    if args.json {
        let v = serde_json::json!({
            "benchmark": "augment",
            "view": view,
            "chain": chain,
            "source": source,
            "inputs": what,
            "size": args.size,
            "images": args.images,
            "threads": args.threads,
            "available_cores": cores,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "images_per_s": total,
            "images_per_s_per_thread": per_thread,
            "us_per_image_per_thread": 1e6 / per_thread.median,
            "reference_images_per_s": args.reference_images_per_s,
            "ratio_per_thread_over_reference": ratio,
            "peak_rss_bytes": protocon::rss::peak_rss_bytes(),
        });
        println!("{v}");
    } else {
        println!(
            "== augment: {view} view [{}], {} images/run over {} thread(s) ({cores} cores), {what}",
            chain.join(", "),
            args.images,
            args.threads
        );
        println!(
            "total:      {:>10.0} images/s ({:.0}..{:.0}), median of {} after {} warm-up",
            total.median, total.min, total.max, args.repeats, args.warmup
        );
        println!(
            "per thread: {:>10.0} images/s ({:.0}..{:.0}), {:.2} us/image",
            per_thread.median,
            per_thread.min,
            per_thread.max,
            1e6 / per_thread.median
        );
        if let (Some(r), Some(ratio)) = (args.reference_images_per_s, ratio) {
            println!("reference (PIL, one thread): {r:.0} images/s -> {ratio:.1}x per thread");
        }
        if let Some(rss) = protocon::rss::peak_rss_bytes() {
            println!("peak RSS: {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
        }
    }
    Ok(())
}
