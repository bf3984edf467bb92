//! The op table: each op's lowering function, recording the op's kernels through the
//! [`Lowering`] context. Convolutions and GEMMs take the [`Fusion`] the plan found after them.

use std::collections::HashSet;

use crate::error::{DType, Result};
use crate::exec::fuse::Fusion;
use crate::exec::lower::{FakeQuant, Lowering};
use crate::gpu::GpuTensor;
use crate::graph::attrs::{Binary, Resize};
use crate::graph::ir::{Const, Node, Op};
use crate::graph::shape::{norm_axis, resize_scales, slice_spec, strides};
use crate::ops::elementwise::{self as ew, StridedView};
use crate::ops::epilogue::{Epilogue, Quantize};
use crate::ops::{conv, pool, reduce};

mod linear;
mod rows;
mod select;
pub(crate) mod split;

/// A lowering function: records `node` through the context.
pub type LowerFn = fn(&mut Lowering<'_>, &Node) -> Result<()>;

/// The lowering of an op (`None`: the executor does not run it).
pub fn rule(op: &Op) -> Option<LowerFn> {
    Some(match op {
        op if op.is_view() => view,
        Op::Conv(_) => conv,
        Op::ConvTranspose { .. } => conv_transpose,
        Op::Gemm { .. } => linear::gemm,
        Op::MatMul => linear::matmul,
        Op::BatchNorm { .. } => batch_norm,
        Op::Unary(_) => unary,
        Op::Binary(_) => binary,
        Op::MaxPool(_) | Op::AveragePool(_) => pool2d,
        Op::GlobalAveragePool => global_avg_pool,
        Op::Lrn { .. } => lrn,
        Op::FakeQuant { .. } => fake_quant,
        Op::Resize { .. } => resize,
        Op::Transpose { .. } => transpose,
        Op::Concat { .. } => concat,
        Op::Split { .. } => split,
        Op::Slice => slice,
        Op::Pad { .. } => pad,
        Op::Softmax { .. } => softmax,
        Op::ReduceMean { .. } => reduce_mean,
        Op::Cast { .. } => select::cast,
        Op::Where => select::where_,
        Op::Gather { .. } | Op::GatherElements { .. } => select::gather,
        Op::Expand => select::expand,
        Op::Tile => select::tile,
        Op::DepthToSpace { .. } | Op::SpaceToDepth { .. } => select::depth_space,
        Op::Trilu { .. } => select::trilu,
        Op::ScatterNd { .. } => select::scatter_nd,
        Op::Reduce { .. } => rows::reduce,
        Op::GlobalMaxPool => rows::global_max_pool,
        Op::Arg { .. } => rows::arg,
        Op::LogSoftmax { .. } | Op::Hardmax { .. } => rows::softmax_like,
        Op::CumSum { .. } => rows::cumsum,
        Op::TopK { .. } => rows::topk,
        Op::MeanVarianceNorm { .. } => rows::mean_variance_norm,
        Op::LayerNorm { .. } => rows::layer_norm,
        Op::InstanceNorm { .. } | Op::GroupNorm { .. } => rows::channel_norm,
        _ => return None,
    })
}

fn view(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    cx.alias(&n.outputs[0], &n.inputs[0])
}

/// A 1-D convolution's weight `[out, in, k]` viewed as `[out, in, 1, k]` (its input was
/// unsqueezed at resolution).
fn weight_4d(w: GpuTensor) -> Result<GpuTensor> {
    match *w.shape() {
        [o, i, k] => w.view(&[o, i, 1, k], DType::F32),
        _ => Ok(w),
    }
}

fn conv(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    conv_with(cx, n, None)
}

/// The nodes of `f` recorded with the convolution or GEMM `n` they follow.
pub(crate) fn fused(cx: &mut Lowering<'_>, n: &Node, f: &Fusion) -> Result<()> {
    match n.op {
        Op::Conv(_) => conv_with(cx, n, Some(f)),
        Op::Gemm { .. } => linear::gemm_with(cx, n, Some(f)),
        Op::MatMul => linear::matmul_with(cx, n, Some(f)),
        _ => Err(cx.err(n, "has no epilogue to fuse into")),
    }
}

/// A fusion's epilogue with its tensors resolved (nothing when there is no fusion).
#[derive(Default)]
pub(super) struct EpilogueTensors<'f> {
    fusion: Option<&'f Fusion>,
    affine: Option<GpuTensor>,
    residual: Option<GpuTensor>,
}

