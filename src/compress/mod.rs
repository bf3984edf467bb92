//! Compression: the cost model (MACs and memory per layer).

pub mod cost;
pub mod linalg;
