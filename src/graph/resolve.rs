//! Static shapes and constant folding: named input dims are bound, shape-computing chains
//! (Shape, Gather, Concat, Unsqueeze, Cast …) become constants, ops whose attributes arrive
//! as constant inputs (Clip, Reshape, Slice, Pad, Resize, Split, Squeeze …) get them folded in,
//! and every runtime value gets its shape.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::graph::attrs::{Resize, Unary};
use crate::graph::ir::{Const, Dim, ElemType, Graph, Node, Op};
use crate::graph::shape::{
    broadcast_shape, conv_output_shape, conv_transpose_output_shape, norm_axis, pool_output_shape,
    slice_spec,
};

impl Graph {
    /// Binds named input dims (`dims`: name → size, e.g. "N" → 8), folds constants and infers
    /// the static shape of every value. Idempotent.
    pub fn resolve(&mut self, dims: &HashMap<String, usize>) -> Result<()> {
        self.resolve_with_batch(dims, None)
    }

    /// As [`Graph::resolve`], and with `batch` set, dim 0 of every input becomes `batch`
    /// (whether it was declared named or fixed at 1, as exported classifiers often are).
    pub fn resolve_with_batch(
        &mut self,
        dims: &HashMap<String, usize>,
        batch: Option<usize>,
    ) -> Result<()> {
        self.resolve_with(dims, batch, &[])
    }

    /// As [`Graph::resolve_with_batch`], with the inputs in `values` bound to those values:
    /// they become constants (the graph's [value inputs](Graph::value_inputs), a Reshape's
    /// shape or a Range's limits given at run time, fold like any constant).
    pub fn resolve_with(
        &mut self,
        dims: &HashMap<String, usize>,
        batch: Option<usize>,
        values: &[(String, Const)],
    ) -> Result<()> {
        let model = self.name.clone();
        let err = |message: String| Error::Graph {
            model: model.clone(),
            message,
        };
        self.shapes.clear();
        self.types.clear();
        for (name, v) in values {
            if !self.inputs.contains(name) {
                return Err(err(format!("'{name}' is not an input of the model")));
            }
            self.inputs.retain(|i| i != name);
            self.input_dims.remove(name);
            if let Some(t) = self.input_types.remove(name) {
                self.types.insert(name.clone(), t);
            }
            self.consts.insert(name.clone(), v.clone());
        }
        for input in &self.inputs {
            let mut missing = Vec::new();
            let shape: Vec<usize> = self.input_dims[input]
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, batch, d) {
                    (0, Some(b), Dim::Named(_) | Dim::Fixed(1)) => b,
                    (_, _, d) => match d {
                        Dim::Fixed(v) => *v,
                        Dim::Named(n) => dims.get(n).copied().unwrap_or_else(|| {
                            missing.push(n.clone());
                            0
                        }),
                    },
                })
                .collect();
            if !missing.is_empty() {
                return Err(err(format!("input '{input}' has dynamic dims {missing:?}: give their sizes (e.g. the batch size)")));
            }
            self.shapes.insert(input.clone(), shape);
        }
        let mut queue: std::collections::VecDeque<Node> = std::mem::take(&mut self.nodes).into();
        let mut folded_types: HashMap<String, ElemType> = HashMap::new();
        while let Some(mut node) = queue.pop_front() {
            if let Some(nodes) = self.windows_as_2d(&node) {
                for n in nodes.into_iter().rev() {
                    queue.push_front(n);
                }
                continue;
            }
            let label = format!("node '{}' ({})", node.name, node.op.onnx_type());
            let ctx = |m: String| Error::Graph {
                model: model.clone(),
                message: format!("{label}: {m}"),
            };
            if matches!(node.op, Op::Pad { .. })
                && node.inputs.get(3).is_some_and(|a| !a.is_empty())
            {
                self.pads_on_axes(&mut node).map_err(ctx)?;
            }
            if let Op::Resize {
                axes, keep_aspect, ..
            } = &node.op
            {
                if !axes.is_empty() || keep_aspect != "stretch" {
                    self.resize_full_rank(&mut node).map_err(ctx)?;
                }
            }
            fold_attribute_inputs(&mut node, &self.consts).map_err(ctx)?;
            if let Op::CastLike = node.op {
                let like = node
                    .inputs
                    .get(1)
                    .ok_or_else(|| ctx("CastLike needs two inputs".into()))?;
                let to = self.elem_type(like).onnx();
                node.op = Op::Cast { to };
                node.inputs.truncate(1);
            }
            let folded = crate::graph::fold::fold_node(&node, self).map_err(ctx)?;
            if let Some(values) = folded {
                let in_types: Vec<ElemType> =
                    node.inputs.iter().map(|i| self.elem_type(i)).collect();
                let types =
                    crate::graph::values::output_types(&node.op, &in_types, node.outputs.len());
                for ((o, v), t) in node.outputs.iter().zip(values).zip(types) {
                    self.consts.insert(o.clone(), v);
                    // Kept for a constant output, written back in its type.
                    folded_types.insert(o.clone(), t);
                }
                continue;
            }
            let in_shapes: Vec<Vec<usize>> = node
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        Ok(vec![])
                    } else {
                        self.shapes
                            .get(i)
                            .cloned()
                            .or_else(|| self.consts.get(i).map(|c| c.shape().to_vec()))
                            .ok_or_else(|| ctx(format!("no shape for input '{i}'")))
                    }
                })
                .collect::<Result<_>>()?;
            if let Some(&mode) = self.auto_pads.get(&node.name) {
                set_auto_pads(&mut node, mode, &in_shapes).map_err(ctx)?;
            }
            let outs = infer(&node, &in_shapes, &self.consts).map_err(ctx)?;
            let in_types: Vec<ElemType> = node.inputs.iter().map(|i| self.elem_type(i)).collect();
            let types = crate::graph::values::output_types(&node.op, &in_types, node.outputs.len());
            for ((o, s), t) in node.outputs.iter().zip(outs).zip(types) {
                if !o.is_empty() {
                    self.shapes.insert(o.clone(), s);
                    if t != ElemType::F32 {
                        self.types.insert(o.clone(), t);
                    }
                }
            }
            self.nodes.push(node);
        }
        for o in self.outputs.clone() {
            if self.shapes.contains_key(&o) {
                continue;
            }
            if self.inputs.contains(&o) {
                return Err(err(format!(
                    "output '{o}' is an input; qforge needs outputs computed by nodes"
                )));
            }
            // A constant output (every input it depends on is known at load): an Identity
            // of the constant, so the plan reads it back like any other output.
            let Some(c) = self.consts.remove(&o) else {
                return Err(err(format!("output '{o}' is unreachable")));
            };
            let stem = self.unique_name(&format!("{o}/value"));
            self.shapes.insert(o.clone(), c.shape().to_vec());
            let t = folded_types.get(&o).copied().unwrap_or(match c {
                Const::F32(_) => ElemType::F32,
                Const::I64(_) => ElemType::I64,
            });
            if t != ElemType::F32 {
                self.types.insert(o.clone(), t);
            }
            self.consts.insert(stem.clone(), c);
            let name = self.unique_name(&format!("{o}/constant"));
            self.nodes.push(Node {
                name,
                op: Op::Identity,
                inputs: vec![stem],
                outputs: vec![o],
            });
        }
        Ok(())
    }
}

