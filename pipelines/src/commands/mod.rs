//! The `train` and `eval` subcommands (argument parsing and printing only).

pub mod eval;
pub mod train;
