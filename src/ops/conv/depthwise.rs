//! The depthwise 3x3 kernels for CPU adapters: the forward's dispatch, adding into an output,
//! and the weight gradient.

use super::{
    expect_shape, f32_bindings, grid_of, ConvKernel, Params, DEPTHWISE3X3, DEPTHWISE3X3_VEC4,
    DEPTHWISE3X3_WGRAD, DEPTHWISE3X3_WGRAD_VEC4, PIXELS_PER_GROUP,
};
use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::Conv2d;
use crate::graph::shape::conv_output_shape;
use crate::ops::epilogue::Epilogue;

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
pub(super) fn dispatch_depthwise(
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
