//! Static shapes and constant folding: named input dims are bound, shape-computing chains
//! (Shape, Gather, Concat, Unsqueeze, Cast …) become constants (`graph::fold`), ops whose
//! attributes arrive as constant inputs (Clip, Reshape, Slice, Pad, Resize, Split, Squeeze …)
//! get them folded in, forms that resolve to other ops are rewritten (`graph::rewrite`), and
//! every runtime value gets its shape (`graph::infer`) and element type (`graph::values`).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::graph::attrs::Unary;
use crate::graph::infer::{const_ints, weight_4d};
use crate::graph::ir::{Const, Dim, ElemType, Graph, Node, Op};

pub use crate::graph::infer::infer;

impl Graph {
    /// Binds named input dims (`dims`: name → size, e.g. "N" → 8), folds constants and infers
    /// the static shape of every value. Idempotent.
    pub fn resolve(&mut self, dims: &HashMap<String, usize>) -> Result<()> {
        self.resolve_with_batch(dims, None)
    }

    /// The named dims other than the batch, bound from the shapes of one batch of data for
    /// the model's inputs (`inputs`: name and shape; each input's [sample
    /// axis](Graph::sample_axis) is the batch): what a job fed from files (a calibration set)
    /// resolves a model with, as a run binds them from its inputs. Every input's rank and fixed
    /// dims must match, and a named dim must have one size in all of them.
    pub fn dims_from_data(&self, inputs: &[(&str, &[usize])]) -> Result<HashMap<String, usize>> {
        let mut dims: HashMap<String, usize> = HashMap::new();
        for &(input, shape) in inputs {
            let declared = self.input_dims.get(input).ok_or_else(|| Error::Graph {
                model: self.name.clone(),
                message: format!("'{input}' is not an input of the model"),
            })?;
            let err = |message: String| Error::Graph {
                model: self.name.clone(),
                message: format!("input '{input}': {message}"),
            };
            if declared.len() != shape.len() {
                return Err(err(format!(
                    "the data has rank {} ({shape:?}), the model declares rank {}",
                    shape.len(),
                    declared.len()
                )));
            }
            let batch = self.sample_axis(input);
            for (i, (d, &n)) in declared.iter().zip(shape).enumerate() {
                if Some(i) == batch {
                    continue;
                }
                match d {
                    Dim::Fixed(v) if *v != n => {
                        let m = format!("dim {i} of the data is {n}, the model fixes it at {v}");
                        return Err(err(format!("{m} (data shape {shape:?})")));
                    }
                    Dim::Fixed(_) => {}
                    Dim::Named(name) => {
                        if let Some(&prev) = dims.get(name) {
                            if prev != n {
                                return Err(err(format!(
                                    "dim '{name}' is {prev} and {n} in the data (shape {shape:?})"
                                )));
                            }
                        }
                        dims.insert(name.clone(), n);
                    }
                }
            }
        }
        Ok(dims)
    }

    /// The axis of input `input` that counts samples (the batch): dim 0 of the first input,
    /// and in the others the dim of the same name (a recurrent state `[layers, batch, width]`
    /// has it at 1), or dim 0 when the batch is a fixed size they share. `None` for an input
    /// without it (the same for every sample), or that is not an input.
    pub fn sample_axis(&self, input: &str) -> Option<usize> {
        let first = self.input_dims.get(self.inputs.first()?)?.first()?;
        let dims = self.input_dims.get(input)?;
        match first {
            Dim::Named(b) => dims
                .iter()
                .position(|d| matches!(d, Dim::Named(n) if n == b)),
            Dim::Fixed(_) => (dims.first() == Some(first)).then_some(0),
        }
    }

