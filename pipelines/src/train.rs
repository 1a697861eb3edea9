//! Training runs as a library: [`TrainingRun`] takes a config and, optionally, the caller's
//! augmentation ops, batch stages and objective, and wires and runs
//!
//! ```text
//! sampler -> weak views (pool) -> strong views (pool) -> [your batch stages] -> compute -> metrics
//!                                                                    (cluster, asynchronous mode)
//! ```
//! Supervised training is the same pipeline with the strong-view stage switched off (no
//! unlabeled samples), so supervised and FixMatch runs compare on equal terms. `protocon train`
//! and `protocon bench pipeline` are thin callers of this module.

use crate::config::{Decode, RunConfig};
use anyhow::{bail, Context as _};
use candle_core::Device;
use protocon::checkpoint::Checkpoint;
use protocon::data::jpeg::Region;
use protocon::data::{self, DatasetKind, FetchOptions, ImageFiles, LoadOptions, Split, Subset};
use protocon::model::{Network, NetworkOptions};
use protocon::optim::SgdConfig;
use protocon::protocon::DualLr;
use protocon::schedule::CosineSchedule;
use protocon::{Pipeline, PipelineBuilder, Port, Profile, Stage, StageError, StageSpec, WorkerInfo};
use protocon_stages::augment::{AugmentRegistry, Augmenter, Image, Workspace};
use protocon_stages::batch::TrainBatch;
use protocon_stages::cluster::{ClusterJob, ClusterProgress, ClusterStage};
use protocon_stages::compute::{ComputeConfig, ComputeStage};
use protocon_stages::metrics::{self, MetricsSink, Observer};
use protocon_stages::tensorboard::EventWriter;
use protocon_stages::objective::{Algorithm, AsyncClustering, Objective};
use protocon_stages::record::{EvalRecord, Record};
use protocon_stages::sampler::{StepSampler, StepSchedule};
use protocon_stages::samples::{Samples, FILE_CHANNELS};
use protocon_stages::test_set::TestSet;
use protocon_stages::views::{Normalization, StrongViews, ViewSource, WeakViews};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Everything `train` needs besides the config.
pub struct TrainOptions {
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub trace: Option<PathBuf>,
    /// Set to end the run early and cleanly (Ctrl-C): the last batch finishes, a checkpoint is
    /// written.
    pub stop: Arc<AtomicBool>,
    /// Called with every metrics record (progress bar).
    pub observer: Option<Observer>,
    /// Directory of the TensorBoard event file (`None`: the run directory, so that
    /// `tensorboard --logdir runs/` shows every run).
    pub tensorboard: Option<PathBuf>,
}

impl TrainOptions {
    /// Write into run directory `out`, from step 0, no trace, no early stop, no observer.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        TrainOptions { out: out.into(), resume: None, trace: None, stop: Arc::new(AtomicBool::new(false)), observer: None, tensorboard: None }
    }
}

/// What a finished run reports.
pub struct TrainSummary {
    pub profile: Profile,
    pub last_eval: Option<EvalRecord>,
    pub steps_done: u64,
}

/// Load the data set of `config` (fetching Fashion-MNIST first when allowed and missing).
pub fn load_data(config: &RunConfig, subset: Subset) -> anyhow::Result<protocon::data::Dataset> {
    let spec = config.data.spec()?;
    if config.data.fetch && spec.kind() == DatasetKind::FashionMnist {
        let dir = spec.resolved_dir();
        let present = ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"].iter().all(|f| dir.join(f).exists());
        if !present {
            eprintln!("fetching {} into {}", spec.kind(), dir.display());
            data::fetch(spec.kind(), &FetchOptions::new().dir(&dir), &mut |line| eprintln!("  {line}"))?;
        }
    }
    let options = load_options(config, spec.kind());
    let data = spec.load(subset, &options)?;
    Ok(match config.data.limit(subset) {
        Some(n) => data.truncate(n),
        None => data,
    })
}

/// How `config` brings images of a `kind` data set to its size ([`DataSection::fit_for`](crate::config::DataSection::fit_for)).
fn load_options(config: &RunConfig, kind: DatasetKind) -> LoadOptions {
    let mut options = LoadOptions::new().rgb(config.data.rgb);
    if let Some(s) = config.data.size {
        options = options.size(s, s).fit(config.data.fit_for(kind));
    }
    if let Some(f) = config.data.crop_fraction {
        options = options.crop_fraction(f);
    }
    options
}

