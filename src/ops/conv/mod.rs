//! 2-D convolution (`shaders/conv.wgsl`, `shaders/depthwise.wgsl`), NCHW: the kernels and
//! which one runs (`kernel`), the depthwise 3x3 kernels' dispatches (`depthwise`), the rest here.

mod depthwise;
mod kernel;

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::LOOP_BUDGET;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::Conv2d;
use crate::graph::shape::{conv_output_shape, conv_transpose_output_shape};
use crate::ops::epilogue::{EpiParams, Epilogue};
use crate::ops::gemm::{conv_gemm_into, matmul_with, Bias, Cols, GemmKernel};

pub use depthwise::{
    depthwise3x3_acc_into, depthwise3x3_weight_grad_into, depthwise3x3_weight_grad_partials,
};
pub use kernel::{ConvKernel, DEPTHWISE_PATCH};

use depthwise::dispatch_depthwise;
use kernel::{im2col_shape, DEPTHWISE_TILE};
use Access::{Read, ReadWrite, Uniform};

/// x, w, bias, y, then the epilogue's affine, residual and quantizer tables.
const WITH_EPILOGUE: &[Access] = &[Uniform, Read, Read, Read, ReadWrite, Read, Read, Read, Read];

static CONV2D: Kernel = Kernel {
    family: Family::Conv,
    entry: "conv2d",
    bindings: WITH_EPILOGUE,
};
static QCONV: Kernel = Kernel {
    family: Family::Conv,
    entry: "qconv",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static DEPTHWISE3X3: Kernel = Kernel {
    family: Family::Conv,
    entry: "depthwise3x3",
    bindings: WITH_EPILOGUE,
};
static DEPTHWISE3X3_VEC4: Kernel = Kernel {
    family: Family::Conv,
    entry: "depthwise3x3_vec4",
    bindings: WITH_EPILOGUE,
};
static DEPTHWISE3X3_WGRAD: Kernel = Kernel {
    family: Family::Conv,
    entry: "depthwise3x3_wgrad",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static DEPTHWISE3X3_WGRAD_VEC4: Kernel = Kernel {
    family: Family::Conv,
    entry: "depthwise3x3_wgrad_vec4",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static DEPTHWISE_TILED: Kernel = Kernel {
    family: Family::Conv,
    entry: "depthwise_tiled",
    bindings: WITH_EPILOGUE,
};
static IM2COL: Kernel = Kernel {
    family: Family::Conv,
    entry: "im2col",
    bindings: &[Uniform, Read, ReadWrite],
};
static CONV_T2D: Kernel = Kernel {
    family: Family::Conv,
    entry: "conv_transpose2d",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};

const PIXELS_PER_GROUP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    has_bias: u32,
    ci_begin: u32,
    ci_end: u32,
    accumulate: u32,
    x_inv: f32,
    _pad: [u32; 3],
    epi: EpiParams,
}

impl Params {
    /// The kernel parameters for input `x` `[n, cin, h, w]`, a `kernel` window, and an output of
    /// `out` = (cout, oh, ow).
    fn new(x: &[usize], kernel: [usize; 2], a: &Conv2d, out: [usize; 3], has_bias: bool) -> Params {
        Params {
            n: x[0] as u32,
            cin: x[1] as u32,
            h: x[2] as u32,
            w: x[3] as u32,
            cout: out[0] as u32,
            oh: out[1] as u32,
            ow: out[2] as u32,
            groups: a.groups as u32,
            kh: kernel[0] as u32,
            kw: kernel[1] as u32,
            stride_h: a.strides[0] as u32,
            stride_w: a.strides[1] as u32,
            pad_t: a.pads[0] as u32,
            pad_l: a.pads[1] as u32,
            dil_h: a.dilations[0] as u32,
            dil_w: a.dilations[1] as u32,
            has_bias: has_bias as u32,
            ci_begin: 0,
            ci_end: (x[1] / a.groups) as u32,
            accumulate: 0,
            x_inv: 1.0,
            _pad: [0; 3],
            epi: EpiParams::default(),
        }
    }
}

/// `t` must have `shape`.
fn expect_shape(op: &'static str, name: &str, t: &GpuTensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::ShapeMismatch {
            op,
            tensor: name.into(),
            expected: format!("{shape:?}"),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// The workgroup grid, when every dimension is within the dispatch limit (`size` names what
/// is too large otherwise).
fn grid_of(op: &'static str, gpu: &Gpu, grid: [usize; 3], size: &[usize]) -> Result<[u32; 3]> {
    let max = gpu.limits().max_groups as usize;
    if grid.iter().any(|&g| g > max) {
        return Err(Error::invalid(
            op,
            "output size",
            format!("{size:?}"),
            "more tiles than one dispatch allows",
        ));
    }
    Ok(grid.map(|g| g as u32))
}

/// Records `kernel` once per range of input channels (per group) whose loop nest stays within
/// [`LOOP_BUDGET`] iterations (a channel costs 1 + kh + kh * kw of them); the dispatches after
/// the first add to `y`, the last one with the `epi` constants (its epilogue).
#[allow(clippy::too_many_arguments)]
fn dispatch_split(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: &Kernel,
    cob: usize,
    params: Params,
    binds: &[Bind<'_>],
    grid: [u32; 3],
    epi: &[(&'static str, f64)],
) -> Result<()> {
    let (kh, kw) = (params.kh as u64, params.kw as u64);
    let per = (LOOP_BUDGET / (1 + kh + kh * kw)).max(1) as u32;
    let cin_g = params.ci_end;
    for begin in (0..cin_g).step_by(per as usize) {
        let p = Params {
            ci_begin: begin,
            ci_end: (begin + per).min(cin_g),
            accumulate: (begin > 0) as u32,
            ..params
        };
        let mut constants = vec![("COB", cob as f64)];
        if p.ci_end == cin_g {
            constants.extend_from_slice(epi);
        }
        enc.dispatch(gpu, kernel, &constants, &p, binds, grid)?;
    }
    Ok(())
}

/// `y = conv(x, w) + bias` into a preallocated `y` of [`conv_output_shape`], with the kernel
/// [`ConvKernel::pick`] chooses.
pub fn conv2d_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    a: &Conv2d,
    y: &GpuTensor,
) -> Result<()> {
    // Without a scratch to give it, im2col becomes the direct kernel.
    let kernel = match ConvKernel::pick(gpu, x.shape(), w.shape(), a) {
        ConvKernel::Im2col => ConvKernel::Direct,
        k => k,
    };
    conv2d_with(enc, gpu, kernel, x, w, bias, a, &Epilogue::NONE, None, y)
}

/// The columns of `x` for a convolution with weights of `w_shape`: `col` `[n, cin * kh * kw,
/// oh * ow]` (zero where a tap falls in the padding).
pub fn im2col_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    w_shape: &[usize],
    a: &Conv2d,
    col: &GpuTensor,
) -> Result<()> {
    const OP: &str = "im2col";
    col.expect_dtype(OP, "col", DType::F32)?;
    let shape = im2col_shape(x.shape(), w_shape, a)?;
    expect_shape(OP, "col", col, &shape)?;
    let [_, cout, oh, ow] = conv_output_shape(x.shape(), w_shape, a)?;
    let limits = gpu.limits();
    let [n, k, npix] = shape;
    let grid = grid_of(OP, gpu, [npix.div_ceil(PIXELS_PER_GROUP), k, n], &shape)?;
    if col.bytes() > limits.max_binding {
        return Err(Error::TooLarge {
            op: OP,
            tensor: "col".into(),
            bytes: col.bytes(),
            limit: limits.max_binding,
            which: "storage binding",
        });
    }
    let params = Params::new(
        x.shape(),
        [w_shape[2], w_shape[3]],
        a,
        [cout, oh, ow],
        false,
    );
    enc.dispatch(
        gpu,
        &IM2COL,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(col)],
        grid,
    )
}

/// The shape of [`im2col_into`]'s columns.
pub fn im2col_output_shape(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[usize; 3]> {
    im2col_shape(x, w, a)
}

/// [`ConvKernel::Im2col`] after [`conv2d_with`]'s checks: `y = W * im2col(x) + bias` through
/// `col`. The GEMM adds each output's products in conv2d's order, so the result has conv2d's
/// bits (up to where long reductions are split into dispatches).
fn im2col_gemm(
    enc: &mut impl Record,
    gpu: &Gpu,
    (x, w, bias, a): (&GpuTensor, &GpuTensor, Option<&GpuTensor>, &Conv2d),
    epi: &Epilogue<'_>,
    col: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "Conv";
    col.expect_dtype(OP, "col", DType::F32)?;
    let shape = im2col_shape(x.shape(), w.shape(), a)?;
    expect_shape(OP, "col", col, &shape)?;
    im2col_into(enc, gpu, x, w.shape(), a, col)?;
    let [n, cout, _, _] = conv_output_shape(x.shape(), w.shape(), a)?;
    let [_, k, npix] = shape;
    let wv = w.view(&[cout, k], DType::F32)?;
    let yv = y.view(&[n, cout, npix], DType::F32)?;
    let b = bias.map_or(Bias::None, Bias::PerRow);
    let gemm = GemmKernel::pick(gpu, cout, npix);
    matmul_with(enc, gpu, gemm, &wv, col, false, false, 1.0, b, epi, &yv)
}

/// [`conv2d_into`] with a given kernel (the plan passes [`ConvKernel::pick`]'s, tests and
/// benches compare them), an epilogue (per output channel; a residual has `y`'s shape) and
/// the `scratch` of [`ConvKernel::scratch`] where it needs one; a kernel that does not
/// [support](ConvKernel::supports) the convolution is an error.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_with(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: ConvKernel,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    a: &Conv2d,
    epi: &Epilogue<'_>,
    scratch: Option<&GpuTensor>,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "Conv";
    f32_bindings(OP, gpu, &[("x", x), ("w", w), ("y", y)])?;
    let [n, cout, oh, ow] = conv_output_shape(x.shape(), w.shape(), a)?;
    expect_shape(OP, "y", y, &[n, cout, oh, ow])?;
    if let Some(b) = bias {
        if b.len() != cout {
            return Err(Error::ShapeMismatch {
                op: OP,
                tensor: "bias".into(),
                expected: format!("[{cout}]"),
                got: b.shape().to_vec(),
            });
        }
    }
    epi.check(OP, gpu, y.len(), cout)?;
    let s = x.shape();
    let [kh, kw] = [w.shape()[2], w.shape()[3]];
    if !kernel.supports(s, w.shape(), a) {
        return Err(Error::invalid(
            OP,
            "kernel",
            format!("{kernel:?}"),
            format!("does not compute {a:?} with weights {:?}", w.shape()),
        ));
    }
    if kernel == ConvKernel::Im2col {
        let col = scratch
            .ok_or_else(|| Error::invalid(OP, "kernel", "Im2col", "needs its scratch matrix"))?;
        return im2col_gemm(enc, gpu, (x, w, bias, a), epi, col, y);
    }
    if let Some(gemm) = kernel.implicit_gemm() {
        let k = s[1] * kh * kw;
        let wv = w.view(&[cout, k], DType::F32)?;
        let yv = y.view(&[n, cout, oh * ow], DType::F32)?;
        let b = bias.map_or(Bias::None, Bias::PerRow);
        let cols = Cols {
            cin: s[1] as u32,
            h: s[2] as u32,
            w: s[3] as u32,
            kh: kh as u32,
            kw: kw as u32,
            stride_h: a.strides[0] as u32,
            stride_w: a.strides[1] as u32,
            pad_t: a.pads[0] as u32,
            pad_l: a.pads[1] as u32,
            dil_h: a.dilations[0] as u32,
            dil_w: a.dilations[1] as u32,
            ow: ow as u32,
        };
        return conv_gemm_into(enc, gpu, gemm, &wv, x, cols, b, epi, &yv);
    }
    if kernel == ConvKernel::Pointwise {
        // A pointwise conv is a batched GEMM: y[n] = W[cout, cin] * x[n][cin, h*w] + bias.
        let hw = s[2] * s[3];
        let xv = x.view(&[n, s[1], hw], DType::F32)?;
        let wv = w.view(&[cout, s[1]], DType::F32)?;
        let yv = y.view(&[n, cout, hw], DType::F32)?;
        let b = bias.map_or(Bias::None, Bias::PerRow);
        let gemm = GemmKernel::pick(gpu, cout, hw);
        return matmul_with(enc, gpu, gemm, &wv, &xv, false, false, 1.0, b, epi, &yv);
    }
    let limits = gpu.limits();
    if n > limits.max_groups as usize {
        return Err(Error::invalid(
            OP,
            "batch",
            n,
            format!("at most {} per dispatch", limits.max_groups),
        ));
    }
    let params = Params {
        epi: epi.params(),
        ..Params::new(s, [kh, kw], a, [cout, oh, ow], bias.is_some())
    };
    let [e0, e1, e2, e3] = epi.binds(epi.residual.map(Bind::Whole), x);
    // Without a bias the weights stand in for its binding (`has_bias` is 0).
    let bias = bias.unwrap_or(w);
    let binds = [
        Bind::Whole(x),
        Bind::Whole(w),
        Bind::Whole(bias),
        Bind::Whole(y),
        e0,
        e1,
        e2,
        e3,
    ];
    if kernel == ConvKernel::Depthwise3x3 {
        return dispatch_depthwise(enc, gpu, a, &params, &binds, &epi.constants());
    }
    if kernel == ConvKernel::DepthwiseTiled {
        let tiles = oh.div_ceil(DEPTHWISE_TILE) * ow.div_ceil(DEPTHWISE_TILE);
        let grid = grid_of(OP, gpu, [tiles, cout, n], y.shape())?;
        let k = &DEPTHWISE_TILED;
        return enc.dispatch(gpu, k, &epi.constants(), &params, &binds, grid);
    }
    let cout_g = cout / a.groups;
    let cob = if cout_g % 4 == 0 { 4 } else { 1 };
    let pixels = (oh * ow).div_ceil(PIXELS_PER_GROUP);
    let grid = grid_of(OP, gpu, [pixels, cout.div_ceil(cob), n], y.shape())?;
    let constants = epi.constants();
    dispatch_split(enc, gpu, &CONV2D, cob, params, &binds, grid, &constants)
}

/// Errors unless every tensor is f32 and fits one storage binding.
fn f32_bindings(op: &'static str, gpu: &Gpu, tensors: &[(&str, &GpuTensor)]) -> Result<()> {
    for &(name, t) in tensors {
        t.expect_dtype(op, name, DType::F32)?;
        if t.bytes() > gpu.limits().max_binding {
            return Err(Error::TooLarge {
                op,
                tensor: name.into(),
                bytes: t.bytes(),
                limit: gpu.limits().max_binding,
                which: "storage binding (split the batch)",
            });
        }
    }
    Ok(())
}

/// Transposed convolution into a preallocated `y` of [`conv_transpose_output_shape`].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    a: &Conv2d,
    output_padding: [usize; 2],
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "ConvTranspose";
    for (name, t) in [("x", x), ("w", w), ("y", y)] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    let [n, cout, oh, ow] = conv_transpose_output_shape(x.shape(), w.shape(), a, output_padding)?;
    expect_shape(OP, "y", y, &[n, cout, oh, ow])?;
    if bias.is_some_and(|b| b.len() != cout) {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "bias".into(),
            expected: format!("[{cout}]"),
            got: bias.map(|b| b.shape().to_vec()).unwrap_or_default(),
        });
    }
    let pixels = (oh * ow).div_ceil(PIXELS_PER_GROUP);
    let grid = grid_of(OP, gpu, [pixels, cout, n], y.shape())?;
    let params = Params::new(
        x.shape(),
        [w.shape()[2], w.shape()[3]],
        a,
        [cout, oh, ow],
        bias.is_some(),
    );
    let bias = bias.unwrap_or(w);
    dispatch_split(
        enc,
        gpu,
        &CONV_T2D,
        1,
        params,
        &[
            Bind::Whole(x),
            Bind::Whole(w),
            Bind::Whole(bias),
            Bind::Whole(y),
        ],
        grid,
        &[],
    )
}

