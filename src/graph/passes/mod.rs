//! Graph rewrites: each pass takes a resolved graph and returns what it changed.

pub mod bn_fold;
pub mod cle;
