//! Host evaluation of nodes whose inputs are known at load time (constant folding): shape
//! chains (Shape, Size, Gather, Concat, Slice, arithmetic, Cast …), Range and ConstantOfShape,
//! and any elementwise or structural op on constants. Integer constants stay exact (i64);
//! bools are i64 0/1.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use crate::graph::attrs::{Binary, Reduce, Unary};
use crate::graph::ir::{Const, ElemType, Graph, Node, Op};
use crate::graph::resolve::infer;
use crate::graph::shape::{broadcast_shape, norm_axis, slice_spec};

type R<T> = std::result::Result<T, String>;

fn i64s(shape: &[usize], v: Vec<i64>) -> Const {
    Const::I64(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches"))
}

/// A constant's values as i64 (f32 truncated, as Cast does).
pub(crate) fn ints(c: &Const) -> Vec<i64> {
    c.to_i64()
}

/// The same structural change applied to either kind of constant.
fn each(c: &Const, f: impl Fn(&ArrayD<i64>) -> R<ArrayD<i64>>) -> R<Const> {
    Ok(match c {
        Const::I64(a) => Const::I64(f(a)?),
        // f32 through its bits: structural ops only move elements.
        Const::F32(a) => {
            Const::F32(f(&a.mapv(|v| v.to_bits() as i64))?.mapv(|b| f32::from_bits(b as u32)))
        }
    })
}

/// `x` broadcast to `shape` (NumPy's rule), as a new array.
fn broadcast_to(x: &Const, shape: &[usize]) -> R<Const> {
    each(x, |a| {
        Ok(a.broadcast(IxDyn(shape))
            .ok_or_else(|| format!("{:?} does not broadcast to {shape:?}", a.shape()))?
            .to_owned())
    })
}

/// Evaluates `node` on the host when every input it reads is a constant (or, for Shape and
/// Size, when its input's shape is known); `Ok(None)` when it cannot.
pub(crate) fn fold_node(node: &Node, g: &Graph) -> R<Option<Vec<Const>>> {
    let c = |i: usize| node.inputs.get(i).and_then(|n| g.consts.get(n));
    let shape_of = |i: usize| -> R<Vec<usize>> {
        let name = node.inputs.get(i).ok_or("missing input")?;
        g.shapes
            .get(name)
            .cloned()
            .or_else(|| g.consts.get(name).map(|c| c.shape().to_vec()))
            .ok_or_else(|| format!("shape of '{name}' unknown"))
    };
    match &node.op {
        Op::Shape { start, end } => {
            let s = shape_of(0)?;
            let r = s.len() as i64;
            let clip = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (a, b) = (clip(*start), clip(end.unwrap_or(r)));
            let v: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![i64s(&[v.len()], v)]));
        }
        Op::Size => {
            let n: usize = shape_of(0)?.iter().product();
            return Ok(Some(vec![i64s(&[], vec![n as i64])]));
        }
        _ => {}
    }
    let all_const = node
        .inputs
        .iter()
        .all(|i| i.is_empty() || g.consts.contains_key(i));
    let Some(x) = c(0).filter(|_| all_const) else {
        return Ok(None);
    };
    let out = match &node.op {
        Op::Gather { axis } => {
            let idx = c(1).ok_or("Gather needs indices")?;
            let axis = norm_axis(*axis, x.shape().len()).ok_or("axis out of range")?;
            let dim = x.shape()[axis] as i64;
            let picks: Vec<usize> = ints(idx)
                .iter()
                .map(|&i| if i < 0 { i + dim } else { i })
                .map(|i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&i| (i as i64) < dim)
                        .ok_or(format!("index {i} out of range for a dim of {dim}"))
                })
                .collect::<R<_>>()?;
            each(x, |a| {
                let sel = a.select(Axis(axis), &picks);
                let mut shape: Vec<usize> = a.shape()[..axis].to_vec();
                shape.extend(idx.shape());
                shape.extend(&a.shape()[axis + 1..]);
                sel.into_shape_with_order(IxDyn(&shape))
                    .map_err(|e| e.to_string())
            })?
        }
        Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Identity
        | Op::Dropout => {
            let shapes: Vec<Vec<usize>> = node
                .inputs
                .iter()
                .map(|i| {
                    g.consts
                        .get(i)
                        .map(|c| c.shape().to_vec())
                        .unwrap_or_default()
                })
                .collect();
            let s = infer(node, &shapes, &g.consts)?.remove(0);
            each(x, |a| {
                Ok(a.to_shape(IxDyn(&s)).map_err(|e| e.to_string())?.to_owned())
            })?
        }
        Op::Concat { axis } => {
            let parts: Vec<&Const> = node.inputs.iter().map(|i| &g.consts[i]).collect();
            let rank = x.shape().len();
            let axis = norm_axis(*axis, rank).ok_or("axis out of range")?;
            if parts.iter().all(|p| matches!(p, Const::I64(_))) {
                let views: Vec<_> = parts
                    .iter()
                    .map(|p| match p {
                        Const::I64(a) => a.view(),
                        Const::F32(_) => unreachable!("all i64"),
                    })
                    .collect();
                Const::I64(ndarray::concatenate(Axis(axis), &views).map_err(|e| e.to_string())?)
            } else {
                let arrays: Vec<ArrayD<f32>> = parts.iter().map(|p| p.to_f32()).collect();
                let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
                Const::F32(ndarray::concatenate(Axis(axis), &views).map_err(|e| e.to_string())?)
            }
        }
        Op::Cast { to } => cast(x, ElemType::from_onnx(*to).unwrap_or_default()),
        Op::ConstantOfShape { value, .. } => {
            let s: Vec<usize> = ints(x).iter().map(|&d| d.max(0) as usize).collect();
            match value {
                Const::I64(v) => Const::I64(ArrayD::from_elem(
                    IxDyn(&s),
                    v.iter().next().copied().unwrap_or(0),
                )),
                Const::F32(v) => Const::F32(ArrayD::from_elem(
                    IxDyn(&s),
                    v.iter().next().copied().unwrap_or(0.0),
                )),
            }
        }
        Op::Range => {
            let (limit, delta) = (c(1).ok_or("no limit")?, c(2).ok_or("no delta")?);
            range(x, limit, delta)?
        }
        Op::Expand => {
            let target: Vec<usize> = ints(c(1).ok_or("no shape")?)
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let out = broadcast_shape(x.shape(), &target)
                .ok_or(format!("{:?} does not expand to {target:?}", x.shape()))?;
            broadcast_to(x, &out)?
        }
        Op::Tile => {
            let reps = ints(c(1).ok_or("no repeats")?);
            each(x, |a| tile(a, &reps))?
        }
        Op::Where => {
            let (a, b) = (c(1).ok_or("no X")?, c(2).ok_or("no Y")?);
            let s = broadcast_shape(x.shape(), a.shape())
                .and_then(|s| broadcast_shape(&s, b.shape()))
                .ok_or("shapes do not broadcast")?;
            let cond = broadcast_to(x, &s)?.to_f32();
            match (broadcast_to(a, &s)?, broadcast_to(b, &s)?) {
                (Const::I64(p), Const::I64(q)) => Const::I64(
                    ndarray::Zip::from(&cond)
                        .and(&p)
                        .and(&q)
                        .map_collect(|&c, &p, &q| if c != 0.0 { p } else { q }),
                ),
                (p, q) => Const::F32(
                    ndarray::Zip::from(&cond)
                        .and(&p.to_f32())
                        .and(&q.to_f32())
                        .map_collect(|&c, &p, &q| if c != 0.0 { p } else { q }),
                ),
            }
        }
        Op::Binary(b) if node.inputs.len() == 2 => {
            let y = c(1).ok_or("needs two inputs")?;
            let out = broadcast_shape(x.shape(), y.shape()).ok_or("shapes do not broadcast")?;
            match (broadcast_to(x, &out)?, broadcast_to(y, &out)?) {
                (Const::I64(p), Const::I64(q)) => {
                    let v: Vec<i64> = p
                        .iter()
                        .zip(q.iter())
                        .map(|(&p, &q)| int_binary(*b, p, q))
                        .collect::<R<_>>()?;
                    i64s(&out, v)
                }
                (p, q) => {
                    let predicate = b.is_predicate();
                    let v: Vec<f32> = p
                        .to_f32()
                        .iter()
                        .zip(q.to_f32().iter())
                        .map(|(&p, &q)| float_binary(*b, p, q))
                        .collect();
                    if predicate {
                        i64s(&out, v.iter().map(|&v| v as i64).collect())
                    } else {
                        Const::F32(ArrayD::from_shape_vec(IxDyn(&out), v).expect("shape"))
                    }
                }
            }
        }
        Op::Unary(u) => match (u, x) {
            (Unary::Neg, Const::I64(a)) => Const::I64(a.mapv(|v| -v)),
            (Unary::Abs, Const::I64(a)) => Const::I64(a.mapv(i64::abs)),
            (Unary::Sign, Const::I64(a)) => Const::I64(a.mapv(i64::signum)),
            (Unary::Relu, Const::I64(a)) => Const::I64(a.mapv(|v| v.max(0))),
            (Unary::Not, _) => Const::I64(x.to_f32().mapv(|v| (v == 0.0) as i64)),
            (Unary::IsNaN, Const::F32(a)) => Const::I64(a.mapv(|v| v.is_nan() as i64)),
            (Unary::Clip(lo, hi), Const::I64(a)) => {
                Const::I64(a.mapv(|v| v.clamp(lo.ceil() as i64, hi.floor() as i64)))
            }
            (
                Unary::Floor
                | Unary::Ceil
                | Unary::Round
                | Unary::Sqrt
                | Unary::Exp
                | Unary::Log
                | Unary::Reciprocal
                | Unary::Neg
                | Unary::Abs
                | Unary::Relu
                | Unary::Sin
                | Unary::Cos,
                Const::F32(a),
            ) => Const::F32(a.mapv(|v| match u {
                Unary::Floor => v.floor(),
                Unary::Ceil => v.ceil(),
                Unary::Round => v.round_ties_even(),
                Unary::Sqrt => v.sqrt(),
                Unary::Exp => v.exp(),
                Unary::Log => v.ln(),
                Unary::Reciprocal => 1.0 / v,
                Unary::Neg => -v,
                Unary::Abs => v.abs(),
                Unary::Relu => v.max(0.0),
                Unary::Sin => v.sin(),
                _ => v.cos(),
            })),
            _ => return Ok(None),
        },
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_empty,
        } => {
            if axes.is_empty() && *noop_empty {
                x.clone()
            } else {
                let t = g.elem_type(&node.inputs[0]);
                let mut r = reduce_const(x, Some(*op), axes, *keepdims)?;
                // An empty max or min of integers is the type's extreme (false, true for bool).
                if x.shape().contains(&0) && t != ElemType::F32 {
                    if let (Const::I64(a), Reduce::Max | Reduce::Min) = (&mut r, op) {
                        let (lo, hi) = match t {
                            ElemType::Bool => (0, 1),
                            ElemType::U8 => (0, 255),
                            ElemType::I8 => (-128, 127),
                            ElemType::I32 => (i32::MIN as i64, i32::MAX as i64),
                            _ => (i64::MIN, i64::MAX),
                        };
                        a.fill(if *op == Reduce::Max { lo } else { hi });
                    }
                }
                r
            }
        }
        Op::ReduceMean { axes, keepdims } => reduce_const(x, None, axes, *keepdims)?,
        Op::Split { axis, .. } => {
            let shapes = infer(node, &[x.shape().to_vec()], &g.consts)?;
            let a = norm_axis(*axis, x.shape().len()).ok_or("axis out of range")?;
            let mut at = 0;
            let mut parts = Vec::new();
            for s in shapes {
                let k = s[a];
                parts.push(each(x, |v| {
                    Ok(v.slice_axis(Axis(a), Slice::from(at..at + k)).to_owned())
                })?);
                at += k;
            }
            return Ok(Some(parts));
        }
        Op::Trilu { upper } => {
            let k = c(1)
                .filter(|_| node.inputs.get(1).is_some_and(|n| !n.is_empty()))
                .map(|c| ints(c).first().copied().unwrap_or(0))
                .unwrap_or(0);
            let r = x.shape().len();
            if r < 2 {
                return Err("Trilu needs at least 2 dims".into());
            }
            let keep = |i: usize, j: usize| {
                let d = j as i64 - i as i64;
                if *upper {
                    d >= k
                } else {
                    d <= k
                }
            };
            match x {
                Const::I64(a) => {
                    let mut a = a.clone();
                    a.indexed_iter_mut()
                        .filter(|(c, _)| !keep(c[r - 2], c[r - 1]))
                        .for_each(|(_, v)| *v = 0);
                    Const::I64(a)
                }
                Const::F32(a) => {
                    let mut a = a.clone();
                    a.indexed_iter_mut()
                        .filter(|(c, _)| !keep(c[r - 2], c[r - 1]))
                        .for_each(|(_, v)| *v = 0.0);
                    Const::F32(a)
                }
            }
        }
        Op::Slice => {
            let (starts, ends) = (ints(c(1).ok_or("no starts")?), ints(c(2).ok_or("no ends")?));
            let axes = c(3)
                .filter(|_| node.inputs.get(3).is_some_and(|n| !n.is_empty()))
                .map(ints);
            let steps = c(4)
                .filter(|_| node.inputs.get(4).is_some_and(|n| !n.is_empty()))
                .map(ints);
            let spec = slice_spec(x.shape(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
            each(x, |a| {
                let mut v = a.view();
                for (d, s) in spec.iter().enumerate() {
                    let end = s.start as isize
                        + (s.len as isize - 1) * s.step as isize
                        + s.step.signum() as isize;
                    v.slice_axis_inplace(
                        Axis(d),
                        Slice::new(
                            s.start as isize,
                            if s.len == 0 {
                                Some(s.start as isize)
                            } else if end < 0 {
                                None
                            } else {
                                Some(end)
                            },
                            s.step as isize,
                        ),
                    );
                }
                Ok(v.to_owned())
            })?
        }
        _ => return Ok(None),
    };
    Ok(Some(vec![out]))
}

