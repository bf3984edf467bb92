//! [`Executor`]: runs an imported graph on inputs of any batch size, binding named dims from
//! the inputs' shapes, compiling one [`Plan`] per batch size and splitting batches whose
//! activations would not fit one storage binding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::{concatenate, ArrayD, ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::exec::Plan;
use crate::gpu::Gpu;
use crate::graph::ir::{Dim, Graph};

/// Runs a graph; plans are compiled on first use of each (batch, dims) and cached.
pub struct Executor {
    gpu: Arc<Gpu>,
    graph: Graph,
    plans: Mutex<HashMap<(usize, Vec<(String, usize)>), Arc<Plan>>>,
}

impl Executor {
    /// An executor for an imported (not yet resolved) graph.
    pub fn new(gpu: Arc<Gpu>, graph: Graph) -> Executor {
        Executor { gpu, graph, plans: Mutex::new(HashMap::new()) }
    }

    /// The graph as imported.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Named dims (other than the batch) bound from the inputs' shapes.
    fn bind_dims(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Vec<(String, usize)>> {
        let mut dims: HashMap<String, usize> = HashMap::new();
        for name in &self.graph.inputs {
            let Some((_, x)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::Graph { model: self.graph.name.clone(), message: format!("missing input '{name}' (inputs: {:?})", self.graph.inputs) });
            };
            let declared = &self.graph.input_dims[name];
            if declared.len() != x.ndim() {
                return Err(Error::ShapeMismatch { op: "run", tensor: name.clone(), expected: format!("{} dims {declared:?}", declared.len()), got: x.shape().to_vec() });
            }
            for (i, (d, &v)) in declared.iter().zip(x.shape()).enumerate().skip(1) {
                match d {
                    Dim::Fixed(f) if *f != v => {
                        return Err(Error::ShapeMismatch { op: "run", tensor: name.clone(), expected: format!("dim {i} = {f} (declared {declared:?})"), got: x.shape().to_vec() });
                    }
                    Dim::Named(n) => {
                        if let Some(&prev) = dims.get(n) {
                            if prev != v {
                                return Err(Error::ShapeMismatch { op: "run", tensor: name.clone(), expected: format!("dim '{n}' = {prev} as in another input"), got: x.shape().to_vec() });
                            }
                        }
                        dims.insert(n.clone(), v);
                    }
                    _ => {}
                }
            }
        }
        let mut v: Vec<(String, usize)> = dims.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// The graph resolved for one batch size and named dims.
    pub fn resolved(&self, batch: usize, dims: &[(String, usize)]) -> Result<Graph> {
        let mut g = self.graph.clone();
        g.resolve_with_batch(&dims.iter().cloned().collect(), Some(batch))?;
        Ok(g)
    }

    /// The compiled plan for one batch size and named dims (cached).
    pub fn plan(&self, batch: usize, dims: &[(String, usize)]) -> Result<Arc<Plan>> {
        let k = (batch, dims.to_vec());
        if let Some(p) = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(p.clone());
        }
        let g = self.resolved(batch, dims)?;
        let plan = Arc::new(Plan::compile(self.gpu.clone(), &g, &[])?);
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).insert(k, plan.clone());
        Ok(plan)
    }

    /// The batch to run at once: `batch` itself when every activation fits one storage
    /// binding, otherwise the largest piece that does (activations scale with the batch).
    pub fn batch_piece(&self, batch: usize, dims: &[(String, usize)]) -> Result<usize> {
        let g = self.resolved(batch, dims)?;
        let largest = g.shapes.values().map(|s| s.iter().product::<usize>() as u64 * 4).max().unwrap_or(4).max(4);
        let limits = self.gpu.limits();
        if largest <= limits.max_binding && batch <= limits.max_groups as usize {
            return Ok(batch);
        }
        let per_sample = largest.div_ceil(batch as u64);
        Ok(((limits.max_binding / per_sample) as usize).clamp(1, limits.max_groups as usize).min(batch))
    }

    /// Runs the graph; returns the outputs in model order. Batches larger than the adapter
    /// can hold in one binding run in pieces.
    pub fn run(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Vec<ArrayD<f32>>> {
        let dims = self.bind_dims(inputs)?;
        let batch = inputs.first().map(|(_, x)| x.shape().first().copied().unwrap_or(1)).unwrap_or(1);
        if batch == 0 {
            return Err(Error::EmptyTensor { op: "run", tensor: inputs[0].0.to_string() });
        }
        if inputs.iter().any(|(_, x)| x.shape().first() != Some(&batch)) {
            return Err(Error::invalid("run", "batch", batch, "every input needs the same batch size (dim 0)"));
        }
        for (name, x) in inputs {
            let bad = x.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::NonFinite { op: "run", tensor: name.to_string(), count: bad as u64 });
            }
        }
        let chunk = self.batch_piece(batch, &dims)?;
        let mut pieces: Vec<Vec<ArrayD<f32>>> = Vec::new();
        let mut start = 0;
        while start < batch {
            let n = chunk.min(batch - start);
            let plan = self.plan(n, &dims)?;
            let part: Vec<(&str, ArrayViewD<'_, f32>)> = inputs.iter().map(|(name, x)| (*name, x.slice_axis(Axis(0), (start..start + n).into()))).collect();
            pieces.push(plan.run(&part, plan.outputs())?);
            start += n;
        }
        join_batches(pieces)
    }
}

/// Joins the outputs of consecutive batch pieces (each a list of outputs) along the batch axis.
pub fn join_batches(mut pieces: Vec<Vec<ArrayD<f32>>>) -> Result<Vec<ArrayD<f32>>> {
    if pieces.len() == 1 {
        return Ok(pieces.pop().expect("one piece"));
    }
    let n = pieces.first().map_or(0, Vec::len);
    (0..n).map(|o| concatenate(Axis(0), &pieces.iter().map(|p| p[o].view()).collect::<Vec<_>>()).map_err(|e| Error::invalid("run", "outputs", e, "cannot join batch pieces"))).collect()
}
