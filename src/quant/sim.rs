//! [`QuantSim`]: AIMET's QuantizationSimModel on the GPU — prepare (BN fold), place
//! quantizers from a config, quantize the weights once, calibrate activation ranges, simulate
//! with fake quantization, evaluate against FP32, export encodings. With
//! [`Arithmetic::Integer`] the simulation instead computes what onnxruntime computes when it
//! runs the QDQ export ([`crate::quant::integer`]), bit for bit.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ndarray::Axis;
//! use qforge::quant::{analyzers::Scheme, export::EncodingsVersion, sim::QuantSim, QuantConfig};
//! # fn main() -> qforge::Result<()> {
//! let gpu = Arc::new(qforge::gpu::Gpu::new()?);
//! let graph = qforge::graph::load("models/mobilenet_v2.onnx".as_ref())?;
//! let mut sim = QuantSim::new(gpu, graph, &QuantConfig::default_per_channel(), Default::default(), Default::default())?;
//! let calib = qforge::data::npy::read("calib.npy".as_ref())?;
//! sim.calibrate(Scheme::MinMax, calib.axis_chunks_iter(Axis(0), 8))?;
//! let report = sim.evaluate(&calib, 8, None)?;
//! println!("SQNR {:.1} dB, top-1 agreement {:.0}%", report.sqnr_db, 100.0 * report.top1_agreement);
//! sim.export("out".as_ref(), "mobilenet_v2", EncodingsVersion::V1_0_0)?;
//! sim.export_qdq("out".as_ref(), "mobilenet_v2")?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::eval;
use crate::exec::{join_batches, Plan};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::Graph;
use crate::graph::passes::cle::{self, bn_stats, BnStats, CleOptions, CleReport};
use crate::ops::quant::{upload_table, write_table};
use crate::quant::analyzers::Scheme;
use crate::quant::calibrate::{Calibrator, Observed, Prepared};
use crate::quant::config::QuantConfig;
use crate::quant::encoding::{Encoding, QuantKind};
use crate::quant::export::{self, EncodingsVersion};
use crate::quant::integer::IntegerPlan;
use crate::quant::params::{channel_ranges, kind_for, param_encodings, quantize_weights, ParamRange, ParamScheme};
use crate::quant::placement::{place, Placement};

/// Bitwidths and grid options.
#[derive(Clone, Copy, Debug)]
pub struct QuantOptions {
    pub param_bw: u32,
    pub act_bw: u32,
    /// How weight ranges are chosen (tf-enhanced as AIMET does when it calibrates with it).
    pub param_range: ParamRange,
    /// How the simulation computes between quantizers.
    pub arithmetic: Arithmetic,
}

/// The simulation's arithmetic between quantizers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arithmetic {
    /// AIMET's QuantSim: f32 ops on quantize-dequantized values.
    #[default]
    Float,
    /// onnxruntime's CPU execution of the QDQ export: the ops it fuses run on integer codes
    /// with its requantization (see [`crate::quant::integer`]); the export carries int32
    /// biases. 8-bit grids only.
    Integer,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions { param_bw: 8, act_bw: 8, param_range: ParamRange::MinMax, arithmetic: Arithmetic::Float }
    }
}

/// FP32 vs simulated outputs.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub sqnr_db: f64,
    pub top1_agreement: f64,
    pub top5_agreement: f64,
    pub samples: usize,
    /// (FP32 accuracy, simulated accuracy) when labels were given.
    pub accuracy: Option<(f64, f64)>,
}

/// A quantization simulation of one model.
pub struct QuantSim {
    gpu: Arc<Gpu>,
    /// The simulated model: `fp32` with its weights quantize-dequantized.
    model: Prepared,
    /// The FP32 model as exported: BN folded, then equalized and bias-corrected when asked.
    fp32: Prepared,
    /// The BN-folded original, the reference every evaluation compares against.
    reference: Prepared,
    /// Folded batch-norm statistics per conv, kept in step with `fp32` (CLE scales them).
    bn: BnStats,
    config: QuantConfig,
    opts: QuantOptions,
    placement: Placement,
    params: Vec<(String, Encoding)>,
    activations: Vec<(String, Encoding)>,
    tables: HashMap<String, (GpuTensor, u32)>,
    /// Compiled plans by (batch, simulated?).
    plans: Mutex<HashMap<(usize, bool), Arc<Plan>>>,
    /// The integer simulation's fused nodes, made on first use (emptied with `plans`).
    integer: Mutex<Option<Arc<IntegerPlan>>>,
    input: String,
    scheme: Scheme,
}

