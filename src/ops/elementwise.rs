//! Elementwise kernels (`shaders/elementwise.wgsl`): copy, fill, unary activations,
//! broadcasting binary ops, per-channel affine maps and strided copies.
//! The `*_into` forms write a given output tensor (the executor's preallocated buffers).

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, grid_stride, linear_chunks, WG};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::{Binary, Unary};
use crate::graph::shape::{broadcast_shape, broadcast_strides};

use Access::{Read, ReadWrite, Uniform};

static COPY: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "copy",
    bindings: &[Uniform, Read, ReadWrite],
};
static FILL: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "fill",
    bindings: &[Uniform, ReadWrite],
};
static FILL4: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "fill4",
    bindings: &[Uniform, ReadWrite],
};
static UNARY: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "unary_op",
    bindings: &[Uniform, Read, ReadWrite],
};
static AFFINE: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "channel_affine",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static BINARY: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "binary_op",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static STRIDED: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "strided_copy",
    bindings: &[Uniform, Read, ReadWrite],
};

/// Most dims a broadcasting or strided kernel handles.
pub const MAX_DIMS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    step: u32,
    _pad0: u32,
    inner: u32,
    channels: u32,
    base: u32,
    alpha: f32,
    beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct NdParams {
    n: u32,
    ndim: u32,
    runs: u32,
    step: u32,
    a_off: u32,
    y_off: u32,
    _pad: [u32; 2],
    dims: [u32; MAX_DIMS],
    sa: [u32; MAX_DIMS],
    sb: [u32; MAX_DIMS],
}

/// The shader's op code and parameters of a unary activation.
pub(crate) fn unary_code(f: Unary) -> (u32, f32, f32) {
    match f {
        Unary::Relu => (0, 0.0, 0.0),
        Unary::Clip(lo, hi) => (1, lo, hi),
        Unary::LeakyRelu(a) => (2, a, 0.0),
        Unary::Sigmoid => (3, 0.0, 0.0),
        Unary::HardSigmoid(a, b) => (4, a, b),
        Unary::HardSwish => (5, 0.0, 0.0),
        Unary::Tanh => (6, 0.0, 0.0),
        Unary::Erf => (7, 0.0, 0.0),
        Unary::Gelu => (8, 0.0, 0.0),
        Unary::GeluTanh => (34, 0.0, 0.0),
        Unary::Exp => (9, 0.0, 0.0),
        Unary::Sqrt => (10, 0.0, 0.0),
        Unary::Neg => (11, 0.0, 0.0),
        Unary::Abs => (12, 0.0, 0.0),
        Unary::Sign => (13, 0.0, 0.0),
        Unary::Floor => (14, 0.0, 0.0),
        Unary::Ceil => (15, 0.0, 0.0),
        Unary::Round => (16, 0.0, 0.0),
        Unary::Reciprocal => (17, 0.0, 0.0),
        Unary::Log => (18, 0.0, 0.0),
        Unary::Softplus => (19, 0.0, 0.0),
        Unary::Softsign => (20, 0.0, 0.0),
        Unary::Elu(a) => (21, a, 0.0),
        Unary::Selu(a, g) => (22, a, g),
        Unary::Celu(a) => (23, a, 0.0),
        Unary::Mish => (24, 0.0, 0.0),
        Unary::Shrink(b, l) => (25, b, l),
        Unary::ThresholdedRelu(a) => (26, a, 0.0),
        Unary::Not => (27, 0.0, 0.0),
        Unary::IsNaN => (28, 0.0, 0.0),
        Unary::IsInf { positive, negative } => (29, positive as u8 as f32, negative as u8 as f32),
        Unary::Sin => (30, 0.0, 0.0),
        Unary::Cos => (31, 0.0, 0.0),
    }
}

/// A conversion Cast makes between element types carried as f32 (`graph::ElemType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convert {
    /// To an integer type: toward zero (NaN and values past the type's range are undefined in
    /// ONNX; they stay as the f32 gives them).
    Trunc,
    /// To bool: 1 where x is not 0 (NaN included), else 0.
    ToBool,
}

