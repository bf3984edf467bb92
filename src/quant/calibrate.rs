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
use crate::ops::calib::{self, Outside, RunningHistogram};
use crate::quant::analyzers::{percentile, tf_enhanced, Hist, Pdf, PdfRange, Scheme, PDF_BUCKETS};
use crate::quant::encoding::QuantKind;
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

/// AIMET's tf-enhanced observer of one activation: a density over `PDF_BUCKETS` buckets whose
/// range is fixed by the first calibration sample holding a nonzero value (AIMET fixes it at
/// its first batch; fixing it per sample keeps the result independent of the batch size).
/// Values outside the range are left out.
struct PdfObserver {
    range: Option<PdfRange>,
    counts: Option<GpuTensor>,
    /// Finite values seen since the range was fixed (those left out included).
    seen: u64,
}

/// The statistics kept per activation besides min/max, with the scheme's parameter.
enum Observers {
    None,
    /// Running histograms and the percentile to clip at.
    Running(Vec<RunningHistogram>, f32),
    /// Densities and tf-enhanced's gamma.
    Pdf(Vec<PdfObserver>, f32),
}

/// What calibration found for one activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observed {
    /// A range to build the encoding from.
    Range(f32, f32),
    /// A grid chosen by a search (tf-enhanced): scale and offset.
    Grid { scale: f32, offset: f32 },
}

