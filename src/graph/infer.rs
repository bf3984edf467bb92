//! Shape rules: the output shapes of a runtime node from its input shapes (and the constants
//! that size them).

use crate::graph::attrs::Resize;
use crate::graph::ir::{Const, Node, Op};
use crate::graph::shape::{
    broadcast_shape, conv_output_shape, conv_transpose_output_shape, norm_axis, pool_output_shape,
    slice_spec,
};

/// The values of a constant input, as integers.
pub(crate) fn const_ints(
    consts: &std::collections::BTreeMap<String, Const>,
    name: &str,
) -> std::result::Result<Vec<i64>, String> {
    consts
        .get(name)
        .map(Const::to_i64)
        .ok_or_else(|| format!("input '{name}' must be a constant"))
}

/// A 1-D convolution's weight `[out, in, k]` read as the 2-D one `[out, in, 1, k]`.
pub fn weight_4d(w: &[usize]) -> Vec<usize> {
    if w.len() == 3 {
        vec![w[0], w[1], 1, w[2]]
    } else {
        w.to_vec()
    }
}

/// The shape of `x` reduced over `axes` (all when empty), reduced dims kept as 1 or dropped.
fn reduced_shape(
    x: &[usize],
    axes: &[i64],
    keepdims: bool,
) -> std::result::Result<Vec<usize>, String> {
    let axes: Vec<usize> = if axes.is_empty() {
        (0..x.len()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, x.len()).ok_or(format!("axis {a} out of range for {x:?}")))
            .collect::<std::result::Result<_, _>>()?
    };
    Ok(x.iter()
        .enumerate()
        .filter_map(|(d, &v)| {
            if axes.contains(&d) {
                keepdims.then_some(1)
            } else {
                Some(v)
            }
        })
        .collect())
}

fn shape_err(what: impl Into<String>) -> String {
    what.into()
}

