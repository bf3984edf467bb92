//! Subcommands of the `qforge` binary that have their own file.

pub mod compress;
