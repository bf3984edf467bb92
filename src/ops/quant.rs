//! Fake quantization forward/backward and quantize-to-codes (`shaders/quant.wgsl`).

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, linear_chunks, ChannelView, ELEMS_PER_THREAD, WG};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::ops::calib;
use crate::quant::Encoding;

use Access::{Read, ReadWrite, Uniform};

static FAKE_QUANT: Kernel = Kernel { family: Family::Quant, entry: "fake_quant", bindings: &[Uniform, Read, Read, ReadWrite] };
static CODES: Kernel = Kernel { family: Family::Quant, entry: "quantize_codes", bindings: &[Uniform, Read, Read, ReadWrite] };
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
    _pad: u32,
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
fn check(op: &'static str, x: &GpuTensor, q: &Encoding) -> Result<ChannelView> {
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
        return Err(Error::TooLarge { op, tensor: "x".into(), bytes: x.bytes(), limit: u32::MAX as u64 * 4, which: "32-bit element index" });
    }
    Ok(view)
}

/// Records one elementwise quant kernel over `x` in binding-sized chunks; `outs` are written
/// at the same positions as `x`.
fn launch(enc: &mut impl Record, gpu: &Gpu, kernel: &Kernel, x: &GpuTensor, ins: &[&GpuTensor], outs: &[&GpuTensor], q: &Encoding, view: ChannelView) -> Result<()> {
    let table = upload_table(gpu, q)?;
    launch_table(enc, gpu, kernel, x, ins, outs, &table, q.steps(), q.signed_codes(), view)
}

/// An encoding's kernel table on the GPU (`[channels, 4]`: scale, 1/scale, offset, 0).
pub fn upload_table(gpu: &Gpu, q: &Encoding) -> Result<GpuTensor> {
    gpu.upload_slice(&[q.channels(), 4], bytemuck::cast_slice::<[f32; 4], f32>(&q.table()))
}

/// Overwrites a table made by [`upload_table`] (same channel count) for the next submission.
pub fn write_table(gpu: &Gpu, table: &GpuTensor, q: &Encoding) -> Result<()> {
    if table.len() != q.channels() * 4 {
        return Err(Error::ShapeMismatch { op: "write_table", tensor: "table".into(), expected: format!("[{}, 4]", q.channels()), got: table.shape().to_vec() });
    }
    q.validate("write_table")?;
    gpu.queue.write_buffer(table.buf.raw(), 0, bytemuck::cast_slice(&q.table()));
    Ok(())
}

/// Fake-quant of `x` into `y` with an encoding table on the GPU (updatable without recompiling
/// a plan): `steps` = N of the grid, channels from the table along `axis`.
pub fn fake_quant_table_into(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor, table: &GpuTensor, steps: u32, axis: Option<usize>, y: &GpuTensor) -> Result<()> {
    const OP: &str = "fake_quant";
    x.expect_dtype(OP, "x", DType::F32)?;
    let view = ChannelView::new(x.shape(), axis, OP)?;
    if view.channels as usize * 4 != table.len() || y.len() != x.len() {
        return Err(Error::ShapeMismatch { op: OP, tensor: "table / y".into(), expected: format!("{} channels and {} outputs", view.channels, x.len()), got: table.shape().to_vec() });
    }
    if x.is_empty() {
        return Ok(());
    }
    launch_table(enc, gpu, &FAKE_QUANT, x, &[], &[y], table, steps, false, view)
}

#[allow(clippy::too_many_arguments)]
fn launch_table(enc: &mut impl Record, gpu: &Gpu, kernel: &Kernel, x: &GpuTensor, ins: &[&GpuTensor], outs: &[&GpuTensor], table: &GpuTensor, steps: u32, signed_codes: bool, view: ChannelView) -> Result<()> {
    let limits = gpu.limits();
    for ch in linear_chunks(x.len() as u64, &limits) {
        let range = |t| Bind::Range { tensor: t, offset: ch.start * 4, size: ch.len * 4 };
        let mut binds = vec![Bind::Whole(table), range(x)];
        binds.extend(ins.iter().map(|t| range(t)));
        binds.extend(outs.iter().map(|t| range(t)));
        let block = WG * ELEMS_PER_THREAD;
        let grid = grid_1d(ch.len.div_ceil(block).max(1), limits.max_groups)?;
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
            _pad: 0,
        };
        enc.dispatch(gpu, kernel, &[], &params, &binds, grid)?;
    }
    Ok(())
}

/// Quantize-dequantize `x` with `q` (per tensor, or per channel along `q.axis`).
/// NaN stays NaN; +-Inf saturate to the grid's ends.
pub fn fake_quant(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor, q: &Encoding) -> Result<GpuTensor> {
    let view = check("fake_quant", x, q)?;
    let out = gpu.empty(x.shape(), DType::F32)?;
    if !x.is_empty() {
        launch(enc, gpu, &FAKE_QUANT, x, &[], &[&out], q, view)?;
    }
    Ok(out)
}

/// Integer codes of `x` under `q` (i32): `q + offset` on signed grids, `q` in [0, N] otherwise.
/// NaN gets the code of 0.0.
pub fn quantize_codes(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor, q: &Encoding) -> Result<GpuTensor> {
    let view = check("quantize_codes", x, q)?;
    let out = gpu.empty(x.shape(), DType::I32)?;
    if !x.is_empty() {
        launch(enc, gpu, &CODES, x, &[], &[&out], q, view)?;
    }
    Ok(out)
}

/// Backward pass of [`fake_quant`] for an upstream gradient `grad`.
pub fn fake_quant_backward(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor, grad: &GpuTensor, q: &Encoding) -> Result<QuantGrads> {
    const OP: &str = "fake_quant_backward";
    let view = check(OP, x, q)?;
    grad.expect_dtype(OP, "grad", DType::F32)?;
    if grad.shape() != x.shape() {
        return Err(Error::ShapeMismatch { op: OP, tensor: "grad".into(), expected: format!("{:?} (shape of x)", x.shape()), got: grad.shape().to_vec() });
    }
    if x.is_empty() {
        return Err(Error::EmptyTensor { op: OP, tensor: "x".into() });
    }
    let grad_x = gpu.empty(x.shape(), DType::F32)?;
    let gs = gpu.empty(x.shape(), DType::F32)?;
    let go = gpu.empty(x.shape(), DType::F32)?;
    launch(enc, gpu, &BACKWARD, x, &[grad], &[&grad_x, &gs, &go], q, view)?;
    let grad_scale = calib::channel_sum(enc, gpu, &gs, q.axis)?;
    let grad_offset = calib::channel_sum(enc, gpu, &go, q.axis)?;
    Ok(QuantGrads { grad_x, grad_scale, grad_offset })
}
