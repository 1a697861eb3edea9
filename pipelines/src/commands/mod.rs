//! The `train`, `eval` and `plot` subcommands (argument parsing and printing only).

pub mod eval;
pub mod plot;
pub mod train;
