//! `protocon data ...`: fetch data sets, make label-scarce splits, preview augmentations.
//!
//! Thin wrappers: the work is in `protocon::data`, where the training command finds it too.
//! A new subcommand is one variant here, one `run` arm, and one file beside this one.

mod fetch;
mod preview;
mod split;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Put a data set's published files into the data directory, verified by SHA-256.
    Fetch(fetch::Args),
    /// Draw N labeled samples per class from a seed; write the labeled/unlabeled split as JSON.
    Split(split::Args),
    /// A PNG grid of augmented views (original, weak, strong...) with the ops listed beside.
    Preview(preview::Args),
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch(args) => fetch::run(args),
        DataCommand::Split(args) => split::run(args),
        DataCommand::Preview(args) => preview::run(args),
    }
}