/// `y = convert(x)` elementwise.
pub fn convert_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    c: Convert,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    check_f32("cast", "x", x)?;
    check_same_len("cast", x, y)?;
    let op = match c {
        Convert::Trunc => 32,
        Convert::ToBool => 33,
    };
    flat(
        enc,
        gpu,
        &UNARY,
        &[("UNARY_OP", op as f64)],
        x,
        None,
        y,
        Params::default(),
    )
}

/// The shader's op code of a binary op.
pub(crate) fn binary_code(op: Binary) -> u32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::PRelu => 4,
        Binary::Max => 5,
        Binary::Min => 6,
        Binary::Pow => 7,
        Binary::Equal => 8,
        Binary::Less => 9,
        Binary::Greater => 10,
        Binary::LessOrEqual => 11,
        Binary::GreaterOrEqual => 12,
        Binary::And => 13,
        Binary::Or => 14,
        Binary::Xor => 15,
        Binary::Mod { fmod: true } => 16,
        Binary::Mod { fmod: false } => 17,
    }
}

/// The shader's code of integer division (the quotient toward zero), for Div of integers.
pub(crate) const DIV_TRUNC: u32 = 18;

fn check_f32(op: &'static str, name: &str, t: &GpuTensor) -> Result<()> {
    t.expect_dtype(op, name, DType::F32)
}

fn check_same_len(op: &'static str, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "output".into(),
            expected: format!("{} elements", x.len()),
            got: y.shape().to_vec(),
        });
    }
    Ok(())
}

/// Records a flat kernel (copy, fill, unary, affine) over `x` in binding-sized chunks.
#[allow(clippy::too_many_arguments)]
fn flat(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    constants: &[(&'static str, f64)],
    x: &GpuTensor,
    extra: Option<&GpuTensor>,
    y: &GpuTensor,
    mut params: Params,
) -> Result<()> {
    let limits = gpu.limits();
    for ch in linear_chunks(y.len() as u64, &limits) {
        let range = |t| Bind::Range {
            tensor: t,
            offset: ch.start * 4,
            size: ch.len * 4,
        };
        let (grid, step) = grid_stride(ch.len, limits.max_groups)?;
        params.n = ch.len as u32;
        params.step = step as u32;
        params.base = ch.start as u32;
        let mut binds = Vec::with_capacity(3);
        binds.push(range(x));
        binds.extend(extra.map(Bind::Whole));
        binds.push(range(y));
        enc.dispatch(gpu, kernel, constants, &params, &binds, grid)?;
    }
    Ok(())
}

/// Copies an f32 tensor with a compute kernel (the bandwidth roofline of the other
/// memory-bound kernels; `Encoder::copy` is the DMA copy).
pub fn copy(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor) -> Result<GpuTensor> {
    check_f32("copy", "x", x)?;
    let out = gpu.empty(x.shape(), DType::F32)?;
    flat(enc, gpu, &COPY, &[], x, None, &out, Params::default())?;
    Ok(out)
}

/// Sets every element of `y` to `value` (by vectors of 4 where its length allows).
pub fn fill_into(enc: &mut impl Record, gpu: &Gpu, y: &GpuTensor, value: f32) -> Result<()> {
    check_f32("fill", "y", y)?;
    let limits = gpu.limits();
    let vec4 = y.len() % 4 == 0;
    let (kernel, per) = if vec4 { (&FILL4, 4) } else { (&FILL, 1) };
    for ch in linear_chunks(y.len() as u64, &limits) {
        // Chunks start on the offset alignment, a multiple of 4 elements.
        let (grid, step) = grid_stride(ch.len / per, limits.max_groups)?;
        let params = Params {
            n: (ch.len / per) as u32,
            step: step as u32,
            alpha: value,
            ..Default::default()
        };
        let bind = Bind::Range {
            tensor: y,
            offset: ch.start * 4,
            size: ch.len * 4,
        };
        enc.dispatch(gpu, kernel, &[], &params, &[bind], grid)?;
    }
    Ok(())
}

/// `y = f(x)` elementwise.
pub fn unary_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    f: Unary,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    check_f32("unary", "x", x)?;
    check_same_len("unary", x, y)?;
    let (op, alpha, beta) = unary_code(f);
    flat(
        enc,
        gpu,
        &UNARY,
        &[("UNARY_OP", op as f64)],
        x,
        None,
        y,
        Params {
            alpha,
            beta,
            ..Default::default()
        },
    )
}

/// `y = x * scale[c] + shift[c]` with channel `c = (i / inner) % channels` (`ab` = `[channels, 2]`).
pub fn channel_affine_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    ab: &GpuTensor,
    inner: usize,
    y: &GpuTensor,
) -> Result<()> {
    check_f32("channel_affine", "x", x)?;
    check_same_len("channel_affine", x, y)?;
    let channels = ab.len() / 2;
    if channels == 0 || inner == 0 || x.len() % (channels * inner) != 0 {
        return Err(Error::ShapeMismatch {
            op: "channel_affine",
            tensor: "x".into(),
            expected: format!("a multiple of {channels} channels x {inner}"),
            got: x.shape().to_vec(),
        });
    }
    flat(
        enc,
        gpu,
        &AFFINE,
        &[],
        x,
        Some(ab),
        y,
        Params {
            inner: inner as u32,
            channels: channels as u32,
            ..Default::default()
        },
    )
}

