//! The float convolution kernels and the one place that picks among them.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::graph::attrs::Conv2d;
use crate::graph::shape::conv_output_shape;
use crate::ops::gemm::{prefers_wide, GemmKernel};

/// The float convolution kernels (pointwise convs are GEMMs, see [`super::conv2d_into`]). Both add
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
    /// [`ConvKernel::Implicit`] on the 128 x 128 x 8 tiles of [`GemmKernel::TiledWide`]: dense
    /// convs on GPUs with enough output channels, pixels and images to fill one with them.
    ImplicitWide,
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
pub(super) const DEPTHWISE_TILE: usize = 16;

/// Scratch matrices above this size make [`ConvKernel::pick`] keep the direct kernel.
const IM2COL_MAX_BYTES: u64 = 64 << 20;

/// The matrix [`ConvKernel::Im2col`] copies the columns into: `[n, cin * kh * kw, oh * ow]`.
pub(super) fn im2col_shape(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[usize; 3]> {
    let [n, _, oh, ow] = conv_output_shape(x, w, a)?;
    Ok([n, x[1] * w[2] * w[3], oh * ow])
}

impl ConvKernel {
    /// The f32 scratch tensor this kernel needs for the convolution, if any (the caller
    /// allocates it and passes it to [`super::conv2d_with`]).
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
            ConvKernel::Im2col | ConvKernel::Implicit | ConvKernel::ImplicitWide => {
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

    /// The GEMM kernel an implicit-GEMM form runs on.
    pub(super) fn implicit_gemm(self) -> Option<GemmKernel> {
        match self {
            ConvKernel::Implicit => Some(GemmKernel::Tiled),
            ConvKernel::ImplicitWide => Some(GemmKernel::TiledWide),
            _ => None,
        }
    }

    /// The kernel for this convolution on this adapter: the one place that decides. CPU
    /// adapters take the depthwise kernel where it applies and im2col for dense convs; GPUs
    /// the implicit GEMM for dense convs (its tiles fitting one dispatch; 128 x 128 tiles
    /// where the images' products have enough of them, as for a GEMM), the tiled depthwise
    /// kernel where its patch fits, and the direct kernel for other grouped ones.
    pub fn pick(gpu: &Gpu, x: &[usize], w: &[usize], a: &Conv2d) -> ConvKernel {
        if x.len() != 4 || w.len() != 4 {
            return ConvKernel::Direct;
        }
        if ConvKernel::Pointwise.supports(x, w, a) {
            return ConvKernel::Pointwise;
        }
        if !gpu.cpu_kernels() {
            if let (true, Ok([n, c, oh, ow])) = (
                ConvKernel::Implicit.supports(x, w, a),
                conv_output_shape(x, w, a),
            ) {
                let wide = GemmKernel::TiledWide;
                if prefers_wide(c, oh * ow, n) && wide.fits(gpu, c, oh * ow) {
                    return ConvKernel::ImplicitWide;
                }
                if GemmKernel::Tiled.fits(gpu, c, oh * ow) {
                    return ConvKernel::Implicit;
                }
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
