//! MACs and parameter memory per layer of a resolved graph.

use crate::graph::ir::{Graph, Node, Op};

/// Cost of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCost {
    pub node: String,
    pub op: &'static str,
    pub output_shape: Vec<usize>,
    /// Multiply-accumulates for the graph's resolved batch.
    pub macs: u64,
    /// Weight elements (constant inputs).
    pub params: u64,
}

/// MACs of one node (Conv, ConvTranspose, Gemm, MatMul; 0 for the rest).
pub fn node_macs(g: &Graph, n: &Node) -> u64 {
    let shape = |v: &str| {
        g.shapes
            .get(v)
            .cloned()
            .or_else(|| g.consts.get(v).map(|c| c.shape().to_vec()))
            .unwrap_or_default()
    };
    let prod = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
    match &n.op {
        Op::Conv(_) => {
            let (y, w) = (shape(&n.outputs[0]), shape(&n.inputs[1]));
            prod(&y) * prod(&w[1..])
        }
        Op::ConvTranspose { .. } => {
            let (x, w) = (shape(&n.inputs[0]), shape(&n.inputs[1]));
            prod(&x) * prod(&w[1..])
        }
        Op::Gemm { trans_a, .. } => {
            let (a, y) = (shape(&n.inputs[0]), shape(&n.outputs[0]));
            let k = if *trans_a { a[0] } else { a[1] };
            prod(&y) * k as u64
        }
        Op::MatMul => {
            let (a, y) = (shape(&n.inputs[0]), shape(&n.outputs[0]));
            prod(&y) * *a.last().unwrap_or(&1) as u64
        }
        _ => 0,
    }
}

/// Per-layer costs of every node, in order.
pub fn layer_costs(g: &Graph) -> Vec<LayerCost> {
    g.nodes
        .iter()
        .map(|n| LayerCost {
            node: n.name.clone(),
            op: n.op.onnx_type(),
            output_shape: g.shapes.get(&n.outputs[0]).cloned().unwrap_or_default(),
            macs: node_macs(g, n),
            params: n
                .inputs
                .iter()
                .filter_map(|i| g.weight(i))
                .map(|w| w.len() as u64)
                .sum(),
        })
        .collect()
}
