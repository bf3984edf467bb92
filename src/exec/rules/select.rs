//! Lowerings of the type, selection and index ops: Cast, Where, Gather and GatherElements with
//! runtime indices, Expand, Tile.

use crate::error::Result;
use crate::exec::lower::Lowering;
use crate::graph::ir::{ElemType, Node, Op};
use crate::graph::shape::norm_axis;
use crate::ops::elementwise::{self as ew, Convert};
use crate::ops::index;

/// Cast between element types carried as f32: toward zero into integers, 0/1 into bool, the
/// value itself otherwise (a view: no kernel).
pub(crate) fn cast(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::Cast { to } = n.op else {
        unreachable!("table")
    };
    let from = cx.graph().elem_type(&n.inputs[0]);
    let to = ElemType::from_onnx(to).unwrap_or_default();
    let convert = match to {
        ElemType::Bool if from != ElemType::Bool => Some(Convert::ToBool),
        t if t.is_integer() && from == ElemType::F32 => Some(Convert::Trunc),
        _ => None,
    };
    let Some(c) = convert else {
        return cx.alias(&n.outputs[0], &n.inputs[0]);
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    ew::convert_into(cx.steps(), gpu, c, &x, &y)
}

pub(crate) fn where_(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (c, a, b) = (
        cx.input(&n.inputs[0])?,
        cx.input(&n.inputs[1])?,
        cx.input(&n.inputs[2])?,
    );
    let y = cx.output(n, 0)?;
    index::where_into(cx.steps(), gpu, &c, &a, &b, &y)
}

pub(crate) fn gather(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Op::Gather { axis } | Op::GatherElements { axis }) = n.op else {
        unreachable!("table")
    };
    let (x, idx) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let a = norm_axis(axis, x.shape().len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let y = cx.output(n, 0)?;
    if matches!(n.op, Op::GatherElements { .. }) {
        index::gather_elements_into(cx.steps(), gpu, &x, &idx, a, &y)
    } else {
        index::gather_into(cx.steps(), gpu, &x, &idx, a, &y)
    }
}

pub(crate) fn expand(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    index::expand_into(cx.steps(), gpu, &x, &y)
}

pub(crate) fn tile(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let reps: Vec<usize> = cx
        .graph()
        .consts
        .get(&n.inputs[1])
        .map(|c| c.to_i64().iter().map(|&r| r.max(0) as usize).collect())
        .ok_or_else(|| cx.err(n, "repeats must be a constant"))?;
    let y = cx.output(n, 0)?;
    index::tile_into(cx.steps(), gpu, &x, &reps, &y)
}

/// DepthToSpace and SpaceToDepth as one strided copy: `y` walked in its own order as the 6-D
/// view the ONNX definition transposes to, `x` read through the matching strides.
pub(crate) fn depth_space(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let (dims, src) = depth_space_view(&n.op, x.shape()).ok_or_else(|| cx.err(n, "needs NCHW"))?;
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &ew::StridedView {
            offset: 0,
            strides: src,
        },
        &y,
        &super::dense(&dims),
        &dims,
    )
}

/// The 6-D iteration shape (the output's elements in order) and the input's strides over it.
pub(crate) fn depth_space_view(op: &Op, s: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    let [n, c, h, w] = <[usize; 4]>::try_from(s).ok()?;
    let (hw, chw) = (h * w, c * h * w);
    Some(match *op {
        Op::DepthToSpace { blocksize: b, crd } => {
            let c2 = c / (b * b);
            // y[n, c', h, i, w, j] = x[n, channel, h, w].
            let src = if crd {
                vec![chw, b * b * hw, w, b * hw, 1, hw]
            } else {
                vec![chw, hw, w, b * c2 * hw, 1, c2 * hw]
            };
            (vec![n, c2, h, b, w, b], src)
        }
        Op::SpaceToDepth { blocksize: b } => {
            // y[n, i, j, c, h', w'] = x[n, c, h' b + i, w' b + j].
            (
                vec![n, b, b, c, h / b, w / b],
                vec![chw, w, 1, hw, b * w, b],
            )
        }
        _ => return None,
    })
}

/// Trilu as Where(mask, x, 0) with the triangle's mask made on the host.
pub(crate) fn trilu(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::Trilu { upper } = n.op else {
        unreachable!("table")
    };
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let k = match n.inputs.get(1).filter(|v| !v.is_empty()) {
        Some(v) => cx
            .graph()
            .consts
            .get(v)
            .and_then(|c| c.to_i64().first().copied())
            .ok_or_else(|| cx.err(n, "k must be a constant"))?,
        None => 0,
    };
    let s = x.shape();
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    let mask: Vec<f32> = (0..rows * cols)
        .map(|e| {
            let (i, j) = ((e / cols) as i64, (e % cols) as i64);
            let keep = if upper { j - i >= k } else { j - i <= k };
            keep as u8 as f32
        })
        .collect();
    let mask = cx.upload(&[rows, cols], &mask)?;
    let zero = cx.upload(&[1], &[0.0f32])?;
    index::where_into(cx.steps(), gpu, &mask, &x, &zero, &y)
}

/// ScatterND: the data copied into the output, then the updates applied in order.
pub(crate) fn scatter_nd(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let Op::ScatterNd { reduction } = &n.op else {
        unreachable!("table")
    };
    let mode = match reduction.as_str() {
        "add" => index::ScatterMode::Add,
        "mul" => index::ScatterMode::Mul,
        "max" => index::ScatterMode::Max,
        "min" => index::ScatterMode::Min,
        _ => index::ScatterMode::Replace,
    };
    let gpu = cx.gpu();
    let (x, idx, upd) = (
        cx.input(&n.inputs[0])?,
        cx.input(&n.inputs[1])?,
        cx.input(&n.inputs[2])?,
    );
    let y = cx.output(n, 0)?;
    let d = super::dense(x.shape());
    ew::strided_copy_into(cx.steps(), gpu, &x, &d, &y, &d, x.shape())?;
    index::scatter_nd_into(cx.steps(), gpu, &idx, &upd, mode, &y)
}