/// The test subset of `config` with the normalisation `norm`: decoded at load, or, with
/// `data.decode = "per-sample"`, read from the folder's files at each evaluation (a test set
/// the size of ImageNet's is 7.5 GB decoded), on `threads.compute` threads (0: as many as the
/// kernels use).
///
/// A built-in set given for a per-sample run (`protocon eval --data cifar10:DIR` on such a
/// checkpoint) has no files to visit and is decoded at load.
pub fn test_set(config: &RunConfig, norm: Normalization) -> anyhow::Result<TestSet> {
    image_set(config, Subset::Test, norm)
}

/// The images of `subset` brought to `data.size` as [`test_set`] brings the test images: decoded
/// at load, or read from the files when they are visited for a per-sample folder (so that
/// `protocon inspect` decodes only the training images it shows).
pub fn image_set(config: &RunConfig, subset: Subset, norm: Normalization) -> anyhow::Result<TestSet> {
    let spec = config.data.spec()?;
    match (config.data.decode, spec.kind()) {
        (Decode::PerSample, DatasetKind::Folder) => {
            let side = config.data.size.context("data.decode = \"per-sample\" needs data.size")?;
            let files = folder_files(config, subset)?;
            let threads = match config.threads.compute {
                0 => protocon::ops::num_threads(),
                n => n,
            };
            Ok(TestSet::per_visit(files, [side, side], &load_options(config, spec.kind()), threads, norm))
        }
        _ => Ok(TestSet::new(load_data(config, subset)?, norm)),
    }
}

/// The training images of `config` as the view stages read them, and the shape of the views
/// (and batch images) they are augmented to: the data set decoded into memory and its image
/// size, or (`data.decode = "per-sample"`) an image folder's files and `data.size`.
pub fn train_samples(config: &RunConfig) -> anyhow::Result<(Arc<dyn Samples>, [usize; 3])> {
    Ok(match config.data.decode {
        Decode::AtLoad => {
            let data = load_data(config, Subset::Train)?;
            let shape = [data.channels(), data.height(), data.width()];
            (Arc::new(data), shape)
        }
        Decode::PerSample => {
            let side = config.data.size.context("data.decode = \"per-sample\" needs data.size")?;
            (Arc::new(folder_files(config, Subset::Train)?), [FILE_CHANNELS, side, side])
        }
    })
}

/// The files of a subset of the image folder `config` decodes per visit (`data.decode =
/// "per-sample"`), with `data.train_limit` or `data.test_limit` applied.
fn folder_files(config: &RunConfig, subset: Subset) -> anyhow::Result<ImageFiles> {
    let files = config.data.spec()?.files(subset)?;
    Ok(match config.data.limit(subset) {
        Some(n) => files.truncate(n),
        None => files,
    })
}

/// Builds the views of the first training sample, so chains that do not make views of the
/// batch's image size fail before the run starts, with the keys to change, rather than in a
/// worker mid-run.
fn check_view_shape(data: &dyn Samples, augmenter: &Augmenter, shape: [usize; 3], strong: bool) -> anyhow::Result<()> {
    let (mut bytes, mut img, mut view, mut ws) = (Vec::new(), Image::default(), Image::default(), Workspace::new());
    data.load(0, &mut Region::whole, &mut bytes, &mut img)?;
    let chains = [(Augmenter::WEAK_VIEW, "augment.weak"), (Augmenter::strong_view_id(0), "augment.strong")];
    for (id, key) in chains.into_iter().take(if strong { 2 } else { 1 }) {
        augmenter.view(&img, augmenter.key(0, 0, id), &mut ws, &mut view, &mut Vec::new());
        let made = [view.channels(), view.height(), view.width()];
        if made != shape {
            let [c, h, w] = shape;
            bail!(
                "{key} makes {}x{}x{} views (CxHxW) of a {}x{} training image, but batches hold {c}x{h}x{w} images \
                 (the data's size, data.size): the chain must produce that size, e.g. by starting with \
                 {{ name = \"random_resized_crop\", size = {h} }}",
                made[0],
                made[1],
                made[2],
                img.width(),
                img.height(),
            );
        }
    }
    Ok(())
}

/// Images a per-visit data set's normalisation is estimated from, spread evenly over it
/// (decoding every file of a large folder would take as long as an epoch).
const NORMALIZATION_SAMPLES: usize = 1000;

