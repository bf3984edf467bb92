//! The backward table: for each op, the forward values its gradient reads and the function
//! recording its gradient kernels through [`GradCx`] (the counterpart of `rules::rule`).
//! Every kernel adds into the gradient buffers `GradCx::dx` hands out.

mod product;

use std::collections::HashSet;

use crate::error::{DType, Result};
use crate::exec::backward::GradCx;
use crate::exec::rules::{dense, pad_destination, permuted, slice_source};
use crate::gpu::GpuTensor;
use crate::graph::attrs::{Binary, Unary};
use crate::graph::ir::{Node, Op};
use crate::graph::shape::{norm_axis, strides};
use crate::ops::elementwise::StridedView;
use crate::ops::grad::{self, ConvGrad, Side, Sum, WeightGrad};

/// Records the gradient kernels of one node.
pub type GradFn = fn(&mut GradCx<'_>, &Node) -> Result<()>;

/// The forward values (names) a node's backward reads, given which values carry gradients.
pub type ReadsFn = fn(&Node, &dyn Fn(&str) -> bool) -> Vec<String>;

/// An op's backward.
#[derive(Clone, Copy)]
pub struct GradRule {
    pub grad: GradFn,
    pub reads: ReadsFn,
}

/// The backward of an op (`None`: it has none).
pub fn rule(op: &Op) -> Option<GradRule> {
    let (grad, reads): (GradFn, ReadsFn) = match op {
        op if op.is_view() => (view, nothing),
        Op::Conv(_) => (conv, conv_reads),
        Op::ConvTranspose { .. } => (conv_transpose, conv_reads),
        Op::Gemm { .. } => (product::gemm, both_inputs),
        Op::MatMul => (product::matmul, both_inputs),
        // Predicates, Sin and Cos have no backward kernel (refused at plan time).
        Op::Unary(u)
            if u.is_predicate() || matches!(u, Unary::Sin | Unary::Cos | Unary::GeluTanh) =>
        {
            return None
        }
        Op::Binary(b) if b.is_predicate() || matches!(b, Binary::Mod { .. }) => return None,
        Op::Unary(Unary::Relu | Unary::Clip(..)) => (unary, output),
        Op::Unary(_) => (unary, first_input),
        Op::Binary(Binary::Add | Binary::Sub) => (binary, nothing),
        Op::Binary(_) => (binary, both_inputs),
        // The average pool's backward kernel has no dilations.
        Op::AveragePool(p) if p.dilations != [1, 1] => return None,
        Op::MaxPool(_) | Op::AveragePool(_) => (pool, first_input),
        Op::GlobalAveragePool => (global_avg_pool, nothing),
        Op::Softmax { .. } => (softmax, output),
        Op::ReduceMean { .. } => (reduce_mean, nothing),
        Op::Transpose { .. } => (transpose, nothing),
        Op::Concat { .. } => (concat, nothing),
        Op::Split { .. } => (split, nothing),
        Op::Slice => (slice, nothing),
        Op::Pad { mode, .. } if mode == "constant" => (pad, nothing),
        Op::Resize { .. } => (resize, nothing),
        Op::FakeQuant { .. } => (fake_quant, both_inputs),
        _ => return None,
    };
    Some(GradRule { grad, reads })
}

fn nothing(_: &Node, _: &dyn Fn(&str) -> bool) -> Vec<String> {
    Vec::new()
}

fn output(n: &Node, _: &dyn Fn(&str) -> bool) -> Vec<String> {
    vec![n.outputs[0].clone()]
}

fn first_input(n: &Node, _: &dyn Fn(&str) -> bool) -> Vec<String> {
    vec![n.inputs[0].clone()]
}

fn both_inputs(n: &Node, _: &dyn Fn(&str) -> bool) -> Vec<String> {
    n.inputs.iter().take(2).cloned().collect()
}

/// The input for the weight's gradient, the weight for the input's.
fn conv_reads(n: &Node, requires: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut v = Vec::new();
    if requires(&n.inputs[1]) {
        v.push(n.inputs[0].clone());
    }
    if requires(&n.inputs[0]) {
        v.push(n.inputs[1].clone());
    }
    v
}

/// A dense copy of `dy` added into `dx` (same element order, maybe another shape).
fn add_dense(cx: &mut GradCx<'_>, dy: &GpuTensor, dx: &GpuTensor) -> Result<()> {
    let gpu = cx.gpu();
    let flat = [dy.len()];
    grad::strided_acc_into(cx.steps(), gpu, dy, &dense(&flat), dx, &dense(&flat), &flat)
}

fn view(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    if let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) {
        add_dense(cx, &dy, &dx)?;
    }
    Ok(())
}