/// Observers on every quantized activation: running min/max always, plus AIMET's running
/// histogram (percentile) or its fixed-range density (tf-enhanced), on the GPU.
pub struct Calibrator {
    gpu: Arc<Gpu>,
    model: Prepared,
    names: Vec<String>,
    plans: HashMap<usize, Plan>,
    observers: Observers,
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
        let observers = match scheme {
            Scheme::MinMax => Observers::None,
            Scheme::Percentile(p) => Observers::Running((0..n).map(|_| RunningHistogram::new(calib::DEFAULT_BINS, None)).collect::<Result<_>>()?, p),
            Scheme::TfEnhanced { gamma } => Observers::Pdf((0..n).map(|_| PdfObserver { range: None, counts: None, seen: 0 }).collect(), gamma),
        };
        Ok(Calibrator { gpu, model, names, plans: HashMap::new(), observers, ranges: vec![(f32::INFINITY, f32::NEG_INFINITY); n], non_finite: vec![0; n], samples: 0 })
    }

    fn plan(&mut self, batch: usize) -> Result<&Plan> {
        if !self.plans.contains_key(&batch) {
            let g = self.model.at(batch)?;
            let taps: Vec<String> = self.names.iter().filter(|t| !g.inputs.contains(t)).cloned().collect();
            self.plans.insert(batch, Plan::compile(self.gpu.clone(), &g, &taps)?);
        }
        Ok(&self.plans[&batch])
    }

    /// Adds one batch (`input` name → `[batch, ...]`): one submission and one readback for the
    /// min/max (and, until each density's range is fixed, per-sample min/max), then one
    /// submission for the histograms.
    pub fn add(&mut self, input: &str, x: ArrayViewD<'_, f32>) -> Result<()> {
        let batch = x.len_of(Axis(0));
        let gpu = self.gpu.clone();
        let names = self.names.clone();
        let unfixed: Vec<bool> = match &self.observers {
            Observers::Pdf(obs, _) => obs.iter().map(|o| o.range.is_none()).collect(),
            _ => vec![false; names.len()],
        };
        let plan = self.plan(batch)?;
        plan.write_inputs(&[(input, x)])?;
        let mut enc = gpu.encoder();
        plan.record(&mut enc);
        let mut outs: Vec<GpuTensor> = Vec::with_capacity(2 * names.len());
        let mut per_sample: Vec<(usize, GpuTensor)> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let t = plan.tensor(name).ok_or_else(|| Error::Graph { model: "calibration".into(), message: format!("no tap for '{name}'") })?;
            let mm = calib::min_max(&mut enc, &gpu, t, None)?;
            outs.push(mm.range);
            outs.push(mm.non_finite);
            if unfixed[i] {
                per_sample.push((i, calib::min_max(&mut enc, &gpu, t, Some(0))?.range));
            }
        }
        let refs: Vec<&GpuTensor> = outs.iter().chain(per_sample.iter().map(|(_, t)| t)).collect();
        let bytes = gpu.submit_and_read(enc, &refs)?;
        let mut batch_ranges = Vec::with_capacity(names.len());
        for (i, pair) in bytes[..outs.len()].chunks(2).enumerate() {
            let r: &[f32] = bytemuck::cast_slice(&pair[0]);
            let bad: &[u32] = bytemuck::cast_slice(&pair[1]);
            self.ranges[i].0 = self.ranges[i].0.min(r[0]);
            self.ranges[i].1 = self.ranges[i].1.max(r[1]);
            self.non_finite[i] += bad[0] as u64;
            batch_ranges.push(((r[0], r[1]), bad[0]));
        }
        let plan = &self.plans[&batch];
        match &mut self.observers {
            Observers::None => {}
            Observers::Running(hists, _) => {
                // The taps still hold this batch: histogram them in a second submission.
                let mut enc = gpu.encoder();
                for ((name, h), (range, bad)) in names.iter().zip(hists.iter_mut()).zip(&batch_ranges) {
                    let t = plan.tensor(name).expect("tapped above");
                    h.update_known(&mut enc, &gpu, t, &[*range], &[*bad])?;
                }
                gpu.submit(enc)?;
            }
            Observers::Pdf(obs, _) => {
                for ((i, _), b) in per_sample.iter().zip(&bytes[outs.len()..]) {
                    let samples: &[[f32; 2]] = bytemuck::cast_slice(b);
                    // The first sample with a finite nonzero value fixes the range. Earlier
                    // all-zero samples of the same batch are counted, where AIMET (one sample
                    // per batch) would skip them.
                    obs[*i].range = samples.iter().find(|r| r[0] <= r[1] && !(r[0] == 0.0 && r[1] == 0.0)).map(|r| PdfRange::around(r[0], r[1]));
                }
                let mut enc = gpu.encoder();
                for ((name, o), (_, bad)) in names.iter().zip(obs.iter_mut()).zip(&batch_ranges) {
                    let Some(range) = o.range else { continue };
                    let t = plan.tensor(name).expect("tapped above");
                    o.counts = Some(calib::histogram(&mut enc, &gpu, t, None, &[range.grid()], PDF_BUCKETS as u32, Outside::Drop, o.counts.as_ref())?);
                    o.seen += t.len() as u64 - *bad as u64;
                }
                gpu.submit(enc)?;
            }
        }
        self.samples += batch;
        Ok(())
    }

    /// What each activation's statistics give under the scheme, for `bitwidth`-bit grids of
    /// the given kinds (one per activation, in placement order).
    pub fn observed(&self, bitwidth: u32, kinds: &[QuantKind]) -> Result<Vec<Observed>> {
        match self.observers {
            Observers::None => Ok(self.ranges.iter().map(|&(lo, hi)| Observed::Range(lo, hi)).collect()),
            Observers::Running(ref hists, p) => {
                let counts: Vec<&GpuTensor> = hists.iter().map(|h| h.counts().expect("one batch was added")).collect();
                let bytes = self.gpu.submit_and_read(self.gpu.encoder(), &counts)?;
                Ok(hists
                    .iter()
                    .zip(bytes)
                    .map(|(h, b)| {
                        let (lo, hi) = h.ranges()[0];
                        let (lo, hi) = percentile(&Hist { counts: bytemuck::cast_slice(&b), lo, hi }, p);
                        Observed::Range(lo, hi)
                    })
                    .collect())
            }
            Observers::Pdf(ref obs, gamma) => {
                let counts: Vec<&GpuTensor> = obs.iter().filter_map(|o| o.counts.as_ref()).collect();
                let mut bytes = self.gpu.submit_and_read(self.gpu.encoder(), &counts)?.into_iter();
                Ok(obs
                    .iter()
                    .zip(kinds)
                    .map(|(o, &kind)| {
                        let pdf = o.range.map(|r| Pdf::from_counts(r, bytemuck::cast_slice(&bytes.next().expect("one readback per density")), o.seen));
                        let (scale, offset) = tf_enhanced(pdf.as_ref(), bitwidth, kind, gamma);
                        Observed::Grid { scale, offset }
                    })
                    .collect())
            }
        }
    }

    /// The activation names, in placement order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}
