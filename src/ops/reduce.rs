//! Row reductions over the last axis (`shaders/reduce.wgsl`): softmax and mean.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::grid_1d;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};

use Access::{Read, ReadWrite, Uniform};

static SOFTMAX: Kernel = Kernel {
    family: Family::Reduce,
    entry: "softmax_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static MEAN: Kernel = Kernel {
    family: Family::Reduce,
    entry: "mean_rows",
    bindings: &[Uniform, Read, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    _pad: [u32; 2],
}

fn launch(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
    out_per_row: usize,
) -> Result<()> {
    x.expect_dtype(kernel.entry, "x", DType::F32)?;
    if len == 0 || x.len() % len != 0 || y.len() != x.len() / len * out_per_row {
        return Err(Error::ShapeMismatch {
            op: kernel.entry,
            tensor: "x".into(),
            expected: format!("rows of {len}"),
            got: x.shape().to_vec(),
        });
    }
    let rows = x.len() / len;
    let params = Params {
        rows: rows as u32,
        len: len as u32,
        _pad: [0; 2],
    };
    enc.dispatch(
        gpu,
        kernel,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid_1d(rows as u64, gpu.limits().max_groups)?,
    )
}

/// Softmax over consecutive rows of `len` elements.
pub fn softmax_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
) -> Result<()> {
    launch(enc, gpu, &SOFTMAX, x, len, y, len)
}

/// Mean of consecutive rows of `len` elements (one value per row).
pub fn mean_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
) -> Result<()> {
    launch(enc, gpu, &MEAN, x, len, y, 1)
}
