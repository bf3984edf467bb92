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