/// Output shapes of a runtime node from its input shapes.
pub fn infer(
    node: &Node,
    s: &[Vec<usize>],
    consts: &std::collections::BTreeMap<String, Const>,
) -> std::result::Result<Vec<Vec<usize>>, String> {
    let x = s.first().ok_or("no inputs")?;
    let one = |v: Vec<usize>| Ok(vec![v]);
    match &node.op {
        Op::Einsum { .. } => Err("Einsum is rewritten before shapes are inferred".into()),
        Op::Conv(a) => one(
            conv_output_shape(x, &weight_4d(s.get(1).ok_or("no weight")?), a)
                .map_err(|e| e.to_string())?
                .to_vec(),
        ),
        Op::ConvTranspose {
            conv: c,
            output_padding,
            ..
        } => one(conv_transpose_output_shape(
            x,
            &weight_4d(s.get(1).ok_or("no weight")?),
            c,
            *output_padding,
        )
        .map_err(|e| e.to_string())?
        .to_vec()),
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let (a, b) = (x, s.get(1).ok_or("no B")?);
            if a.len() != 2 || b.len() != 2 {
                return Err(format!("Gemm needs 2-D A and B, got {a:?} and {b:?}"));
            }
            let (m, k) = if *trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(format!("Gemm inner dims differ: A {a:?} B {b:?}"));
            }
            if let Some(c) = s.get(2).filter(|c| !c.is_empty()) {
                broadcast_shape(c, &[m, n])
                    .filter(|o| o == &[m, n])
                    .ok_or(format!("C {c:?} does not broadcast to [{m}, {n}]"))?;
            }
            one(vec![m, n])
        }
        Op::MatMul => {
            let (a0, b0) = (x, s.get(1).ok_or("no B")?);
            if a0.is_empty() || b0.is_empty() {
                return Err(format!("MatMul of {a0:?} and {b0:?}: a scalar operand"));
            }
            // A 1-D A is a row [1, k], a 1-D B a column [k, 1]; their dim leaves the output.
            let a = &if a0.len() == 1 {
                vec![1, a0[0]]
            } else {
                a0.clone()
            };
            let b = &if b0.len() == 1 {
                vec![b0[0], 1]
            } else {
                b0.clone()
            };
            let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
            let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
            if k != k2 {
                return Err(format!("MatMul inner dims differ: {a:?} x {b:?}"));
            }
            let mut batch = broadcast_shape(&a[..a.len() - 2], &b[..b.len() - 2])
                .ok_or("batch dims do not broadcast")?;
            if a0.len() > 1 {
                batch.push(m);
            }
            if b0.len() > 1 {
                batch.push(n);
            }
            one(batch)
        }
        Op::BatchNorm { .. } => {
            let c = x.get(1).ok_or("BatchNormalization needs [n, c, ...]")?;
            for (i, p) in s.iter().enumerate().skip(1).take(4) {
                if p.iter().product::<usize>() != *c {
                    return Err(format!("parameter {i} has shape {p:?}, expected [{c}]"));
                }
            }
            one(x.clone())
        }
        Op::Unary(_) => one(x.clone()),
        Op::Binary(_) => one(broadcast_shape(x, s.get(1).ok_or("needs two inputs")?)
            .ok_or(format!("shapes {x:?} and {:?} do not broadcast", s[1]))?),
        Op::MaxPool(a) | Op::AveragePool(a) => {
            one(pool_output_shape(x, a).map_err(|e| e.to_string())?.to_vec())
        }
        Op::FakeQuant { .. } => one(x.clone()),
        Op::Lrn { .. } => {
            if x.len() < 3 {
                return Err(shape_err(format!("needs [n, c, spatial...], got {x:?}")));
            }
            one(x.clone())
        }
        Op::GlobalAveragePool => {
            if x.len() < 3 {
                return Err(shape_err(format!("needs [n, c, spatial...], got {x:?}")));
            }
            let mut o = x.clone();
            o[2..].iter_mut().for_each(|d| *d = 1);
            one(o)
        }
        Op::Flatten { axis } => {
            let a = if *axis < 0 {
                axis + x.len() as i64
            } else {
                *axis
            };
            if !(0..=x.len() as i64).contains(&a) {
                return Err(format!("axis {axis} out of range for {x:?}"));
            }
            let a = a as usize;
            one(vec![x[..a].iter().product(), x[a..].iter().product()])
        }
        Op::Reshape { allow_zero } => {
            let target = const_ints(
                consts,
                node.inputs.get(1).ok_or("Reshape needs a shape input")?,
            )?;
            let mut out = Vec::with_capacity(target.len());
            let mut infer_at = None;
            for (i, &t) in target.iter().enumerate() {
                match t {
                    -1 if infer_at.is_none() => {
                        infer_at = Some(i);
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(*x.get(i).ok_or("0 copies a missing dim")?),
                    t if t >= 0 => out.push(t as usize),
                    _ => return Err(format!("bad target shape {target:?}")),
                }
            }
            let n: usize = x.iter().product();
            if let Some(i) = infer_at {
                let rest: usize = out.iter().product();
                if rest == 0 || n % rest != 0 {
                    return Err(format!("cannot reshape {x:?} to {target:?}"));
                }
                out[i] = n / rest;
            }
            if out.iter().product::<usize>() != n {
                return Err(format!("cannot reshape {x:?} ({n} elements) to {target:?}"));
            }
            one(out)
        }
        Op::Transpose { perm } => {
            let perm: Vec<usize> = if perm.is_empty() {
                (0..x.len()).rev().collect()
            } else {
                perm.clone()
            };
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.len()).collect::<Vec<_>>() {
                return Err(format!(
                    "perm {perm:?} is not a permutation of {} dims",
                    x.len()
                ));
            }
            one(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Concat { axis } => {
            let a = norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            let mut out = x.clone();
            for o in &s[1..] {
                if o.len() != x.len() || o.iter().enumerate().any(|(d, &v)| d != a && v != x[d]) {
                    return Err(format!("cannot concatenate {x:?} and {o:?} on axis {a}"));
                }
                out[a] += o[a];
            }
            one(out)
        }
        Op::Split { axis, split } => {
            let a = norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            let n = node.outputs.len();
            let sizes = if split.is_empty() {
                let base = x[a].div_ceil(n);
                (0..n)
                    .map(|i| base.min(x[a].saturating_sub(base * i)))
                    .collect()
            } else {
                split.clone()
            };
            if sizes.len() != n || sizes.iter().sum::<usize>() != x[a] {
                return Err(format!(
                    "split {sizes:?} does not divide dim {} into {n} outputs",
                    x[a]
                ));
            }
            Ok(sizes
                .iter()
                .map(|&k| {
                    let mut o = x.clone();
                    o[a] = k;
                    o
                })
                .collect())
        }
        Op::Slice => {
            let get = |i: usize| {
                node.inputs
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .map(|n| const_ints(consts, n))
                    .transpose()
            };
            let spec = slice_spec(
                x,
                &get(1)?.ok_or("no starts")?,
                &get(2)?.ok_or("no ends")?,
                get(3)?.as_deref(),
                get(4)?.as_deref(),
            )?;
            one(spec.iter().map(|a| a.len).collect())
        }
        Op::Pad { mode, .. } => {
            if !matches!(mode.as_str(), "constant" | "edge" | "reflect" | "wrap") {
                return Err(format!(
                    "Pad mode '{mode}' is not supported (constant, edge, reflect, wrap)"
                ));
            }
            let pads = const_ints(consts, node.inputs.get(1).ok_or("Pad needs pads")?)?;
            if pads.len() != 2 * x.len() {
                return Err(format!("pads {pads:?} for a rank-{} tensor", x.len()));
            }
            let out: Vec<i64> = x
                .iter()
                .enumerate()
                .map(|(d, &v)| v as i64 + pads[d] + pads[d + x.len()])
                .collect();
            if out.iter().any(|&d| d < 0) {
                return Err(format!("pads {pads:?} crop more than {x:?} holds"));
            }
            if mode == "reflect"
                && (0..x.len()).any(|d| pads[d].max(pads[d + x.len()]) >= x[d] as i64)
            {
                return Err(format!(
                    "reflect pads {pads:?} must be smaller than the dims {x:?}"
                ));
            }
            one(out.iter().map(|&d| d as usize).collect())
        }
        Op::Resize {
            mode,
            coordinate_transformation,
            ..
        } => {
            let Op::Resize { nearest_mode, .. } = &node.op else {
                unreachable!()
            };
            if Resize::from_onnx(mode, coordinate_transformation, nearest_mode).is_none() {
                return Err(format!("Resize mode '{mode}' / '{coordinate_transformation}' / '{nearest_mode}' is not supported"));
            }
            let sizes = node
                .inputs
                .get(3)
                .filter(|n| !n.is_empty())
                .map(|n| const_ints(consts, n))
                .transpose()?;
            let scales = node
                .inputs
                .get(2)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    consts
                        .get(n)
                        .map(|c| c.to_f32().iter().copied().collect::<Vec<_>>())
                        .ok_or("scales must be constant")
                })
                .transpose()?;
            let out: Vec<usize> = match (sizes, scales) {
                (Some(sz), _) if sz.len() == x.len() => {
                    sz.iter().map(|&v| v.max(0) as usize).collect()
                }
                (_, Some(sc)) if sc.len() == x.len() => {
                    // tf_crop_and_resize scales the region of interest, not the input.
                    let roi = (coordinate_transformation == "tf_crop_and_resize")
                        .then(|| crate::graph::shape::resize_roi(consts, node, x.len()))
                        .flatten();
                    let extent = |i: usize| roi.as_ref().map_or(1.0, |r| r[x.len() + i] - r[i]);
                    x.iter()
                        .zip(&sc)
                        .enumerate()
                        .map(|(i, (&d, &f))| (d as f32 * extent(i) * f).floor() as usize)
                        .collect()
                }
                _ => return Err("Resize needs constant scales or sizes of the input's rank".into()),
            };
            if out.len() != 4 || out[0] != x[0] || out[1] != x[1] {
                return Err("Resize is supported on the spatial dims of NCHW tensors".into());
            }
            one(out)
        }
        Op::Softmax { axis, .. } => {
            norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            one(x.clone())
        }
        Op::Reduce {
            axes, noop_empty, ..
        } if axes.is_empty() && *noop_empty => one(x.clone()),
        Op::ReduceMean { axes, keepdims } | Op::Reduce { axes, keepdims, .. } => {
            one(reduced_shape(x, axes, *keepdims)?)
        }
        Op::Arg { axis, keepdims, .. } => one(reduced_shape(x, &[*axis], *keepdims)?),
        Op::LogSoftmax { axis, .. } | Op::Hardmax { axis, .. } => {
            norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            one(x.clone())
        }
        Op::TopK { axis, .. } => {
            let a = norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            let k = const_ints(consts, node.inputs.get(1).ok_or("TopK needs k")?)?
                .first()
                .copied()
                .ok_or("k is empty")?;
            if k < 0 || k as usize > x[a] {
                return Err(format!("k = {k} along a dim of {}", x[a]));
            }
            let mut o = x.clone();
            o[a] = k as usize;
            if node.outputs.len() != 2 {
                return Err("TopK has two outputs (values, indices)".into());
            }
            Ok(vec![o.clone(), o])
        }
        Op::CumSum { .. } => {
            let ax = const_ints(consts, node.inputs.get(1).ok_or("CumSum needs an axis")?)?;
            norm_axis(*ax.first().ok_or("axis is empty")?, x.len()).ok_or("axis out of range")?;
            one(x.clone())
        }
        Op::GlobalMaxPool => {
            if x.len() < 3 {
                return Err(shape_err(format!("needs [n, c, spatial...], got {x:?}")));
            }
            let mut o = x.clone();
            o[2..].iter_mut().for_each(|d| *d = 1);
            one(o)
        }
        Op::LayerNorm { axis, .. } => {
            let a = norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            if node.inputs.len() < 2 {
                return Err("LayerNormalization needs a scale".into());
            }
            let mut stats = x[..a].to_vec();
            stats.resize(x.len(), 1);
            Ok(vec![x.clone(), stats.clone(), stats])
        }
        Op::InstanceNorm { .. } | Op::GroupNorm { .. } => {
            if node.inputs.len() < 3 || node.inputs[1..3].iter().any(String::is_empty) {
                return Err("needs a scale and a bias".into());
            }
            if x.len() < 3 {
                return Err(format!("needs [n, c, spatial...], got {x:?}"));
            }
            if let Op::GroupNorm { groups, .. } = node.op {
                if x[1] % groups != 0 {
                    return Err(format!("{} channels in {groups} groups", x[1]));
                }
            }
            one(x.clone())
        }
        Op::DepthToSpace { blocksize: b, .. } => {
            if x.len() != 4 || x[1] % (b * b) != 0 {
                return Err(format!("DepthToSpace of {x:?} with blocksize {b}"));
            }
            one(vec![x[0], x[1] / (b * b), x[2] * b, x[3] * b])
        }
        Op::SpaceToDepth { blocksize: b } => {
            if x.len() != 4 || x[2] % b != 0 || x[3] % b != 0 {
                return Err(format!("SpaceToDepth of {x:?} with blocksize {b}"));
            }
            one(vec![x[0], x[1] * b * b, x[2] / b, x[3] / b])
        }
        Op::Trilu { .. } => {
            if x.len() < 2 {
                return Err(format!("Trilu needs at least 2 dims, got {x:?}"));
            }
            one(x.clone())
        }
        Op::ScatterNd { .. } => {
            let (i, u) = (s.get(1).ok_or("no indices")?, s.get(2).ok_or("no updates")?);
            let k = *i.last().ok_or("indices are a scalar")?;
            let mut want = i[..i.len() - 1].to_vec();
            want.extend(
                x.get(k..)
                    .ok_or(format!("index tuples of {k} into {x:?}"))?,
            );
            if *u != want {
                return Err(format!("updates {u:?}, expected {want:?}"));
            }
            one(x.clone())
        }
        Op::MeanVarianceNorm { axes } => {
            reduced_shape(x, axes, true)?;
            one(x.clone())
        }
        Op::Squeeze { axes } => {
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, x.len()).ok_or("axis out of range"))
                .collect::<std::result::Result<_, _>>()?;
            if axes.iter().any(|&a| x[a] != 1) {
                return Err(format!("cannot squeeze non-1 dims {axes:?} of {x:?}"));
            }
            one(x
                .iter()
                .enumerate()
                .filter(|(d, &v)| {
                    if axes.is_empty() {
                        v != 1
                    } else {
                        !axes.contains(d)
                    }
                })
                .map(|(_, &v)| v)
                .collect())
        }
        Op::Unsqueeze { axes } => {
            let rank = x.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, rank).ok_or("axis out of range"))
                .collect::<std::result::Result<_, _>>()?;
            axes.sort_unstable();
            let mut out = x.clone();
            for a in axes {
                out.insert(a, 1);
            }
            one(out)
        }
        Op::Identity | Op::Dropout => Ok(vec![x.clone(); node.outputs.len().min(1)]),
        Op::Cast { .. } => one(x.clone()),
        Op::Gather { axis } => {
            let a = norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            let idx = s.get(1).ok_or("Gather needs indices")?;
            let mut out = x[..a].to_vec();
            out.extend(idx);
            out.extend(&x[a + 1..]);
            one(out)
        }
        Op::GatherElements { axis } => {
            let idx = s.get(1).ok_or("GatherElements needs indices")?;
            norm_axis(*axis, x.len()).ok_or("axis out of range")?;
            if idx.len() != x.len() {
                return Err(format!("indices {idx:?} and data {x:?} differ in rank"));
            }
            one(idx.clone())
        }
        Op::Expand => {
            let target: Vec<usize> =
                const_ints(consts, node.inputs.get(1).ok_or("Expand needs a shape")?)?
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .collect();
            one(broadcast_shape(x, &target)
                .ok_or(format!("{x:?} does not expand to {target:?}"))?)
        }
        Op::Tile => {
            let reps = const_ints(consts, node.inputs.get(1).ok_or("Tile needs repeats")?)?;
            if reps.len() != x.len() || reps.iter().any(|&r| r < 0) {
                return Err(format!("repeats {reps:?} for a tensor of shape {x:?}"));
            }
            one(x.iter().zip(&reps).map(|(&d, &r)| d * r as usize).collect())
        }
        Op::Where => {
            let (a, b) = (s.get(1).ok_or("no X")?, s.get(2).ok_or("no Y")?);
            if node.inputs[1..3].iter().any(String::is_empty) {
                return Err("Where needs X and Y".into());
            }
            one(broadcast_shape(x, a)
                .and_then(|o| broadcast_shape(&o, b))
                .ok_or(format!("shapes {x:?}, {a:?} and {b:?} do not broadcast"))?)
        }
        Op::Shape { .. } | Op::Size | Op::Range | Op::ConstantOfShape { .. } | Op::CastLike => {
            Err(format!(
                "{} needs inputs known at load (a shape, or constants)",
                node.op.onnx_type()
            ))
        }
    }
}