impl Graph {
    /// A Conv, ConvTranspose or pool of a 3-D (1-D spatial) input as the 2-D op of height 1
    /// between an Unsqueeze and a Squeeze of dim 2 (its attributes were read as 1 x n); `None`
    /// for other nodes.
    fn windows_as_2d(&mut self, node: &Node) -> Option<Vec<Node>> {
        if !matches!(
            node.op,
            Op::Conv(_) | Op::ConvTranspose { .. } | Op::MaxPool(_) | Op::AveragePool(_)
        ) {
            return None;
        }
        let rank = |g: &Graph, v: &str| {
            g.shapes
                .get(v)
                .map(Vec::len)
                .or_else(|| g.consts.get(v).map(|c| c.shape().len()))
        };
        if rank(self, node.inputs.first()?) != Some(3) {
            return None;
        }
        let mut out = Vec::new();
        let mut op2 = node.clone();
        // The weight keeps its name (edits and parameters find it); a 3-D weight is read as
        // [out, in, 1, k] by the shape rule and the lowering.
        let x2 = self.unique_name(&format!("{}/x_2d", node.name));
        out.push(Node {
            name: format!("{x2}/unsqueeze"),
            op: Op::Unsqueeze { axes: vec![2] },
            inputs: vec![node.inputs[0].clone()],
            outputs: vec![x2.clone()],
        });
        op2.inputs[0] = x2;
        let y2 = self.unique_name(&format!("{}/y_2d", node.name));
        op2.outputs = vec![y2.clone()];
        out.push(op2);
        out.push(Node {
            name: format!("{}/squeeze", node.name),
            op: Op::Squeeze { axes: vec![2] },
            inputs: vec![y2],
            outputs: vec![node.outputs[0].clone()],
        });
        Some(out)
    }