impl QuantSim {
    /// Prepares `graph` (resolved per batch with `dims`, BN folded), places quantizers per
    /// `config`, and quantizes the weights.
    pub fn new(gpu: Arc<Gpu>, graph: Graph, config: &QuantConfig, opts: QuantOptions, dims: HashMap<String, usize>) -> Result<QuantSim> {
        if graph.inputs.len() != 1 {
            return Err(Error::Graph { model: graph.name.clone(), message: format!("quantization takes models with one input; this one has {:?}", graph.inputs) });
        }
        if opts.arithmetic == Arithmetic::Integer && (opts.param_bw != 8 || opts.act_bw != 8) {
            return Err(Error::invalid("QuantSim", "bitwidths", format!("W{}A{}", opts.param_bw, opts.act_bw), "the integer simulation runs 8-bit grids (uint8/int8), as onnxruntime's integer kernels do"));
        }
        let input = graph.inputs[0].clone();
        let fp32 = Prepared::new(graph, dims);
        let (g, folded) = fp32.at_with_report(1)?;
        let placement = place(&g, config);
        let mut sim = QuantSim {
            gpu,
            model: fp32.clone(),
            reference: fp32.clone(),
            fp32,
            bn: bn_stats(&folded),
            config: config.clone(),
            opts,
            placement,
            params: Vec::new(),
            activations: Vec::new(),
            tables: HashMap::new(),
            plans: Mutex::new(HashMap::new()),
            integer: Mutex::new(None),
            input,
            scheme: Scheme::MinMax,
        };
        sim.requantize()?;
        Ok(sim)
    }

    /// The options it was made with.
    pub fn options(&self) -> QuantOptions {
        self.opts
    }

    /// Parameter encodings from the current FP32 weights (exact ranges or tf-enhanced, as the
    /// options say), and the simulated model's weights from them.
    fn requantize(&mut self) -> Result<()> {
        let g = self.fp32.at(1)?;
        let params = param_encodings(&g, &self.placement, ParamScheme { bitwidth: self.opts.param_bw, strict: self.config.strict_symmetric, unsigned: self.config.unsigned_symmetric, range: self.opts.param_range })?;
        self.set_param_encodings(params)
    }

    /// Replaces the parameter encodings (seq-MSE's search picks its own ranges) and
    /// re-quantizes the simulated model's weights with them.
    pub fn set_param_encodings(&mut self, params: Vec<(String, Encoding)>) -> Result<()> {
        let g = self.fp32.at(1)?;
        let mut model = self.fp32.clone();
        model.override_consts(quantize_weights(&g, &params)?);
        self.model = model;
        self.params = params;
        self.forget_plans();
        Ok(())
    }

