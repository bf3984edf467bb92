//! 2-D convolution (`shaders/conv.wgsl`), NCHW.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::LOOP_BUDGET;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::Conv2d;
use crate::graph::shape::{conv_output_shape, conv_transpose_output_shape};
use crate::ops::epilogue::{EpiParams, Epilogue};
use crate::ops::gemm::{conv_gemm_into, matmul_with, Bias, Cols, GemmKernel};

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

/// The float convolution kernels (pointwise convs are GEMMs, see [`conv2d_into`]). Both add
/// each output's products in the same order from zero, so they give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// One output pixel (and up to 4 channels) per invocation; any shape.
    Direct,
    /// A pointwise conv (1x1, stride 1, no pads, groups 1) as the batched GEMM
    /// `y[n] = W[cout, cin] * x[n][cin, h * w]`; every adapter.
    Pointwise,
    /// 4 x 8 adjacent outputs of one channel per invocation, weights and input rows loaded
    /// once (as vectors of 4 where rows are a multiple of 4 wide and the left pad is 1):
    /// depthwise 3x3, dilation 1, horizontal stride 1 or 2. For CPU adapters.
    Depthwise3x3,
    /// The columns copied into a scratch matrix ([`ConvKernel::scratch`]), then the GEMM the
    /// adapter picks: dense convs (groups = 1) on CPU adapters, where the GEMM reuses each load
    /// 4-8 times.
    Im2col,
    /// The tiled GEMM reading the columns straight from the input (an implicit GEMM, no
    /// scratch): dense convs (groups = 1) on GPUs, where its tiles in workgroup memory reuse
    /// each loaded value 16-64 times and the direct kernel none. Same bits as `Im2col`.
    Implicit,
    /// 16 x 16 outputs of one channel per workgroup from the input patch they cover (halo
    /// included) loaded once into workgroup memory: depthwise convs (one input channel per
    /// output channel) of any kernel, stride and dilation whose patch fits
    /// [`DEPTHWISE_PATCH`] values. For GPUs.
    DepthwiseTiled,
}

/// Values of the input patch [`ConvKernel::DepthwiseTiled`] holds in workgroup memory
/// (`DW_PATCH` in depthwise.wgsl): 48 x 48.
pub const DEPTHWISE_PATCH: usize = 2304;

/// Outputs per side of [`ConvKernel::DepthwiseTiled`]'s tile (`DW_TILE`).
const DEPTHWISE_TILE: usize = 16;

/// Scratch matrices above this size make [`ConvKernel::pick`] keep the direct kernel.
const IM2COL_MAX_BYTES: u64 = 64 << 20;

