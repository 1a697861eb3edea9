//! The `train`, `eval`, `plot` and `compare` subcommands (argument parsing and printing only).

pub mod compare;
pub mod eval;
pub mod plot;
pub mod progress;
pub mod train;