    /// Cross-layer equalization of the FP32 model (and high-bias absorption), then the weights
    /// are quantized again. Call before calibrating: it changes the activations' ranges.
    pub fn equalize(&mut self, opts: CleOptions) -> Result<CleReport> {
        let mut g = self.fp32.at(1)?;
        let before = g.clone();
        let report = cle::equalize(&mut g, &mut self.bn, opts)?;
        let consts = g.consts.iter().filter(|(k, v)| before.consts.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let old: HashMap<&str, &crate::graph::ir::Node> = before.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut replaced = std::collections::BTreeMap::new();
        let mut inserted = Vec::new();
        for (i, n) in g.nodes.iter().enumerate() {
            match old.get(n.name.as_str()) {
                Some(o) if *o != n => {
                    replaced.insert(n.name.clone(), n.clone());
                }
                Some(_) => {}
                None if i > 0 => inserted.push((g.nodes[i - 1].name.clone(), n.clone())),
                None => return Err(Error::Graph { model: g.name.clone(), message: format!("CLE inserted '{}' before every node", n.name) }),
            }
        }
        self.fp32.override_consts(consts);
        self.fp32.edit_nodes(replaced, inserted);
        self.placement = place(&self.fp32.at(1)?, &self.config);
        self.activations.clear();
        self.requantize()?;
        Ok(report)
    }

    /// Replaces FP32 constants (corrected biases) in both the exported and the simulated model.
    pub(crate) fn override_fp32_consts(&mut self, consts: std::collections::BTreeMap<String, crate::graph::ir::Const>) {
        self.fp32.override_consts(consts.clone());
        self.model.override_consts(consts);
        self.forget_plans();
    }

    /// The folded batch-norm statistics per conv (after CLE's scaling and absorption).
    pub fn bn_stats(&self) -> &BnStats {
        &self.bn
    }

    /// The simulated model's graph (quantized weights) for one batch size.
    pub fn simulated_graph(&self, batch: usize) -> Result<Graph> {
        self.model.at(batch)
    }

    /// The reference FP32 graph (BN-folded original) for one batch size.
    pub fn reference_graph(&self, batch: usize) -> Result<Graph> {
        self.reference.at(batch)
    }

    /// The GPU context.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The model's input name.
    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// Activation quantizer tables for [`Plan::compile_quantized`].
    pub fn activation_tables(&self) -> &HashMap<String, (GpuTensor, u32)> {
        &self.tables
    }

    /// The prepared FP32 graph (BN folded) for one batch size.
    pub fn prepared(&self, batch: usize) -> Result<Graph> {
        self.fp32.at(batch)
    }

    /// Per-output-channel (min, max) of the weights feeding the layer that produces `activation`
    /// (following Relu/Clip back to their Conv/Gemm), with the weight's name.
    pub fn weight_ranges_for(&self, activation: &str) -> Result<Option<(String, Vec<(f32, f32)>)>> {
        let g = self.fp32.at(1)?;
        let mut value = activation.to_string();
        for _ in 0..3 {
            let Some(i) = g.producer_of(&value) else { return Ok(None) };
            let n = &g.nodes[i];
            if let Some(q) = self.placement.params.iter().find(|q| n.inputs.get(1) == Some(&q.tensor)) {
                let w = g.weight(&q.tensor).expect("placed weights are constants");
                let axis = q.axis.unwrap_or(0);
                return Ok(Some((q.tensor.clone(), channel_ranges(w, Some(axis)))));
            }
            value = n.inputs[0].clone();
        }
        Ok(None)
    }

    /// The quantizers.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Parameter encodings (name, encoding).
    pub fn param_encodings(&self) -> &[(String, Encoding)] {
        &self.params
    }

    /// Activation encodings (empty until calibrated).
    pub fn activation_encodings(&self) -> &[(String, Encoding)] {
        &self.activations
    }

    /// Calibration over `batches` (each `[batch, ...]`) with the given scheme, the weights
    /// quantized as AIMET calibrates. Statistics stay on the GPU; memory is flat in the count.
    pub fn calibrate<'a>(&mut self, scheme: Scheme, batches: impl IntoIterator<Item = ArrayViewD<'a, f32>>) -> Result<()> {
        let mut cal = Calibrator::new(self.gpu.clone(), self.model.clone(), &self.placement, scheme)?;
        for b in batches {
            cal.add(&self.input, b)?;
        }
        if cal.samples == 0 {
            return Err(Error::EmptyTensor { op: "calibrate", tensor: "calibration data".into() });
        }
        let kinds: Vec<QuantKind> = self.placement.activations.iter().map(|q| kind_for(q.symmetric, self.config.strict_symmetric, self.config.unsigned_symmetric)).collect();
        let observed = cal.observed(self.opts.act_bw, &kinds)?;
        for ((q, &(olo, ohi)), &bad) in self.placement.activations.iter().zip(&cal.ranges).zip(&cal.non_finite) {
            if olo > ohi {
                return Err(Error::NonFinite { op: "calibrate", tensor: q.tensor.clone(), count: bad.max(cal.samples as u64) });
            }
        }
        for (name, bad) in cal.names().iter().zip(&cal.non_finite).filter(|(_, &b)| b > 0) {
            log::warn!("calibration: {bad} non-finite values in '{name}' were left out of its range");
        }
        self.set_activations(&observed)?;
        self.scheme = scheme;
        Ok(())
    }

