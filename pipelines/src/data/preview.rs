//! `protocon data preview`: a PNG grid, one row per sample: the original, its weak view and
//! several strong views, made by the configured chains on a pool of workers; the ops applied
//! to each view are listed in a text file beside the PNG. Views depend only on
//! (seed, epoch, sample, view), so the PNG is byte-identical whatever `--workers` is.
//!
//! Samples are read as training reads them ([`train_samples`]): with `data.decode =
//! "per-sample"` the views are made from each file at its own size, and the original is shown
//! resized into a cell of the views' size.

use crate::config::{RunConfig, DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN};
use crate::train::train_samples;
use anyhow::Context as _;
use protocon::data::jpeg::Region;
use protocon::{Control, Ctx, Pipeline, Sink, Source, Stage, StageError, StageSpec};
use protocon_stages::augment::{crop, AugmentRegistry, AugmentedViews, Augmenter, Image, Workspace};
use protocon_stages::samples::Samples;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run config whose [data] and [augment] sections are previewed (default: the built-in
    /// config of `protocon train`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output PNG; the ops are listed in the same path with `.txt`.
    #[arg(long)]
    out: PathBuf,
    /// Augmentation workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seed (default: the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// Samples (rows).
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Strong views per sample.
    #[arg(long, default_value_t = 4)]
    strong: usize,
    /// Epoch whose views are shown.
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Pixel scale of the grid.
    #[arg(long, default_value_t = 3)]
    scale: u32,
    /// Override a config field (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

struct Indices {
    next: usize,
    end: usize,
}

impl Source for Indices {
    type Out = u64;
    fn next(&mut self, _: &Control) -> Result<Option<u64>, StageError> {
        if self.next == self.end {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(self.next as u64 - 1))
    }
}

/// One sample's views: (row, original, views).
struct Row(usize, Image, AugmentedViews);

impl protocon::Message for Row {}

struct Views {
    data: Arc<dyn Samples>,
    augmenter: Arc<Augmenter>,
    epoch: u64,
    /// Width and height of a grid cell: the views' size, which an original of another size
    /// (a file decoded per sample) is resized to for display.
    cell: (usize, usize),
    ws: Workspace,
    bytes: Vec<u8>,
}

impl Stage for Views {
    type In = u64;
    type Out = Row;
    fn process(&mut self, row: u64, ctx: &mut Ctx<Row>) -> Result<(), StageError> {
        let mut src = Image::default();
        self.data.load(row as usize, &mut Region::whole, &mut self.bytes, &mut src)?;
        let mut views = AugmentedViews::new();
        self.augmenter.views(&src, self.epoch, row, &mut self.ws, &mut views);
        let (w, h) = self.cell;
        if (src.width(), src.height()) != (w, h) {
            let mut shown = Image::default();
            crop::resize_into(&src, w, h, &mut shown, &mut self.ws);
            src = shown;
        }
        ctx.emit(Row(row as usize, src, views))
    }
}

struct Collect(Arc<Mutex<Vec<Option<(Image, AugmentedViews)>>>>);

impl Sink for Collect {
    type In = Row;
    fn consume(&mut self, Row(i, src, views): Row, _: &Control) -> Result<(), StageError> {
        self.0.lock().unwrap()[i] = Some((src, views));
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1 && args.samples >= 1 && args.scale >= 1, "--workers, --samples and --scale must be at least 1");
    let mut config = match &args.config {
        Some(p) => RunConfig::load(p, &args.set)?,
        None => RunConfig::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN, &args.set)?,
    };
    config.data.train_limit = Some(args.samples);
    let seed = args.seed.unwrap_or(config.seed);
    let (data, [_, h, w]) = train_samples(&config)?;
    let mut augment = config.augment.clone();
    augment.strong_views = args.strong;
    let augmenter = Arc::new(augment.build(seed, &AugmentRegistry::with_builtins())?);
    let rows = args.samples.min(data.num_samples());
    let slots = Arc::new(Mutex::new((0..rows).map(|_| None).collect::<Vec<_>>()));

    let mut p = Pipeline::builder();
    let idx = p.source(StageSpec::new("samples").queue(4), move |_| Ok(Indices { next: 0, end: rows }));
    let (d, a, epoch) = (data.clone(), augmenter.clone(), args.epoch);
    let views = p.stage(StageSpec::new("augment").workers(args.workers).queue(4), idx, move |_| {
        Ok(Views { data: d.clone(), augmenter: a.clone(), epoch, cell: (w, h), ws: Workspace::new(), bytes: Vec::new() })
    });
    let s = slots.clone();
    p.sink(StageSpec::new("collect"), views, move |_| Ok(Collect(s.clone())));
    p.run()?;

    let (w, h) = (w as u32, h as u32);
    let cols = 2 + args.strong as u32;
    let gap = 2u32;
    let (cell_w, cell_h) = (w * args.scale + gap, h * args.scale + gap);
    let mut grid = image::RgbImage::from_pixel(cols * cell_w + gap, rows as u32 * cell_h + gap, image::Rgb([255, 255, 255]));
    let mut text = format!("seed {seed}, epoch {}, config {}\ncolumns: original, weak, strong[0..{}]\n", args.epoch, config.name, args.strong);
    let slots = slots.lock().unwrap();
    for (r, slot) in slots.iter().enumerate() {
        let (src, views) = slot.as_ref().context("a sample was not augmented")?;
        let cells = std::iter::once(src).chain(std::iter::once(&views.weak)).chain(views.strong.iter());
        for (c, img) in cells.enumerate() {
            let (x0, y0) = (gap + c as u32 * cell_w, gap + r as u32 * cell_h);
            for y in 0..(img.height() as u32 * args.scale).min(h * args.scale) {
                for x in 0..(img.width() as u32 * args.scale).min(w * args.scale) {
                    let px = img.pixel((x / args.scale) as usize, (y / args.scale) as usize);
                    let rgb = if px.len() == 3 { [px[0], px[1], px[2]] } else { [px[0]; 3] };
                    grid.put_pixel(x0 + x, y0 + y, image::Rgb(rgb));
                }
            }
        }
        text.push_str(&format!("row {r} (sample {r}, label {}):\n{}\n", data.labels()[r], views.describe()));
    }
    grid.save_with_format(&args.out, image::ImageFormat::Png).with_context(|| format!("writing {}", args.out.display()))?;
    let txt = args.out.with_extension("txt");
    std::fs::write(&txt, text)?;
    println!("wrote {} ({} rows x {} columns) and {}", args.out.display(), rows, cols, txt.display());
    Ok(())
}
