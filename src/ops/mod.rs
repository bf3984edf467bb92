//! One Rust function per kernel: each validates its inputs, records into an [`Encoder`] it is
//! given and returns its outputs. Ops never submit or wait.
//!
//! [`Encoder`]: crate::gpu::Encoder

pub mod calib;
pub mod elementwise;
pub mod gemm;
pub mod quant;
