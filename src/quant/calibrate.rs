//! Calibration on the GPU: forward passes of the prepared FP32 graph with taps on every
//! quantized activation; per batch, the observers record their statistics into the same
//! submission and one readback returns them all. Memory stays flat in the number of batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ndarray::{ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::exec::Plan;
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::{Const, Graph, Node};
use crate::graph::passes::bn_fold;
use crate::ops::calib::{self, RunningHistogram};
use crate::quant::analyzers::{percentile, tf_enhanced, Hist, Scheme};
use crate::quant::placement::Placement;

/// The model as quantization sees it: the imported graph, resolved for a batch size, with
/// batch norms folded (as AIMET prepares it).
#[derive(Clone)]
pub struct Prepared {
    source: Graph,
    dims: HashMap<String, usize>,
    /// Weights replaced after folding (equalized, bias-corrected or quantize-dequantized).
    overrides: BTreeMap<String, Const>,
    /// Nodes replaced after folding, by name (CLE's Clip → Relu).
    nodes: BTreeMap<String, Node>,
    /// Nodes inserted after folding: (the node they follow, the node), in order (CLE's
    /// per-channel clip bounds).
    inserted: Vec<(String, Node)>,
}

impl Prepared {
    /// Prepares an imported graph; `dims` sizes named dims other than the batch.
    pub fn new(source: Graph, dims: HashMap<String, usize>) -> Prepared {
        Prepared { source, dims, overrides: BTreeMap::new(), nodes: BTreeMap::new(), inserted: Vec::new() }
    }

    /// Replaces constants (by name) in every prepared graph from now on.
    pub fn override_consts(&mut self, consts: BTreeMap<String, Const>) {
        self.overrides.extend(consts);
    }

    /// Replaces nodes (by name) and inserts new ones (each after the named node) in every
    /// prepared graph from now on. New values take the shape of their node's first input.
    pub fn edit_nodes(&mut self, replaced: BTreeMap<String, Node>, inserted: Vec<(String, Node)>) {
        self.nodes.extend(replaced);
        self.inserted.extend(inserted);
    }

    /// Whether any node was replaced or inserted (the FP32 function may differ).
    pub fn changes_ops(&self) -> bool {
        !self.nodes.is_empty() || !self.inserted.is_empty()
    }

    /// The prepared graph for one batch size.
    pub fn at(&self, batch: usize) -> Result<Graph> {
        Ok(self.at_with_report(batch)?.0)
    }

    /// The prepared graph and what batch-norm folding did.
    pub fn at_with_report(&self, batch: usize) -> Result<(Graph, Vec<bn_fold::Folded>)> {
        let mut g = self.source.clone();
        g.resolve_with_batch(&self.dims, Some(batch))?;
        let folded = bn_fold::fold_batch_norms(&mut g)?;
        for (k, v) in &self.overrides {
            g.consts.insert(k.clone(), v.clone());
        }
        for n in g.nodes.iter_mut() {
            if let Some(r) = self.nodes.get(&n.name) {
                *n = r.clone();
            }
        }
        for (after, node) in &self.inserted {
            let i = g.nodes.iter().position(|n| &n.name == after).ok_or_else(|| Error::Graph { model: g.name.clone(), message: format!("inserted node '{}' follows '{after}', which is gone", node.name) })?;
            g.nodes.insert(i + 1, node.clone());
        }
        if !self.nodes.is_empty() || !self.inserted.is_empty() {
            for i in 0..g.nodes.len() {
                for o in g.nodes[i].outputs.clone() {
                    if !g.shapes.contains_key(&o) {
                        let s = g.shapes.get(&g.nodes[i].inputs[0]).cloned().unwrap_or_default();
                        g.shapes.insert(o, s);
                    }
                }
            }
        }
        Ok((g, folded))
    }
}

/// Observers on every quantized activation: running min/max always, and a running histogram
/// (AIMET's observer, on the GPU) for the histogram schemes.
pub struct Calibrator {
    gpu: Arc<Gpu>,
    model: Prepared,
    names: Vec<String>,
    plans: HashMap<usize, Plan>,
    scheme: Scheme,
    histograms: Vec<RunningHistogram>,
    /// Per activation: (min, max) of finite values so far.
    pub ranges: Vec<(f32, f32)>,
    /// Per activation: non-finite values seen (left out of the ranges).
    pub non_finite: Vec<u64>,
    /// Samples seen.
    pub samples: usize,
}

