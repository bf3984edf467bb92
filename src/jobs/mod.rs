//! Whole commands as library calls: each takes its options, reads its inputs, writes its
//! outputs all at once ([`output::Outputs`]: never over an input, nothing half-written) and
//! returns what it measured. The command line and other front ends call these.

pub mod amp;
pub mod analyze;
pub mod compress;
pub mod finetune;
pub mod inspect;
pub mod output;
pub mod quantize;
pub mod run;
pub mod sets;

use crate::error::{Error, Result};

/// Hears how a long job is going.
pub trait Progress {
    /// A new phase begins.
    fn phase(&mut self, _what: &str) {}
    /// `done` of `total` steps of a phase are done.
    fn step(&mut self, _what: &str, _done: usize, _total: usize) {}
}

/// Progress that nobody watches.
pub struct Silent;

impl Progress for Silent {}

/// A count option that must be at least one.
pub(crate) fn at_least_one(op: &'static str, flag: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::invalid(op, flag, 0, "must be at least 1"));
    }
    Ok(())
}
