//! The view stages on an image folder decoded per visit: every weak and strong view in the
//! batches equals the view built from the file's full decode, though each unlabeled file is
//! decoded once, only around its two crops (down to the lower one, across both).

use protocon::data::jpeg::Region;
use protocon::data::Labelled;
use protocon::{Control, Pipeline, Sink, StageError, StageSpec};
use protocon_stages::augment::{codec, AugmentConfig, AugmentRegistry, Augmenter, Image, Workspace};
use protocon_stages::batch::TrainBatch;
use protocon_stages::sampler::{StepSampler, StepSchedule};
use protocon_stages::samples::Samples;
use protocon_stages::views::{Normalization, StrongViews, ViewSource, WeakViews};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

mod common;
use common::{temp_folder, truncate_a_file};

/// Collects every batch that reaches it.
struct Collect(Arc<Mutex<Vec<TrainBatch>>>);

impl Sink for Collect {
    type In = TrainBatch;
    fn consume(&mut self, batch: TrainBatch, _: &Control) -> Result<(), StageError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

fn run(source: Arc<ViewSource>, schedule: Arc<StepSchedule>, steps: u64) -> Vec<TrainBatch> {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let mut p = Pipeline::builder();
    let stop = Arc::new(AtomicBool::new(false));
    let plans = p.source(StageSpec::new("sampler"), move |_| Ok(StepSampler::new(schedule.clone(), 0, steps, stop.clone())));
    let s = source.clone();
    let weak = p.stage(StageSpec::new("weak").workers(2), plans, move |_| Ok(WeakViews::new(s.clone())));
    let strong = p.stage(StageSpec::new("strong").workers(2), weak, move |_| Ok(StrongViews::new(source.clone())));
    let b = batches.clone();
    p.sink(StageSpec::new("collect"), strong, move |_| Ok(Collect(b.clone())));
    p.run().unwrap();
    let mut out = std::mem::take(&mut *batches.lock().unwrap());
    out.sort_by_key(|b| b.plan.step);
    out
}

#[test]
fn views_of_files_decoded_per_visit_equal_views_of_their_full_decode() {
    let (_dir, files) = temp_folder();
    assert_eq!(files.labels(), &[0, 0, 0, 0, 1, 1, 1, 1], "classes sorted by name, then files");
    let norm = Normalization::of(&files, 1000).unwrap();
    let side = 48;
    let augmenter = Arc::new(AugmentConfig::large(side).build(5, &AugmentRegistry::with_builtins()).unwrap());
    let source = Arc::new(ViewSource {
        data: Arc::new(files.clone()),
        shape: [3, side, side],
        augmenter: augmenter.clone(),
        norm: norm.clone(),
    });
    let schedule = Arc::new(StepSchedule { seed: 3, labeled: vec![0, 5], unlabeled: vec![1, 2, 3, 4, 6, 7], labeled_batch: 2, unlabeled_batch: 3 });
    let batches = run(source, schedule, 6);
    assert_eq!(batches.len(), 6);

    // The expected views, from full decodes, built outside any pipeline.
    let full: Vec<Image> = (0..8)
        .map(|i| {
            let mut img = Image::default();
            codec::decode_into(&std::fs::read(files.path(i)).unwrap(), &mut img, 3).unwrap();
            img
        })
        .collect();
    let len = 3 * side * side;
    let (mut ws, mut view, mut log, mut want) = (Workspace::new(), Image::default(), Vec::new(), vec![0f32; len]);
    let mut check = |got: &[f32], index: u32, epoch: u64, view_id: u32, what: &str| {
        let key = augmenter.key(epoch, index as u64, view_id);
        augmenter.view(&full[index as usize], key, &mut ws, &mut view, &mut log);
        view.normalize_chw_into(&norm.mean, &norm.std, &mut want);
        assert!(got == &want[..], "{what} view of sample {index} (epoch key {epoch:#x}) differs from the full decode's");
    };
    for b in &batches {
        assert!(b.sources.is_empty(), "the strong stage hands on no decoded pixels");
        assert_eq!(b.labels, b.plan.labeled.iter().map(|&i| u32::from(files.labels()[i as usize])).collect::<Vec<_>>());
        let slot = |k: usize| &b.images[k * len..(k + 1) * len];
        let (nl, nu) = (b.plan.labeled.len(), b.plan.unlabeled.len());
        for (k, &i) in b.plan.labeled.iter().enumerate() {
            // Labeled samples repeat within an epoch, so their views are keyed on the step,
            // marked by the top bit (views.rs).
            check(slot(k), i, (1 << 63) | b.plan.step, Augmenter::WEAK_VIEW, "labeled weak");
        }
        for (k, &i) in b.plan.unlabeled.iter().enumerate() {
            check(slot(nl + k), i, b.plan.epoch, Augmenter::WEAK_VIEW, "weak");
            check(slot(nl + nu + k), i, b.plan.epoch, Augmenter::strong_view_id(0), "strong");
        }
    }
}

#[test]
fn normalization_over_every_sample_is_the_pooled_statistic() {
    let (_dir, files) = temp_folder();
    // Independently: decode every file, pool its pixels, then take mean and variance per channel.
    let mut pixels: Vec<[f64; 3]> = Vec::new();
    let mut img = Image::default();
    for i in 0..files.num_samples() {
        codec::decode_into(&std::fs::read(files.path(i)).unwrap(), &mut img, 3).unwrap();
        pixels.extend(img.data().chunks_exact(3).map(|p| [p[0] as f64 / 255.0, p[1] as f64 / 255.0, p[2] as f64 / 255.0]));
    }
    let norm = Normalization::of(&files, 1000).unwrap();
    for c in 0..3 {
        let mean = pixels.iter().map(|p| p[c]).sum::<f64>() / pixels.len() as f64;
        let var = pixels.iter().map(|p| (p[c] - mean).powi(2)).sum::<f64>() / pixels.len() as f64;
        assert!((norm.mean[c] as f64 - mean).abs() < 1e-5, "mean {c}: {} vs {mean}", norm.mean[c]);
        assert!((norm.std[c] as f64 - var.sqrt()).abs() < 1e-5, "std {c}: {} vs {}", norm.std[c], var.sqrt());
    }
    // Two of eight samples (indices 0 and 4) give a different, still plausible, estimate.
    let two = Normalization::of(&files, 2).unwrap();
    assert_ne!(two, norm);
}

#[test]
fn a_file_that_cannot_be_decoded_is_an_error_naming_it() {
    let (dir, files) = temp_folder();
    let bad = truncate_a_file(dir.path());
    let index = (0..files.num_samples()).find(|&i| files.path(i) == bad).unwrap();
    let (mut bytes, mut img) = (Vec::new(), Image::default());
    let err = files.load(index, &mut Region::whole, &mut bytes, &mut img).unwrap_err().to_string();
    assert!(err.contains("dog/3.jpg") && err.contains("JPEG"), "{err}");
    std::fs::remove_file(&bad).unwrap();
    let err = files.load(index, &mut Region::whole, &mut bytes, &mut img).unwrap_err().to_string();
    assert!(err.contains("dog/3.jpg"), "{err}");
}
