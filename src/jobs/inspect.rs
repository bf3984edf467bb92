//! `inspect`: what a model is — inputs, outputs, op counts, parameters, MACs per layer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::compress::cost::{layer_costs, LayerCost};
use crate::error::Result;
use crate::graph::Dim;
use crate::jobs::at_least_one;

/// A model's description.
pub struct Inspection {
    pub opset: i64,
    pub producer: String,
    /// (input name, declared dims as text).
    pub inputs: Vec<(String, Vec<String>)>,
    /// (output name, shape at the batch asked for).
    pub outputs: Vec<(String, Vec<usize>)>,
    /// Nodes per op type.
    pub op_counts: BTreeMap<String, usize>,
    pub params: u64,
    pub layers: Vec<LayerCost>,
}

/// Describes the model at `path` resolved for `batch` and named `dims`.
pub fn inspect(path: &Path, batch: usize, dims: &[(String, usize)]) -> Result<Inspection> {
    at_least_one("inspect", "--batch", batch)?;
    let g = crate::graph::load(path)?;
    let inputs = g
        .inputs
        .iter()
        .map(|i| {
            (
                i.clone(),
                g.input_dims[i]
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => v.to_string(),
                        Dim::Named(n) => n.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    let mut r = g.clone();
    r.resolve_with_batch(
        &dims.iter().cloned().collect::<HashMap<_, _>>(),
        Some(batch),
    )?;
    let mut op_counts = BTreeMap::new();
    for n in &r.nodes {
        *op_counts.entry(n.op.onnx_type().to_string()).or_default() += 1;
    }
    Ok(Inspection {
        opset: g.opset,
        producer: g.producer.clone(),
        inputs,
        outputs: r
            .outputs
            .iter()
            .map(|o| (o.clone(), r.shapes[o].clone()))
            .collect(),
        op_counts,
        params: r.param_count() as u64,
        layers: layer_costs(&r),
    })
}
