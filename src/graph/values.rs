//! What the graph knows of a value besides its shape: its element type (inferred op by op from
//! the inputs' declared types and the constants), and which runtime inputs it needs at load
//! time (inputs that size other values: a Reshape's shape, a Range's limits).

use std::collections::{HashMap, HashSet};

use crate::graph::ir::{Const, ElemType, Graph, Op};

/// The element types of a node's outputs from its inputs' types (see [`ElemType`] for how
/// each type is carried).
pub fn output_types(op: &Op, inputs: &[ElemType], outputs: usize) -> Vec<ElemType> {
    let first = inputs.first().copied().unwrap_or_default();
    let mut t = match op {
        Op::Shape { .. } | Op::Size => vec![ElemType::I64],
        Op::Cast { to } => vec![ElemType::from_onnx(*to).unwrap_or_default()],
        Op::CastLike => vec![inputs.get(1).copied().unwrap_or_default()],
        Op::ConstantOfShape { elem, .. } => vec![*elem],
        Op::Unary(u) if u.is_predicate() => vec![ElemType::Bool],
        Op::Binary(b) if b.is_predicate() => vec![ElemType::Bool],
        Op::Where => vec![inputs.get(1).copied().unwrap_or_default()],
        Op::Arg { .. } => vec![ElemType::I64],
        Op::TopK { .. } => vec![first, ElemType::I64],
        Op::LayerNorm { .. } => vec![first, ElemType::F32, ElemType::F32],
        _ => vec![],
    };
    t.resize(outputs.max(t.len()), first);
    t
}

/// The inputs of `op` that must be known at load time (their values size the output or
/// configure the op): slot indices, in order.
pub fn value_slots(op: &Op) -> &'static [usize] {
    match op {
        Op::Reshape { .. } => &[1],
        Op::Slice => &[1, 2, 3, 4],
        Op::Pad { .. } => &[1, 2, 3],
        Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::ReduceMean { .. } | Op::Split { .. } => {
            &[1]
        }
        Op::Unary(crate::graph::attrs::Unary::Clip(..)) => &[1, 2],
        Op::Resize { .. } => &[1, 2, 3],
        Op::ConstantOfShape { .. } | Op::Range => &[0, 1, 2],
        Op::Expand
        | Op::Tile
        | Op::Reduce { .. }
        | Op::TopK { .. }
        | Op::CumSum { .. }
        | Op::Trilu { .. } => &[1],
        Op::BatchNorm { .. } => &[1, 2, 3, 4],
        Op::Dropout => &[1, 2],
        _ => &[],
    }
}

impl Graph {
    /// The element type of every value (inputs as declared, constants as stored, node outputs
    /// by [`output_types`]); no resolution needed.
    pub fn value_types(&self) -> HashMap<String, ElemType> {
        let mut t: HashMap<String, ElemType> = self
            .inputs
            .iter()
            .map(|i| (i.clone(), self.elem_type(i)))
            .collect();
        for (k, c) in &self.consts {
            t.insert(
                k.clone(),
                match c {
                    Const::F32(_) => ElemType::F32,
                    Const::I64(_) => ElemType::I64,
                },
            );
        }
        for n in &self.nodes {
            let ins: Vec<ElemType> = n
                .inputs
                .iter()
                .map(|i| t.get(i).copied().unwrap_or_default())
                .collect();
            for (o, ty) in n
                .outputs
                .iter()
                .zip(output_types(&n.op, &ins, n.outputs.len()))
            {
                t.insert(o.clone(), ty);
            }
        }
        t
    }

    /// The runtime inputs whose values the graph needs at load time: those read by a
    /// [value slot](value_slots), directly or through nodes that fold on the host (a shape
    /// chain). A run binds them as constants ([`Graph::resolve_with`]), one plan per value.
    pub fn value_inputs(&self) -> Vec<String> {
        let mut need: HashSet<&str> = HashSet::new();
        for n in self.nodes.iter().rev() {
            if n.outputs.iter().any(|o| need.contains(o.as_str()))
                && !matches!(n.op, Op::Shape { .. } | Op::Size)
            {
                need.extend(n.inputs.iter().map(String::as_str));
            }
            for &i in value_slots(&n.op) {
                if let Some(v) = n.inputs.get(i).filter(|v| !v.is_empty()) {
                    need.insert(v);
                }
            }
        }
        self.inputs
            .iter()
            .filter(|i| need.contains(i.as_str()))
            .cloned()
            .collect()
    }
}
