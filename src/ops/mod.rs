//! One Rust function per kernel: each validates its inputs, records into a
//! [`Record`](crate::gpu::Record) (an encoder, or a plan's prepared steps) and returns its
//! outputs (or writes the `*_into` output it is given). Ops never submit or wait.

pub mod calib;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod gemm;
pub mod grad;
pub mod index;
pub mod linalg;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod train;