    /// Activation encodings from batch-norm statistics alone (data-free: mean ± 3 std per
    /// channel where a batch norm measured it, 6 past a linear layer without one; clipped to
    /// the activation's bounds; the model input taken as N(0, 1)).
    pub fn calibrate_data_free(&mut self) -> Result<()> {
        let stats = crate::quant::dfq::channel_stats(&self.fp32.at(1)?, &self.bn);
        let mut ranges = Vec::with_capacity(self.placement.activations.len());
        let mut unknown = Vec::new();
        for q in &self.placement.activations {
            match stats.get(&q.tensor) {
                Some(s) => ranges.push(s.range()),
                None => unknown.push(q.tensor.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::invalid("calibrate_data_free", "activations", unknown.join(", "), "their statistics do not follow from batch norms: calibrate on data"));
        }
        let observed: Vec<Observed> = ranges.into_iter().map(|(lo, hi)| Observed::Range(lo, hi)).collect();
        self.set_activations(&observed)
    }

    /// Sets every activation quantizer's encoding from what calibration observed, in placement
    /// order. A config's encoding constraints replace the observed bounds they name.
    fn set_activations(&mut self, observed: &[Observed]) -> Result<()> {
        let mut acts = Vec::with_capacity(observed.len());
        for (q, &o) in self.placement.activations.iter().zip(observed) {
            let kind = kind_for(q.symmetric, self.config.strict_symmetric, self.config.unsigned_symmetric);
            let from_range = |(lo, hi): (f32, f32)| {
                let (lo, hi) = match q.constraints {
                    Some((cmin, cmax)) => (cmin.unwrap_or(lo), cmax.unwrap_or(hi)),
                    None => (lo, hi),
                };
                Encoding::from_ranges(&[lo], &[hi], self.opts.act_bw, kind, None)
            };
            let e = match o {
                Observed::Range(lo, hi) => from_range((lo, hi))?,
                Observed::Grid { scale, offset } => {
                    let e = Encoding { bitwidth: self.opts.act_bw, kind, axis: None, scale: vec![scale], offset: vec![offset] };
                    e.validate("calibrate")?;
                    if q.constraints.is_some() {
                        from_range(e.grid_range(0))?
                    } else {
                        e
                    }
                }
            };
            acts.push((q.tensor.clone(), e));
        }
        self.activations = acts;
        for (name, e) in &self.activations {
            match self.tables.get(name) {
                Some((t, _)) => write_table(&self.gpu, t, e)?,
                None => {
                    self.tables.insert(name.clone(), (upload_table(&self.gpu, e)?, e.steps()));
                }
            }
        }
        self.forget_plans();
        Ok(())
    }

    /// The plan for one batch size (cached): simulated (`quantized`) or the prepared FP32 model.
    fn plan(&self, batch: usize, quantized: bool) -> Result<Arc<Plan>> {
        if quantized && self.activations.is_empty() {
            return Err(Error::invalid("simulate", "encodings", "none", "calibrate first"));
        }
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.get(&(batch, quantized)) {
            return Ok(p.clone());
        }
        let p = Arc::new(if quantized {
            self.compile_sim(batch, &[])?
        } else {
            Plan::compile(self.gpu.clone(), &self.reference.at(batch)?, &[])?
        });
        plans.insert((batch, quantized), p.clone());
        Ok(p)
    }

    /// Drops the compiled plans (and the integer simulation's fused nodes) after the model or
    /// its encodings changed.
    fn forget_plans(&self) {
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.integer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The fused nodes of the integer simulation (`None` for the float one).
    pub fn integer_plan(&self) -> Result<Option<Arc<IntegerPlan>>> {
        if self.opts.arithmetic == Arithmetic::Float {
            return Ok(None);
        }
        let mut cached = self.integer.lock().unwrap_or_else(|p| p.into_inner());
        if cached.is_none() {
            *cached = Some(Arc::new(IntegerPlan::new(&self.fp32.at(1)?, &self.activations, &self.params)?));
        }
        Ok(cached.clone())
    }

    /// The simulated model compiled for one batch size, with `taps` readable.
    fn compile_sim(&self, batch: usize, taps: &[String]) -> Result<Plan> {
        let integer = self.integer_plan()?;
        Plan::compile_integer(self.gpu.clone(), &self.model.at(batch)?, taps, &self.tables, integer.as_deref())
    }

    fn run_pieces(&self, x: &ArrayD<f32>, piece: usize, quantized: bool) -> Result<Vec<ArrayD<f32>>> {
        let mut out: Vec<Vec<ArrayD<f32>>> = Vec::new();
        for chunk in x.axis_chunks_iter(Axis(0), piece.max(1)) {
            let plan = self.plan(chunk.len_of(Axis(0)), quantized)?;
            out.push(plan.run(&[(&self.input, chunk)], plan.outputs())?);
        }
        join_batches(out)
    }

    /// The simulated (fake-quantized) outputs for `x` (`[batch, ...]`), in pieces of `piece`.
    pub fn simulate(&self, x: &ArrayD<f32>, piece: usize) -> Result<Vec<ArrayD<f32>>> {
        self.run_pieces(x, piece, true)
    }

    /// The FP32 outputs of the reference (the BN-folded original model).
    pub fn fp32(&self, x: &ArrayD<f32>, piece: usize) -> Result<Vec<ArrayD<f32>>> {
        self.run_pieces(x, piece, false)
    }

    /// SQNR of the prepared FP32 model's first output (equalized, bias-corrected) against the
    /// reference on `x`: what the techniques changed in the FP32 function itself.
    pub fn fp32_change_db(&self, x: &ArrayD<f32>, piece: usize) -> Result<f64> {
        let mut out = Vec::new();
        for chunk in x.axis_chunks_iter(Axis(0), piece.max(1)) {
            let plan = Plan::compile(self.gpu.clone(), &self.fp32.at(chunk.len_of(Axis(0)))?, &[])?;
            out.push(plan.run(&[(&self.input, chunk)], plan.outputs())?);
        }
        Ok(eval::sqnr_db(&self.fp32(x, piece)?.remove(0), &join_batches(out)?.remove(0)))
    }

    /// SQNR and top-1/top-5 agreement of the first output, simulated vs FP32, and accuracy of
    /// both when `labels` are given.
    pub fn evaluate(&self, x: &ArrayD<f32>, piece: usize, labels: Option<&[usize]>) -> Result<Evaluation> {
        let (f, q) = (self.fp32(x, piece)?.remove(0), self.simulate(x, piece)?.remove(0));
        if let Some(l) = labels {
            if l.len() != x.len_of(Axis(0)) {
                return Err(Error::invalid("evaluate", "labels", l.len(), format!("{} samples to label", x.len_of(Axis(0)))));
            }
        }
        Ok(Evaluation {
            sqnr_db: eval::sqnr_db(&f, &q),
            top1_agreement: eval::top1_agreement(&f, &q),
            top5_agreement: eval::top5_agreement(&f, &q),
            samples: x.len_of(Axis(0)),
            accuracy: labels.map(|l| (eval::accuracy(&f, l), eval::accuracy(&q, l))),
        })
    }

    /// Encodings of tensors without a quantizer of their own, as AIMET's 2.0.0 export lists
    /// them: outputs inside a supergroup take the group output's encoding, outputs of ops that
    /// only move data take their input's.
    fn aliases(&self, g: &Graph) -> Vec<(String, Encoding)> {
        let mut known: HashMap<String, Encoding> = self.activations.iter().cloned().collect();
        let mut out = Vec::new();
        // Data-moving ops forward their input's encoding (in graph order).
        for n in &g.nodes {
            if n.op.is_view() || matches!(n.op, crate::graph::ir::Op::Transpose { .. }) {
                if let (Some(e), Some(o)) = (known.get(&n.inputs[0]).cloned(), n.outputs.first()) {
                    if !known.contains_key(o) {
                        known.insert(o.clone(), e.clone());
                        out.push((o.clone(), e));
                    }
                }
            }
        }
        // Supergroup insides take the encoding of their single consumer's output (last first).
        for n in g.nodes.iter().rev() {
            let Some(o) = n.outputs.first() else { continue };
            if known.contains_key(o) {
                continue;
            }
            if let [c] = g.consumers_of(o)[..] {
                if let Some(e) = g.nodes[c].outputs.first().and_then(|co| known.get(co)).cloned() {
                    known.insert(o.clone(), e.clone());
                    out.push((o.clone(), e));
                }
            }
        }
        out
    }

    /// Writes `<stem>.onnx` (the prepared FP32 model) and `<stem>.encodings` in the chosen
    /// AIMET format into `dir`.
    pub fn export(&self, dir: &Path, stem: &str, version: EncodingsVersion) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { action: "creating", path: dir.display().to_string(), message: e.to_string() })?;
        let g = self.fp32.at(1)?;
        crate::graph::export::save(&g, &dir.join(format!("{stem}.onnx")), None)?;
        let args = serde_json::json!({
            "activation_bitwidth": self.opts.act_bw,
            "dtype": "int",
            "is_symmetric": self.config.params_symmetric,
            "param_bitwidth": self.opts.param_bw,
            "per_channel_quantization": self.placement.params.iter().any(|q| q.axis.is_some()),
            "quant_scheme": match self.scheme {
                Scheme::MinMax => "min_max".to_string(),
                Scheme::TfEnhanced { .. } => "tf_enhanced".to_string(),
                Scheme::Percentile(p) => format!("percentile_{p}"),
            },
        });
        let json = match version {
            EncodingsVersion::V1_0_0 => export::encodings_1_0_0(&self.activations, &self.params, args),
            EncodingsVersion::V0_6_1 => export::encodings_0_6_1(&self.activations, &self.params, args),
            EncodingsVersion::V2_0_0 => {
                let aliases = self.aliases(&g);
                let mut entries: Vec<serde_json::Value> = self.activations.iter().chain(&self.params).chain(&aliases).map(|(n, e)| export::entry_2_0_0(n, e)).collect();
                let acts: HashMap<&str, &Encoding> = self.activations.iter().chain(&aliases).map(|(n, e)| (n.as_str(), e)).collect();
                let params: HashMap<&str, &Encoding> = self.params.iter().map(|(n, e)| (n.as_str(), e)).collect();
                for n in &g.nodes {
                    let (Some(w), Some(b), Some(x)) = (n.inputs.get(1), n.inputs.get(2).filter(|b| !b.is_empty()), n.inputs.first()) else { continue };
                    if let (Some(we), Some(xe)) = (params.get(w.as_str()), acts.get(x.as_str())) {
                        let scales: Vec<f32> = we.scale.iter().map(|&s| s * xe.scale[0]).collect();
                        entries.push(export::bias_entry_2_0_0(b, &scales));
                    }
                }
                export::encodings_2_0_0(entries)
            }
        };
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
        crate::graph::export::write_atomic(&dir.join(format!("{stem}.encodings")), text.as_bytes())
    }
}

