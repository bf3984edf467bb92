//! Elementwise kernels (`shaders/elementwise.wgsl`).

use crate::error::{DType, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_stride, linear_chunks};
use crate::gpu::{Bind, Encoder, Gpu, GpuTensor};

static COPY: Kernel = Kernel { family: Family::Elementwise, entry: "copy", bindings: &[Access::Uniform, Access::Read, Access::ReadWrite] };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    step: u32,
    _pad: [u32; 2],
}

/// Copies an f32 tensor with a compute kernel (the bandwidth roofline of the other
/// memory-bound kernels; `Encoder::copy` is the DMA copy).
pub fn copy(enc: &mut Encoder, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    x.expect_dtype("copy", "x", DType::F32)?;
    let out = gpu.empty(x.shape(), DType::F32)?;
    let limits = gpu.limits();
    for ch in linear_chunks(x.len() as u64, &limits) {
        let range = |t| Bind::Range { tensor: t, offset: ch.start * 4, size: ch.len * 4 };
        let (grid, step) = grid_stride(ch.len, limits.max_groups)?;
        let params = Params { n: ch.len as u32, step: step as u32, _pad: [0; 2] };
        enc.dispatch(gpu, &COPY, &[], &params, &[range(x), range(&out)], grid)?;
    }
    Ok(out)
}
