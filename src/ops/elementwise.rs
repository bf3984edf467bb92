//! Elementwise kernels (`shaders/elementwise.wgsl`).

use crate::error::{DType, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, linear_chunks, WG};
use crate::gpu::{Bind, Encoder, Gpu, GpuTensor};

static COPY: Kernel = Kernel { family: Family::Elementwise, entry: "copy", bindings: &[Access::Uniform, Access::Read, Access::ReadWrite] };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// Copies an f32 tensor with a compute kernel (the bandwidth roofline of the other
/// memory-bound kernels; `Encoder::copy` is the DMA copy).
pub fn copy(enc: &mut Encoder, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    x.expect_dtype("copy", "x", DType::F32)?;
    let out = gpu.empty(x.shape(), DType::F32)?;
    let limits = gpu.limits();
    for ch in linear_chunks(x.len() as u64, &limits) {
        let range = |t| Bind::Range { tensor: t, offset: ch.start * 4, size: ch.len * 4 };
        let params = Params { n: ch.len as u32, _pad: [0; 3] };
        enc.dispatch(gpu, &COPY, &[], &params, &[range(x), range(&out)], grid_1d(ch.len.div_ceil(WG), limits.max_groups)?)?;
    }
    Ok(out)
}
