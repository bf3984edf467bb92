//! qforge: quantize and compress trained neural networks on any GPU through wgpu.
//!
//! The crate is laid out by what each part does (ARCHITECTURE.md has the layers and which may
//! import which):
//! * [`graph`]: the IR, the op vocabulary (attributes, shape rules), ONNX import/export, passes.
//! * [`gpu`]: the wgpu runtime (context, tensors, buffer pool, kernel table, submission).
//! * [`ops`]: one function per WGSL kernel, recording into an encoder; kernel variants per
//!   adapter class picked in one place per op.
//! * [`reference`]: plain CPU implementations of every kernel, the oracle for tests and the
//!   baseline in benches.
//! * [`exec`]: lowering a graph to a plan, memory planning, the batch runner.
//! * [`quant`], [`compress`]: the quantization and compression pipelines.
//! * [`jobs`]: the CLI's subcommands as library calls; [`eval`], [`report`], [`data`], [`files`].
//!
//! ```no_run
//! use qforge::{gpu::Gpu, ops, quant::{Encoding, QuantKind}};
//! # fn main() -> qforge::Result<()> {
//! let gpu = Gpu::new()?;
//! let x = gpu.upload_slice(&[4], &[-1.0f32, 0.1, 0.5, 2.0])?;
//! let q = Encoding::from_ranges(&[-1.0], &[2.0], 8, QuantKind::Asymmetric, None)?;
//! let mut enc = gpu.encoder();
//! let y = ops::quant::fake_quant(&mut enc, &gpu, &x, &q.grid()?)?;
//! gpu.submit(enc)?;
//! let y = gpu.download::<f32>(&y)?;
//! # Ok(()) }
//! ```

pub mod compress;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod files;
pub mod gpu;
pub mod graph;
pub mod jobs;
pub mod ops;
pub mod quant;
pub mod reference;
pub mod report;
pub mod train;

pub use error::{DType, Error, Result};