/// A run's data, sampler schedule, augmentation source and compute stage, ready to be wired
/// into a pipeline ([`TrainingRun::prepare`]).
pub struct Prepared {
    pub feed: Feed,
    pub compute: ComputeStage,
    /// Where the compute stage writes its checkpoint.
    pub checkpoint: PathBuf,
}

/// What the stages before the compute stage read: which samples each step uses, where their
/// pixels and augmentations come from, and what plugged-in stages are told about the run.
#[derive(Clone)]
pub struct Feed {
    pub schedule: Arc<StepSchedule>,
    pub source: Arc<ViewSource>,
    pub info: Arc<RunInfo>,
}

/// What a plugged-in batch stage or objective may need to know about the run it is part of.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The effective config.
    pub config: RunConfig,
    /// Number of classes of the data set.
    pub classes: usize,
    /// Labeled and unlabeled images in the split.
    pub labeled: usize,
    pub unlabeled: usize,
    /// Steps in one pass over the unlabeled set (over the labeled set when there is none).
    pub steps_per_epoch: u64,
}

/// Adds one plugged-in batch stage to a pipeline.
type AddBatchStage = Box<dyn Fn(&mut PipelineBuilder, Port<TrainBatch>, &Arc<RunInfo>) -> Port<TrainBatch> + Send + Sync>;
/// Makes a plugged-in objective.
type MakeObjective = Box<dyn Fn(&RunInfo) -> anyhow::Result<Box<dyn Objective>> + Send + Sync>;

/// A training run being assembled: the config, and what the caller plugs in. See the module
/// documentation; `examples/custom-stages` is a worked example.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use protocon_pipelines::{config::RunConfig, TrainingRun, TrainOptions};
/// use protocon_stages::augment::AugmentRegistry;
/// let config = RunConfig::parse(protocon_pipelines::config::DEFAULT_CONFIG, "built-in", &["train.steps=20".into()])?;
/// let registry = AugmentRegistry::with_builtins(); // register your ops here
/// let summary = TrainingRun::new(config).augmentations(registry).run(TrainOptions::new("runs/mine"))?;
/// println!("{} steps", summary.steps_done);
/// # Ok(()) }
/// ```
pub struct TrainingRun {
    config: RunConfig,
    registry: AugmentRegistry,
    batch_stages: Vec<AddBatchStage>,
    objective: Option<MakeObjective>,
}

impl TrainingRun {
    /// A run of `config` with the built-in augmentation ops, no extra batch stage, and the
    /// objective `config.algorithm` names.
    pub fn new(config: RunConfig) -> Self {
        TrainingRun { config, registry: AugmentRegistry::with_builtins(), batch_stages: Vec::new(), objective: None }
    }

