//! Fake quantization forward/backward and quantize-to-codes (`shaders/quant.wgsl`).

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, linear_chunks, ChannelView, ELEMS_PER_THREAD, WG};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::{AddGrids, IntGrid, QuantGrid};
use crate::ops::calib;

use Access::{Read, ReadWrite, Uniform};

static FAKE_QUANT: Kernel = Kernel {
    family: Family::Quant,
    entry: "fake_quant",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static CODES: Kernel = Kernel {
    family: Family::Quant,
    entry: "quantize_codes",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static REQUANT: Kernel = Kernel {
    family: Family::Quant,
    entry: "requant",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static REQUANT_F32: Kernel = Kernel {
    family: Family::Quant,
    entry: "requant_f32",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static QADD: Kernel = Kernel {
    family: Family::Quant,
    entry: "qadd",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static BACKWARD: Kernel = Kernel {
    family: Family::Quant,
    entry: "fake_quant_backward",
    bindings: &[Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    base: u32,
    inner: u32,
    channels: u32,
    qmax: f32,
    signed_codes: u32,
    step: u32,
    step_r: u32,
    step_c: u32,
    block: u32,
    _pad_exact: u32,
}

/// Gradients of a fake-quant node.
#[derive(Debug)]
pub struct QuantGrads {
    /// dL/dx (straight-through inside the grid, zero where clamped).
    pub grad_x: GpuTensor,
    /// dL/dscale per channel (`[channels]`).
    pub grad_scale: GpuTensor,
    /// dL/doffset per channel (`[channels]`).
    pub grad_offset: GpuTensor,
}

/// Validates `x` against `q` and returns the channel view the kernels index by.
fn check(op: &'static str, x: &GpuTensor, q: &QuantGrid) -> Result<ChannelView> {
    x.expect_dtype(op, "x", DType::F32)?;
    q.validate(op)?;
    let view = ChannelView::new(x.shape(), q.axis, op)?;
    if view.channels as usize != q.channels() {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "x".into(),
            expected: format!("{} channels on axis {:?}", q.channels(), q.axis),
            got: x.shape().to_vec(),
        });
    }
    if x.len() as u64 > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op,
            tensor: "x".into(),
            bytes: x.bytes(),
            limit: u32::MAX as u64 * 4,
            which: "32-bit element index",
        });
    }
    Ok(view)
}

/// Records one elementwise quant kernel over `x` in binding-sized chunks; `outs` are written
/// at the same positions as `x`.
#[allow(clippy::too_many_arguments)]
fn launch(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    x: &GpuTensor,
    ins: &[&GpuTensor],
    outs: &[&GpuTensor],
    q: &QuantGrid,
    view: ChannelView,
) -> Result<()> {
    let table = upload_table(gpu, q)?;
    launch_table(
        enc,
        gpu,
        kernel,
        x,
        ins,
        outs,
        &table,
        (q.steps, q.signed_codes, false),
        view,
    )
}

/// An encoding's kernel table on the GPU (`[channels, 4]`: scale, 1/scale, offset, 0).
pub fn upload_table(gpu: &Gpu, q: &QuantGrid) -> Result<GpuTensor> {
    gpu.upload_slice(
        &[q.channels(), 4],
        bytemuck::cast_slice::<[f32; 4], f32>(&q.table()),
    )
}

/// Overwrites a table made by [`upload_table`] (same channel count) for the next submission.
pub fn write_table(gpu: &Gpu, table: &GpuTensor, q: &QuantGrid) -> Result<()> {
    if table.len() != q.channels() * 4 {
        return Err(Error::ShapeMismatch {
            op: "write_table",
            tensor: "table".into(),
            expected: format!("[{}, 4]", q.channels()),
            got: table.shape().to_vec(),
        });
    }
    q.validate("write_table")?;
    gpu.queue
        .write_buffer(table.buf.raw(), 0, bytemuck::cast_slice(&q.table()));
    Ok(())
}

/// Fake-quant of `x` into `y` with an encoding table on the GPU (updatable without recompiling
/// a plan): `steps` = N of the grid, channels from the table along `axis`. `exact` rounds the
/// correctly rounded quotient x / scale (as onnxruntime's QuantizeLinear does) instead of the
/// product with 1 / scale.
#[allow(clippy::too_many_arguments)]
pub fn fake_quant_table_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    table: &GpuTensor,
    steps: u32,
    axis: Option<usize>,
    exact: bool,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "fake_quant";
    x.expect_dtype(OP, "x", DType::F32)?;
    let view = ChannelView::new(x.shape(), axis, OP)?;
    if view.channels as usize * 4 != table.len() || y.len() != x.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "table / y".into(),
            expected: format!("{} channels and {} outputs", view.channels, x.len()),
            got: table.shape().to_vec(),
        });
    }
    if x.is_empty() {
        return Ok(());
    }
    launch_table(
        enc,
        gpu,
        &FAKE_QUANT,
        x,
        &[],
        &[y],
        table,
        (steps, false, exact),
        view,
    )
}