fn conv(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Conv(a) = &n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    let (xs, ws) = (cx.shape(&n.inputs[0]), cx.shape(&n.inputs[1]));
    if ws.len() != 4 {
        return Err(crate::error::Error::Graph {
            model: cx.graph().name.clone(),
            message: format!(
                "node '{}' (Conv): the backward of a 1-D convolution is not supported",
                n.name
            ),
        });
    }
    let form = ConvGrad::pick(gpu, &xs, &ws, a);
    if let Some(dx) = cx.dx(n, 0)? {
        let w = cx.value(&n.inputs[1])?;
        match form {
            ConvGrad::Gemm => {
                let [col, _, _] = ConvGrad::scratch(&xs, &ws, a)?;
                let colg = optional(cx, &col)?;
                let c = colg.as_ref().map(|(_, t)| t);
                grad::conv_grad_input_gemm_into(cx.steps(), gpu, &w, &dy, a, c, &dx)?;
                release(cx, colg);
            }
            ConvGrad::Flipped => {
                let (s1, wf) = cx.scratch(&ws)?;
                let u = match grad::flipped_conv(&xs, &ws, a) {
                    Some((_, us)) if a.strides != [1, 1] => Some(cx.scratch(&us)?),
                    _ => None,
                };
                let ut = u.as_ref().map(|(_, t)| t);
                grad::conv_grad_input_flipped_into(cx.steps(), gpu, &w, &dy, a, &wf, ut, &dx)?;
                cx.free(s1);
                release(cx, u);
            }
            ConvGrad::Direct => grad::conv_grad_input_into(cx.steps(), gpu, &w, &dy, a, &dx)?,
        }
    }
    if let Some(dw) = cx.dx(n, 1)? {
        let x = cx.value(&n.inputs[0])?;
        match WeightGrad::pick(gpu, &xs, &ws, a) {
            WeightGrad::Gemm => {
                let [col, prod, part] = ConvGrad::scratch(&xs, &ws, a)?;
                let col = optional(cx, &col)?;
                let (s2, prod) = cx.scratch(&prod)?;
                let part = optional(cx, &part)?;
                let (c, p) = (col.as_ref().map(|(_, t)| t), part.as_ref().map(|(_, t)| t));
                grad::conv_grad_weight_gemm_into(cx.steps(), gpu, &x, &dy, a, c, &prod, p, &dw)?;
                release(cx, col);
                cx.free(s2);
                release(cx, part);
            }
            WeightGrad::GemmSum => {
                let [col, _, _] = ConvGrad::scratch(&xs, &ws, a)?;
                let col = optional(cx, &col)?;
                let c = col.as_ref().map(|(_, t)| t);
                grad::conv_grad_weight_sum_into(cx.steps(), gpu, &x, &dy, a, c, &dw)?;
                release(cx, col);
            }
            WeightGrad::Depthwise => {
                let [blocks, part] = WeightGrad::depthwise_scratch(&xs, &ws, a)?;
                let (s1, blocks) = cx.scratch(&blocks)?;
                let part = optional(cx, &part)?;
                let p = part.as_ref().map(|(_, t)| t);
                grad::conv_grad_weight_depthwise_into(
                    cx.steps(),
                    gpu,
                    &x,
                    &dy,
                    a,
                    &blocks,
                    p,
                    &dw,
                )?;
                cx.free(s1);
                release(cx, part);
            }
            WeightGrad::Direct => {
                grad::conv_grad_weight_into(cx.steps(), gpu, &x, &dy, a, &dw)?;
            }
        }
    }
    conv_bias(cx, n, &dy)
}

