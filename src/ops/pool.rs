//! Pooling (`shaders/pool.wgsl`), NCHW.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, grid_stride};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::{Pool2d, Resize};
use crate::graph::shape::pool_output_shape;

use Access::{Read, ReadWrite, Uniform};

static MAX_POOL: Kernel = Kernel {
    family: Family::Pool,
    entry: "max_pool",
    bindings: &[Uniform, Read, ReadWrite],
};
static AVG_POOL: Kernel = Kernel {
    family: Family::Pool,
    entry: "avg_pool",
    bindings: &[Uniform, Read, ReadWrite],
};
static RESIZE: Kernel = Kernel {
    family: Family::Pool,
    entry: "resize",
    bindings: &[Uniform, Read, ReadWrite, Read],
};
static RESIZE_GRAD: Kernel = Kernel {
    family: Family::Pool,
    entry: "resize_grad",
    bindings: &[Uniform, Read, ReadWrite, Read, Read],
};
static GLOBAL_AVG: Kernel = Kernel {
    family: Family::Pool,
    entry: "global_avg_pool",
    bindings: &[Uniform, Read, ReadWrite],
};

static GLOBAL_AVG_SERIAL: Kernel = Kernel {
    family: Family::Pool,
    entry: "global_avg_pool_serial",
    bindings: &[Uniform, Read, ReadWrite],
};

/// Largest plane [`global_avg_pool_into`] sums in one thread (larger ones take a workgroup
/// each); chosen by shape alone, so every adapter adds in the same order.
const GAP_SERIAL_MAX: usize = 1024;

static LRN: Kernel = Kernel {
    family: Family::Pool,
    entry: "lrn",
    bindings: &[Uniform, Read, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LrnParams {
    n: u32,
    channels: u32,
    inner: u32,
    lo: u32,
    hi: u32,
    step: u32,
    alpha_over_size: f32,
    beta: f32,
    bias: f32,
    _pad: [u32; 3],
}

/// Local response normalization across the channels (axis 1) of `x` (`[n, c, ...]`) into
/// `y`: `x / (bias + alpha / size * sum of x^2 over channels c - (size - 1) / 2 ..= c +
/// ceil((size - 1) / 2))^beta`.
#[allow(clippy::too_many_arguments)]
pub fn lrn_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "LRN";
    x.expect_dtype(OP, "x", DType::F32)?;
    let s = x.shape();
    if s.len() < 3 || y.len() != x.len() || size == 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "x".into(),
            expected: "[n, c, spatial...], y of the same size, size >= 1".into(),
            got: s.to_vec(),
        });
    }
    if x.is_empty() {
        return Ok(());
    }
    let (grid, step) = grid_stride(x.len() as u64, gpu.limits().max_groups)?;
    let params = LrnParams {
        n: x.len() as u32,
        channels: s[1] as u32,
        inner: s[2..].iter().product::<usize>() as u32,
        lo: ((size - 1) / 2) as u32,
        hi: (size / 2) as u32,
        step: step as u32,
        alpha_over_size: alpha / size as f32,
        beta,
        bias,
        _pad: [0; 3],
    };
    enc.dispatch(
        gpu,
        &LRN,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid,
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    nc: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    count_include_pad: u32,
    pad_b: u32,
    pad_r: u32,
    step: u32,
    _pad: [u32; 3],
}