impl<'f> EpilogueTensors<'f> {
    pub(super) fn of(cx: &mut Lowering<'_>, f: Option<&'f Fusion>) -> Result<EpilogueTensors<'f>> {
        let Some(f) = f else {
            return Ok(EpilogueTensors::default());
        };
        let affine = match f.affine {
            Some(k) => Some(bn_affine(cx, &cx.graph().nodes[k])?),
            None => None,
        };
        let residual = match &f.residual {
            Some(r) => Some(cx.input(r)?),
            None => None,
        };
        Ok(EpilogueTensors {
            fusion: Some(f),
            affine,
            residual,
        })
    }

    pub(super) fn epilogue(&self) -> Epilogue<'_> {
        let Some(f) = self.fusion else {
            return Epilogue::NONE;
        };
        Epilogue {
            affine: self.affine.as_ref(),
            residual: self.residual.as_ref(),
            quant_pre: f.quant_pre.as_ref().map(quantize),
            act: f.act,
            quant: f.quant.as_ref().map(quantize),
        }
    }
}

/// A simulation's quantizer as an epilogue part.
fn quantize(q: &FakeQuant) -> Quantize<'_> {
    Quantize {
        table: &q.table,
        steps: q.steps,
        exact: q.exact,
    }
}

/// The output buffer of `n`, or of the last node fused into it.
pub(super) fn output_of(cx: &mut Lowering<'_>, n: &Node, f: Option<&Fusion>) -> Result<GpuTensor> {
    match f {
        Some(f) => cx.output_value(n, &f.out),
        None => cx.output(n, 0),
    }
}

fn conv_with(cx: &mut Lowering<'_>, n: &Node, f: Option<&Fusion>) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Conv(a) = &n.op else {
        unreachable!("table")
    };
    let (x, w, b) = (
        cx.input(&n.inputs[0])?,
        weight_4d(cx.input(&n.inputs[1])?)?,
        cx.optional_input(n, 2)?,
    );
    let epi = EpilogueTensors::of(cx, f)?;
    let y = output_of(cx, n, f)?;
    let kernel = conv::ConvKernel::pick(gpu, x.shape(), w.shape(), a);
    let scratch = match kernel.scratch(x.shape(), w.shape(), a)? {
        Some(shape) => Some(cx.scratch(&shape, DType::F32)?),
        None => None,
    };
    let col = scratch.as_ref().map(|s| &s.tensor);
    let e = epi.epilogue();
    conv::conv2d_with(cx.steps(), gpu, kernel, &x, &w, b.as_ref(), a, &e, col, &y)?;
    if let Some(s) = scratch {
        cx.free(s);
    }
    Ok(())
}

fn conv_transpose(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ConvTranspose {
        conv: a,
        output_padding,
        ..
    } = &n.op
    else {
        unreachable!("table")
    };
    let (x, w, b) = (
        cx.input(&n.inputs[0])?,
        weight_4d(cx.input(&n.inputs[1])?)?,
        cx.optional_input(n, 2)?,
    );
    let y = cx.output(n, 0)?;
    conv::conv_transpose2d_into(cx.steps(), gpu, &x, &w, b.as_ref(), a, *output_padding, &y)
}

fn batch_norm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let ab = bn_affine(cx, n)?;
    let inner: usize = x.shape()[2..].iter().product();
    let y = cx.output(n, 0)?;
    ew::channel_affine_into(cx.steps(), gpu, &x, &ab, inner.max(1), &y)
}

/// An inference BatchNormalization as the per-channel map `x * a + b` (`[channels, 2]`).
fn bn_affine(cx: &mut Lowering<'_>, n: &Node) -> Result<GpuTensor> {
    let Op::BatchNorm { epsilon } = n.op else {
        return Err(cx.err(n, "is not a BatchNormalization"));
    };
    let p: Vec<Vec<f32>> = n.inputs[1..5]
        .iter()
        .map(|i| {
            cx.constant(i)
                .map(|a| a.iter().copied().collect())
                .ok_or_else(|| cx.err(n, format!("'{i}' must be a constant")))
        })
        .collect::<Result<_>>()?;
    let ab: Vec<f32> = (0..p[0].len())
        .flat_map(|c| {
            let s = p[0][c] / (p[3][c] + epsilon).sqrt();
            [s, p[1][c] - p[2][c] * s]
        })
        .collect();
    cx.upload(&[ab.len() / 2, 2], &ab)
}

fn unary(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Unary(f) = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    ew::unary_into(cx.steps(), gpu, f, &x, &y)
}