/// A reduction of a constant over `axes` (all when empty); `None` is the mean. Integer sums,
/// products, maxima and minima stay exact; the rest is computed in f64.
fn reduce_const(x: &Const, op: Option<Reduce>, axes: &[i64], keepdims: bool) -> R<Const> {
    let rank = x.shape().len();
    let mut ax: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, rank).ok_or(format!("axis {a} out of range")))
            .collect::<R<_>>()?
    };
    ax.sort_unstable();
    ax.dedup();
    let v = x.to_f32().mapv(f64::from);
    let mut out = v.clone();
    for &a in ax.iter().rev() {
        out = out.map_axis(Axis(a), |lane| {
            let r: Vec<f64> = lane.iter().copied().collect();
            reduce_values(op, &r)
        });
    }
    let mut shape = x.shape().to_vec();
    for &a in &ax {
        shape[a] = 1;
    }
    if !keepdims {
        shape = x
            .shape()
            .iter()
            .enumerate()
            .filter(|(d, _)| !ax.contains(d))
            .map(|(_, &s)| s)
            .collect();
    }
    let out = out
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| e.to_string())?;
    let integral = matches!(
        op,
        Some(
            Reduce::Sum | Reduce::Prod | Reduce::Max | Reduce::Min | Reduce::SumSquare | Reduce::L1
        )
    );
    Ok(match x {
        Const::I64(_) if integral => Const::I64(out.mapv(|v| v as i64)),
        _ => Const::F32(out.mapv(|v| v as f32)),
    })
}

