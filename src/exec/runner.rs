//! [`Runner`]: the one way to run a model on inputs of any batch size. It binds named dims
//! from the inputs' shapes, compiles one [`Plan`] per (batch, dims) and caches it, splits
//! batches into pieces that fit the adapter (and the caller's batch size), and binds every
//! plan to one parameter store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ndarray::{concatenate, ArrayD, ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::exec::lower::Simulation;
use crate::exec::params::Params;
use crate::exec::plan::{Compile, Plan};
use crate::gpu::Gpu;
use crate::graph::ir::{Dim, Graph};
use crate::graph::prepare::Prepared;

impl From<Graph> for Arc<Prepared> {
    fn from(g: Graph) -> Arc<Prepared> {
        Arc::new(Prepared::new(g))
    }
}

/// Plans by (batch, named dims).
type Plans = HashMap<(usize, Vec<(String, usize)>), Arc<Plan>>;

/// Runs a model; plans are compiled on first use of each (batch, dims) and cached.
pub struct Runner {
    gpu: Arc<Gpu>,
    model: Arc<Prepared>,
    /// Compute only what these need; they become the outputs.
    outputs: Option<Vec<String>>,
    taps: Vec<String>,
    simulation: Option<Arc<dyn Simulation>>,
    params: Arc<Params>,
    /// Largest batch per plan (the caller's batch size).
    max_batch: Option<usize>,
    plans: Mutex<Plans>,
}

impl Runner {
    /// A runner for a model (an imported graph, or a prepared one).
    pub fn new(gpu: Arc<Gpu>, model: impl Into<Arc<Prepared>>) -> Runner {
        let params = Arc::new(Params::new(gpu.clone()));
        Runner {
            gpu,
            model: model.into(),
            outputs: None,
            taps: Vec::new(),
            simulation: None,
            params,
            max_batch: None,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// Computes only what `names` need, with them as the outputs.
    pub fn outputs(mut self, names: &[String]) -> Runner {
        self.outputs = Some(names.to_vec());
        self
    }

    /// Keeps `names` readable after each forward (for [`Runner::run_names`] and hooks).
    pub fn taps(mut self, names: &[String]) -> Runner {
        self.taps = names.to_vec();
        self
    }

    /// Runs with a simulation's quantizers and nodes.
    pub fn simulation(mut self, s: Arc<dyn Simulation>) -> Runner {
        self.simulation = Some(s);
        self
    }

    /// Runs at most `n` samples per plan.
    pub fn batch(mut self, n: usize) -> Runner {
        self.max_batch = Some(n.max(1));
        self
    }

    /// Binds `params` instead of a store of its own (parameters set there are used as they
    /// are; others are uploaded from the model's constants on first use).
    pub fn with_params(mut self, params: Arc<Params>) -> Runner {
        self.params = params;
        self
    }

    /// The parameter store every plan binds.
    pub fn params(&self) -> &Arc<Params> {
        &self.params
    }

    /// The model.
    pub fn model(&self) -> &Prepared {
        &self.model
    }

    /// The GPU.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The graph the plans run for one batch size and named dims.
    pub fn graph(&self, batch: usize, dims: &[(String, usize)]) -> Result<Arc<Graph>> {
        let g = self.model.resolved(batch, dims)?;
        Ok(match &self.outputs {
            Some(o) => Arc::new(g.truncated(o)),
            None => g,
        })
    }

    /// The compiled plan for one batch size and named dims (cached).
    pub fn plan(&self, batch: usize, dims: &[(String, usize)]) -> Result<Arc<Plan>> {
        let k = (batch, dims.to_vec());
        if let Some(p) = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(p.clone());
        }
        let g = self.graph(batch, dims)?;
        let c = Compile {
            taps: &self.taps,
            params: Some(self.params.clone()),
            simulation: self.simulation.as_deref(),
        };
        let plan = Arc::new(Plan::compile(self.gpu.clone(), &g, c)?);
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, plan.clone());
        Ok(plan)
    }

    /// Named dims (other than the batch) bound from the inputs' shapes; checks every input is
    /// given with its declared rank and fixed dims.
    pub fn bind_dims(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<Vec<(String, usize)>> {
        let g = self.model.signature()?;
        let mut dims: BTreeMap<String, usize> = BTreeMap::new();
        for name in &g.inputs {
            let Some((_, x)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::Graph {
                    model: g.name.clone(),
                    message: format!("missing input '{name}' (inputs: {:?})", g.inputs),
                });
            };
            let declared = &g.input_dims[name];
            if declared.len() != x.ndim() {
                return Err(Error::ShapeMismatch {
                    op: "run",
                    tensor: name.clone(),
                    expected: format!("{} dims {declared:?}", declared.len()),
                    got: x.shape().to_vec(),
                });
            }
            for (i, (d, &v)) in declared.iter().zip(x.shape()).enumerate().skip(1) {
                match d {
                    Dim::Fixed(f) if *f != v => {
                        return Err(Error::ShapeMismatch {
                            op: "run",
                            tensor: name.clone(),
                            expected: format!("dim {i} = {f} (declared {declared:?})"),
                            got: x.shape().to_vec(),
                        });
                    }
                    Dim::Named(n) => {
                        if let Some(&prev) = dims.get(n) {
                            if prev != v {
                                return Err(Error::ShapeMismatch {
                                    op: "run",
                                    tensor: name.clone(),
                                    expected: format!("dim '{n}' = {prev} as in another input"),
                                    got: x.shape().to_vec(),
                                });
                            }
                        }
                        dims.insert(n.clone(), v);
                    }
                    _ => {}
                }
            }
        }
        Ok(dims.into_iter().collect())
    }