/// Max (`max = true`) or average window pooling into a preallocated `y`.
pub fn pool2d_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    a: &Pool2d,
    max: bool,
    y: &GpuTensor,
) -> Result<()> {
    let op = if max { "MaxPool" } else { "AveragePool" };
    x.expect_dtype(op, "x", DType::F32)?;
    let [n, c, oh, ow] = pool_output_shape(x.shape(), a)?;
    if y.shape() != [n, c, oh, ow] {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "y".into(),
            expected: format!("{:?}", [n, c, oh, ow]),
            got: y.shape().to_vec(),
        });
    }
    let (grid, step) = grid_stride(y.len() as u64, gpu.limits().max_groups)?;
    let s = x.shape();
    let params = Params {
        nc: (n * c) as u32,
        h: s[2] as u32,
        w: s[3] as u32,
        oh: oh as u32,
        ow: ow as u32,
        kh: a.kernel[0] as u32,
        kw: a.kernel[1] as u32,
        stride_h: a.strides[0] as u32,
        stride_w: a.strides[1] as u32,
        pad_t: a.pads[0] as u32,
        pad_l: a.pads[1] as u32,
        dil_h: a.dilations[0] as u32,
        dil_w: a.dilations[1] as u32,
        count_include_pad: a.count_include_pad as u32,
        pad_b: a.pads[2] as u32,
        pad_r: a.pads[3] as u32,
        step: step as u32,
        _pad: [0; 3],
    };
    enc.dispatch(
        gpu,
        if max { &MAX_POOL } else { &AVG_POOL },
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid,
    )
}

/// Mean over the spatial dims of `[n, c, ...]` into `y` of `[n, c, 1, ...]`.
pub fn global_avg_pool_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "GlobalAveragePool";
    x.expect_dtype(OP, "x", DType::F32)?;
    let s = x.shape();
    if s.len() < 3 || y.len() != s[0] * s[1] {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "x".into(),
            expected: "[n, c, spatial...] with y of n*c elements".into(),
            got: s.to_vec(),
        });
    }
    let nc = s[0] * s[1];
    let hw = x.len() / nc.max(1);
    let mut params = Params {
        nc: nc as u32,
        h: 1,
        w: hw as u32,
        ..Default::default()
    };
    let (kernel, grid) = if hw <= GAP_SERIAL_MAX {
        let (grid, step) = grid_stride(nc as u64, gpu.limits().max_groups)?;
        params.step = step as u32;
        (&GLOBAL_AVG_SERIAL, grid)
    } else {
        (&GLOBAL_AVG, grid_1d(nc as u64, gpu.limits().max_groups)?)
    };
    enc.dispatch(
        gpu,
        kernel,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid,
    )
}

/// The parameters and grid of a resize from `x` (`[n, c, h, w]`) to `y` (`[n, c, oh, ow]`)
/// or of its backward, with `threads` threads; checks the shapes and scales (`names`: what
/// the caller calls `x` and `y`, for messages).
#[allow(clippy::too_many_arguments)]
fn resize_params(
    gpu: &Gpu,
    op: &'static str,
    names: [&str; 2],
    x: &[usize],
    y: &GpuTensor,
    r: Resize,
    scales: [f32; 2],
    threads: usize,
) -> Result<(Params, [u32; 3])> {
    let (s, o) = (x, y.shape());
    if s.len() != 4 || o.len() != 4 || s[..2] != o[..2] || s.contains(&0) || o.contains(&0) {
        return Err(Error::ShapeMismatch {
            op,
            tensor: names[1].into(),
            expected: format!(
                "[{}, {}, oh, ow] from {} {s:?}",
                s.first().unwrap_or(&0),
                s.get(1).unwrap_or(&0),
                names[0]
            ),
            got: o.to_vec(),
        });
    }
    if !scales.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(Error::invalid(
            op,
            "scales",
            format!("{scales:?}"),
            "must be finite and > 0",
        ));
    }
    let (grid, step) = grid_stride(threads as u64, gpu.limits().max_groups)?;
    let params = Params {
        nc: (s[0] * s[1]) as u32,
        h: s[2] as u32,
        w: s[3] as u32,
        oh: o[2] as u32,
        ow: o[3] as u32,
        kh: r.mode,
        kw: r.coordinates,
        stride_h: r.nearest,
        stride_w: r.exclude_outside as u32,
        pad_t: r.antialias as u32,
        step: step as u32,
        ..Default::default()
    };
    Ok((params, grid))
}