/// One lane reduced (`None`: the mean); empty lanes give the reduction's identity.
fn reduce_values(op: Option<Reduce>, r: &[f64]) -> f64 {
    let Some(op) = op else {
        return r.iter().sum::<f64>() / r.len() as f64;
    };
    if r.is_empty() {
        return op.empty() as f64;
    }
    let nan = r.iter().any(|v| v.is_nan());
    match op {
        Reduce::Sum => r.iter().sum(),
        Reduce::Max if nan => f64::NAN,
        Reduce::Min if nan => f64::NAN,
        Reduce::Max => r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Min => r.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Prod => r.iter().product(),
        Reduce::L1 => r.iter().map(|v| v.abs()).sum(),
        Reduce::L2 => r.iter().map(|v| v * v).sum::<f64>().sqrt(),
        Reduce::LogSum => r.iter().sum::<f64>().ln(),
        Reduce::SumSquare => r.iter().map(|v| v * v).sum(),
        Reduce::LogSumExp => {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m.is_infinite() || nan {
                m
            } else {
                m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
            }
        }
    }
}

/// Cast of a constant (integers toward zero, bool as "not zero").
fn cast(x: &Const, to: ElemType) -> Const {
    match to {
        ElemType::F32 => Const::F32(x.to_f32()),
        ElemType::Bool => Const::I64(x.to_f32().mapv(|v| (v != 0.0 || v.is_nan()) as i64)),
        ElemType::I64 | ElemType::I32 | ElemType::I8 | ElemType::U8 => match x {
            Const::F32(a) => Const::I64(a.mapv(|v| v.trunc() as i64)),
            Const::I64(a) => Const::I64(a.clone()),
        },
    }
}