impl Calibrator {
    /// Observers for every activation quantizer of `placement` on the prepared model.
    pub fn new(gpu: Arc<Gpu>, model: Prepared, placement: &Placement, scheme: Scheme) -> Result<Calibrator> {
        let names: Vec<String> = placement.activations.iter().map(|q| q.tensor.clone()).collect();
        let n = names.len();
        let histograms = match scheme {
            Scheme::MinMax => Vec::new(),
            _ => (0..n).map(|_| RunningHistogram::new(calib::DEFAULT_BINS, None)).collect::<Result<_>>()?,
        };
        Ok(Calibrator { gpu, model, names, plans: HashMap::new(), scheme, histograms, ranges: vec![(f32::INFINITY, f32::NEG_INFINITY); n], non_finite: vec![0; n], samples: 0 })
    }

    fn plan(&mut self, batch: usize) -> Result<&Plan> {
        if !self.plans.contains_key(&batch) {
            let g = self.model.at(batch)?;
            let taps: Vec<String> = self.names.iter().filter(|t| !g.inputs.contains(t)).cloned().collect();
            self.plans.insert(batch, Plan::compile(self.gpu.clone(), &g, &taps)?);
        }
        Ok(&self.plans[&batch])
    }

    /// Adds one batch (`input` name → `[batch, ...]`): one submission, one readback.
    pub fn add(&mut self, input: &str, x: ArrayViewD<'_, f32>) -> Result<()> {
        let batch = x.len_of(Axis(0));
        let gpu = self.gpu.clone();
        let names = self.names.clone();
        let plan = self.plan(batch)?;
        plan.write_inputs(&[(input, x)])?;
        let mut enc = gpu.encoder();
        plan.record(&mut enc);
        let mut outs: Vec<GpuTensor> = Vec::with_capacity(2 * names.len());
        for name in &names {
            let t = plan.tensor(name).ok_or_else(|| Error::Graph { model: "calibration".into(), message: format!("no tap for '{name}'") })?;
            let mm = calib::min_max(&mut enc, &gpu, t, None)?;
            outs.push(mm.range);
            outs.push(mm.non_finite);
        }
        let refs: Vec<&GpuTensor> = outs.iter().collect();
        let bytes = gpu.submit_and_read(enc, &refs)?;
        let mut batch_ranges = Vec::with_capacity(names.len());
        for (i, pair) in bytes.chunks(2).enumerate() {
            let r: &[f32] = bytemuck::cast_slice(&pair[0]);
            let bad: &[u32] = bytemuck::cast_slice(&pair[1]);
            self.ranges[i].0 = self.ranges[i].0.min(r[0]);
            self.ranges[i].1 = self.ranges[i].1.max(r[1]);
            self.non_finite[i] += bad[0] as u64;
            batch_ranges.push(((r[0], r[1]), bad[0]));
        }
        if !self.histograms.is_empty() {
            // The taps still hold this batch: histogram them in a second submission.
            let plan = &self.plans[&batch];
            let mut enc = gpu.encoder();
            for ((name, h), (range, bad)) in names.iter().zip(self.histograms.iter_mut()).zip(&batch_ranges) {
                let t = plan.tensor(name).expect("tapped above");
                h.update_known(&mut enc, &gpu, t, &[*range], &[*bad])?;
            }
            gpu.submit(enc)?;
        }
        self.samples += batch;
        Ok(())
    }

    /// Each activation's (min, max) under the scheme, for a grid of `num_steps` steps
    /// (`symmetric[i]`: activation i uses a symmetric grid).
    pub fn ranges_for(&self, num_steps: u32, symmetric: &[bool]) -> Result<Vec<(f32, f32)>> {
        if self.histograms.is_empty() {
            return Ok(self.ranges.clone());
        }
        let counts: Vec<&GpuTensor> = self.histograms.iter().map(|h| h.counts().expect("one batch was added")).collect();
        let bytes = self.gpu.submit_and_read(self.gpu.encoder(), &counts)?;
        Ok(self
            .histograms
            .iter()
            .zip(bytes)
            .zip(symmetric)
            .map(|((h, b), &sym)| {
                let counts: &[u32] = bytemuck::cast_slice(&b);
                let (lo, hi) = h.ranges()[0];
                let hist = Hist { counts, lo, hi };
                match self.scheme {
                    Scheme::TfEnhanced { gamma } => tf_enhanced(&hist, num_steps, sym, gamma),
                    Scheme::Percentile(p) => percentile(&hist, p),
                    Scheme::MinMax => (lo, hi),
                }
            })
            .collect())
    }

    /// The activation names, in placement order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}
