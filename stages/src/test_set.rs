//! The test split a run is evaluated on, and the evaluation itself: accuracy and confusion
//! matrix of a network in inference mode, a chunk of images at a time.

use crate::augment::Image;
use crate::views::Normalization;
use candle_core::D;
use protocon::device;
use protocon::data::{DataError, Dataset, FileDecoder, ImageFiles, Labelled, LoadOptions};
use protocon::model::{Mode, Network, Output};
use serde::Serialize;
use std::ops::Range;

/// The test split and the normalisation the network was trained with. Images stay u8 and are
/// normalised one chunk at a time as they are evaluated, so a set decoded at load takes a
/// quarter of the memory a normalised f32 copy would (7.5 GB rather than 30 GB for 50,000
/// images at 224 px); an image folder too large even for that is decoded per evaluation
/// ([`TestSet::per_visit`]).
pub struct TestSet {
    images: TestImages,
    norm: Normalization,
}

/// Where a [`TestSet`]'s pixels come from.
enum TestImages {
    /// Decoded (and brought to one size) at load.
    Decoded(Dataset),
    /// Files read, decoded and fitted each time they are evaluated, `threads` at a time.
    Files { files: ImageFiles, size: [usize; 2], options: LoadOptions, threads: usize },
}

/// Accuracy and confusion matrix (`rows = true class`, `cols = predicted`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub confusion: Vec<Vec<u64>>,
}

impl TestSet {
    /// Images per forward pass when evaluating: 128 keeps the largest activation of the models
    /// here (cnn-small's 32 channels at 32x32: 16.8 MB) small, so each chunk reuses the previous
    /// chunk's memory (under glibc's malloc, which the CLI used before mimalloc, it stayed under
    /// the 32 MB mmap threshold); 500 held 3x the memory for no speed.
    pub const CHUNK: usize = 128;

    /// A test set decoded at load.
    pub fn new(data: Dataset, norm: Normalization) -> Self {
        TestSet { images: TestImages::Decoded(data), norm }
    }

    /// An image folder's test files, decoded at each evaluation on `threads` threads and
    /// brought to `size` (`[height, width]`, RGB) as `options.fit` says: the pixels
    /// [`folder::load_dir`](protocon::data::folder::load_dir) gives at load with the same
    /// options (both go through [`FileDecoder`]), without holding them between evaluations.
    pub fn per_visit(files: ImageFiles, size: [usize; 2], options: &LoadOptions, threads: usize, norm: Normalization) -> Self {
        let images = TestImages::Files { files, size, options: options.clone(), threads: threads.max(1) };
        TestSet { images, norm }
    }

    /// `(height, width, channels)` of every test image.
    pub fn shape(&self) -> (usize, usize, usize) {
        match &self.images {
            TestImages::Decoded(d) => (d.height(), d.width(), d.channels()),
            TestImages::Files { size, .. } => (size[0], size[1], 3),
        }
    }

    /// Writes the pixels (u8, HWC) of samples `range` into `out`, which holds exactly that many
    /// images.
    pub fn images_into(&self, range: Range<usize>, out: &mut [u8]) -> Result<(), DataError> {
        let (h, w, c) = self.shape();
        let image_len = h * w * c;
        assert_eq!(out.len(), range.len() * image_len, "images_into: buffer for {} images", range.len());
        match &self.images {
            TestImages::Decoded(d) => out.copy_from_slice(&d.pixels()[range.start * image_len..range.end * image_len]),
            TestImages::Files { files, size, options, threads } => {
                let per_thread = range.len().div_ceil(*threads).max(1);
                std::thread::scope(|s| {
                    let parts: Vec<_> = out
                        .chunks_mut(per_thread * image_len)
                        .enumerate()
                        .map(|(t, part)| {
                            let first = range.start + t * per_thread;
                            s.spawn(move || -> Result<(), DataError> {
                                let mut decoder = FileDecoder::new(*size, options);
                                let mut fitted = Vec::with_capacity(part.len());
                                for i in first..first + part.len() / image_len {
                                    decoder.decode(files.path(i), &mut fitted)?;
                                }
                                part.copy_from_slice(&fitted);
                                Ok(())
                            })
                        })
                        .collect();
                    parts.into_iter().try_for_each(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                })?;
            }
        }
        Ok(())
    }

    /// Evaluate `net` in inference mode, in chunks of `chunk` images.
    pub fn evaluate(&self, net: &Network, chunk: usize) -> candle_core::Result<Evaluation> {
        let classes = self.num_classes();
        let mut confusion = vec![vec![0u64; classes]; classes];
        let mut correct = 0u64;
        self.forward_chunks(net, chunk, |range, out| {
            let pred: Vec<u32> = device::download("test predictions", &out.logits.argmax(D::Minus1)?)?;
            for (p, &y) in pred.iter().zip(&self.labels()[range]) {
                confusion[y as usize][*p as usize] += 1;
                correct += (*p == y as u32) as u64;
            }
            Ok(())
        })?;
        Ok(Evaluation { accuracy: correct as f64 / self.num_samples().max(1) as f64, confusion })
    }

    /// Run `net` in inference mode over every image, `chunk` at a time, handing each chunk's
    /// sample range and outputs (logits, and projections when the network has a head) to `f`.
    pub fn forward_chunks(
        &self,
        net: &Network,
        chunk: usize,
        mut f: impl FnMut(Range<usize>, &Output) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        let n = self.num_samples();
        let (h, w, c) = self.shape();
        let image_len = c * h * w;
        let mut values = vec![0f32; chunk.min(n) * image_len];
        let mut pixels = Vec::new();
        let mut img = Image::default();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let chunk_pixels = match &self.images {
                TestImages::Decoded(d) => &d.pixels()[start * image_len..(start + len) * image_len],
                TestImages::Files { .. } => {
                    pixels.resize(len * image_len, 0);
                    self.images_into(start..start + len, &mut pixels).map_err(candle_core::Error::wrap)?;
                    &pixels[..]
                }
            };
            for (k, px) in chunk_pixels.chunks_exact(image_len).enumerate() {
                img.set_pixels(w, h, c, px).map_err(candle_core::Error::wrap)?;
                img.normalize_chw_into(&self.norm.mean, &self.norm.std, &mut values[k * image_len..(k + 1) * image_len]);
            }
            let x = device::upload_slice("test images", &values[..len * image_len], (len, c, h, w), net.device())?;
            f(start..start + len, &net.forward(&x, Mode::Eval)?)?;
            start += len;
        }
        Ok(())
    }
}