    /// The batch to run at once: `batch` itself (or the caller's batch size, if smaller)
    /// when every activation fits one storage binding, otherwise the largest piece that does
    /// (activations scale with the batch).
    pub fn batch_piece(&self, batch: usize, dims: &[(String, usize)]) -> Result<usize> {
        let batch = self.max_batch.map_or(batch, |m| m.min(batch));
        let g = self.graph(batch, dims)?;
        let largest = g
            .shapes
            .values()
            .map(|s| s.iter().product::<usize>() as u64 * 4)
            .max()
            .unwrap_or(4)
            .max(4);
        let limits = self.gpu.limits();
        if largest <= limits.max_binding && batch <= limits.max_groups as usize {
            return Ok(batch);
        }
        let per_sample = largest.div_ceil(batch as u64);
        Ok(((limits.max_binding / per_sample) as usize)
            .clamp(1, limits.max_groups as usize)
            .min(batch))
    }

    /// Calls `f` with the plan and the inputs of each piece of the batch, in order.
    pub fn for_each_piece(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        mut f: impl FnMut(&Plan, &[(&str, ArrayViewD<'_, f32>)]) -> Result<()>,
    ) -> Result<()> {
        let dims = self.bind_dims(inputs)?;
        let batch = inputs
            .first()
            .map(|(_, x)| x.shape().first().copied().unwrap_or(1))
            .unwrap_or(1);
        if batch == 0 {
            return Err(Error::EmptyTensor {
                op: "run",
                tensor: inputs
                    .first()
                    .map_or("input".to_string(), |i| i.0.to_string()),
            });
        }
        if inputs
            .iter()
            .any(|(_, x)| x.shape().first() != Some(&batch))
        {
            return Err(Error::invalid(
                "run",
                "batch",
                batch,
                "every input needs the same batch size (dim 0)",
            ));
        }
        let chunk = self.batch_piece(batch, &dims)?;
        let mut start = 0;
        while start < batch {
            let n = chunk.min(batch - start);
            let plan = self.plan(n, &dims)?;
            let part: Vec<(&str, ArrayViewD<'_, f32>)> = inputs
                .iter()
                .map(|(name, x)| (*name, x.slice_axis(Axis(0), (start..start + n).into())))
                .collect();
            f(&plan, &part)?;
            start += n;
        }
        Ok(())
    }

    /// Runs the model; returns its outputs in model order, batch pieces joined. Inputs with
    /// NaN or Inf are refused.
    pub fn run(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Vec<ArrayD<f32>>> {
        for (name, x) in inputs {
            let bad = x.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::NonFinite {
                    op: "run",
                    tensor: name.to_string(),
                    count: bad as u64,
                });
            }
        }
        let mut pieces = Vec::new();
        self.for_each_piece(inputs, |plan, part| {
            pieces.push(plan.run(part, plan.outputs())?);
            Ok(())
        })?;
        join_batches(pieces)
    }

    /// Runs the model and returns `names` (outputs or taps), batch pieces joined.
    pub fn run_names(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        names: &[String],
    ) -> Result<Vec<ArrayD<f32>>> {
        let mut pieces = Vec::new();
        self.for_each_piece(inputs, |plan, part| {
            pieces.push(plan.run(part, names)?);
            Ok(())
        })?;
        join_batches(pieces)
    }
}

/// Joins the outputs of consecutive batch pieces (each a list of outputs) along the batch axis.
pub fn join_batches(mut pieces: Vec<Vec<ArrayD<f32>>>) -> Result<Vec<ArrayD<f32>>> {
    if pieces.len() == 1 {
        return Ok(pieces.pop().expect("one piece"));
    }
    let n = pieces.first().map_or(0, Vec::len);
    (0..n)
        .map(|o| {
            concatenate(
                Axis(0),
                &pieces.iter().map(|p| p[o].view()).collect::<Vec<_>>(),
            )
            .map_err(|e| Error::invalid("run", "outputs", e, "cannot join batch pieces"))
        })
        .collect()
}
