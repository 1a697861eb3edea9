//! Checkpoints: one safetensors file holding every tensor of the training state (model, EMA
//! model, optimizer buffers, ...) and a JSON document of the rest (step, best accuracy, ...)
//! in the safetensors metadata under the key `protocon`.
//!
//! Written atomically: to a temporary file in the same directory, flushed to disk, then renamed
//! over the old one. A crash or a failed run therefore leaves either the previous checkpoint or
//! the new one, never a torn file.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const META_KEY: &str = "protocon";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("checkpoint {path} has no `{META_KEY}` metadata: not written by protocon")]
    MissingMeta { path: PathBuf },
    #[error("checkpoint metadata is not a training run's: {reason}")]
    BadMeta { reason: String },
}

/// What a training checkpoint records besides its tensors, read in this one place
/// ([`Checkpoint::training_meta`]). Fields added later have defaults, so older checkpoints read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingMeta {
    /// Steps trained: a resumed run continues at this step.
    pub step: u64,
    /// The network's architecture, by name.
    #[serde(default)]
    pub arch: String,
    /// Best test accuracy of the raw and the EMA model so far.
    #[serde(default)]
    pub best_test_acc: f64,
    #[serde(default)]
    pub best_test_acc_ema: f64,
    /// The run's effective config (the pipelines' `RunConfig`, as JSON; `null` when absent).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Classes of the data set, and their names.
    #[serde(default)]
    pub classes: Option<usize>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// The per-channel normalisation the network was trained with.
    #[serde(default)]
    pub normalization: Option<NormalizationMeta>,
    /// Seconds of wall time trained up to this checkpoint (0 in checkpoints written before it was
    /// recorded).
    #[serde(default)]
    pub elapsed_s: f64,
}

/// Per-channel mean and standard deviation of the training images (values in 0..1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NormalizationMeta {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Tensors plus JSON state.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

impl Checkpoint {
    /// The checkpoint file's name in a run directory.
    pub const FILE_NAME: &'static str = "checkpoint.safetensors";

    /// `path` itself, or the checkpoint file of the run directory `path`: what `--resume`,
    /// `--checkpoint` and the other commands that read a checkpoint accept.
    pub fn file_of(path: &Path) -> PathBuf {
        if path.is_dir() {
            path.join(Self::FILE_NAME)
        } else {
            path.to_path_buf()
        }
    }

    /// Write to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io { path: path.to_owned(), source };
        let mut info = HashMap::new();
        info.insert(META_KEY.to_string(), self.meta.to_string());
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let data: Vec<(&str, &Tensor)> = names.iter().map(|n| (n.as_str(), &self.tensors[*n])).collect();
        let bytes = safetensors::serialize(data, Some(info))
            .map_err(|e| CheckpointError::Format { path: path.to_owned(), reason: e.to_string() })?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("safetensors.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The metadata as a training run wrote it.
    pub fn training_meta(&self) -> Result<TrainingMeta, CheckpointError> {
        serde_json::from_value(self.meta.clone()).map_err(|e| CheckpointError::BadMeta { reason: e.to_string() })
    }

    /// Read a checkpoint written by [`save`](Self::save).
    pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_owned(), source })?;
        let format = |reason: String| CheckpointError::Format { path: path.to_owned(), reason };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let meta_text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| CheckpointError::MissingMeta { path: path.to_owned() })?;
        let meta = serde_json::from_str(meta_text).map_err(|e| format(format!("metadata: {e}")))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| format(e.to_string()))?;
        Ok(Checkpoint { tensors, meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replacement() {
        let dir = std::env::temp_dir().join(format!("protocon-ckpt-{}", std::process::id()));
        let path = dir.join("checkpoint.safetensors");
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert("w".to_string(), Tensor::new(&[1.5f32, -2.0], &dev).unwrap());
        let ck = Checkpoint { tensors, meta: serde_json::json!({"step": 7}) };
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path, &dev).unwrap();
        assert_eq!(back.meta["step"], 7);
        let meta = back.training_meta().unwrap();
        assert_eq!((meta.step, meta.classes, meta.normalization), (7, None, None), "absent fields default");
        let no_step = Checkpoint { tensors: HashMap::new(), meta: serde_json::json!({"arch": "cnn-small"}) };
        assert!(no_step.training_meta().unwrap_err().to_string().contains("step"));
        assert_eq!(back.tensors["w"].to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert!(!path.with_extension("safetensors.tmp").exists());

        // A corrupt file is refused with its path, and does not disturb the good one.
        let bad = dir.join("bad.safetensors");
        std::fs::write(&bad, b"not a checkpoint").unwrap();
        let err = Checkpoint::load(&bad, &dev).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors") && err.contains("not a valid safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