/// Integer convolution as an integer runtime accumulates it: `acc = sum(r_x * w)` in i32, where
/// `x` holds dequantized values `r_x * scale` (`x_inv` = 1 / scale, `r_x` recovered exactly) and
/// `w` holds the weights' integer codes (`[cout, cin / groups, kh, kw]`, zero point 0). `acc`
/// (i32, [`conv_output_shape`]) is requantized by [`crate::ops::quant::requant_into`].
pub fn qconv2d_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    x_inv: f32,
    w: &GpuTensor,
    a: &Conv2d,
    acc: &GpuTensor,
) -> Result<()> {
    const OP: &str = "QLinearConv";
    x.expect_dtype(OP, "x", DType::F32)?;
    w.expect_dtype(OP, "w", DType::I32)?;
    acc.expect_dtype(OP, "acc", DType::I32)?;
    for (name, t) in [("x", x), ("w", w), ("acc", acc)] {
        if t.bytes() > gpu.limits().max_binding {
            return Err(Error::TooLarge {
                op: OP,
                tensor: name.into(),
                bytes: t.bytes(),
                limit: gpu.limits().max_binding,
                which: "storage binding (split the batch)",
            });
        }
    }
    let [n, cout, oh, ow] = conv_output_shape(x.shape(), w.shape(), a)?;
    expect_shape(OP, "acc", acc, &[n, cout, oh, ow])?;
    let cob = if (cout / a.groups) % 4 == 0 { 4 } else { 1 };
    let pixels = (oh * ow).div_ceil(PIXELS_PER_GROUP);
    let grid = grid_of(OP, gpu, [pixels, cout.div_ceil(cob), n], acc.shape())?;
    let params = Params {
        x_inv,
        ..Params::new(
            x.shape(),
            [w.shape()[2], w.shape()[3]],
            a,
            [cout, oh, ow],
            false,
        )
    };
    dispatch_split(
        enc,
        gpu,
        &QCONV,
        cob,
        params,
        &[Bind::Whole(x), Bind::Whole(w), Bind::Whole(acc)],
        grid,
        &[],
    )
}