/// A scratch buffer of `shape`, none when the shape is `[0]` (a sum's partial sums where
/// none are needed, a pointwise convolution's columns).
fn optional(cx: &mut GradCx<'_>, shape: &[usize]) -> Result<Option<(usize, GpuTensor)>> {
    match shape {
        [0] => Ok(None),
        _ => cx.scratch(shape).map(Some),
    }
}

/// Frees a buffer [`optional`] made.
fn release(cx: &mut GradCx<'_>, slot: Option<(usize, GpuTensor)>) {
    if let Some((s, _)) = slot {
        cx.free(s);
    }
}

/// The bias gradient of a Conv or ConvTranspose: `dy` summed over batch and positions.
fn conv_bias(cx: &mut GradCx<'_>, n: &Node, dy: &GpuTensor) -> Result<()> {
    if let Some(db) = cx.dx(n, 2)? {
        let s = dy.shape();
        let sum = Sum {
            outer: s[0],
            e: s[1],
            inner: s[2] * s[3],
        };
        reduce(cx, dy, sum, 1.0, &db)?;
    }
    Ok(())
}

/// ConvTranspose is the adjoint of Conv in its input, with the same weight layout read as a
/// convolution's: `dx = conv(dy, w)`; its weight gradient is the convolution weight gradient
/// with the roles of input and output gradient swapped.
fn conv_transpose(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ConvTranspose { conv: a, .. } = &n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    if cx.shape(&n.inputs[1]).len() != 4 {
        return Err(crate::error::Error::Graph {
            model: cx.graph().name.clone(),
            message: format!(
                "node '{}' (ConvTranspose): the backward of a 1-D convolution is not supported",
                n.name
            ),
        });
    }
    if let Some(dx) = cx.dx(n, 0)? {
        let w = cx.value(&n.inputs[1])?;
        let (slot, t) = cx.scratch(&cx.shape(&n.inputs[0]))?;
        crate::ops::conv::conv2d_into(cx.steps(), gpu, &dy, &w, None, a, &t)?;
        add_dense(cx, &t, &dx)?;
        cx.free(slot);
    }
    if let Some(dw) = cx.dx(n, 1)? {
        let x = cx.value(&n.inputs[0])?;
        grad::conv_grad_weight_into(cx.steps(), gpu, &dy, &x, a, &dw)?;
    }
    conv_bias(cx, n, &dy)
}

fn resize(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let r =
        n.op.resize_settings()
            .ok_or_else(|| cx.err(n, "unsupported mode"))?;
    if r.filtered() || r.coordinates == 5 {
        return Err(cx.err(
            n,
            "the backward of a cubic, antialiased or tf_crop_and_resize Resize is not supported",
        ));
    }
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let scales = crate::graph::shape::resize_scales(cx.graph(), n, dx.shape(), dy.shape());
    let gpu = cx.gpu();
    crate::ops::pool::resize_grad_into(cx.steps(), gpu, &dy, r, scales, &dx)
}

/// `dx += alpha * sum` of `src` over the outer and inner dims of `sum`, with the partial
/// sums in a scratch buffer.
fn reduce(
    cx: &mut GradCx<'_>,
    src: &GpuTensor,
    sum: Sum,
    alpha: f32,
    dx: &GpuTensor,
) -> Result<()> {
    let gpu = cx.gpu();
    let part = optional(cx, &[sum.partials()])?;
    grad::sum_acc_into(
        cx.steps(),
        gpu,
        src,
        sum,
        alpha,
        part.as_ref().map(|(_, t)| t),
        dx,
    )?;
    if let Some((slot, _)) = part {
        cx.free(slot);
    }
    Ok(())
}

fn unary(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Unary(f) = n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    let v = |cx: &mut GradCx<'_>| match f {
        Unary::Relu | Unary::Clip(..) => cx.value(&n.outputs[0]),
        _ => cx.value(&n.inputs[0]),
    };
    if let Some(g) = cx.take_dy(n, 0) {
        let v = v(cx)?;
        return grad::unary_grad_in_place(cx.steps(), gpu, f, &v, &g);
    }
    let Some(dx) = cx.dx(n, 0)? else {
        return Ok(());
    };
    let v = v(cx)?;
    grad::unary_grad_into(cx.steps(), gpu, f, &v, &dy, &dx)
}

