//! What a trained model learned, as pictures: `protocon inspect`.
//!
//! - Per class, the test images the classifier is most confident belong to it, next to the test
//!   images whose projections lie nearest the class prototype (ProtoCon's qualitative figure:
//!   the two views of the data the method combines).
//! - For the largest and the purest clusters of the memory bank, a row of their members with the
//!   cluster's pseudo-label, its size and its purity against the true labels.
//!
//! Both use the raw network (`model.` in the checkpoint), whose projection space the prototypes
//! and clusters were built in; the EMA network's head trails it. Images are read through the
//! same readers as training ([`image_set`]), so folder data sets work too, and a per-sample folder
//! decodes only the images shown.

use crate::curves::{register_font, FAMILY};
use crate::train::image_set;
use crate::trained::TrainedModel;
use anyhow::{bail, Context as _};
use candle_core::Device;
use protocon::checkpoint::Checkpoint;
use protocon::data::{Labelled, Split, Subset};
use protocon::protocon::prior::softmax_rows;
use protocon_stages::objective::Algorithm;
use protocon_stages::test_set::TestSet;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to show.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Images per row.
    pub k: usize,
    /// How many of the largest, and of the purest, clusters get a row.
    pub clusters: usize,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions { k: 8, clusters: 5 }
    }
}

/// One image picked for a row: its index in its subset, its true label and why it was picked
/// (the classifier's softmax probability of the row's class, or the cosine similarity of its
/// projection to the class prototype).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pick {
    pub index: usize,
    pub label: u16,
    pub score: f64,
}

/// A class's two rows of test images.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRows {
    pub class: usize,
    pub name: String,
    /// The `k` test images with the highest classifier probability of `class`.
    pub most_confident: Vec<Pick>,
    /// The `k` test images whose projections have the highest cosine similarity to the class
    /// prototype; `None` without prototypes (a FixMatch or supervised checkpoint) or when the
    /// class has no prototype yet.
    pub nearest_to_prototype: Option<Vec<Pick>>,
}

impl ClassRows {
    /// How many of `picks` (one of this class's rows) truly belong to the class.
    pub fn of_class(&self, picks: &[Pick]) -> usize {
        picks.iter().filter(|p| p.label as usize == self.class).count()
    }
}

/// One cluster of one clustering head.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub head: usize,
    pub cluster: usize,
    /// Unlabeled training images last assigned to it.
    pub size: usize,
    /// The cluster's pseudo-label (argmax of its label distribution) and that label's weight.
    pub pseudo_label: usize,
    pub pseudo_label_weight: f64,
    /// The most frequent true label among the members and its share: the cluster's purity.
    pub majority_label: Option<u16>,
    pub purity: Option<f64>,
    /// Why it has a row (`largest`, `purest`), and the members shown there (training indices,
    /// spread evenly over the members in index order); empty for clusters without a row.
    pub shown_as: Vec<&'static str>,
    pub shown: Vec<usize>,
}

/// Everything `inspect` found, as written to `inspect.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub checkpoint: PathBuf,
    pub step: u64,
    pub algorithm: String,
    pub model: &'static str,
    pub test_images: usize,
    pub classes: Vec<ClassRows>,
    /// Every cluster of every head (empty for runs without clusters, or before an epoch ended).
    pub clusters: Vec<Cluster>,
}

