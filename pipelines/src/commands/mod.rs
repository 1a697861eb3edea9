//! The `train`, `eval`, `inspect`, `plot` and `compare` subcommands (argument parsing and printing only).

pub mod compare;
pub mod eval;
pub mod inspect;
pub mod plot;
pub mod progress;
pub mod train;