impl QuantSim {
    /// SQNR of every quantized activation against its value in the prepared FP32 model
    /// (equalized when CLE ran: its channels are scaled like the simulation's) on `x` (name, dB), in
    /// placement order: signal and noise power summed over all batches.
    pub fn per_layer_sqnr(&self, x: &ArrayD<f32>, piece: usize) -> Result<Vec<(String, f64)>> {
        let names: Vec<String> = self.activations.iter().map(|(n, _)| n.clone()).collect();
        let mut power = vec![(0f64, 0f64); names.len()];
        for chunk in x.axis_chunks_iter(Axis(0), piece.max(1)) {
            let b = chunk.len_of(Axis(0));
            // Every quantized value is a tap, the input too: its quantized copy is an ordinary
            // activation buffer that would otherwise be reused after its last reader.
            let fp = Plan::compile(self.gpu.clone(), &self.fp32.at(b)?, &names)?;
            let q = self.compile_sim(b, &names)?;
            let a = fp.run(&[(&self.input, chunk.view())], &names)?;
            let c = q.run(&[(&self.input, chunk.view())], &names)?;
            for (i, (f, t)) in a.iter().zip(&c).enumerate() {
                for (&u, &v) in f.iter().zip(t.iter()) {
                    power[i].0 += (u as f64).powi(2);
                    power[i].1 += (u as f64 - v as f64).powi(2);
                }
            }
        }
        Ok(names.into_iter().zip(power).map(|(n, (s, e))| (n, if e == 0.0 { f64::INFINITY } else { 10.0 * (s / e).log10() })).collect())
    }

