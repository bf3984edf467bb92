//! The wgpu runtime: context, tensors, buffer pool, kernel table, encoders and launch helpers.

mod context;
mod encoder;
pub mod kernels;
pub mod launch;
pub mod pool;
mod tensor;

pub use context::{list_adapters, pick_adapter, AdapterSummary, Gpu, GpuLimits};
pub use encoder::{Bind, Encoder, Record, Step, Steps};
pub use tensor::{to_array, Element, GpuTensor};
