//! Where the augmentation stages get a sample's pixels: an in-memory [`Dataset`], or an image
//! folder's [`ImageFiles`] decoded each time a sample is visited.
//!
//! Decoding per visit is what lets a data set larger than memory train, and it lets a view's
//! first op (a RandomResizedCrop) say which box it will read before the file is decoded: a
//! JPEG then stops decoding below it and decodes only a window of columns around it
//! ([`codec::decode_region_into`]), with the same pixels there as a full decode.

use crate::augment::{codec, Image};
use protocon::data::jpeg::Region;
use protocon::data::{Dataset, ImageFiles, Labelled};
use protocon::StageError;

/// A labelled set of images the view stages can load one sample of at a time.
pub trait Samples: Labelled + Send + Sync {
    /// Puts sample `index` into `out`. Only `region(width, height)` need hold the image,
    /// where `width x height` is the sample's size: `out` may be a window of columns around it
    /// ([`Image::window`]) whose rows below it are unspecified. An in-memory set copies the
    /// whole image.
    ///
    /// `bytes` is scratch space for the encoded file, kept between calls.
    fn load(
        &self,
        index: usize,
        region: &mut dyn FnMut(usize, usize) -> Region,
        bytes: &mut Vec<u8>,
        out: &mut Image,
    ) -> Result<(), StageError>;
}

impl Samples for Dataset {
    fn load(
        &self,
        index: usize,
        _region: &mut dyn FnMut(usize, usize) -> Region,
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
        region: &mut dyn FnMut(usize, usize) -> Region,
        bytes: &mut Vec<u8>,
        out: &mut Image,
    ) -> Result<(), StageError> {
        self.read_into(index, bytes)?;
        codec::decode_region_into(bytes, out, FILE_CHANNELS, region)
            .map_err(|e| StageError::msg(format!("{}: {e}", self.path(index).display())))
    }
}