    /// Writes `<stem>_qdq.onnx`: the prepared model with QuantizeLinear/DequantizeLinear on
    /// every quantized activation and int8 weights (8-bit grids); with integer arithmetic, the
    /// fused layers' biases as int32 behind DequantizeLinear (scale `s_x * s_w`), as the
    /// simulation used them.
    pub fn export_qdq(&self, dir: &Path, stem: &str) -> Result<()> {
        if self.activations.is_empty() {
            return Err(Error::invalid("export_qdq", "encodings", "none", "calibrate first"));
        }
        let g = self.fp32.at(1)?;
        let mut codes: HashMap<String, ArrayD<i32>> = HashMap::new();
        for (name, e) in &self.params {
            let w = g.weight(name).ok_or_else(|| Error::Graph { model: g.name.clone(), message: format!("parameter '{name}' is not a constant") })?;
            codes.insert(name.clone(), crate::quant::params::stored_weight_codes(w, e)?);
        }
        let biases = self.integer_plan()?.map(|p| p.biases.clone()).unwrap_or_default();
        let model = crate::quant::qdq::qdq_model(&g, &self.activations, &self.params, &codes, &biases)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { action: "creating", path: dir.display().to_string(), message: e.to_string() })?;
        crate::graph::export::write_atomic(&dir.join(format!("{stem}_qdq.onnx")), &prost::Message::encode_to_vec(&model))
    }
}