/// The indices of the `k` largest `scores`, best first (ties: the lower index first).
pub fn top_k(scores: impl Iterator<Item = f64>, k: usize) -> Vec<(usize, f64)> {
    let mut all: Vec<(usize, f64)> = scores.enumerate().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Reads the checkpoint, runs the raw network over the test set and picks the rows.
pub fn inspect(checkpoint: &Path, options: &InspectOptions) -> anyhow::Result<(Inspection, TestSet, Option<TestSet>)> {
    anyhow::ensure!(options.k >= 1, "inspect: at least one image per row");
    let path = Checkpoint::file_of(checkpoint);
    let ck = Checkpoint::load(&path, &Device::Cpu)?;
    let protocon = ck.tensors.contains_key("protocon.prototypes.prototypes");
    let model = TrainedModel::from_checkpoint(&path, &ck, true, protocon)?;
    let config = &model.config;
    let test = image_set(config, Subset::Test, model.norm.clone())?;
    if test.num_classes() != model.classes {
        bail!("{}: {} classes, the checkpoint was trained on {}", config.data.dataset, test.num_classes(), model.classes);
    }

    // Class probabilities and projections of every test image.
    let (n, c) = (test.num_samples(), model.classes);
    let mut probs = Vec::with_capacity(n * c);
    let mut proj: Vec<f32> = Vec::new();
    test.forward_chunks(&model.net, TestSet::CHUNK, |_, out| {
        probs.extend(softmax_rows(&out.logits.flatten_all()?.to_vec1::<f32>()?, c));
        if let Some(z) = &out.projection {
            proj.extend(z.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    })?;
    let labels = test.labels();
    let prototypes: Option<Vec<f32>> = match ck.tensors.get("protocon.prototypes.prototypes") {
        Some(t) => Some(t.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let d = if n > 0 { proj.len() / n } else { 0 };
    let names = test.classes().to_vec();
    let classes = (0..c)
        .map(|class| {
            let pick = |(index, score): (usize, f64)| Pick { index, label: labels[index], score };
            let most_confident = top_k((0..n).map(|i| probs[i * c + class] as f64), options.k).into_iter().map(pick).collect();
            let nearest_to_prototype = prototypes.as_ref().and_then(|p| {
                let proto = &p[class * d..(class + 1) * d];
                if d == 0 || proto.iter().all(|&v| v == 0.0) {
                    return None;
                }
                let sim = (0..n).map(|i| proj[i * d..(i + 1) * d].iter().zip(proto).map(|(a, b)| (a * b) as f64).sum::<f64>());
                Some(top_k(sim, options.k).into_iter().map(pick).collect())
            });
            ClassRows { class, name: names.get(class).cloned().unwrap_or_else(|| class.to_string()), most_confident, nearest_to_prototype }
        })
        .collect();

    let (clusters, train) = if config.algorithm == Algorithm::Protocon && protocon {
        let train = image_set(config, Subset::Train, model.norm.clone())?;
        (clusters_of(&ck, &path, &train, options)?, Some(train))
    } else {
        (Vec::new(), None)
    };
    let inspection = Inspection {
        checkpoint: path,
        step: model.step,
        algorithm: config.algorithm.to_string(),
        model: "raw",
        test_images: n,
        classes,
        clusters,
    };
    Ok((inspection, test, train))
}

/// The bank's clusters: members from the last assignments of the unlabeled images (the run's
/// `split.json` beside the checkpoint says which training images those are), pseudo-labels
/// from the cluster label distributions, purity from the true labels.
fn clusters_of(ck: &Checkpoint, path: &Path, train: &TestSet, options: &InspectOptions) -> anyhow::Result<Vec<Cluster>> {
    let epochs = ck.tensors.get("protocon.epochs_ended").map(|t| t.to_vec1::<i64>()).transpose()?.and_then(|v| v.first().copied()).unwrap_or(0);
    if epochs == 0 {
        return Ok(Vec::new());
    }
    let split_path = path.parent().map(|p| p.join("split.json")).filter(|p| p.is_file());
    let split = match split_path {
        Some(p) => Split::load(&p, train).with_context(|| format!("{}", p.display()))?,
        None => bail!("{}: the clusters need the run's split.json beside the checkpoint", path.display()),
    };
    let unlabeled = split.unlabeled();
    let labels = train.labels();
    let mut out = Vec::new();
    for head in 0.. {
        let (Some(assign), Some(z)) = (
            ck.tensors.get(&format!("protocon.bank.head{head}.assignments")),
            ck.tensors.get(&format!("protocon.bank.head{head}.cluster_labels")),
        ) else {
            break;
        };
        let assign: Vec<u32> = assign.to_vec1()?;
        if assign.len() != unlabeled.len() {
            bail!("{}: {} bank slots, but split.json lists {} unlabeled images", path.display(), assign.len(), unlabeled.len());
        }
        let (k, classes) = z.dims2()?;
        let z: Vec<f32> = z.flatten_all()?.to_vec1()?;
        // Count true labels over every class that occurs, even one the clusters' labels lack.
        let label_slots = classes.max(1 + labels.iter().copied().max().unwrap_or(0) as usize);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (slot, &a) in assign.iter().enumerate() {
            members.get_mut(a as usize).with_context(|| format!("{}: cluster {a} of head {head} out of range", path.display()))?.push(unlabeled[slot]);
        }
        let first = out.len();
        for (cluster, m) in members.iter().enumerate() {
            let dist = &z[cluster * classes..(cluster + 1) * classes];
            let (pseudo_label, weight) = top_k(dist.iter().map(|&v| v as f64), 1)[0];
            let mut counts = vec![0usize; label_slots];
            for &i in m {
                counts[labels[i] as usize] += 1;
            }
            let majority = (!m.is_empty()).then(|| top_k(counts.iter().map(|&v| v as f64), 1)[0]);
            out.push(Cluster {
                head,
                cluster,
                size: m.len(),
                pseudo_label,
                pseudo_label_weight: weight,
                majority_label: majority.map(|(l, _)| l as u16),
                purity: majority.map(|(_, count)| count / m.len() as f64),
                shown_as: Vec::new(),
                shown: Vec::new(),
            });
        }
        // Rows: the largest and the purest (ties: the larger) non-empty clusters of this head.
        let head_clusters = &mut out[first..];
        let largest = top_k(head_clusters.iter().map(|c| c.size as f64), options.clusters);
        let purest = top_k(head_clusters.iter().map(|c| c.purity.unwrap_or(-1.0) + c.size as f64 * 1e-9), options.clusters);
        for (why, picks) in [("largest", largest), ("purest", purest)] {
            for (i, _) in picks {
                let c = &mut head_clusters[i];
                if c.size > 0 {
                    c.shown_as.push(why);
                    let m = &members[c.cluster];
                    c.shown = (0..options.k.min(m.len())).map(|j| m[j * m.len() / options.k.min(m.len())]).collect();
                }
            }
        }
    }
    Ok(out)
}

/// A grid of labelled rows of thumbnails, drawn into an RGB buffer.
struct Sheet {
    rows: Vec<(String, Vec<(Vec<u8>, bool)>)>,
    shape: (usize, usize, usize),
    k: usize,
}

const LABEL_WIDTH: u32 = 330;
const GAP: u32 = 6;

impl Sheet {
    fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let (h, w, c) = self.shape;
        let scale = (64 / h.max(1)).max(1) as u32;
        let (tw, th) = (w as u32 * scale, h as u32 * scale);
        let width = LABEL_WIDTH + self.k as u32 * (tw + GAP) + GAP;
        let height = self.rows.len().max(1) as u32 * (th + GAP) + GAP;
        let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        for (r, (_, cells)) in self.rows.iter().enumerate() {
            let y0 = GAP + r as u32 * (th + GAP);
            for (j, (pixels, mismatch)) in cells.iter().enumerate() {
                let x0 = LABEL_WIDTH + j as u32 * (tw + GAP);
                for y in 0..th {
                    for x in 0..tw {
                        let p = &pixels[((y / scale) as usize * w + (x / scale) as usize) * c..][..c];
                        let rgb = if c >= 3 { [p[0], p[1], p[2]] } else { [p[0]; 3] };
                        img.put_pixel(x0 + x, y0 + y, image::Rgb(rgb));
                    }
                }
                // A red frame: the image's true label is not the row's class.
                if *mismatch {
                    for t in 0..2 {
                        for x in 0..tw {
                            img.put_pixel(x0 + x, y0 + t, image::Rgb([220, 30, 30]));
                            img.put_pixel(x0 + x, y0 + th - 1 - t, image::Rgb([220, 30, 30]));
                        }
                        for y in 0..th {
                            img.put_pixel(x0 + t, y0 + y, image::Rgb([220, 30, 30]));
                            img.put_pixel(x0 + tw - 1 - t, y0 + y, image::Rgb([220, 30, 30]));
                        }
                    }
                }
            }
        }
        register_font()?;
        {
            use plotters::prelude::*;
            let root = BitMapBackend::with_buffer(std::ops::DerefMut::deref_mut(&mut img), (width, height)).into_drawing_area();
            let style = TextStyle::from((FAMILY, 13).into_font()).color(&BLACK);
            for (r, (label, _)) in self.rows.iter().enumerate() {
                let y0 = (GAP + r as u32 * (th + GAP)) as i32;
                for (l, line) in label.lines().enumerate() {
                    root.draw_text(line, &style, (4, y0 + 4 + 16 * l as i32)).map_err(|e| anyhow::anyhow!("drawing text: {e}"))?;
                }
            }
            root.present().map_err(|e| anyhow::anyhow!("drawing text: {e}"))?;
        }
        img.save_with_format(path, image::ImageFormat::Png).with_context(|| format!("writing {}", path.display()))
    }
}

fn pixels_of(set: &TestSet, index: usize) -> anyhow::Result<Vec<u8>> {
    let (h, w, c) = set.shape();
    let mut out = vec![0u8; h * w * c];
    set.images_into(index..index + 1, &mut out)?;
    Ok(out)
}

/// Writes `prototypes.png` (or `classifier.png` for a checkpoint without prototypes),
/// `clusters.png` when there are clusters, and `inspect.json` into `out`; returns their paths.
pub fn write(inspection: &Inspection, test: &TestSet, train: Option<&TestSet>, out: &Path, options: &InspectOptions) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let names: Vec<String> = inspection.classes.iter().map(|c| c.name.clone()).collect();
    let name = |l: usize| names.get(l).cloned().unwrap_or_else(|| l.to_string());
    let mut rows = Vec::new();
    for class in &inspection.classes {
        let row = |picks: &[Pick]| -> anyhow::Result<Vec<(Vec<u8>, bool)>> {
            picks.iter().map(|p| Ok((pixels_of(test, p.index)?, p.label as usize != class.class))).collect()
        };
        let mc = &class.most_confident;
        rows.push((format!("{}: classifier\n{}/{} of this class", class.name, class.of_class(mc), mc.len()), row(mc)?));
        if let Some(np) = &class.nearest_to_prototype {
            rows.push((format!("{}: nearest to prototype\n{}/{} of this class", class.name, class.of_class(np), np.len()), row(np)?));
        }
    }
    let mut written = Vec::new();
    let with_prototypes = inspection.classes.iter().any(|c| c.nearest_to_prototype.is_some());
    let png = out.join(if with_prototypes { "prototypes.png" } else { "classifier.png" });
    Sheet { rows, shape: test.shape(), k: options.k }.draw(&png)?;
    written.push(png);

    if let (Some(train), false) = (train, inspection.clusters.is_empty()) {
        let labels = train.labels();
        let mut rows = Vec::new();
        for c in inspection.clusters.iter().filter(|c| !c.shown.is_empty()) {
            let cells = c.shown.iter().map(|&i| Ok((pixels_of(train, i)?, labels[i] as usize != c.pseudo_label))).collect::<anyhow::Result<Vec<_>>>()?;
            let purity = match (c.purity, c.majority_label) {
                (Some(p), Some(m)) => format!("purity {:.0}% ({})", 100.0 * p, name(m as usize)),
                _ => "purity unknown".into(),
            };
            rows.push((
                format!(
                    "head {} cluster {} ({}): {} ({:.2})\nsize {}, {}",
                    c.head,
                    c.cluster,
                    c.shown_as.join(", "),
                    name(c.pseudo_label),
                    c.pseudo_label_weight,
                    c.size,
                    purity
                ),
                cells,
            ));
        }
        let png = out.join("clusters.png");
        Sheet { rows, shape: train.shape(), k: options.k }.draw(&png)?;
        written.push(png);
    }
    let json = out.join("inspect.json");
    std::fs::write(&json, serde_json::to_string_pretty(inspection)?).with_context(|| format!("writing {}", json.display()))?;
    written.push(json);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_the_largest_first_and_ties_keep_index_order() {
        let scores = [0.5, 0.9, 0.1, 0.9, 0.7];
        assert_eq!(top_k(scores.iter().copied(), 3), [(1, 0.9), (3, 0.9), (4, 0.7)]);
        assert_eq!(top_k(scores.iter().copied(), 9).len(), 5);
    }
}