fn binary(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Binary(b) = n.op else {
        unreachable!("table")
    };
    let (a, c) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let y = cx.output(n, 0)?;
    if b == Binary::Div && cx.graph().elem_type(&n.outputs[0]).is_integer() {
        return ew::div_trunc_into(cx.steps(), gpu, &a, &c, &y);
    }
    ew::binary_into(cx.steps(), gpu, b, &a, &c, &y)
}

fn pool2d(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Op::MaxPool(a) | Op::AveragePool(a)) = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    pool::pool2d_into(cx.steps(), gpu, &x, a, matches!(n.op, Op::MaxPool(_)), &y)
}

fn global_avg_pool(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    pool::global_avg_pool_into(cx.steps(), gpu, &x, &y)
}

fn lrn(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Lrn {
        size,
        alpha,
        beta,
        bias,
    } = n.op
    else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    pool::lrn_into(cx.steps(), gpu, &x, size, alpha, beta, bias, &y)
}

fn fake_quant(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::FakeQuant { axis, steps } = n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let (x, table) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let y = cx.output(n, 0)?;
    crate::ops::quant::fake_quant_table_into(cx.steps(), gpu, &x, &table, steps, axis, false, &y)
}

fn resize(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let r = Resize {
        roi: crate::graph::shape::resize_spatial_roi(cx.graph(), n),
        ..n.op
            .resize_settings()
            .ok_or_else(|| cx.err(n, "unsupported mode"))?
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let scales = resize_scales(cx.graph(), n, x.shape(), y.shape());
    pool::resize_into(cx.steps(), gpu, &x, r, scales, &y)
}

/// A whole tensor as a strided view.
pub(crate) fn dense(shape: &[usize]) -> StridedView {
    StridedView {
        offset: 0,
        strides: strides(shape),
    }
}

/// The view of `shape` with its axes in `perm` order.
pub(crate) fn permuted(shape: &[usize], perm: &[usize]) -> StridedView {
    let s = strides(shape);
    StridedView {
        offset: 0,
        strides: perm.iter().map(|&p| s[p]).collect(),
    }
}

fn transpose(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Transpose { perm } = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let perm: Vec<usize> = if perm.is_empty() {
        (0..x.shape().len()).rev().collect()
    } else {
        perm.clone()
    };
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(x.shape(), &perm),
        &y,
        &dense(y.shape()),
        y.shape(),
    )
}

