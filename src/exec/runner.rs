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
use crate::graph::ir::{Const, Dim, ElemType, Graph};
use crate::graph::prepare::{value_key, Prepared, ValueKey};

impl From<Graph> for Arc<Prepared> {
    fn from(g: Graph) -> Arc<Prepared> {
        Arc::new(Prepared::new(g))
    }
}

/// Plans by (batch, named dims, value inputs' values).
type Plans = HashMap<(Option<usize>, Vec<(String, usize)>, Vec<ValueKey>), Arc<Plan>>;

/// How one run feeds the model: its value inputs as constants, the other inputs, and whether
/// dim 0 is a batch the runner may split.
struct Feed<'i, 'a> {
    values: Vec<(String, Const)>,
    data: Vec<(&'i str, ArrayViewD<'a, f32>)>,
    /// With a batch to split: each data input's sample axis (`Graph::sample_axis`).
    axes: Option<Vec<usize>>,
}

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
    /// Every dim as the inputs give it, never split into batch pieces.
    exact: bool,
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
            exact: false,
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

    /// Runs every input at the shape it is given, dim 0 included, in one piece (ONNX's node
    /// tests, models whose inputs share no batch). Without it a run splits along dim 0 when
    /// the model has one input, or every input's dim 0 is the same named dim or 1.
    pub fn exact(mut self) -> Runner {
        self.exact = true;
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
        self.graph_with(Some(batch), dims, &[])
    }

    /// The graph the plans run for a batch (`None`: dims as given), named dims and the values
    /// of value inputs.
    pub fn graph_with(
        &self,
        batch: Option<usize>,
        dims: &[(String, usize)],
        values: &[(String, Const)],
    ) -> Result<Arc<Graph>> {
        let g = self.model.resolved_with(batch, dims, values)?;
        Ok(match &self.outputs {
            Some(o) => Arc::new(g.truncated(o)),
            None => g,
        })
    }

    /// The compiled plan for one batch size and named dims (cached).
    pub fn plan(&self, batch: usize, dims: &[(String, usize)]) -> Result<Arc<Plan>> {
        self.plan_with(Some(batch), dims, &[])
    }

    /// The compiled plan for a batch (`None`: dims as given), named dims and the values of
    /// value inputs (cached). A plan with value inputs binds a parameter store of its own:
    /// the constants folded from them differ from value to value under the same names.
    pub fn plan_with(
        &self,
        batch: Option<usize>,
        dims: &[(String, usize)],
        values: &[(String, Const)],
    ) -> Result<Arc<Plan>> {
        let k = (
            batch,
            dims.to_vec(),
            values.iter().map(|(n, c)| value_key(n, c)).collect(),
        );
        if let Some(p) = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            return Ok(p.clone());
        }
        let g = self.graph_with(batch, dims, values)?;
        let c = Compile {
            taps: &self.taps,
            params: values.is_empty().then(|| self.params.clone()),
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
        let values = g.value_inputs();
        bind(&g, &values, inputs, true)
    }

    /// Splits the inputs into value inputs and data, and decides whether dim 0 is a batch.
    fn feed<'i, 'a>(&self, inputs: &[(&'i str, ArrayViewD<'a, f32>)]) -> Result<Feed<'i, 'a>> {
        let g = self.model.signature()?;
        let value_names = g.value_inputs();
        let mut values = Vec::new();
        let mut data = Vec::new();
        if let Some(missing) = g
            .inputs
            .iter()
            .find(|i| !inputs.iter().any(|(n, _)| n == *i))
        {
            return Err(Error::Graph {
                model: g.name.clone(),
                message: format!(
                    "missing input '{missing}' (declared {}; inputs: {:?})",
                    show_dims(&g.input_dims[missing]),
                    g.inputs
                ),
            });
        }
        for (name, x) in inputs {
            if !g.inputs.iter().any(|i| i == name) {
                return Err(Error::Graph {
                    model: g.name.clone(),
                    message: format!(
                        "'{name}' is not an input of the model (inputs: {:?})",
                        g.inputs
                    ),
                });
            }
            // In an exact run an empty input is bound as a value too: kernels take no empty
            // tensors, and what reads it folds on the host.
            if value_names.iter().any(|v| v == name) || (self.exact && x.is_empty()) {
                let c = match g.elem_type(name) {
                    ElemType::F32 => Const::F32(x.to_owned()),
                    _ => Const::I64(x.mapv(|v| v as i64)),
                };
                values.push((name.to_string(), c));
            } else {
                data.push((*name, x.clone()));
            }
        }
        // A batch splits when every data input holds it: one input, inputs all of batch 1, or
        // a named batch dim (dim 0 of the first input) that every input has somewhere.
        let firsts: Vec<Option<&Dim>> =
            data.iter().map(|(n, _)| g.input_dims[*n].first()).collect();
        let axes: Option<Vec<usize>> = data.iter().map(|(n, _)| g.sample_axis(n)).collect();
        let batched = !self.exact
            && !firsts.is_empty()
            && firsts.iter().all(Option::is_some)
            && (firsts.len() == 1
                || firsts.iter().all(|d| *d == Some(&Dim::Fixed(1)))
                || matches!(g.input_dims[&g.inputs[0]].first(), Some(Dim::Named(_))));
        Ok(Feed {
            values,
            data,
            axes: axes.filter(|_| batched),
        })
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

    /// Calls `f` with the plan, the inputs of each piece of the batch, in order, and the
    /// number of samples in it (value inputs are bound into the plan, not passed to `f`). A
    /// model that fixes its batch at k > 1 runs pieces of k: the last piece is filled up with
    /// copies of its last sample, and `f` is told how many rows are real (outputs past them are
    /// copies; statistics should leave such a piece out).
    pub fn for_each_piece(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        mut f: impl FnMut(&Plan, &[(&str, ArrayViewD<'_, f32>)], usize) -> Result<()>,
    ) -> Result<()> {
        let g = self.model.signature()?;
        let feed = self.feed(inputs)?;
        let value_names: Vec<String> = feed.values.iter().map(|(n, _)| n.clone()).collect();
        let dims = bind(&g, &value_names, &feed.data, feed.axes.is_some())?;
        let Some(axes) = &feed.axes else {
            if let Some((name, _)) = feed.data.iter().find(|(_, x)| x.is_empty()) {
                return Err(Error::EmptyTensor {
                    op: "run",
                    tensor: name.to_string(),
                });
            }
            let plan = self.plan_with(None, &dims, &feed.values)?;
            let rows = feed
                .data
                .first()
                .map_or(1, |(_, x)| x.shape().first().copied().unwrap_or(1));
            return f(&plan, &feed.data, rows);
        };
        let inputs = &feed.data[..];
        let batch = inputs
            .first()
            .map(|(_, x)| x.len_of(Axis(axes[0])))
            .unwrap_or(1);
        if batch == 0 {
            return Err(Error::EmptyTensor {
                op: "run",
                tensor: inputs
                    .first()
                    .map_or("input".to_string(), |i| i.0.to_string()),
            });
        }
        if let Some(((name, x), axis)) = inputs
            .iter()
            .zip(axes)
            .find(|((_, x), &a)| x.len_of(Axis(a)) != batch)
        {
            return Err(Error::ShapeMismatch {
                op: "run",
                tensor: name.to_string(),
                expected: format!(
                    "dim {axis} = {batch} as in input '{}' (the batch, dim 0 of the first input)",
                    inputs[0].0
                ),
                got: x.shape().to_vec(),
            });
        }
        let fixed = match g.input_dims[inputs[0].0].first() {
            Some(Dim::Fixed(k)) if *k > 1 => Some(*k),
            _ => None,
        };
        let chunk = match fixed {
            Some(k) => k,
            None if feed.values.is_empty() => self.batch_piece(batch, &dims)?,
            None => batch,
        };
        let mut start = 0;
        while start < batch {
            let n = chunk.min(batch - start);
            let plan = self.plan_with(Some(fixed.unwrap_or(n)), &dims, &feed.values)?;
            let part: Vec<(&str, ArrayViewD<'_, f32>)> = inputs
                .iter()
                .zip(axes)
                .map(|((name, x), &a)| (*name, x.slice_axis(Axis(a), (start..start + n).into())))
                .collect();
            match fixed {
                Some(k) if n < k => {
                    let filled: Vec<ArrayD<f32>> = part
                        .iter()
                        .zip(axes)
                        .map(|((_, x), &a)| {
                            let last = x.slice_axis(Axis(a), (n - 1..n).into());
                            let mut views = vec![x.view()];
                            views.extend(std::iter::repeat_n(last, k - n));
                            ndarray::concatenate(Axis(a), &views).expect("same shapes")
                        })
                        .collect();
                    let filled: Vec<(&str, ArrayViewD<'_, f32>)> = part
                        .iter()
                        .zip(&filled)
                        .map(|((name, _), x)| (*name, x.view()))
                        .collect();
                    f(&plan, &filled, n)?;
                }
                _ => f(&plan, &part, n)?,
            }
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
        self.for_each_piece(inputs, |plan, part, rows| {
            pieces.push(real_rows(plan.run(part, plan.outputs())?, part, rows));
            Ok(())
        })?;
        join_batches(pieces)
    }

    /// Seconds per kernel of a forward on `inputs`, slowest first, summed over the batch
    /// pieces ([`Plan::profile`]: each dispatch timed in a submission of its own).
    pub fn profile(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Vec<(String, f64)>> {
        let mut by: HashMap<String, f64> = HashMap::new();
        self.for_each_piece(inputs, |plan, part, _| {
            plan.write_inputs(part)?;
            for (k, s) in plan.profile()? {
                *by.entry(k).or_default() += s;
            }
            Ok(())
        })?;
        let mut out: Vec<(String, f64)> = by.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }

    /// Runs the model and returns `names` (outputs or taps), batch pieces joined.
    pub fn run_names(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        names: &[String],
    ) -> Result<Vec<ArrayD<f32>>> {
        let mut pieces = Vec::new();
        self.for_each_piece(inputs, |plan, part, rows| {
            pieces.push(real_rows(plan.run(part, names)?, part, rows));
            Ok(())
        })?;
        join_batches(pieces)
    }
}

/// Whether a piece [`Runner::for_each_piece`] passes was filled up past its `rows` real
/// samples to the model's fixed batch (statistics leave such a piece out).
pub fn filled(part: &[(&str, ArrayViewD<'_, f32>)], rows: usize) -> bool {
    part.first()
        .and_then(|(_, x)| x.shape().first())
        .is_some_and(|&b| rows < b)
}

/// The outputs of a piece without the rows that filled it up to a fixed batch: values whose
/// dim 0 is the piece's batch keep their first `rows`.
fn real_rows(
    ys: Vec<ArrayD<f32>>,
    part: &[(&str, ArrayViewD<'_, f32>)],
    rows: usize,
) -> Vec<ArrayD<f32>> {
    if !filled(part, rows) {
        return ys;
    }
    let batch = part[0].1.shape()[0];
    ys.into_iter()
        .map(|y| match y.shape().first() == Some(&batch) {
            true => y.slice_axis(Axis(0), (0..rows).into()).to_owned(),
            false => y,
        })
        .collect()
}

/// Named dims bound from the inputs' shapes (dim 0 too unless `batched`); checks every input
/// but the value inputs is given, with its declared rank and fixed dims, and that a named dim
/// has one size in every input that declares it.
fn bind(
    g: &Graph,
    values: &[String],
    inputs: &[(&str, ArrayViewD<'_, f32>)],
    batched: bool,
) -> Result<Vec<(String, usize)>> {
    let mut dims: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for name in g.inputs.iter().filter(|i| !values.contains(i)) {
        let declared = &g.input_dims[name];
        let Some((_, x)) = inputs.iter().find(|(n, _)| n == name) else {
            return Err(Error::Graph {
                model: g.name.clone(),
                message: format!(
                    "missing input '{name}' (declared {}; inputs: {:?})",
                    show_dims(declared),
                    g.inputs
                ),
            });
        };
        if declared.len() != x.ndim() {
            return Err(Error::ShapeMismatch {
                op: "run",
                tensor: name.clone(),
                expected: format!("{} dims {}", declared.len(), show_dims(declared)),
                got: x.shape().to_vec(),
            });
        }
        let skip = g.sample_axis(name).filter(|_| batched);
        for (i, (d, &v)) in declared.iter().zip(x.shape()).enumerate() {
            if Some(i) == skip {
                continue;
            }
            match d {
                Dim::Fixed(f) if *f != v => {
                    return Err(Error::ShapeMismatch {
                        op: "run",
                        tensor: name.clone(),
                        expected: format!("dim {i} = {f} (declared {})", show_dims(declared)),
                        got: x.shape().to_vec(),
                    });
                }
                Dim::Named(n) => {
                    if let Some((prev, other)) = dims.get(n) {
                        if *prev != v {
                            return Err(Error::ShapeMismatch {
                                op: "run",
                                tensor: name.clone(),
                                expected: format!(
                                    "dim '{n}' = {prev} as in input '{other}' (declared {})",
                                    show_dims(declared)
                                ),
                                got: x.shape().to_vec(),
                            });
                        }
                    }
                    dims.insert(n.clone(), (v, name.clone()));
                }
                _ => {}
            }
        }
    }
    Ok(dims.into_iter().map(|(n, (v, _))| (n, v)).collect())
}

/// Declared dims as `[N, 3, 224, 224]`.
fn show_dims(d: &[Dim]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Named(n) => n.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
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