/// Resizes the spatial dims of `x` into `y` (`[n, c, oh, ow]`); `scales` = (h, w) as ONNX
/// defines them (output / input when sizes were given).
pub fn resize_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    r: Resize,
    scales: [f32; 2],
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "Resize";
    x.expect_dtype(OP, "x", DType::F32)?;
    let (params, grid) = resize_params(gpu, OP, ["x", "y"], x.shape(), y, r, scales, y.len())?;
    let [h0, h1, w0, w1] = r.roi;
    let table = [
        scales[0],
        scales[1],
        r.cubic_a,
        h0,
        h1,
        w0,
        w1,
        r.extrapolation,
    ];
    let table = gpu.upload_slice(&[8], &table)?;
    enc.dispatch(
        gpu,
        &RESIZE,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y), Bind::Whole(&table)],
        grid,
    )
}

/// For each input index of one axis, the outputs `[begin, end)` whose taps may include it:
/// every output whose source coordinate (in f64, as the forward computes it in f32) lies
/// within one index of it, so that rounding on the device cannot leave a tap out.
fn resize_ranges(r: Resize, out_len: usize, in_len: usize, scale: f32, into: &mut Vec<u32>) {
    let mut ranges = vec![(u32::MAX, 0u32); in_len];
    for o in 0..out_len {
        let of = o as f64;
        let c = match r.coordinates {
            1 => of / scale as f64,
            2 if out_len > 1 => of * (in_len - 1) as f64 / (in_len as f64 * scale as f64 - 1.0),
            2 | 3 if out_len <= 1 => 0.0,
            4 => {
                let adj = out_len as f64 / (in_len as f64 * scale as f64);
                in_len as f64 * 0.5 * (1.0 - adj) + (of + 0.5) / scale as f64 - 0.5
            }
            _ => (of + 0.5) / scale as f64 - 0.5,
        };
        let last = in_len as f64 - 1.0;
        let lo = (c.floor() - 1.0).clamp(0.0, last) as usize;
        let hi = (c.ceil() + 2.0).clamp(0.0, last) as usize;
        for rg in &mut ranges[lo..=hi] {
            rg.0 = rg.0.min(o as u32);
            rg.1 = rg.1.max(o as u32 + 1);
        }
    }
    for (b, e) in ranges {
        into.extend([if b == u32::MAX { 0 } else { b }, e]);
    }
}

/// The backward of [`resize_into`]: `dx += ` the forward's taps transposed, applied to `dy`
/// (`[n, c, oh, ow]`).
pub fn resize_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    dy: &GpuTensor,
    r: Resize,
    scales: [f32; 2],
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "Resize backward";
    if r.filtered() || r.coordinates == 5 {
        return Err(Error::invalid(
            OP,
            "mode",
            format!("{r:?}"),
            "only nearest and linear (without antialias or tf_crop_and_resize) have a backward",
        ));
    }
    dy.expect_dtype(OP, "dy", DType::F32)?;
    dx.expect_dtype(OP, "dx", DType::F32)?;
    let (params, grid) = resize_params(gpu, OP, ["dx", "dy"], dx.shape(), dy, r, scales, dx.len())?;
    let (s, o) = (dx.shape(), dy.shape());
    let mut ranges = Vec::with_capacity(2 * (s[2] + s[3]));
    resize_ranges(r, o[2], s[2], scales[0], &mut ranges);
    resize_ranges(r, o[3], s[3], scales[1], &mut ranges);
    let ranges = gpu.upload_slice(&[ranges.len()], &ranges)?;
    let table = gpu.upload_slice(&[2], &scales)?;
    enc.dispatch(
        gpu,
        &RESIZE_GRAD,
        &[],
        &params,
        &[
            Bind::Whole(dy),
            Bind::Whole(dx),
            Bind::Whole(&table),
            Bind::Whole(&ranges),
        ],
        grid,
    )
}