fn binary(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Binary(op) = n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    // Add and Sub: dy becomes A's gradient in place where A has dy's size and nothing else
    // has added to its gradient yet; B's term below reads it before anything else can.
    let taken = matches!(op, Binary::Add | Binary::Sub) && cx.take_dy(n, 0).is_some();
    let da = if taken { None } else { cx.dx(n, 0)? };
    let db = cx.dx(n, 1)?;
    if da.is_none() && db.is_none() {
        return Ok(());
    }
    // Add and Sub read only the operands' shapes: views of dy stand in for their values.
    let operand = |cx: &mut GradCx<'_>, i: usize| -> Result<GpuTensor> {
        match op {
            Binary::Add | Binary::Sub => dy.view(&cx.shape(&n.inputs[i]), DType::F32),
            _ => cx.value(&n.inputs[i]),
        }
    };
    if matches!(op, Binary::Add | Binary::Sub) {
        for (i, d) in [(0, &da), (1, &db)] {
            let Some(d) = d else { continue };
            let alpha = if op == Binary::Sub && i == 1 {
                -1.0
            } else {
                1.0
            };
            if let Some(sum) = Sum::of(&cx.shape(&n.inputs[i]), dy.shape()) {
                reduce(cx, &dy, sum, alpha, d)?;
            } else {
                let (a, b) = (operand(cx, 0)?, operand(cx, 1)?);
                let side = if i == 0 { Side::A } else { Side::B };
                grad::binary_grad_into(cx.steps(), gpu, op, side, &a, &b, &dy, d)?;
            }
        }
        return Ok(());
    }
    let (a, b) = (operand(cx, 0)?, operand(cx, 1)?);
    if let Some(da) = da {
        grad::binary_grad_into(cx.steps(), gpu, op, Side::A, &a, &b, &dy, &da)?;
    }
    if let Some(db) = db {
        grad::binary_grad_into(cx.steps(), gpu, op, Side::B, &a, &b, &dy, &db)?;
    }
    Ok(())
}

fn pool(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (a, max) = match &n.op {
        Op::MaxPool(a) => (a, true),
        Op::AveragePool(a) => (a, false),
        _ => unreachable!("table"),
    };
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let x = cx.value(&n.inputs[0])?;
    grad::pool_grad_into(cx.steps(), gpu, &x, &dy, a, max, &dx)
}

fn global_avg_pool(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let s = dx.shape().to_vec();
    let hw: usize = s[2..].iter().product();
    let ys = dy.shape().to_vec();
    grad::broadcast_acc_into(cx.steps(), gpu, &dy, &ys, 1.0 / hw.max(1) as f32, &dx)
}

fn softmax(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Softmax { axis, legacy } = n.op else {
        unreachable!("table")
    };
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let s = dx.shape().to_vec();
    let a = norm_axis(axis, s.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let (len, inner) = if legacy {
        (s[a..].iter().product(), 1)
    } else {
        (s[a], s[a + 1..].iter().product())
    };
    let y = cx.value(&n.outputs[0])?;
    grad::softmax_grad_into(cx.steps(), gpu, &y, &dy, len, inner, &dx)
}

fn reduce_mean(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ReduceMean { axes, .. } = &n.op else {
        unreachable!("table")
    };
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let s = dx.shape().to_vec();
    let axes: HashSet<usize> = if axes.is_empty() {
        (0..s.len()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, s.len()).ok_or_else(|| cx.err(n, "axis out of range")))
            .collect::<Result<_>>()?
    };
    let kept: Vec<usize> = (0..s.len())
        .map(|d| if axes.contains(&d) { 1 } else { s[d] })
        .collect();
    let count: usize = axes.iter().map(|&d| s[d]).product();
    grad::broadcast_acc_into(cx.steps(), gpu, &dy, &kept, 1.0 / count.max(1) as f32, &dx)
}