fn check_nd(op: &'static str, gpu: &Gpu, shape: &[usize], tensors: &[&GpuTensor]) -> Result<()> {
    if shape.len() > MAX_DIMS {
        return Err(Error::invalid(
            op,
            "rank",
            shape.len(),
            format!("at most {MAX_DIMS} dims"),
        ));
    }
    for t in tensors {
        if t.bytes() > gpu.limits().max_binding {
            return Err(Error::TooLarge {
                op,
                tensor: format!("{t:?}"),
                bytes: t.bytes(),
                limit: gpu.limits().max_binding,
                which: "storage binding",
            });
        }
    }
    Ok(())
}

fn pack(v: &[u32]) -> [u32; MAX_DIMS] {
    let mut out = [0u32; MAX_DIMS];
    out[..v.len()].copy_from_slice(v);
    out
}

/// The iteration shape with its size-1 dims dropped and neighbouring dims merged wherever both
/// layouts step through them as one (`s[d] == s[d + 1] * dims[d + 1]`): a same-shape binary op
/// becomes one dim, a per-channel one three. Never empty (a scalar is `[1]`).
fn collapse(dims: &[usize], layouts: [&[usize]; 2]) -> (Vec<usize>, [Vec<usize>; 2]) {
    let mut out: Vec<usize> = Vec::new();
    let mut st: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for (d, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let merges = out.last().is_some_and(|_| {
            (0..2).all(|k| *st[k].last().expect("same length") == layouts[k][d] * n)
        });
        if merges {
            *out.last_mut().expect("checked") *= n;
            for k in 0..2 {
                *st[k].last_mut().expect("checked") = layouts[k][d];
            }
        } else {
            out.push(n);
            for k in 0..2 {
                st[k].push(layouts[k][d]);
            }
        }
    }
    if out.is_empty() {
        return (vec![1], [vec![0], vec![0]]);
    }
    (out, st)
}

/// The `[dims, strides a, strides b]` of a collapsed strided kernel, its run length, run
/// count and grid-stride launch.
struct NdLaunch {
    params: NdParams,
    run: u32,
    grid: [u32; 3],
}