fn concat(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Concat { axis } = n.op else {
        unreachable!("table")
    };
    let y = cx.output(n, 0)?;
    let a = norm_axis(axis, y.shape().len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let ys = strides(y.shape());
    let mut at = 0;
    for i in &n.inputs {
        let x = cx.input(i)?;
        let dst = StridedView {
            offset: at * ys[a],
            strides: ys.clone(),
        };
        ew::strided_copy_into(cx.steps(), gpu, &x, &dense(x.shape()), &y, &dst, x.shape())?;
        at += x.shape()[a];
    }
    Ok(())
}

fn split(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Split { axis, .. } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let a = norm_axis(axis, x.shape().len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let xs = strides(x.shape());
    let mut at = 0;
    for i in 0..n.outputs.len() {
        let y = cx.output(n, i)?;
        let src = StridedView {
            offset: at * xs[a],
            strides: xs.clone(),
        };
        ew::strided_copy_into(cx.steps(), gpu, &x, &src, &y, &dense(y.shape()), y.shape())?;
        at += y.shape()[a];
    }
    Ok(())
}

/// The region of `x` (of `shape`) a Slice node reads, as a strided view.
pub(crate) fn slice_source(
    g: &crate::graph::ir::Graph,
    n: &Node,
    shape: &[usize],
) -> std::result::Result<StridedView, String> {
    let ints = |i: usize| {
        n.inputs
            .get(i)
            .filter(|v| !v.is_empty())
            .map(|v| {
                g.consts
                    .get(v)
                    .map(Const::to_i64)
                    .ok_or_else(|| "slice bounds must be constants".to_string())
            })
            .transpose()
    };
    let spec = slice_spec(
        shape,
        &ints(1)?.unwrap_or_default(),
        &ints(2)?.unwrap_or_default(),
        ints(3)?.as_deref(),
        ints(4)?.as_deref(),
    )?;
    if spec.iter().any(|s| s.step < 0) {
        return Err("negative slice steps on runtime tensors are not supported".into());
    }
    let xs = strides(shape);
    Ok(StridedView {
        offset: spec.iter().zip(&xs).map(|(s, st)| s.start * st).sum(),
        strides: spec
            .iter()
            .zip(&xs)
            .map(|(s, st)| s.step as usize * st)
            .collect(),
    })
}

fn slice(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let src = slice_source(cx.graph(), n, x.shape()).map_err(|m| cx.err(n, m))?;
    let y = cx.output(n, 0)?;
    ew::strided_copy_into(cx.steps(), gpu, &x, &src, &y, &dense(y.shape()), y.shape())
}

/// Where a Pad node's input lies in its output (of `shape`), as a strided view.
pub(crate) fn pad_destination(
    g: &crate::graph::ir::Graph,
    n: &Node,
    shape: &[usize],
) -> std::result::Result<StridedView, String> {
    let pads = g
        .consts
        .get(&n.inputs[1])
        .map(Const::to_i64)
        .ok_or_else(|| "pads must be a constant".to_string())?;
    if pads.iter().any(|&p| p < 0) {
        return Err(format!(
            "negative pads {pads:?} (a crop) have no destination view"
        ));
    }
    let ys = strides(shape);
    Ok(StridedView {
        offset: ys
            .iter()
            .enumerate()
            .map(|(d, s)| pads[d] as usize * s)
            .sum(),
        strides: ys,
    })
}

fn pad(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Pad { value, mode } = &n.op else {
        unreachable!("table")
    };
    let value = *value;
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let pads = cx
        .graph()
        .consts
        .get(&n.inputs[1])
        .map(Const::to_i64)
        .ok_or_else(|| cx.err(n, "pads must be a constant"))?;
    if mode != "constant" || pads.iter().any(|&p| p < 0) || x.is_empty() {
        // Edge, reflect, wrap, crops: the general kernel.
        let m = crate::ops::index::PadMode::parse(mode)
            .ok_or_else(|| cx.err(n, format!("Pad mode '{mode}' is not supported")))?;
        let begin = &pads[..x.shape().len()];
        return crate::ops::index::pad_into(cx.steps(), gpu, &x, begin, m, value, &y);
    }
    let dst = pad_destination(cx.graph(), n, y.shape()).map_err(|m| cx.err(n, m))?;
    ew::fill_into(cx.steps(), gpu, &y, value)?;
    ew::strided_copy_into(cx.steps(), gpu, &x, &dense(x.shape()), &y, &dst, x.shape())
}

fn softmax(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Softmax { axis, legacy } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let s = x.shape().to_vec();
    let a = norm_axis(axis, s.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    if legacy || a == s.len() - 1 {
        let len: usize = s[a..].iter().product();
        return reduce::softmax_rows_into(cx.steps(), gpu, &x, len, &y);
    }
    // Move the axis last, softmax the rows, move it back.
    let mut perm: Vec<usize> = (0..s.len()).filter(|&d| d != a).collect();
    perm.push(a);
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let (t1, t2) = (
        cx.scratch(&t_shape, DType::F32)?,
        cx.scratch(&t_shape, DType::F32)?,
    );
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(&s, &perm),
        &t1.tensor,
        &dense(&t_shape),
        &t_shape,
    )?;
    reduce::softmax_rows_into(cx.steps(), gpu, &t1.tensor, s[a], &t2.tensor)?;
    let ts = strides(&t_shape);
    let mut back = vec![0; s.len()];
    for (i, &p) in perm.iter().enumerate() {
        back[p] = ts[i];
    }
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &t2.tensor,
        &StridedView {
            offset: 0,
            strides: back,
        },
        &y,
        &dense(&s),
        &s,
    )?;
    cx.free(t1);
    cx.free(t2);
    Ok(())
}

fn reduce_mean(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ReduceMean { axes, .. } = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let s = x.shape().to_vec();
    let axes: HashSet<usize> = if axes.is_empty() {
        (0..s.len()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, s.len()).ok_or_else(|| cx.err(n, "axis out of range")))
            .collect::<Result<_>>()?
    };
    let mut perm: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
    let kept = perm.len();
    perm.extend((0..s.len()).filter(|d| axes.contains(d)));
    let len: usize = perm[kept..].iter().map(|&p| s[p]).product();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return reduce::mean_rows_into(cx.steps(), gpu, &x, len, &y);
    }
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let t = cx.scratch(&t_shape, DType::F32)?;
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(&s, &perm),
        &t.tensor,
        &dense(&t_shape),
        &t_shape,
    )?;
    reduce::mean_rows_into(cx.steps(), gpu, &t.tensor, len, &y)?;
    cx.free(t);
    Ok(())
}
