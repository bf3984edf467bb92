//! Lowerings of the ops that work along axes as rows: the reductions, ArgMax/ArgMin,
//! LogSoftmax and Hardmax, TopK, CumSum, GlobalMaxPool and the normalizations (LayerNorm,
//! InstanceNorm, GroupNorm, MeanVarianceNormalization). The axes are moved last by a strided
//! copy when they are not already (`to_rows`), the row kernel runs, and outputs of the input's
//! layout are moved back (`from_rows`).

use crate::error::{DType, Result};
use crate::exec::lower::{Lowering, Scratch};
use crate::exec::rules::{dense, permuted};
use crate::gpu::GpuTensor;
use crate::graph::attrs::Reduce;
use crate::graph::ir::{Node, Op};
use crate::graph::shape::{norm_axis, strides};
use crate::ops::elementwise::{self as ew, StridedView};
use crate::ops::reduce::{self, Norm};

/// `x` as rows of the product of `axes` (moved last, in order): the tensor (x itself when the
/// axes already are last), its scratch if one was made, the permutation and the row length.
fn to_rows(
    cx: &mut Lowering<'_>,
    x: &GpuTensor,
    axes: &[usize],
) -> Result<(GpuTensor, Option<Scratch>, Vec<usize>, usize)> {
    let s = x.shape().to_vec();
    let mut perm: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
    perm.extend(axes.iter().copied());
    let len: usize = axes.iter().map(|&a| s[a]).product();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok((x.clone(), None, perm, len));
    }
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let t = cx.scratch(&t_shape, DType::F32)?;
    let gpu = cx.gpu();
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        x,
        &permuted(&s, &perm),
        &t.tensor,
        &dense(&t_shape),
        &t_shape,
    )?;
    Ok((t.tensor.clone(), Some(t), perm, len))
}

/// Copies `t` (laid out as `y`'s shape permuted by `perm`) into `y`.
fn from_rows(cx: &mut Lowering<'_>, t: &GpuTensor, perm: &[usize], y: &GpuTensor) -> Result<()> {
    let s = y.shape().to_vec();
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let ts = strides(&t_shape);
    let mut back = vec![0; s.len()];
    for (i, &p) in perm.iter().enumerate() {
        back[p] = ts[i];
    }
    let gpu = cx.gpu();
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &t.view(&t_shape, DType::F32)?,
        &StridedView {
            offset: 0,
            strides: back,
        },
        y,
        &dense(&s),
        &s,
    )
}

