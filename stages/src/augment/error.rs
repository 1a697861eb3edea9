//! The one error type of the augmentation module.

/// What can go wrong while building augmentation chains or handling images.
///
/// Applying an augmentation never fails: every op is total on any valid [`Image`], so
/// errors only come from inputs (buffers, encoded files) and configuration.
///
/// [`Image`]: super::Image
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AugmentError {
    // ---- images ----
    /// A pixel buffer whose length is not `width * height * channels`.
    #[error("pixel buffer of {len} bytes does not match {width}x{height}x{channels}")]
    BufferSize { width: usize, height: usize, channels: usize, len: usize },
    /// Augmentation works on gray (1 channel) or RGB (3 channels) pixels.
    #[error("unsupported channel count {0}: augmentation works on 1 (gray) or 3 (RGB) channels")]
    Channels(usize),
    /// An image with no pixels.
    #[error("empty image ({width}x{height})")]
    Empty { width: usize, height: usize },
    /// An encoded image (JPEG, PNG) that could not be decoded.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// An image that could not be encoded.
    #[error("cannot encode image: {0}")]
    Encode(String),

    // ---- configuration ----
    /// A chain names an augmentation that is not registered.
    #[error("unknown augmentation `{name}`; known: {}", known.join(", "))]
    UnknownOp { name: String, known: Vec<String> },
    /// An augmentation's parameters are missing, misspelt or out of range.
    #[error("augmentation `{op}`: {message}")]
    BadParams { op: String, message: String },
    /// The augmentation configuration itself is malformed.
    #[error("augmentation config: {0}")]
    Config(String),
}

impl AugmentError {
    /// Shorthand for [`AugmentError::BadParams`].
    pub fn bad_params(op: impl Into<String>, message: impl Into<String>) -> Self {
        AugmentError::BadParams { op: op.into(), message: message.into() }
    }
}

impl From<AugmentError> for protocon::StageError {
    fn from(error: AugmentError) -> Self {
        protocon::StageError::failed(error)
    }
}
