//! Row kernels over the last axis of a `[rows, len]` view (`shaders/reduce.wgsl`): softmax
//! and log-softmax, hardmax, the reductions (mean, sum, max, min, product, L1, L2, log-sum,
//! log-sum-exp, sum of squares), argmax/argmin, top-k, cumulative sums and the normalization
//! of each row (LayerNorm, InstanceNorm, GroupNorm, MeanVarianceNormalization).

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

static REDUCE: Kernel = Kernel {
    family: Family::Reduce,
    entry: "reduce_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static ARG: Kernel = Kernel {
    family: Family::Reduce,
    entry: "arg_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static LOG_SOFTMAX: Kernel = Kernel {
    family: Family::Reduce,
    entry: "log_softmax_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static HARDMAX: Kernel = Kernel {
    family: Family::Reduce,
    entry: "hardmax_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static TOPK: Kernel = Kernel {
    family: Family::Reduce,
    entry: "topk_rows",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite],
};
static CUMSUM: Kernel = Kernel {
    family: Family::Reduce,
    entry: "cumsum_rows",
    bindings: &[Uniform, Read, ReadWrite],
};
static NORMALIZE: Kernel = Kernel {
    family: Family::Reduce,
    entry: "normalize_rows",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    /// Per-kernel flags (see each kernel).
    flags: [u32; 2],
}

pub use crate::graph::attrs::Reduce;

fn reduce_code(r: Reduce) -> u32 {
    match r {
        Reduce::Sum => 0,
        Reduce::Max => 2,
        Reduce::Min => 3,
        Reduce::Prod => 4,
        Reduce::L1 => 5,
        Reduce::L2 => 6,
        Reduce::LogSum => 7,
        Reduce::LogSumExp => 8,
        Reduce::SumSquare => 9,
    }
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
    launch_with(enc, gpu, kernel, &[], [0, 0], x, len, &[y], out_per_row)
}

/// Records a row kernel: `x` as rows of `len`, each output `out_per_row` values per row.
#[allow(clippy::too_many_arguments)]
fn launch_with(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    constants: &[(&'static str, f64)],
    flags: [u32; 2],
    x: &GpuTensor,
    len: usize,
    outs: &[&GpuTensor],
    out_per_row: usize,
) -> Result<()> {
    let y = outs[0];
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
    for t in std::iter::once(x).chain(outs.iter().copied()) {
        if t.bytes() > gpu.limits().max_binding {
            return Err(Error::TooLarge {
                op: kernel.entry,
                tensor: format!("{t:?}"),
                bytes: t.bytes(),
                limit: gpu.limits().max_binding,
                which: "storage binding",
            });
        }
    }
    let params = Params {
        rows: rows as u32,
        len: len as u32,
        flags,
    };
    let mut binds = vec![Bind::Whole(x)];
    binds.extend(outs.iter().map(|t| Bind::Whole(t)));
    // One workgroup per row, or one thread per row (cumulative sums).
    let groups = if std::ptr::eq(kernel, &CUMSUM) {
        (rows as u64).div_ceil(256)
    } else {
        rows as u64
    };
    enc.dispatch(
        gpu,
        kernel,
        constants,
        &params,
        &binds,
        grid_1d(groups, gpu.limits().max_groups)?,
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

/// Each row of `len` reduced to one value by `op` (`len` > 0; an empty reduction is
/// [`Reduce::empty`], which the caller fills).
pub fn reduce_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    op: Reduce,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
) -> Result<()> {
    let c = [("REDUCE_OP", reduce_code(op) as f64)];
    launch_with(enc, gpu, &REDUCE, &c, [0, 0], x, len, &[y], 1)
}

/// The index (as f32) of each row's maximum, or minimum with `min`; the first of equal values,
/// or the last with `last`; a NaN wins (NumPy's rule).
pub fn arg_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    min: bool,
    last: bool,
    y: &GpuTensor,
) -> Result<()> {
    let flags = [min as u32, last as u32];
    launch_with(enc, gpu, &ARG, &[], flags, x, len, &[y], 1)
}

/// log(softmax) over rows of `len`.
pub fn log_softmax_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
) -> Result<()> {
    launch(enc, gpu, &LOG_SOFTMAX, x, len, y, len)
}

/// 1 at each row's first maximum, 0 elsewhere.
pub fn hardmax_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    y: &GpuTensor,
) -> Result<()> {
    launch(enc, gpu, &HARDMAX, x, len, y, len)
}

/// The `k` largest (or smallest) values of each row in order, equal values by index, NaN
/// counted largest; values into `values` and their indices (as f32) into `indices`, both
/// `[rows, k]`.
#[allow(clippy::too_many_arguments)]
pub fn topk_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    k: usize,
    smallest: bool,
    values: &GpuTensor,
    indices: &GpuTensor,
) -> Result<()> {
    if k == 0 || k > len {
        return Err(Error::invalid(
            "topk",
            "k",
            k,
            format!("rows have {len} elements"),
        ));
    }
    let flags = [smallest as u32, k as u32];
    launch_with(enc, gpu, &TOPK, &[], flags, x, len, &[values, indices], k)
}

/// Cumulative sums along rows, in order (`exclusive`: each sum before its element;
/// `reverse`: from the row's end). One thread walks each row, so a row may be at most
/// [`crate::gpu::launch::LOOP_BUDGET`] long.
pub fn cumsum_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    exclusive: bool,
    reverse: bool,
    y: &GpuTensor,
) -> Result<()> {
    if len as u64 > crate::gpu::launch::LOOP_BUDGET {
        return Err(Error::invalid(
            "cumsum",
            "axis length",
            len,
            format!("at most {} along the axis", crate::gpu::launch::LOOP_BUDGET),
        ));
    }
    let flags = [exclusive as u32 | (reverse as u32) << 1, 0];
    launch_with(enc, gpu, &CUMSUM, &[], flags, x, len, &[y], len)
}

/// How [`normalize_rows_into`] divides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// `(x - mean) / sqrt(var + eps)` (LayerNorm, InstanceNorm, GroupNorm).
    Variance,
    /// `(x - mean) / (sqrt(var) + eps)` (MeanVarianceNormalization).
    StdDev,
}

/// Each row normalized to zero mean and unit variance (population variance, two passes);
/// each row's mean and reciprocal deviation into `stats` (`[rows, 2]`).
#[allow(clippy::too_many_arguments)]
pub fn normalize_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    len: usize,
    norm: Norm,
    eps: f32,
    y: &GpuTensor,
    stats: &GpuTensor,
) -> Result<()> {
    if stats.len() != 2 * (x.len() / len.max(1)) {
        return Err(Error::ShapeMismatch {
            op: "normalize",
            tensor: "stats".into(),
            expected: format!("2 values per row of {len}"),
            got: stats.shape().to_vec(),
        });
    }
    let flags = [(norm == Norm::StdDev) as u32, eps.to_bits()];
    launch_with(enc, gpu, &NORMALIZE, &[], flags, x, len, &[y, stats], len)
}