/// A row kernel over `axes` whose output has the input's shape (LogSoftmax, Hardmax, CumSum,
/// MeanVarianceNormalization): straight into `y` when the axes are last.
fn same_shape(
    cx: &mut Lowering<'_>,
    x: &GpuTensor,
    axes: &[usize],
    y: &GpuTensor,
    run: impl FnOnce(&mut Lowering<'_>, &GpuTensor, usize, &GpuTensor) -> Result<()>,
) -> Result<()> {
    let (t, scratch, perm, len) = to_rows(cx, x, axes)?;
    match scratch {
        None => run(cx, &t, len, y)?,
        Some(s) => {
            let out = cx.scratch(t.shape(), DType::F32)?;
            run(cx, &t, len, &out.tensor)?;
            from_rows(cx, &out.tensor, &perm, y)?;
            cx.free(out);
            cx.free(s);
        }
    }
    Ok(())
}

fn axes_of(cx: &Lowering<'_>, n: &Node, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut v: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank).ok_or_else(|| cx.err(n, format!("axis {a} out of range"))))
        .collect::<Result<_>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

pub(crate) fn reduce(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::Reduce {
        op,
        axes,
        noop_empty,
        ..
    } = &n.op
    else {
        unreachable!("table")
    };
    if axes.is_empty() && *noop_empty {
        return cx.alias(&n.outputs[0], &n.inputs[0]);
    }
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let axes = axes_of(cx, n, axes, x.shape().len())?;
    if x.is_empty() {
        return ew::fill_into(cx.steps(), gpu, &y, op.empty());
    }
    let (t, scratch, _, len) = to_rows(cx, &x, &axes)?;
    reduce::reduce_rows_into(cx.steps(), gpu, *op, &t, len, &y)?;
    if let Some(s) = scratch {
        cx.free(s);
    }
    Ok(())
}

pub(crate) fn global_max_pool(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let inner: usize = x.shape()[2..].iter().product();
    reduce::reduce_rows_into(cx.steps(), gpu, Reduce::Max, &x, inner, &y)
}

pub(crate) fn arg(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::Arg {
        min, axis, last, ..
    } = n.op
    else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let a = axes_of(cx, n, &[axis], x.shape().len())?;
    let (t, scratch, _, len) = to_rows(cx, &x, &a)?;
    reduce::arg_rows_into(cx.steps(), gpu, &t, len, min, last, &y)?;
    if let Some(s) = scratch {
        cx.free(s);
    }
    Ok(())
}

/// LogSoftmax and Hardmax: along `axis`, or (legacy, opset < 13) over the input coerced to 2-D
/// at `axis`.
pub(crate) fn softmax_like(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let (axis, legacy, log) = match n.op {
        Op::LogSoftmax { axis, legacy } => (axis, legacy, true),
        Op::Hardmax { axis, legacy } => (axis, legacy, false),
        _ => unreachable!("table"),
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let s = x.shape().to_vec();
    let a = norm_axis(axis, s.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let run = move |cx: &mut Lowering<'_>, t: &GpuTensor, len: usize, out: &GpuTensor| {
        if log {
            reduce::log_softmax_rows_into(cx.steps(), gpu, t, len, out)
        } else {
            reduce::hardmax_rows_into(cx.steps(), gpu, t, len, out)
        }
    };
    if legacy {
        let len: usize = s[a..].iter().product();
        return run(cx, &x, len, &y);
    }
    same_shape(cx, &x, &[a], &y, run)
}

pub(crate) fn cumsum(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::CumSum { exclusive, reverse } = n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let axis = cx
        .graph()
        .consts
        .get(&n.inputs[1])
        .and_then(|c| c.to_i64().first().copied())
        .ok_or_else(|| cx.err(n, "the axis must be a constant"))?;
    let a = axes_of(cx, n, &[axis], x.shape().len())?;
    same_shape(cx, &x, &a, &y, move |cx, t, len, out| {
        reduce::cumsum_rows_into(cx.steps(), gpu, t, len, exclusive, reverse, out)
    })
}

pub(crate) fn topk(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::TopK { axis, largest } = n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let a = axes_of(cx, n, &[axis], x.shape().len())?;
    let (values, indices) = (cx.output(n, 0)?, cx.output(n, 1)?);
    let k = values.shape()[a[0]];
    let (t, scratch, perm, len) = to_rows(cx, &x, &a)?;
    match scratch {
        None => reduce::topk_rows_into(cx.steps(), gpu, &t, len, k, !largest, &values, &indices)?,
        Some(s) => {
            let mut o_shape: Vec<usize> = t.shape().to_vec();
            *o_shape.last_mut().expect("rank >= 1") = k;
            let (v, i) = (
                cx.scratch(&o_shape, DType::F32)?,
                cx.scratch(&o_shape, DType::F32)?,
            );
            reduce::topk_rows_into(cx.steps(), gpu, &t, len, k, !largest, &v.tensor, &i.tensor)?;
            from_rows(cx, &v.tensor, &perm, &values)?;
            from_rows(cx, &i.tensor, &perm, &indices)?;
            cx.free(v);
            cx.free(i);
            cx.free(s);
        }
    }
    Ok(())
}

pub(crate) fn mean_variance_norm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::MeanVarianceNorm { axes } = &n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let axes = axes_of(cx, n, axes, x.shape().len())?;
    same_shape(cx, &x, &axes, &y, move |cx, t, len, out| {
        let rows = t.len() / len.max(1);
        let stats = cx.scratch(&[rows, 2], DType::F32)?;
        reduce::normalize_rows_into(
            cx.steps(),
            gpu,
            t,
            len,
            Norm::StdDev,
            1e-9,
            out,
            &stats.tensor,
        )?;
        cx.free(stats);
        Ok(())
    })
}

pub(crate) fn layer_norm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::LayerNorm { axis, epsilon } = n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let s = x.shape().to_vec();
    let a = norm_axis(axis, s.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let len: usize = s[a..].iter().product();
    let rows = x.len() / len.max(1);
    let scale = cx.input(&n.inputs[1])?;
    let bias = cx.optional_input(n, 2)?;
    let t = cx.scratch(&s, DType::F32)?;
    let stats = cx.scratch(&[rows, 2], DType::F32)?;
    reduce::normalize_rows_into(
        cx.steps(),
        gpu,
        &x,
        len,
        Norm::Variance,
        epsilon,
        &t.tensor,
        &stats.tensor,
    )?;
    let y = cx.output(n, 0)?;
    match bias {
        None => ew::binary_into(
            cx.steps(),
            gpu,
            crate::graph::attrs::Binary::Mul,
            &t.tensor,
            &scale,
            &y,
        )?,
        Some(b) => {
            let u = cx.scratch(&s, DType::F32)?;
            ew::binary_into(
                cx.steps(),
                gpu,
                crate::graph::attrs::Binary::Mul,
                &t.tensor,
                &scale,
                &u.tensor,
            )?;
            ew::binary_into(
                cx.steps(),
                gpu,
                crate::graph::attrs::Binary::Add,
                &u.tensor,
                &b,
                &y,
            )?;
            cx.free(u);
        }
    }
    // The optional Mean and InvStdDev outputs: every other value of the statistics.
    for (k, offset) in [(1usize, 0usize), (2, 1)] {
        if n.outputs.get(k).is_some_and(|o| !o.is_empty()) {
            let o = cx.output(n, k)?;
            ew::strided_copy_into(
                cx.steps(),
                gpu,
                &stats.tensor,
                &StridedView {
                    offset,
                    strides: vec![2],
                },
                &o.view(&[rows], DType::F32)?,
                &dense(&[rows]),
                &[rows],
            )?;
        }
    }
    cx.free(t);
    cx.free(stats);
    Ok(())
}

/// InstanceNormalization and GroupNormalization: each (sample, group) normalized, then
/// `scale[c] * v + bias[c]` per channel (GroupNormalization of opset 18: per group).
pub(crate) fn channel_norm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let (groups, epsilon) = match n.op {
        Op::InstanceNorm { epsilon } => (None, epsilon),
        Op::GroupNorm { groups, epsilon } => (Some(groups), epsilon),
        _ => unreachable!("table"),
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let s = x.shape().to_vec();
    let (batch, c) = (s[0], s[1]);
    let inner: usize = s[2..].iter().product();
    let g = groups.unwrap_or(c);
    let len = c / g * inner;
    let t = cx.scratch(&s, DType::F32)?;
    let stats = cx.scratch(&[batch * g, 2], DType::F32)?;
    reduce::normalize_rows_into(
        cx.steps(),
        gpu,
        &x,
        len,
        Norm::Variance,
        epsilon,
        &t.tensor,
        &stats.tensor,
    )?;
    // (scale, bias) interleaved per channel; a per-group parameter repeats over its channels.
    let (scale, bias) = (cx.input(&n.inputs[1])?, cx.input(&n.inputs[2])?);
    let ab = cx.scratch(&[c, 2], DType::F32)?;
    for (k, p) in [scale, bias].iter().enumerate() {
        let per_group = p.len() == g && g != c;
        if !per_group && p.len() != c {
            return Err(cx.err(
                n,
                format!(
                    "scale and bias need {c} values (or {g}, one per group), got {:?}",
                    p.shape()
                ),
            ));
        }
        let (dims, src) = if per_group {
            (vec![g, c / g], vec![1, 0])
        } else {
            (vec![c], vec![1])
        };
        let dst = if per_group {
            vec![2 * (c / g), 2]
        } else {
            vec![2]
        };
        ew::strided_copy_into(
            cx.steps(),
            gpu,
            p,
            &StridedView {
                offset: 0,
                strides: src,
            },
            &ab.tensor,
            &StridedView {
                offset: k,
                strides: dst,
            },
            &dims,
        )?;
    }
    let y = cx.output(n, 0)?;
    ew::channel_affine_into(cx.steps(), gpu, &t.tensor, &ab.tensor, inner.max(1), &y)?;
    cx.free(t);
    cx.free(stats);
    cx.free(ab);
    Ok(())
}