/// The matrix [`ConvKernel::Im2col`] copies the columns into: `[n, cin * kh * kw, oh * ow]`.
fn im2col_shape(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[usize; 3]> {
    let [n, _, oh, ow] = conv_output_shape(x, w, a)?;
    Ok([n, x[1] * w[2] * w[3], oh * ow])
}

impl ConvKernel {
    /// The f32 scratch tensor this kernel needs for the convolution, if any (the caller
    /// allocates it and passes it to [`conv2d_with`]).
    pub fn scratch(self, x: &[usize], w: &[usize], a: &Conv2d) -> Result<Option<[usize; 3]>> {
        match self {
            ConvKernel::Im2col => im2col_shape(x, w, a).map(Some),
            _ => Ok(None),
        }
    }

    /// True when `kernel` computes this convolution (`x` `[n, c, h, w]`, `w` `[cout, c/g, kh, kw]`).
    pub fn supports(self, x: &[usize], w: &[usize], a: &Conv2d) -> bool {
        match self {
            ConvKernel::Direct => true,
            ConvKernel::Pointwise => {
                a.groups == 1
                    && w.len() == 4
                    && w[2..] == [1, 1]
                    && a.strides == [1, 1]
                    && a.pads == [0; 4]
            }
            ConvKernel::Im2col | ConvKernel::Implicit => {
                a.groups == 1 && x.len() == 4 && w.len() == 4
            }
            ConvKernel::DepthwiseTiled => {
                let side =
                    |k: usize, s: usize, d: usize| (DEPTHWISE_TILE - 1) * s + (k - 1) * d + 1;
                a.groups == x[1]
                    && w[0] == x[1]
                    && w[1] == 1
                    && w[2] > 0
                    && w[3] > 0
                    && side(w[2], a.strides[0], a.dilations[0])
                        * side(w[3], a.strides[1], a.dilations[1])
                        <= DEPTHWISE_PATCH
            }
            ConvKernel::Depthwise3x3 => {
                a.groups == x[1]
                    && w[0] == x[1]
                    && w[1..] == [1, 3, 3]
                    && a.dilations == [1, 1]
                    && (a.strides[1] == 1 || a.strides[1] == 2)
            }
        }
    }

    /// The kernel for this convolution on this adapter: the one place that decides. CPU
    /// adapters take the depthwise kernel where it applies and im2col for dense convs; GPUs
    /// the implicit GEMM for dense convs (its tiles fitting one dispatch), the tiled depthwise
    /// kernel where its patch fits, and the direct kernel for other grouped ones.
    pub fn pick(gpu: &Gpu, x: &[usize], w: &[usize], a: &Conv2d) -> ConvKernel {
        if x.len() != 4 || w.len() != 4 {
            return ConvKernel::Direct;
        }
        if ConvKernel::Pointwise.supports(x, w, a) {
            return ConvKernel::Pointwise;
        }
        if !gpu.cpu_kernels() {
            let implicit = ConvKernel::Implicit.supports(x, w, a)
                && conv_output_shape(x, w, a)
                    .is_ok_and(|[_, c, oh, ow]| GemmKernel::Tiled.fits(gpu, c, oh * ow));
            if implicit {
                return ConvKernel::Implicit;
            }
            if ConvKernel::DepthwiseTiled.supports(x, w, a) {
                return ConvKernel::DepthwiseTiled;
            }
            return ConvKernel::Direct;
        }
        if ConvKernel::Depthwise3x3.supports(x, w, a) {
            return ConvKernel::Depthwise3x3;
        }
        let col_bytes = im2col_shape(x, w, a)
            .map(|s| s.iter().product::<usize>() as u64 * 4)
            .unwrap_or(u64::MAX);
        if ConvKernel::Im2col.supports(x, w, a)
            && col_bytes <= IM2COL_MAX_BYTES.min(gpu.limits().max_binding)
        {
            return ConvKernel::Im2col;
        }
        ConvKernel::Direct
    }
}

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
    if kernel == ConvKernel::Implicit {
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
        return conv_gemm_into(enc, gpu, &wv, x, cols, b, epi, &yv);
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
    if kernel == ConvKernel::Depthwise3x3 {
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
        return dispatch_depthwise(enc, gpu, a, &params, &binds, &epi.constants());
    }
    if kernel == ConvKernel::DepthwiseTiled {
        let tiles = oh.div_ceil(DEPTHWISE_TILE) * ow.div_ceil(DEPTHWISE_TILE);
        let grid = grid_of(OP, gpu, [tiles, cout, n], y.shape())?;
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
        let k = &DEPTHWISE_TILED;
        return enc.dispatch(gpu, k, &epi.constants(), &params, &binds, grid);
    }
    let cout_g = cout / a.groups;
    let cob = if cout_g % 4 == 0 { 4 } else { 1 };
    let pixels = (oh * ow).div_ceil(PIXELS_PER_GROUP);
    let grid = grid_of(OP, gpu, [pixels, cout.div_ceil(cob), n], y.shape())?;
    let bias = bias.unwrap_or(w);
    dispatch_split(
        enc,
        gpu,
        &CONV2D,
        cob,
        params,
        &[
            Bind::Whole(x),
            Bind::Whole(w),
            Bind::Whole(bias),
            Bind::Whole(y),
            e0,
            e1,
            e2,
            e3,
        ],
        grid,
        &epi.constants(),
    )
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

/// The output shape of a convolution the depthwise 3x3 kernels compute; an error otherwise.
fn depthwise3x3_output(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    a: &Conv2d,
) -> Result<[usize; 4]> {
    if !ConvKernel::Depthwise3x3.supports(x, w, a) {
        return Err(Error::invalid(
            op,
            "convolution",
            format!("{a:?}"),
            format!("is no depthwise 3x3 with weights {w:?}"),
        ));
    }
    conv_output_shape(x, w, a)
}

/// Blocks of 4 x 8 outputs (shaders/depthwise.wgsl's DW_ROWS x 8) per channel of an
/// `oh` x `ow` output.
fn depthwise3x3_blocks(oh: usize, ow: usize) -> usize {
    oh.div_ceil(4) * ow.div_ceil(8)
}

/// The grid of the depthwise 3x3 kernels for an output of shape `y`: every channel's blocks
/// in groups of 64, one z per batch item.
fn depthwise3x3_grid(op: &'static str, gpu: &Gpu, y: [usize; 4]) -> Result<[u32; 3]> {
    let blocks = y[1] * depthwise3x3_blocks(y[2], y[3]);
    grid_of(op, gpu, [blocks.div_ceil(PIXELS_PER_GROUP), 1, y[0]], &y)
}

/// Records the depthwise 3x3 kernel for `params` (the form by the input's width and left pad).
fn dispatch_depthwise(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &Conv2d,
    params: &Params,
    binds: &[Bind<'_>],
    constants: &[(&'static str, f64)],
) -> Result<()> {
    let size = [params.n, params.cout, params.oh, params.ow].map(|d| d as usize);
    let grid = depthwise3x3_grid("Conv", gpu, size)?;
    // Rows of whole vectors, the segments starting one value before one.
    let vec4 = params.w % 4 == 0 && a.pads[1] == 1;
    let k = if vec4 {
        &DEPTHWISE3X3_VEC4
    } else {
        &DEPTHWISE3X3
    };
    enc.dispatch(gpu, k, constants, params, binds, grid)
}

/// `y += conv2d(x, w)` for a convolution [`ConvKernel::Depthwise3x3`] computes (no bias, no
/// epilogue): the depthwise kernel adding into `y` instead of writing it.
pub fn depthwise3x3_acc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    w: &GpuTensor,
    a: &Conv2d,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "Conv (accumulate)";
    f32_bindings(OP, gpu, &[("x", x), ("w", w), ("y", y)])?;
    let s = x.shape();
    let [n, cout, oh, ow] = depthwise3x3_output(OP, s, w.shape(), a)?;
    expect_shape(OP, "y", y, &[n, cout, oh, ow])?;
    let params = Params {
        accumulate: 1,
        ..Params::new(s, [3, 3], a, [cout, oh, ow], false)
    };
    let none = Epilogue::NONE;
    let [e0, e1, e2, e3] = none.binds(None, x);
    let binds = [
        Bind::Whole(x),
        Bind::Whole(w),
        Bind::Whole(w),
        Bind::Whole(y),
        e0,
        e1,
        e2,
        e3,
    ];
    dispatch_depthwise(enc, gpu, a, &params, &binds, &none.constants())
}

/// The shape of [`depthwise3x3_weight_grad_into`]'s partial sums for input `x` and weights
/// `w`: `[n * blocks, cout * 9]`, one row per batch item and block of 4 x 8 outputs.
pub fn depthwise3x3_weight_grad_partials(
    x: &[usize],
    w: &[usize],
    a: &Conv2d,
) -> Result<[usize; 2]> {
    let [n, cout, oh, ow] = conv_output_shape(x, w, a)?;
    Ok([n * depthwise3x3_blocks(oh, ow), cout * 9])
}

/// The weight gradient of a depthwise 3x3 convolution that [`ConvKernel::Depthwise3x3`]
/// computes, as partial sums over blocks of outputs into `part`
/// ([`depthwise3x3_weight_grad_partials`]): `part[q, c * 9 + t]` is the sum of `dy * x` under
/// tap t over block q. Summing its rows gives the gradient.
pub fn depthwise3x3_weight_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    w_shape: &[usize],
    a: &Conv2d,
    part: &GpuTensor,
) -> Result<()> {
    const OP: &str = "depthwise conv backward (weight)";
    f32_bindings(OP, gpu, &[("x", x), ("dy", dy), ("part", part)])?;
    let s = x.shape();
    let [n, cout, oh, ow] = depthwise3x3_output(OP, s, w_shape, a)?;
    expect_shape(OP, "dy", dy, &[n, cout, oh, ow])?;
    expect_shape(
        OP,
        "part",
        part,
        &depthwise3x3_weight_grad_partials(s, w_shape, a)?,
    )?;
    let grid = depthwise3x3_grid(OP, gpu, [n, cout, oh, ow])?;
    let params = Params::new(s, [3, 3], a, [cout, oh, ow], false);
    // As the forward's vector form, with dy's rows whole vectors too.
    let vec4 = s[3] % 4 == 0 && a.pads[1] == 1 && ow % 4 == 0;
    let k = if vec4 {
        &DEPTHWISE3X3_WGRAD_VEC4
    } else {
        &DEPTHWISE3X3_WGRAD
    };
    let binds = [Bind::Whole(x), Bind::Whole(dy), Bind::Whole(part)];
    enc.dispatch(gpu, k, &[], &params, &binds, grid)
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