    /// The config this run trains.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The augmentation ops `augment.weak` and `augment.strong` may name: start from
    /// [`AugmentRegistry::with_builtins`] and register yours.
    pub fn augmentations(mut self, registry: AugmentRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Insert a stage between the collated batches and the compute stage (after any added
    /// before it): MixUp, CutMix, a filter. `factory` makes one stage per worker
    /// (`spec.workers`); batches may leave a pool out of order, the compute stage restores step
    /// order. A stage that mixes labels sets [`TrainBatch::targets`].
    pub fn batch_stage<S, F>(mut self, spec: StageSpec, factory: F) -> Self
    where
        S: Stage<In = TrainBatch, Out = TrainBatch>,
        F: Fn(&RunInfo, &WorkerInfo) -> Result<S, StageError> + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        self.batch_stages.push(Box::new(move |p, batches, info| {
            let (factory, info) = (factory.clone(), info.clone());
            p.stage(spec.clone(), batches, move |worker| factory(&info, worker))
        }));
        self
    }

    /// Train towards the objective `factory` makes instead of `config.algorithm`'s. The network
    /// has a projection head only when `config.algorithm` is `protocon`.
    pub fn objective<F>(mut self, factory: F) -> Self
    where
        F: Fn(&RunInfo) -> anyhow::Result<Box<dyn Objective>> + Send + Sync + 'static,
    {
        self.objective = Some(Box::new(factory));
        self
    }

    /// Load the data, make (or load) the split, and build the compute stage. Writes the split
    /// and the effective config into `out`, the run directory.
    pub fn prepare(&self, out: &Path) -> anyhow::Result<Prepared> {
        let config = &self.config;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create run directory {}", out.display()))?;
        if config.threads.compute > 0 {
            // candle's own CPU kernels take their thread count from this variable only (read at
            // their first use); the fused kernels are told directly.
            std::env::set_var("RAYON_NUM_THREADS", config.threads.compute.to_string());
            protocon::ops::set_num_threads(config.threads.compute);
        }
        config.kernels.conv3x3.apply();
        let (train_data, shape) = train_samples(config)?;
        let normalization_samples = match config.data.decode {
            Decode::AtLoad => usize::MAX,
            Decode::PerSample => NORMALIZATION_SAMPLES,
        };
        let norm = Normalization::of(&*train_data, normalization_samples)?;
        let test = Arc::new(test_set(config, norm.clone())?);
        let split = match &config.data.split {
            Some(path) => Split::load(path, &*train_data)?,
            None => match config.data.label_fraction {
                Some(f) => Split::by_fraction(&*train_data, f, config.seed)?,
                None => Split::balanced(&*train_data, config.data.labels_per_class, config.seed)?,
            },
        };
        split.save(out.join("split.json"))?;
        let augmenter = Arc::new(config.augment.build(config.seed, &self.registry)?);
        check_view_shape(&*train_data, &augmenter, shape, config.unlabeled_batch() > 0)?;
        let classes = train_data.num_classes();
        let unlabeled_batch = config.unlabeled_batch();
        let schedule = Arc::new(StepSchedule {
            seed: config.seed,
            labeled: split.labeled().iter().map(|&i| i as u32).collect(),
            unlabeled: if unlabeled_batch > 0 { split.unlabeled().iter().map(|&i| i as u32).collect() } else { Vec::new() },
            labeled_batch: config.train.labeled_batch,
            unlabeled_batch,
        });
        if unlabeled_batch > schedule.unlabeled.len() {
            bail!("train: {unlabeled_batch} unlabeled images per step, but only {} unlabeled images", schedule.unlabeled.len());
        }
        std::fs::write(out.join("config.toml"), config.to_toml()?)?;
        let info = Arc::new(RunInfo {
            config: config.clone(),
            classes,
            labeled: schedule.labeled.len(),
            unlabeled: schedule.unlabeled.len(),
            steps_per_epoch: schedule.steps_per_epoch(),
        });

        let t = &config.train;
        let checkpoint = out.join(Checkpoint::FILE_NAME);
        let compute_cfg = ComputeConfig {
            sgd: SgdConfig { lr: t.lr, momentum: t.momentum, weight_decay: t.weight_decay, nesterov: t.nesterov },
            schedule: CosineSchedule::new(t.lr, t.warmup_steps, t.steps),
            ema_decay: t.ema_decay,
            eval_every: t.eval_every,
            log_every: t.log_every,
            checkpoint_every: t.checkpoint_every,
            checkpoint: Some(checkpoint.clone()),
            checkpoint_meta: serde_json::json!({
                "config": serde_json::to_value(config)?,
                "classes": classes,
                "class_names": train_data.classes(),
                "normalization": {"mean": norm.mean, "std": norm.std},
            }),
            nan_at_step: t.inject_nan_at_step,
            steps_per_epoch: info.steps_per_epoch,
        };
        let objective = match &self.objective {
            Some(make) => make(&info)?,
            None => {
                let protocon = (config.algorithm == Algorithm::Protocon).then(|| config.protocon.settings(config, info.unlabeled, classes));
                config.algorithm.objective(t.threshold, t.lambda_u, protocon)?
            }
        };
        let projection = (config.algorithm == Algorithm::Protocon).then_some(config.protocon.projection_dim);
        let net_options = NetworkOptions { bn_momentum: config.model.bn_momentum, zero_init_residual: config.model.zero_init_residual, ..Default::default() };
        let device = config.device.kind.open()?;
        let net = Network::build(config.model.arch, classes, projection, config.seed, &device, &net_options)?;
        let ema_net = Network::build(config.model.arch, classes, projection, config.seed, &device, &net_options)?;
        let compute = ComputeStage::new(compute_cfg, net, ema_net, objective, Some(test)).on_device(device);
        let source = Arc::new(ViewSource { data: train_data, shape, augmenter, norm });
        Ok(Prepared { feed: Feed { schedule, source, info }, compute, checkpoint })
    }

    /// Add `sampler -> weak-augment (-> strong-augment) -> the plugged-in batch stages` for steps
    /// `start..end` to `p` (stopping early when `stop` is set); returns the batches' port.
    pub fn add_batches(&self, p: &mut PipelineBuilder, feed: &Feed, start: u64, end: u64, stop: Arc<AtomicBool>) -> Port<TrainBatch> {
        let threads = &self.config.threads;
        let sched = feed.schedule.clone();
        let plans = p.source(StageSpec::new("sampler").queue(threads.queue), move |_| {
            Ok(StepSampler::new(sched.clone(), start, end, stop.clone()))
        });
        let s = feed.source.clone();
        let mut batches = p.stage(StageSpec::new("weak-augment").workers(threads.weak_workers).queue(threads.queue), plans, move |_| {
            Ok(WeakViews::new(s.clone()))
        });
        if self.config.unlabeled_batch() > 0 {
            let s = feed.source.clone();
            batches = p.stage(
                StageSpec::new("strong-augment").workers(threads.strong_workers).queue(threads.queue),
                batches,
                move |_| Ok(StrongViews::new(s.clone())),
            );
        }
        for add in &self.batch_stages {
            batches = add(p, batches, &feed.info);
        }
        batches
    }

    /// Add the compute stage reading `batches` (and, with `protocon.staleness >= 1`, ProtoCon's
    /// cluster stage beside it) to `p`, for a run starting at step `start`; returns the port of
    /// its records.
    pub fn add_compute(&self, p: &mut PipelineBuilder, mut compute: ComputeStage, batches: Port<TrainBatch>, start: u64) -> Port<Record> {
        let staleness = self.config.protocon.staleness;
        if let Some(pc) = compute.objective_mut().as_protocon().filter(|_| staleness > 0) {
            let (jobs, port) = p.queue::<ClusterJob>("projections", staleness as usize);
            let progress = ClusterProgress::new(start);
            let stage = Mutex::new(Some(ClusterStage::new(pc.clustering(), progress.clone())));
            pc.cluster_asynchronously(AsyncClustering { jobs, progress, staleness });
            p.sink(StageSpec::new("cluster"), port, move |_| {
                stage.lock().unwrap().take().ok_or_else(|| StageError::msg("the cluster stage has exactly one worker"))
            });
        }
        let compute = Mutex::new(Some(compute));
        p.stage(StageSpec::new("compute").queue(self.config.threads.queue.max(8)), batches, move |_| {
            compute.lock().unwrap().take().ok_or_else(|| StageError::msg("the compute stage has exactly one worker"))
        })
    }

    /// Train, writing metrics, checkpoints, the split, the config and the profile into
    /// `options.out`.
    pub fn run(self, options: TrainOptions) -> anyhow::Result<TrainSummary> {
        let config = &self.config;
        let out = &options.out;
        let Prepared { feed, mut compute, checkpoint } = self.prepare(out)?;
        let t = &config.train;

        let metrics_path = out.join("metrics.jsonl");
        let mut start = 0;
        if let Some(resume) = &options.resume {
            let path = Checkpoint::file_of(resume);
            let ck = Checkpoint::load(&path, &Device::Cpu)?;
            start = compute.restore(&ck).with_context(|| format!("resume from {}", path.display()))?;
            metrics::truncate_after(&metrics_path, start)?;
            eprintln!("resuming from {} at step {start}", path.display());
        } else if metrics_path.exists() {
            std::fs::remove_file(&metrics_path)?;
        }
        if start >= t.steps {
            bail!("nothing to do: the checkpoint is at step {start} of {}", t.steps);
        }
        self.report_settings(&feed.schedule);

        let mut p = Pipeline::builder();
        if let Some(path) = &options.trace {
            p.trace(path);
        }
        let batches = self.add_batches(&mut p, &feed, start, t.steps, options.stop.clone());
        let records = self.add_compute(&mut p, compute, batches, start);
        let last_eval = Arc::new(Mutex::new(None));
        let le = last_eval.clone();
        let observer = Mutex::new(options.observer);
        let mp = metrics_path.clone();
        // A resumed run's events start with a SessionLog START after the checkpoint's step, so
        // TensorBoard drops what the cut-off process logged past it (as metrics.jsonl is cut).
        let tb_dir = options.tensorboard.clone().unwrap_or_else(|| out.to_path_buf());
        let events = EventWriter::create(&tb_dir, (start > 0).then_some(start + 1))
            .with_context(|| format!("creating the TensorBoard event file in {}", tb_dir.display()))?;
        let events = Mutex::new(Some(events));
        p.sink(StageSpec::new("metrics"), records, move |_| {
            let le = le.clone();
            let mut user = observer.lock().unwrap().take();
            let observe: Observer = Box::new(move |r: &Record| {
                if let Record::Eval(e) = r {
                    *le.lock().unwrap() = Some(e.clone());
                }
                if let Some(u) = &mut user {
                    u(r);
                }
            });
            let sink = MetricsSink::append(&mp, Some(observe))?;
            Ok(match events.lock().unwrap().take() {
                Some(e) => sink.with_tensorboard(e),
                None => sink,
            })
        });
        let report = p.run()?;
        std::fs::write(out.join("profile.txt"), format!("{}\n", report.profile))?;
        let steps_done = Checkpoint::load(&checkpoint, &Device::Cpu)
            .ok()
            .and_then(|c| c.training_meta().ok())
            .map(|m| m.step)
            .unwrap_or(start);
        let last_eval = last_eval.lock().unwrap().clone();
        Ok(TrainSummary { profile: report.profile, last_eval, steps_done })
    }

    /// Print the threads and, for ProtoCon, the derived settings, as the run starts.
    fn report_settings(&self, schedule: &StepSchedule) {
        let config = &self.config;
        let threads = &config.threads;
        let unlabeled_batch = config.unlabeled_batch();
        eprintln!(
            "device {}; threads: compute {} (kernels), weak augmentation {} worker(s), strong augmentation {} worker(s); {} labeled / {} unlabeled images",
            config.device.kind,
            protocon::ops::num_threads(),
            threads.weak_workers,
            if unlabeled_batch > 0 { threads.strong_workers } else { 0 },
            schedule.labeled.len(),
            schedule.unlabeled.len()
        );
        if config.algorithm != Algorithm::Protocon || self.objective.is_some() {
            return;
        }
        let pc = &config.protocon;
        let n = schedule.unlabeled.len();
        eprintln!(
            "protocon: preset {}, K = {} clusters x {} head(s), dual_lr = {:.4} ({}; b = {unlabeled_batch} unlabeled per step), refinement from epoch {}{}",
            pc.preset.name(),
            pc.clusters_for(n),
            pc.heads,
            pc.dual_lr_for(config, n),
            match pc.dual_lr {
                DualLr::Auto => "auto: 20 x min(b / 448, K / 250)",
                DualLr::Fixed(_) if pc.preset == crate::config::Preset::Paper => "fixed: the paper's, or set in the config",
                DualLr::Fixed(_) => "fixed: set in the config",
            },
            pc.refine_after_epochs,
            if pc.refine_min_agreement > 0.0 {
                format!(" once an epoch's labeled images agree with their clusters' labels >= {:.0}%", 100.0 * pc.refine_min_agreement)
            } else {
                String::new()
            }
        );
    }
}

/// The run directory for a config when `--out` is not given.
pub fn default_out(config: &RunConfig) -> PathBuf {
    Path::new("runs").join(&config.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONFIG;

    /// `data.size` on a folder of images larger than it: resized by default, and `fit = "pad"`
    /// is refused with a message that names the key to change.
    #[test]
    fn folder_images_are_resized_to_data_size_unless_pad_is_asked_for() {
        let root = std::env::temp_dir().join(format!("protocon-fit-{}", std::process::id()));
        for (class, value) in [("a", 40u8), ("b", 200)] {
            std::fs::create_dir_all(root.join(class)).unwrap();
            for i in 0..3 {
                let img = image::RgbImage::from_pixel(40, 30, image::Rgb([value, value / 2, i * 20]));
                img.save(root.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        let config = |extra: &[&str]| {
            let mut sets = vec![format!("data.dataset=folder:{}", root.display()), "data.size=16".into()];
            sets.extend(extra.iter().map(|s| s.to_string()));
            RunConfig::parse(DEFAULT_CONFIG, "test", &sets).unwrap()
        };
        let data = load_data(&config(&[]), Subset::Train).unwrap();
        assert_eq!((data.len(), data.height(), data.width(), data.channels()), (6, 16, 16, 3));
        // A flat colour stays that colour through a bilinear resize.
        assert_eq!(&data.image(3)[..3], &[200, 100, 0]);
        let err = load_data(&config(&["data.fit=\"pad\""]), Subset::Train).unwrap_err();
        assert!(format!("{err:#}").contains("data.fit"), "{err:#}");
        std::fs::remove_dir_all(&root).ok();
    }
}