/// `grid` = (steps N, signed codes, exact division).
#[allow(clippy::too_many_arguments)]
fn launch_table(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    x: &GpuTensor,
    ins: &[&GpuTensor],
    outs: &[&GpuTensor],
    table: &GpuTensor,
    grid: (u32, bool, bool),
    view: ChannelView,
) -> Result<()> {
    let (steps, signed_codes, exact) = grid;
    let limits = gpu.limits();
    for ch in linear_chunks(x.len() as u64, &limits) {
        let range = |t| Bind::Range {
            tensor: t,
            offset: ch.start * 4,
            size: ch.len * 4,
        };
        let mut binds = vec![Bind::Whole(table), range(x)];
        binds.extend(ins.iter().map(|t| range(t)));
        binds.extend(outs.iter().map(|t| range(t)));
        let block = WG * ELEMS_PER_THREAD;
        let groups = grid_1d(ch.len.div_ceil(block).max(1), limits.max_groups)?;
        let step = WG;
        let inner = view.inner.max(1);
        let params = Params {
            n: ch.len as u32,
            base: ch.start as u32,
            inner: inner as u32,
            channels: view.channels as u32,
            qmax: steps as f32,
            signed_codes: signed_codes as u32,
            step: step as u32,
            step_r: (step % inner) as u32,
            step_c: ((step / inner) % view.channels) as u32,
            block: block as u32,
            _pad_exact: 0,
        };
        // A constant, so that the plain rounding compiles without the exact path's arithmetic.
        let constants: &[(&str, f64)] = if exact { &[("EXACT", 1.0)] } else { &[] };
        enc.dispatch(gpu, kernel, constants, &params, &binds, groups)?;
    }
    Ok(())
}

/// Quantize-dequantize `x` with `q` (per tensor, or per channel along `q.axis`).
/// NaN stays NaN; +-Inf saturate to the grid's ends.
pub fn fake_quant(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    q: &QuantGrid,
) -> Result<GpuTensor> {
    let view = check("fake_quant", x, q)?;
    let out = gpu.empty(x.shape(), DType::F32)?;
    if !x.is_empty() {
        launch(enc, gpu, &FAKE_QUANT, x, &[], &[&out], q, view)?;
    }
    Ok(out)
}

/// Integer codes of `x` under `q` (i32): `q + offset` on signed grids, `q` in [0, N] otherwise.
/// NaN gets the code of 0.0.
pub fn quantize_codes(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    q: &QuantGrid,
) -> Result<GpuTensor> {
    let view = check("quantize_codes", x, q)?;
    let out = gpu.empty(x.shape(), DType::I32)?;
    if !x.is_empty() {
        launch(enc, gpu, &CODES, x, &[], &[&out], q, view)?;
    }
    Ok(out)
}

/// Backward pass of [`fake_quant`] for an upstream gradient `grad`.
pub fn fake_quant_backward(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    grad: &GpuTensor,
    q: &QuantGrid,
) -> Result<QuantGrads> {
    check("fake_quant_backward", x, q)?;
    let table = upload_table(gpu, q)?;
    fake_quant_table_backward(enc, gpu, x, grad, &table, q.steps, q.axis)
}

/// Backward pass of [`fake_quant_table_into`] (grid codes `0..=steps`, channels of `table`
/// along `axis`) for an upstream gradient `grad`.
pub fn fake_quant_table_backward(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    grad: &GpuTensor,
    table: &GpuTensor,
    steps: u32,
    axis: Option<usize>,
) -> Result<QuantGrads> {
    const OP: &str = "fake_quant_backward";
    x.expect_dtype(OP, "x", DType::F32)?;
    let view = ChannelView::new(x.shape(), axis, OP)?;
    if view.channels as usize * 4 != table.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "table".into(),
            expected: format!("[{}, 4]", view.channels),
            got: table.shape().to_vec(),
        });
    }
    grad.expect_dtype(OP, "grad", DType::F32)?;
    if grad.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "grad".into(),
            expected: format!("{:?} (shape of x)", x.shape()),
            got: grad.shape().to_vec(),
        });
    }
    if x.is_empty() {
        return Err(Error::EmptyTensor {
            op: OP,
            tensor: "x".into(),
        });
    }
    let grad_x = gpu.empty(x.shape(), DType::F32)?;
    let gs = gpu.empty(x.shape(), DType::F32)?;
    let go = gpu.empty(x.shape(), DType::F32)?;
    launch_table(
        enc,
        gpu,
        &BACKWARD,
        x,
        &[grad],
        &[&grad_x, &gs, &go],
        table,
        (steps, false, false),
        view,
    )?;
    let grad_scale = calib::channel_sum(enc, gpu, &gs, axis)?;
    let grad_offset = calib::channel_sum(enc, gpu, &go, axis)?;
    Ok(QuantGrads {
        grad_x,
        grad_scale,
        grad_offset,
    })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RequantParams {
    n: u32,
    inner: u32,
    channels: u32,
    scale: f32,
    lo: f32,
    hi: f32,
}