/// Range's values: `start + k * delta` while short of `limit`.
fn range(start: &Const, limit: &Const, delta: &Const) -> R<Const> {
    if let (Const::I64(s), Const::I64(l), Const::I64(d)) = (start, limit, delta) {
        let (s, l, d) = (
            *s.iter().next().ok_or("empty start")?,
            *l.iter().next().ok_or("empty limit")?,
            *d.iter().next().ok_or("empty delta")?,
        );
        if d == 0 {
            return Err("Range with delta 0".into());
        }
        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
        return Ok(i64s(&[n], (0..n as i64).map(|k| s + k * d).collect()));
    }
    let first = |c: &Const| c.to_f32().iter().next().copied().ok_or("empty scalar");
    let (s, l, d) = (first(start)?, first(limit)?, first(delta)?);
    if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
        return Err(format!("Range({s}, {l}, {d}) has no finite length"));
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    if n > 1 << 28 {
        return Err(format!("Range({s}, {l}, {d}) has {n} elements"));
    }
    // As ONNX's reference: start + k * delta in the input type.
    let v: Vec<f32> = (0..n).map(|k| s + k as f32 * d).collect();
    Ok(Const::F32(
        ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
    ))
}

/// `a` repeated `reps[d]` times along each dim d.
pub(crate) fn tile<T: Clone>(a: &ArrayD<T>, reps: &[i64]) -> R<ArrayD<T>> {
    if reps.len() != a.ndim() || reps.iter().any(|&r| r < 0) {
        return Err(format!(
            "repeats {reps:?} for a rank-{} tensor (one non-negative count per dim)",
            a.ndim()
        ));
    }
    let mut out = a.clone();
    for (d, &r) in reps.iter().enumerate() {
        let views: Vec<_> = (0..r).map(|_| out.view()).collect();
        out = if r == 0 {
            let mut s = out.shape().to_vec();
            s[d] = 0;
            ArrayD::from_shape_vec(IxDyn(&s), Vec::new()).map_err(|e| e.to_string())?
        } else {
            ndarray::concatenate(Axis(d), &views).map_err(|e| e.to_string())?
        };
    }
    Ok(out)
}