    /// A Resize whose scales or sizes name some axes (opset 18's `axes`) or keep the aspect
    /// ratio (`not_larger`, `not_smaller`: one scale for the listed axes, the smallest or the
    /// largest of sizes / input, and the output rounded) as one with full-rank scales (the
    /// coordinates the kernel maps) and sizes (the output): new constants.
    fn resize_full_rank(&mut self, node: &mut Node) -> std::result::Result<(), String> {
        let Op::Resize {
            axes, keep_aspect, ..
        } = &mut node.op
        else {
            return Ok(());
        };
        let x = self
            .shapes
            .get(&node.inputs[0])
            .cloned()
            .ok_or("input shape unknown")?;
        let rank = x.len();
        let ax: Vec<usize> = if axes.is_empty() {
            (0..rank).collect()
        } else {
            axes.iter()
                .map(|&a| norm_axis(a, rank).ok_or(format!("axis {a} out of range")))
                .collect::<std::result::Result<_, _>>()?
        };
        let given = |i: usize| node.inputs.get(i).filter(|v| !v.is_empty()).cloned();
        let mut scales = vec![1.0f32; rank];
        let mut sizes = x.clone();
        if let Some(sz) = given(3) {
            let v = const_ints(&self.consts, &sz)?;
            if v.len() != ax.len() {
                return Err(format!("sizes {v:?} for axes {ax:?}"));
            }
            let ratios: Vec<f32> = ax
                .iter()
                .zip(&v)
                .map(|(&a, &s)| s as f32 / x[a] as f32)
                .collect();
            let common = match keep_aspect.as_str() {
                "not_larger" => Some(ratios.iter().copied().fold(f32::INFINITY, f32::min)),
                "not_smaller" => Some(ratios.iter().copied().fold(0.0, f32::max)),
                _ => None,
            };
            for (k, &a) in ax.iter().enumerate() {
                let s = common.unwrap_or(ratios[k]);
                scales[a] = s;
                sizes[a] = match common {
                    Some(c) => (x[a] as f32 * c).round() as usize,
                    None => v[k].max(0) as usize,
                };
            }
        } else if let Some(sc) = given(2) {
            let v: Vec<f32> = self
                .consts
                .get(&sc)
                .map(|c| c.to_f32().iter().copied().collect())
                .ok_or("scales must be constant")?;
            if v.len() != ax.len() {
                return Err(format!("scales {v:?} for axes {ax:?}"));
            }
            for (k, &a) in ax.iter().enumerate() {
                scales[a] = v[k];
                sizes[a] = (x[a] as f32 * v[k]).floor() as usize;
            }
        } else {
            return Err("Resize needs scales or sizes".into());
        }
        let sc_name = self.unique_name(&format!("{}/scales", node.name));
        let sz_name = self.unique_name(&format!("{}/sizes", node.name));
        self.consts.insert(
            sc_name.clone(),
            Const::F32(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rank]), scales).expect("1-D"),
            ),
        );
        self.consts.insert(
            sz_name.clone(),
            Const::I64(
                ndarray::ArrayD::from_shape_vec(
                    ndarray::IxDyn(&[rank]),
                    sizes.iter().map(|&s| s as i64).collect(),
                )
                .expect("1-D"),
            ),
        );
        node.inputs = vec![node.inputs[0].clone(), String::new(), sc_name, sz_name];
        *axes = Vec::new();
        *keep_aspect = "stretch".into();
        Ok(())
    }

    /// A Pad with an axes input as one with pads for every dim (a new constant).
    fn pads_on_axes(&mut self, node: &mut Node) -> std::result::Result<(), String> {
        let rank = self
            .shapes
            .get(&node.inputs[0])
            .map(Vec::len)
            .or_else(|| self.consts.get(&node.inputs[0]).map(|c| c.shape().len()))
            .ok_or("input shape unknown")?;
        let axes = const_ints(&self.consts, &node.inputs[3])?;
        let pads = const_ints(&self.consts, &node.inputs[1])?;
        if pads.len() != 2 * axes.len() {
            return Err(format!("pads {pads:?} for axes {axes:?}"));
        }
        let mut full = vec![0i64; 2 * rank];
        for (k, &a) in axes.iter().enumerate() {
            let d = norm_axis(a, rank).ok_or(format!("axis {a} out of range"))?;
            full[d] = pads[k];
            full[d + rank] = pads[k + axes.len()];
        }
        let name = self.unique_name(&format!("{}/pads", node.name));
        self.consts.insert(
            name.clone(),
            Const::I64(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2 * rank]), full).expect("1-D"),
            ),
        );
        node.inputs[1] = name;
        node.inputs.truncate(3);
        Ok(())
    }
}