/// How accumulators map onto an output grid (see [`requant_into`]).
pub struct Requant<'a> {
    /// i32 `[channels]`, added to the accumulators.
    pub bias: &'a GpuTensor,
    /// f32 `[channels]`: `s_x * s_w / s_y` per channel.
    pub multiplier: &'a GpuTensor,
    /// Elements per channel run (`h * w` for NCHW, 1 for `[m, n]`).
    pub inner: usize,
    pub grid: IntGrid,
}

/// Requantizes accumulators `acc` (`[.., channels, inner..]` flattened; i32, or f32 holding
/// exact integers below 2^24) onto the grid into the dequantized f32 `y`:
/// `clamp(round(f32(acc + bias[c]) * multiplier[c])) * scale`.
pub fn requant_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    acc: &GpuTensor,
    r: &Requant<'_>,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "requant";
    let Requant {
        bias,
        multiplier,
        inner,
        grid,
    } = *r;
    let kernel = if acc.dtype() == DType::F32 {
        &REQUANT_F32
    } else {
        &REQUANT
    };
    if acc.dtype() != DType::F32 {
        acc.expect_dtype(OP, "acc", DType::I32)?;
    }
    bias.expect_dtype(OP, "bias", DType::I32)?;
    multiplier.expect_dtype(OP, "multiplier", DType::F32)?;
    y.expect_dtype(OP, "y", DType::F32)?;
    let channels = multiplier.len();
    if bias.len() != channels
        || y.len() != acc.len()
        || channels == 0
        || inner == 0
        || acc.len() % (channels * inner) != 0
    {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "acc / bias / y".into(),
            expected: format!(
                "[.., {channels}, {inner}] accumulators, {channels} biases, as many outputs"
            ),
            got: acc.shape().to_vec(),
        });
    }
    if acc.is_empty() {
        return Ok(());
    }
    let params = RequantParams {
        n: acc.len() as u32,
        inner: inner as u32,
        channels: channels as u32,
        scale: grid.scale,
        lo: grid.lo,
        hi: grid.hi,
    };
    let groups = grid_1d((acc.len() as u64).div_ceil(WG), gpu.limits().max_groups)?;
    enc.dispatch(
        gpu,
        kernel,
        &[],
        &params,
        &[
            Bind::Whole(acc),
            Bind::Whole(bias),
            Bind::Whole(multiplier),
            Bind::Whole(y),
        ],
        groups,
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AddParams {
    n: u32,
    a_inv: f32,
    b_inv: f32,
    a_first: f32,
    b_first: f32,
    c_first: f32,
    scale_c: f32,
}

/// Quantized addition of two same-shape dequantized tensors into `y`, with onnxruntime's x86
/// QLinearAdd arithmetic (see [`AddGrids::table`]). 8-bit grids; inputs share the output's
/// code type.
pub fn qadd_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    b: &GpuTensor,
    g: AddGrids,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "QLinearAdd";
    for (name, t) in [("a", a), ("b", b), ("y", y)] {
        t.expect_dtype(OP, name, DType::F32)?;
        if t.len() != a.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                tensor: name.into(),
                expected: format!("{:?}", a.shape()),
                got: t.shape().to_vec(),
            });
        }
    }
    if g.qmax - g.qmin != 255.0 {
        return Err(Error::invalid(
            OP,
            "code range",
            format!("[{}, {}]", g.qmin, g.qmax),
            "8-bit codes",
        ));
    }
    if a.is_empty() {
        return Ok(());
    }
    let table = gpu.upload_slice(&[256 * 256 / 4], &g.table())?;
    let params = AddParams {
        n: a.len() as u32,
        a_inv: 1.0 / g.a.0,
        b_inv: 1.0 / g.b.0,
        a_first: g.a.1 - g.qmin,
        b_first: g.b.1 - g.qmin,
        c_first: g.qmin - g.c.1,
        scale_c: g.c.0,
    };
    let groups = grid_1d((a.len() as u64).div_ceil(WG), gpu.limits().max_groups)?;
    enc.dispatch(
        gpu,
        &QADD,
        &[],
        &params,
        &[
            Bind::Whole(a),
            Bind::Whole(b),
            Bind::Whole(&table),
            Bind::Whole(y),
        ],
        groups,
    )
}