impl TestImages {
    fn labelled(&self) -> &dyn Labelled {
        match self {
            TestImages::Decoded(d) => d,
            TestImages::Files { files, .. } => files,
        }
    }
}

impl Labelled for TestSet {
    fn name(&self) -> &str {
        self.images.labelled().name()
    }
    fn labels(&self) -> &[u16] {
        self.images.labelled().labels()
    }
    fn classes(&self) -> &[String] {
        self.images.labelled().classes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use protocon::model::{Arch, NetworkOptions};

    /// Chunked evaluation with per-chunk normalisation gives the confusion matrix of one
    /// forward pass over the whole set, normalised independently.
    #[test]
    fn evaluation_in_chunks_equals_one_pass_over_the_normalised_set() {
        let (n, h, w, c, classes) = (23, 32, 32, 3, 10);
        // Each image a flat colour of its own plus a little texture.
        let pixels: Vec<u8> = (0..n * h * w * c)
            .map(|i| {
                let (img, ch) = (i / (h * w * c), i % c);
                ((img * [71, 131, 29][ch] + (i / c) % 7 * 5) % 256) as u8
            })
            .collect();
        let labels: Vec<u16> = (0..n).map(|i| (i * 3 % classes) as u16).collect();
        let names = (0..classes).map(|k| k.to_string()).collect();
        let data = Dataset::new("t", (h, w, c), pixels.clone(), labels.clone(), names).unwrap();
        let norm = Normalization { mean: vec![0.4, 0.5, 0.6], std: vec![0.2, 0.25, 0.3] };
        let options = NetworkOptions { bn_momentum: 0.1, ..Default::default() };
        let net = Network::build(Arch::CnnSmall, classes, None, 3, &Device::Cpu, &options).unwrap();

        let mut values = vec![0f32; n * c * h * w];
        for (i, px) in pixels.chunks_exact(h * w * c).enumerate() {
            for (p, rgb) in px.chunks_exact(c).enumerate() {
                for ch in 0..c {
                    values[i * c * h * w + ch * h * w + p] = (rgb[ch] as f32 / 255.0 - norm.mean[ch]) / norm.std[ch];
                }
            }
        }
        let x = Tensor::from_vec(values, (n, c, h, w), &Device::Cpu).unwrap();
        let pred: Vec<u32> = net.forward(&x, Mode::Eval).unwrap().logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        let mut want = vec![vec![0u64; classes]; classes];
        for (p, &y) in pred.iter().zip(&labels) {
            want[y as usize][*p as usize] += 1;
        }
        assert!(pred.iter().any(|&p| p != pred[0]), "a constant prediction would not test the order: {pred:?}");

        let test = TestSet::new(data, norm);
        for chunk in [5, 23, 500] {
            let eval = test.evaluate(&net, chunk).unwrap();
            assert_eq!(eval.confusion, want, "chunk {chunk}");
            let correct: u64 = (0..classes).map(|k| want[k][k]).sum();
            assert_eq!(eval.accuracy, correct as f64 / n as f64);
        }
    }
}