fn int_binary(b: Binary, p: i64, q: i64) -> R<i64> {
    Ok(match b {
        Binary::Add => p.wrapping_add(q),
        Binary::Sub => p.wrapping_sub(q),
        Binary::Mul => p.wrapping_mul(q),
        Binary::Div if q != 0 => p / q,
        Binary::Max => p.max(q),
        Binary::Min => p.min(q),
        Binary::Pow if q >= 0 => p.wrapping_pow(q.min(u32::MAX as i64) as u32),
        Binary::Mod { .. } if q != 0 => {
            let r = p % q;
            if matches!(b, Binary::Mod { fmod: false }) && r != 0 && (r < 0) != (q < 0) {
                r + q
            } else {
                r
            }
        }
        Binary::Equal => (p == q) as i64,
        Binary::Less => (p < q) as i64,
        Binary::Greater => (p > q) as i64,
        Binary::LessOrEqual => (p <= q) as i64,
        Binary::GreaterOrEqual => (p >= q) as i64,
        Binary::And => (p != 0 && q != 0) as i64,
        Binary::Or => (p != 0 || q != 0) as i64,
        Binary::Xor => ((p != 0) != (q != 0)) as i64,
        _ => return Err(format!("{b:?} of integer constants {p} and {q}")),
    })
}

fn float_binary(b: Binary, p: f32, q: f32) -> f32 {
    let t = |v: bool| if v { 1.0 } else { 0.0 };
    match b {
        Binary::Add => p + q,
        Binary::Sub => p - q,
        Binary::Mul => p * q,
        Binary::Div => p / q,
        Binary::PRelu => {
            if p < 0.0 {
                p * q
            } else {
                p
            }
        }
        Binary::Max if p.is_nan() || q.is_nan() => f32::NAN,
        Binary::Min if p.is_nan() || q.is_nan() => f32::NAN,
        Binary::Max => p.max(q),
        Binary::Min => p.min(q),
        Binary::Pow => p.powf(q),
        Binary::Equal => t(p == q),
        Binary::Less => t(p < q),
        Binary::Greater => t(p > q),
        Binary::LessOrEqual => t(p <= q),
        Binary::GreaterOrEqual => t(p >= q),
        Binary::And => t(p != 0.0 && q != 0.0),
        Binary::Or => t(p != 0.0 || q != 0.0),
        Binary::Xor => t((p != 0.0) != (q != 0.0)),
        Binary::Mod { fmod: true } => p % q,
        Binary::Mod { fmod: false } => p - q * (p / q).floor(),
    }
}
