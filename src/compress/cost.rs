//! MACs and parameter memory per layer of a resolved graph.

use crate::graph::ir::Graph;

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

/// Per-layer costs of every node, in order.
pub fn layer_costs(g: &Graph) -> Vec<LayerCost> {
    g.nodes
        .iter()
        .map(|n| LayerCost {
            node: n.name.clone(),
            op: n.op.onnx_type(),
            output_shape: g.shapes.get(&n.outputs[0]).cloned().unwrap_or_default(),
            macs: g.macs(n),
            params: n
                .inputs
                .iter()
                .filter_map(|i| g.weight(i))
                .map(|w| w.len() as u64)
                .sum(),
        })
        .collect()
}