fn const_ints(
    consts: &std::collections::BTreeMap<String, Const>,
    name: &str,
) -> std::result::Result<Vec<i64>, String> {
    consts
        .get(name)
        .map(Const::to_i64)
        .ok_or_else(|| format!("input '{name}' must be a constant"))
}

/// Moves constant "attribute inputs" into the op (and drops them from the inputs).
fn fold_attribute_inputs(
    node: &mut Node,
    consts: &std::collections::BTreeMap<String, Const>,
) -> std::result::Result<(), String> {
    let scalar = |name: &str| -> std::result::Result<Option<f32>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        let c = consts
            .get(name)
            .ok_or_else(|| format!("input '{name}' must be a constant"))?;
        c.to_f32()
            .iter()
            .next()
            .copied()
            .map(Some)
            .ok_or_else(|| format!("'{name}' is empty"))
    };
    match &mut node.op {
        Op::Unary(Unary::Clip(lo, hi)) if node.inputs.len() > 1 => {
            if let Some(v) = scalar(&node.inputs[1])? {
                *lo = v;
            }
            if let Some(v) = node.inputs.get(2).map(|n| scalar(n)).transpose()?.flatten() {
                *hi = v;
            }
            node.inputs.truncate(1);
        }
        Op::Split { split, .. } if node.inputs.len() > 1 && !node.inputs[1].is_empty() => {
            *split = const_ints(consts, &node.inputs[1])?
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            node.inputs.truncate(1);
        }
        Op::Squeeze { axes }
        | Op::Unsqueeze { axes }
        | Op::ReduceMean { axes, .. }
        | Op::Reduce { axes, .. }
        | Op::MeanVarianceNorm { axes }
            if node.inputs.len() > 1 && !node.inputs[1].is_empty() =>
        {
            *axes = const_ints(consts, &node.inputs[1])?;
            node.inputs.truncate(1);
        }
        Op::Dropout if node.inputs.len() > 1 => {
            let ratio = scalar(&node.inputs[1])?.unwrap_or(0.5);
            let training = node
                .inputs
                .get(2)
                .map(|n| scalar(n))
                .transpose()?
                .flatten()
                .unwrap_or(0.0);
            if training != 0.0 && ratio != 0.0 {
                return Err(format!(
                    "Dropout in training mode (ratio {ratio}) drops at random; qforge runs \
                     inference"
                ));
            }
            node.inputs.truncate(1);
        }
        Op::Pad { value, .. } if node.inputs.len() > 2 && !node.inputs[2].is_empty() => {
            *value = scalar(&node.inputs[2])?.unwrap_or(0.0);
            node.inputs.truncate(2);
        }
        _ => {}
    }
    Ok(())
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

/// A Conv's or pool's pads from ONNX's `auto_pad` and its input's spatial size.
fn set_auto_pads(
    node: &mut Node,
    mode: crate::graph::attrs::AutoPad,
    s: &[Vec<usize>],
) -> std::result::Result<(), String> {
    let x = s.first().ok_or("no inputs")?;
    if x.len() != 4 {
        return Err(format!("auto_pad needs a 4-D input, got {x:?}"));
    }
    let input = [x[2], x[3]];
    match &mut node.op {
        Op::Conv(a) => {
            let w = s.get(1).ok_or("no weight")?;
            let w = &weight_4d(w);
            if w.len() != 4 {
                return Err(format!("auto_pad needs a 4-D weight, got {w:?}"));
            }
            a.pads = mode.pads(input, [w[2], w[3]], a.strides, a.dilations);
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            p.pads = mode.pads(input, p.kernel, p.strides, p.dilations);
        }
        _ => return Err("auto_pad on an op without pads".into()),
    }
    Ok(())
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
        Op::Conv(a) => one(
            conv_output_shape(x, &weight_4d(s.get(1).ok_or("no weight")?), a)
                .map_err(|e| e.to_string())?
                .to_vec(),
        ),
        Op::ConvTranspose {
            conv: c,
            output_padding,
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
                (_, Some(sc)) if sc.len() == x.len() => x
                    .iter()
                    .zip(&sc)
                    .map(|(&d, &f)| (d as f32 * f).floor() as usize)
                    .collect(),
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
