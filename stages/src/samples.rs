//! Where the augmentation stages get a sample's pixels: an in-memory [`Dataset`], or an image
//! folder's [`ImageFiles`] decoded each time a sample is visited.
//!
//! Decoding per visit is what lets a data set larger than memory train, and it lets a view's
//! first op (a RandomResizedCrop) say which rows it will read before the file is decoded: a
//! JPEG then stops decoding below them ([`codec::decode_top_into`]), with the same pixels as a
//! full decode.

use crate::augment::{codec, Image};
use protocon::data::{Dataset, ImageFiles, Labelled};
use protocon::StageError;

/// A labelled set of images the view stages can load one sample of at a time.
pub trait Samples: Labelled + Send + Sync {
    /// Puts sample `index` into `out`. Only rows `0..rows(width, height)` need hold the
    /// image (the rest is unspecified), where `width x height` is the sample's size; an
    /// in-memory set copies the whole image.
    ///
    /// `bytes` is scratch space for the encoded file, kept between calls.
    fn load(
        &self,
        index: usize,
        rows: &mut dyn FnMut(usize, usize) -> usize,
        bytes: &mut Vec<u8>,
        out: &mut Image,
    ) -> Result<(), StageError>;
}

impl Samples for Dataset {
    fn load(
        &self,
        index: usize,
        _rows: &mut dyn FnMut(usize, usize) -> usize,
        _bytes: &mut Vec<u8>,
        out: &mut Image,
    ) -> Result<(), StageError> {
        out.set_pixels(self.width(), self.height(), self.channels(), self.image(index))?;
        Ok(())
    }
}

/// Channels of every sample of an image folder decoded per visit: RGB, grey files replicated
/// to three channels, as the folder reader does at load.
pub const FILE_CHANNELS: usize = 3;

/// An image folder decoded per visit, each file at its own size.
impl Samples for ImageFiles {
    fn load(
        &self,
        index: usize,
        rows: &mut dyn FnMut(usize, usize) -> usize,
        bytes: &mut Vec<u8>,
        out: &mut Image,
    ) -> Result<(), StageError> {
        self.read_into(index, bytes)?;
        codec::decode_top_into(bytes, out, FILE_CHANNELS, rows)
            .map_err(|e| StageError::msg(format!("{}: {e}", self.path(index).display())))
    }
}