fn transpose(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Transpose { perm } = &n.op else {
        unreachable!("table")
    };
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let xs = dx.shape().to_vec();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..xs.len()).rev().collect()
    } else {
        perm.clone()
    };
    // y[..] = x[perm ..]: walk y's shape, add into x through the permuted strides.
    let ys = dy.shape().to_vec();
    grad::strided_acc_into(
        cx.steps(),
        gpu,
        &dy,
        &dense(&ys),
        &dx,
        &permuted(&xs, &perm),
        &ys,
    )
}

fn concat(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Concat { axis } = n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    let ys = dy.shape().to_vec();
    let a = norm_axis(axis, ys.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let st = strides(&ys);
    let mut at = 0;
    for i in 0..n.inputs.len() {
        let xs = cx.shape(&n.inputs[i]);
        if let Some(dx) = cx.dx(n, i)? {
            let src = StridedView {
                offset: at * st[a],
                strides: st.clone(),
            };
            grad::strided_acc_into(cx.steps(), gpu, &dy, &src, &dx, &dense(&xs), &xs)?;
        }
        at += xs[a];
    }
    Ok(())
}

fn split(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Split { axis, .. } = n.op else {
        unreachable!("table")
    };
    let Some(dx) = cx.dx(n, 0)? else {
        return Ok(());
    };
    let xs = dx.shape().to_vec();
    let a = norm_axis(axis, xs.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let st = strides(&xs);
    let mut at = 0;
    for i in 0..n.outputs.len() {
        let ys = cx.shape(&n.outputs[i]);
        if let Some(dy) = cx.dy(n, i) {
            let dst = StridedView {
                offset: at * st[a],
                strides: st.clone(),
            };
            grad::strided_acc_into(cx.steps(), gpu, &dy, &dense(&ys), &dx, &dst, &ys)?;
        }
        at += ys[a];
    }
    Ok(())
}

fn slice(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let xs = dx.shape().to_vec();
    let dst = slice_source(cx.graph(), n, &xs).map_err(|m| cx.err(n, m))?;
    let ys = dy.shape().to_vec();
    grad::strided_acc_into(cx.steps(), gpu, &dy, &dense(&ys), &dx, &dst, &ys)
}

fn pad(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Some(dy), Some(dx)) = (cx.dy(n, 0), cx.dx(n, 0)?) else {
        return Ok(());
    };
    let ys = dy.shape().to_vec();
    let src = pad_destination(cx.graph(), n, &ys).map_err(|m| cx.err(n, m))?;
    let xs = dx.shape().to_vec();
    grad::strided_acc_into(cx.steps(), gpu, &dy, &src, &dx, &dense(&xs), &xs)
}

/// Straight-through for the input (zero where the grid clamps); the scale and offset
/// gradients of AIMET's QuantDequantFunc into columns 0 and 2 of the table's gradient.
fn fake_quant(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let Op::FakeQuant { axis, steps } = n.op else {
        unreachable!("table")
    };
    let Some(dy) = cx.dy(n, 0) else {
        return Ok(());
    };
    let gpu = cx.gpu();
    let (x, table) = (cx.value(&n.inputs[0])?, cx.value(&n.inputs[1])?);
    let g = crate::ops::quant::fake_quant_table_backward(
        cx.steps(),
        gpu,
        &x,
        &dy,
        &table,
        steps,
        axis,
    )?;
    if let Some(dx) = cx.dx(n, 0)? {
        add_dense(cx, &g.grad_x, &dx)?;
    }
    if let Some(dt) = cx.dx(n, 1)? {
        let c = g.grad_scale.len();
        let flat = |offset| StridedView {
            offset,
            strides: vec![1],
        };
        let column = |offset| StridedView {
            offset,
            strides: vec![4],
        };
        grad::strided_acc_into(
            cx.steps(),
            gpu,
            &g.grad_scale,
            &flat(0),
            &dt,
            &column(0),
            &[c],
        )?;
        grad::strided_acc_into(
            cx.steps(),
            gpu,
            &g.grad_offset,
            &flat(0),
            &dt,
            &column(2),
            &[c],
        )?;
    }
    Ok(())
}