    /// As [`Graph::resolve`], and with `batch` set, dim 0 of every input becomes `batch`
    /// (whether it was declared named or fixed at 1, as exported classifiers often are), and
    /// so does every dim named as the first input's dim 0.
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
        // The batch's name (dim 0 of the first input) sizes that dim wherever it appears.
        let batch_name = match self.inputs.first().and_then(|i| self.input_dims[i].first()) {
            Some(Dim::Named(n)) if batch.is_some() => Some(n.clone()),
            _ => None,
        };
        for input in &self.inputs {
            let mut missing = Vec::new();
            let shape: Vec<usize> = self.input_dims[input]
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, batch, d) {
                    (0, Some(b), Dim::Named(_) | Dim::Fixed(1)) => b,
                    (_, Some(b), Dim::Named(n)) if Some(n) == batch_name.as_ref() => b,
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
            if let Some(nodes) = self.einsum_lowered(&node) {
                for n in nodes.map_err(ctx)?.into_iter().rev() {
                    queue.push_front(n);
                }
                continue;
            }
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
            let transpose_shape = matches!(&node.op, Op::ConvTranspose { output_shape, .. } if !output_shape.is_empty());
            if let Some(&mode) = self.auto_pads.get(&node.name) {
                set_auto_pads(&mut node, Some(mode), &in_shapes).map_err(ctx)?;
            } else if transpose_shape {
                set_auto_pads(&mut node, None, &in_shapes).map_err(ctx)?;
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

/// ONNX's ConvTranspose pads: the output is `output_shape` (its last dims), or input x stride
/// with a SAME `auto_pad`; the total padding, natural output minus that, is split with the odd
/// one at the end for SAME_UPPER and at the start otherwise (Python's floor division, as the
/// reference); a negative end pad (an output larger than the natural one) becomes output
/// padding. VALID with no output_shape: no pads.
fn transpose_pads(
    mode: Option<crate::graph::attrs::AutoPad>,
    input: [usize; 2],
    kernel: [usize; 2],
    conv: &mut crate::graph::attrs::Conv2d,
    output_padding: &mut [usize; 2],
    output_shape: &mut Vec<usize>,
) -> std::result::Result<(), String> {
    use crate::graph::attrs::AutoPad;
    let same = matches!(mode, Some(AutoPad::SameUpper | AutoPad::SameLower));
    if output_shape.is_empty() && !same {
        if mode == Some(AutoPad::Valid) {
            conv.pads = [0; 4];
        }
        return Ok(());
    }
    for d in 0..2 {
        let (st, dil) = (
            conv.strides[d].max(1) as i64,
            conv.dilations[d].max(1) as i64,
        );
        let natural = st * (input[d] as i64 - 1)
            + output_padding[d] as i64
            + (kernel[d] as i64 - 1) * dil
            + 1;
        // A 1-D output_shape (read as 1 x n) gives the width only.
        let target = match (output_shape.len(), d) {
            (0, _) => input[d] as i64 * st,
            (1, 0) => natural,
            (1, _) => output_shape[0] as i64,
            _ => output_shape[d] as i64,
        };
        let total = natural - target;
        let half = total.div_euclid(2);
        let (begin, end) = match mode {
            Some(AutoPad::SameUpper) => (half, total - half),
            _ => (total - half, half),
        };
        if begin < 0 {
            return Err(format!(
                "ConvTranspose output size {target} needs {} more leading outputs than the input gives",
                -begin
            ));
        }
        if end < 0 {
            output_padding[d] += (-end) as usize;
        }
        conv.pads[d] = begin as usize;
        conv.pads[d + 2] = end.max(0) as usize;
    }
    output_shape.clear();
    Ok(())
}

/// A Conv's or pool's pads from ONNX's `auto_pad` and its input's spatial size; a
/// ConvTranspose's from its `output_shape` and/or `auto_pad` (`mode` `None`: NOTSET).
fn set_auto_pads(
    node: &mut Node,
    mode: Option<crate::graph::attrs::AutoPad>,
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
            let mode = mode.ok_or("no auto_pad")?;
            a.pads = mode.pads(input, [w[2], w[3]], a.strides, a.dilations);
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            let mode = mode.ok_or("no auto_pad")?;
            p.pads = mode.pads(input, p.kernel, p.strides, p.dilations);
        }
        Op::ConvTranspose {
            conv,
            output_padding,
            output_shape,
        } => {
            let w = s.get(1).ok_or("no weight")?;
            let w = &weight_4d(w);
            if w.len() != 4 {
                return Err(format!("auto_pad needs a 4-D weight, got {w:?}"));
            }
            transpose_pads(
                mode,
                input,
                [w[2], w[3]],
                conv,
                output_padding,
                output_shape,
            )?;
        }
        _ => return Err("auto_pad on an op without pads".into()),
    }
    Ok(())
}