fn nd_launch(gpu: &Gpu, dims: &[usize], layouts: [&[usize]; 2]) -> Result<NdLaunch> {
    let n: usize = dims.iter().product();
    let (dims, [sa, sb]) = collapse(dims, layouts);
    // On CPU adapters one run of 32 per lane (1.1-1.7x faster than runs of 8 on lavapipe);
    // on GPUs a grid-stride loop over single elements.
    let (run, runs, (grid, step)) = if gpu.cpu_kernels() {
        let runs = (n as u64).div_ceil(32);
        let grid = grid_1d(runs.div_ceil(WG).max(1), gpu.limits().max_groups)?;
        (32, runs, (grid, grid[0] as u64 * grid[1] as u64 * WG))
    } else {
        let n = n as u64;
        (1, n, grid_stride(n, gpu.limits().max_groups)?)
    };
    let to32 = |v: &[usize]| pack(&v.iter().map(|&d| d as u32).collect::<Vec<_>>());
    Ok(NdLaunch {
        params: NdParams {
            n: n as u32,
            ndim: dims.len() as u32,
            runs: runs as u32,
            step: step as u32,
            dims: to32(&dims),
            sa: to32(&sa),
            sb: to32(&sb),
            ..Default::default()
        },
        run,
        grid,
    })
}

/// `y = a op b` with NumPy broadcasting; `y` has the broadcast shape.
pub fn binary_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    op: Binary,
    a: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    binary_code_into(enc, gpu, binary_code(op), a, b, y)
}

/// `y = a / b` toward zero (Div of integers carried as f32) with NumPy broadcasting.
pub fn div_trunc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    binary_code_into(enc, gpu, DIV_TRUNC, a, b, y)
}

fn binary_code_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    code: u32,
    a: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "binary";
    check_f32(OP, "a", a)?;
    check_f32(OP, "b", b)?;
    let out = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| Error::ShapeMismatch {
        op: OP,
        tensor: "b".into(),
        expected: format!("broadcastable with {:?}", a.shape()),
        got: b.shape().to_vec(),
    })?;
    if out.iter().product::<usize>() != y.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "y".into(),
            expected: format!("{out:?}"),
            got: y.shape().to_vec(),
        });
    }
    check_nd(OP, gpu, &out, &[a, b, y])?;
    let l = nd_launch(
        gpu,
        &out,
        [
            &broadcast_strides(a.shape(), out.len()),
            &broadcast_strides(b.shape(), out.len()),
        ],
    )?;
    enc.dispatch(
        gpu,
        &BINARY,
        &[("BINARY_OP", code as f64), ("RUN", l.run as f64)],
        &l.params,
        &[Bind::Whole(a), Bind::Whole(b), Bind::Whole(y)],
        l.grid,
    )
}

/// A strided view for [`strided_copy_into`]: element offset and per-dim strides.
#[derive(Clone, Debug)]
pub struct StridedView {
    pub offset: usize,
    pub strides: Vec<usize>,
}

/// Errors unless the `dims`-shaped regions `x[src]` and `y[dst]` (`dims` non-empty, no size
/// 0) lie inside their tensors.
pub(crate) fn check_regions(
    op: &'static str,
    x: &GpuTensor,
    src: &StridedView,
    y: &GpuTensor,
    dst: &StridedView,
    dims: &[usize],
) -> Result<()> {
    let last = |v: &StridedView| {
        v.offset
            + dims
                .iter()
                .zip(&v.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
    };
    if last(src) >= x.len() || last(dst) >= y.len() {
        return Err(Error::invalid(
            op,
            "region",
            format!("{dims:?}"),
            "reaches past the end of a tensor",
        ));
    }
    Ok(())
}

/// Copies the `dims`-shaped region `x[src]` into `y[dst]` (transpose, slice, concat, pad …).
pub fn strided_copy_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    src: &StridedView,
    y: &GpuTensor,
    dst: &StridedView,
    dims: &[usize],
) -> Result<()> {
    const OP: &str = "strided_copy";
    check_f32(OP, "x", x)?;
    check_nd(OP, gpu, dims, &[x, y])?;
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    check_regions(OP, x, src, y, dst, dims)?;
    let mut l = nd_launch(gpu, dims, [&src.strides, &dst.strides])?;
    l.params.a_off = src.offset as u32;
    l.params.y_off = dst.offset as u32;
    enc.dispatch(
        gpu,
        &STRIDED,
        &[("RUN", l.run as f64)],
        &l.params,
        &[Bind::Whole(x), Bind::Whole(y)],
        l.grid,
    )
}
