//! [`QuantSim`]: AIMET's QuantizationSimModel on the GPU — prepare (BN fold), place
//! quantizers from a config, quantize the weights once, calibrate activation ranges, simulate
//! with fake quantization, evaluate against FP32, export encodings. With
//! [`Arithmetic::Integer`] the simulation instead computes what onnxruntime computes when it
//! runs the QDQ export ([`crate::quant::integer`]), bit for bit.
//!
//! A QuantSim holds one prepared model (the BN-folded FP32 model with the techniques' edits)
//! and derives the rest: the reference is that model without edits, the simulated model is it
//! with quantized weights (parameter handles of its runners) and activation quantizers.
//! Techniques read it and change it through [`QuantSim::edit`] and
//! [`QuantSim::set_param_encodings`] only.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::eval::{self, Sqnr};
use crate::exec::{FakeQuant, Lowering, Params, Runner, Samples, Simulation};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::{Const, Graph, Node};
use crate::graph::passes::cle::{self, bn_stats, BnStats, CleOptions, CleReport};
use crate::graph::prepare::{Edits, Prepared};
use crate::quant::analyzers::Scheme;
use crate::quant::calibrate::{Calibrator, Observed};
use crate::quant::config::QuantConfig;
use crate::quant::encoding::Encoding;
use crate::quant::integer::IntegerPlan;
use crate::quant::params::{
    channel_ranges, param_encodings, quantize_weights, ParamRange, ParamScheme,
};
use crate::quant::placement::{place, Placement};

mod activations;
mod partial;
pub use partial::Enabled;

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
        QuantOptions {
            param_bw: 8,
            act_bw: 8,
            param_range: ParamRange::MinMax,
            arithmetic: Arithmetic::Float,
        }
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

/// Which model of a simulation a runner runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// The BN-folded original: what evaluations compare against.
    Reference,
    /// The prepared FP32 model (BN folded, with the techniques' edits): what is exported.
    Fp32,
    /// The prepared model with quantized weights, activations in FP32 (as AIMET calibrates).
    Weights,
    /// The simulated model: quantized weights and activation quantizers.
    Simulated,
}

/// The quantizers (and, with integer arithmetic, the fused nodes) of a simulated plan.
struct SimLowering {
    tables: HashMap<String, (GpuTensor, u32)>,
    integer: Option<Arc<IntegerPlan>>,
}

impl Simulation for SimLowering {
    fn quantizer(&self, value: &str) -> Option<FakeQuant> {
        if self
            .integer
            .as_ref()
            .is_some_and(|p| p.quantized.contains(value))
        {
            return None;
        }
        self.tables.get(value).map(|(t, steps)| FakeQuant {
            table: t.clone(),
            steps: *steps,
            exact: self.integer.is_some(),
        })
    }

    fn owns(&self, node: &Node) -> bool {
        self.integer
            .as_ref()
            .is_some_and(|p| p.absorbed.contains(&node.name) || p.ops.contains_key(&node.name))
    }

    fn lower(&self, cx: &mut Lowering<'_>, node: &Node) -> Result<()> {
        let p = self.integer.as_ref().filter(|_| self.owns(node));
        match p.map(|p| (p.absorbed.contains(&node.name), p.ops.get(&node.name))) {
            Some((true, _)) => cx.alias(&node.outputs[0], &node.inputs[0]),
            Some((false, Some(op))) => crate::quant::integer::lower(cx, node, op),
            _ => Err(cx.err(node, "not a node of the integer simulation")),
        }
    }
}

/// What is derived from the model and encodings, made on first use and dropped when they
/// change.
#[derive(Default)]
struct Derived {
    /// Parameter stores: FP32 (reference and prepared models each) and quantized weights.
    reference_params: Option<Arc<Params>>,
    fp32_params: Option<Arc<Params>>,
    quantized_params: Option<Arc<Params>>,
    /// The integer simulation's fused nodes.
    integer: Option<Arc<IntegerPlan>>,
    /// Runners used by `simulate` / `evaluate`, by (model, batch).
    runners: HashMap<(Model, usize), Arc<Runner>>,
}

/// A quantization simulation of one model.
pub struct QuantSim {
    gpu: Arc<Gpu>,
    /// The prepared FP32 model.
    model: Prepared,
    /// The model without edits (the reference).
    reference: Arc<Prepared>,
    /// Folded batch-norm statistics per conv, kept in step with the model (CLE scales them).
    bn: BnStats,
    config: QuantConfig,
    opts: QuantOptions,
    placement: Placement,
    params: Vec<(String, Encoding)>,
    activations: Vec<(String, Encoding)>,
    /// What each activation encoding came from (placement order).
    observed: Vec<Observed>,
    /// The last calibration, where its result depends on the bitwidth (tf-enhanced).
    calibration: Option<Calibrator>,
    /// The simulated model's weights, quantize-dequantized from the model with `params`.
    weights: BTreeMap<String, Const>,
    /// Activation encoding tables on the GPU, rewritten in place when recalibrated.
    tables: HashMap<String, (GpuTensor, u32)>,
    derived: Mutex<Derived>,
    /// The model's inputs, in order.
    inputs: Vec<String>,
    /// Samples the last calibration observed (0 before one, and data-free).
    calibrated_on: usize,
    scheme: Scheme,
}

impl QuantSim {
    /// Prepares `graph` (resolved per batch with `dims`, BN folded), places quantizers per
    /// `config`, and quantizes the weights.
    pub fn new(
        gpu: Arc<Gpu>,
        graph: Graph,
        config: &QuantConfig,
        opts: QuantOptions,
        dims: HashMap<String, usize>,
    ) -> Result<QuantSim> {
        if graph.inputs.is_empty() {
            return Err(Error::Graph {
                model: graph.name.clone(),
                message: "quantization needs a model with an input to calibrate on; this one \
                          has none"
                    .into(),
            });
        }
        if opts.arithmetic == Arithmetic::Integer && (opts.param_bw != 8 || opts.act_bw != 8) {
            return Err(Error::invalid("QuantSim", "bitwidths", format!("W{}A{}", opts.param_bw, opts.act_bw), "the integer simulation runs 8-bit grids (uint8/int8), as onnxruntime's integer kernels do"));
        }
        graph.check_finite_weights()?;
        let inputs = graph.inputs.clone();
        let (model, folded) = Prepared::bn_folded(graph, dims)?;
        let placement = place(&*model.at(1)?, config);
        let mut sim = QuantSim {
            gpu,
            reference: Arc::new(model.clone()),
            model,
            bn: bn_stats(&folded),
            config: config.clone(),
            opts,
            placement,
            params: Vec::new(),
            activations: Vec::new(),
            observed: Vec::new(),
            calibration: None,
            weights: BTreeMap::new(),
            tables: HashMap::new(),
            derived: Mutex::new(Derived::default()),
            inputs,
            calibrated_on: 0,
            scheme: Scheme::MinMax,
        };
        sim.requantize()?;
        Ok(sim)
    }

    /// The options it was made with.
    pub fn options(&self) -> QuantOptions {
        self.opts
    }

    fn derived(&self) -> std::sync::MutexGuard<'_, Derived> {
        self.derived.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parameter encodings from the current FP32 weights (exact ranges or tf-enhanced, as the
    /// options say), and the simulated model's weights from them.
    fn requantize(&mut self) -> Result<()> {
        let params = self.param_encodings_at(self.opts.param_bw)?;
        self.set_param_encodings(params)
    }

    /// Every parameter quantizer's encoding at `bitwidth` from the current FP32 weights, with
    /// the simulation's range scheme (nothing is installed).
    pub fn param_encodings_at(&self, bitwidth: u32) -> Result<Vec<(String, Encoding)>> {
        param_encodings(
            &*self.model.at(1)?,
            &self.placement,
            ParamScheme {
                bitwidth,
                strict: self.config.params_strict_symmetric(),
                unsigned: self.config.unsigned_symmetric,
                range: self.opts.param_range,
            },
        )
    }

    /// Replaces the parameter encodings (seq-MSE's search picks its own ranges) and
    /// re-quantizes the simulated model's weights with them. Compiled float simulations keep
    /// their plans: the new weights are written into their parameter handles.
    pub fn set_param_encodings(&mut self, params: Vec<(String, Encoding)>) -> Result<()> {
        let weights = quantize_weights(&*self.model.at(1)?, &params)?;
        self.params = params;
        let mut d = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if self.opts.arithmetic == Arithmetic::Integer {
            // The fused nodes carry weight codes: rebuild them and their plans.
            let (reference_params, fp32_params) = (d.reference_params.take(), d.fp32_params.take());
            *d = Derived {
                reference_params,
                fp32_params,
                ..Default::default()
            };
        } else if let Some(store) = &d.quantized_params {
            for (name, w) in &weights {
                if self.weights.get(name) != Some(w) {
                    store.set(name, &w.to_f32().view())?;
                }
            }
        }
        drop(d);
        self.weights = weights;
        Ok(())
    }

    /// Applies a technique's edits to the FP32 model (corrected biases, equalized weights,
    /// replaced or inserted nodes); the weights are quantized again with the same encodings.
    pub fn edit(&mut self, edits: Edits) -> Result<()> {
        self.model.edit(edits);
        self.forget_model();
        let params = std::mem::take(&mut self.params);
        self.set_param_encodings(params)
    }

    /// Drops everything derived from the FP32 model (the reference's parameters stay).
    fn forget_model(&self) {
        let mut d = self.derived();
        let reference_params = d.reference_params.take();
        *d = Derived {
            reference_params,
            ..Default::default()
        };
    }

    /// Cross-layer equalization of the FP32 model (and high-bias absorption), then the
    /// quantizers are placed and the weights quantized again. Call before calibrating: it
    /// changes the activations' ranges (and drops any calibration).
    pub fn equalize(&mut self, opts: CleOptions) -> Result<CleReport> {
        let before = self.model.at(1)?;
        let mut g = before.as_ref().clone();
        let report = cle::equalize(&mut g, &mut self.bn, opts)?;
        self.model.edit(Edits::between(&before, &g)?);
        self.forget_model();
        self.placement = place(&*self.model.at(1)?, &self.config);
        self.activations.clear();
        self.tables.clear();
        self.requantize()?;
        Ok(report)
    }

    /// The folded batch-norm statistics per conv (after CLE's scaling and absorption).
    pub fn bn_stats(&self) -> &BnStats {
        &self.bn
    }

    /// The GPU context.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The samples the last calibration on data observed (0 before one, or data-free).
    pub fn calibrated_on(&self) -> usize {
        self.calibrated_on
    }

    /// The model's input names, in order (what [`Samples`] feed).
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The prepared FP32 model.
    pub fn model(&self) -> &Prepared {
        &self.model
    }

    /// The prepared FP32 graph (BN folded, with the techniques' edits) for one batch size.
    pub fn prepared(&self, batch: usize) -> Result<Arc<Graph>> {
        self.model.at(batch)
    }

    /// The reference FP32 graph (BN-folded original) for one batch size.
    pub fn reference_graph(&self, batch: usize) -> Result<Arc<Graph>> {
        self.reference.at(batch)
    }

    /// The simulated model's quantize-dequantized weights, by name.
    pub fn quantized_weights(&self) -> &BTreeMap<String, Const> {
        &self.weights
    }

    /// A runner of one of the simulation's models; callers may truncate it, tap it and set
    /// its batch. Runners of the same model share parameter handles.
    pub fn runner(&self, which: Model) -> Result<Runner> {
        if which == Model::Simulated && self.activations.is_empty() {
            return Err(Error::invalid(
                "simulate",
                "encodings",
                "none",
                "calibrate first",
            ));
        }
        let mut d = self.derived();
        let store = |slot: &mut Option<Arc<Params>>| {
            slot.get_or_insert_with(|| Arc::new(Params::new(self.gpu.clone())))
                .clone()
        };
        let r = match which {
            Model::Reference => Runner::new(self.gpu.clone(), self.reference.clone())
                .with_params(store(&mut d.reference_params)),
            Model::Fp32 => Runner::new(self.gpu.clone(), self.model.clone())
                .with_params(store(&mut d.fp32_params)),
            Model::Weights | Model::Simulated => {
                let fresh = d.quantized_params.is_none();
                let params = store(&mut d.quantized_params);
                if fresh {
                    for (name, w) in &self.weights {
                        params.set(name, &w.to_f32().view())?;
                    }
                }
                Runner::new(self.gpu.clone(), self.model.clone()).with_params(params)
            }
        };
        if which != Model::Simulated {
            return Ok(r);
        }
        if self.opts.arithmetic == Arithmetic::Integer && d.integer.is_none() {
            d.integer = Some(Arc::new(IntegerPlan::new(
                &*self.model.at(1)?,
                &self.activations,
                &self.params,
            )?));
        }
        Ok(r.simulation(Arc::new(SimLowering {
            tables: self.tables.clone(),
            integer: d.integer.clone(),
        })))
    }

    /// The fused nodes of the integer simulation (`None` for the float one).
    pub fn integer_plan(&self) -> Result<Option<Arc<IntegerPlan>>> {
        if self.opts.arithmetic == Arithmetic::Float {
            return Ok(None);
        }
        let mut d = self.derived();
        if d.integer.is_none() {
            d.integer = Some(Arc::new(IntegerPlan::new(
                &*self.model.at(1)?,
                &self.activations,
                &self.params,
            )?));
        }
        Ok(d.integer.clone())
    }

    /// The cached runner of `which` at batch `piece`.
    fn cached(&self, which: Model, piece: usize) -> Result<Arc<Runner>> {
        if let Some(r) = self.derived().runners.get(&(which, piece)) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.runner(which)?.batch(piece));
        self.derived().runners.insert((which, piece), r.clone());
        Ok(r)
    }

    fn run(&self, which: Model, x: &Samples, piece: usize) -> Result<Vec<ArrayD<f32>>> {
        self.cached(which, piece.max(1))?
            .run(&x.feed(&self.inputs)?)
    }

    /// The simulated (fake-quantized) outputs for samples `x` (an array `[batch, ...]` for a
    /// model with one input), in pieces of `piece`.
    pub fn simulate<'a>(
        &self,
        x: impl Into<Samples<'a>>,
        piece: usize,
    ) -> Result<Vec<ArrayD<f32>>> {
        self.run(Model::Simulated, &x.into(), piece)
    }

    /// The FP32 outputs of the reference (the BN-folded original model).
    pub fn fp32<'a>(&self, x: impl Into<Samples<'a>>, piece: usize) -> Result<Vec<ArrayD<f32>>> {
        self.run(Model::Reference, &x.into(), piece)
    }

    /// SQNR of the prepared FP32 model's first output (equalized, bias-corrected) against the
    /// reference on `x`: what the techniques changed in the FP32 function itself.
    pub fn fp32_change_db<'a>(&self, x: impl Into<Samples<'a>>, piece: usize) -> Result<f64> {
        let x = x.into();
        Ok(eval::sqnr_db(
            &self.run(Model::Reference, &x, piece)?.remove(0),
            &self.run(Model::Fp32, &x, piece)?.remove(0),
        ))
    }

    /// SQNR and top-1/top-5 agreement of the first output, simulated vs FP32, and accuracy of
    /// both when `labels` are given.
    pub fn evaluate<'a>(
        &self,
        x: impl Into<Samples<'a>>,
        piece: usize,
        labels: Option<&[usize]>,
    ) -> Result<Evaluation> {
        let x = x.into();
        if let Some(l) = labels {
            if l.len() != x.len() {
                return Err(Error::invalid(
                    "evaluate",
                    "labels",
                    l.len(),
                    format!("{} samples to label", x.len()),
                ));
            }
        }
        let (f, q) = (
            self.run(Model::Reference, &x, piece)?.remove(0),
            self.run(Model::Simulated, &x, piece)?.remove(0),
        );
        Ok(Evaluation {
            sqnr_db: eval::sqnr_db(&f, &q),
            top1_agreement: eval::top1_agreement(&f, &q),
            top5_agreement: eval::top5_agreement(&f, &q),
            samples: x.len(),
            accuracy: labels.map(|l| (eval::accuracy(&f, l), eval::accuracy(&q, l))),
        })
    }

    /// SQNR of every quantized activation against its value in the prepared FP32 model
    /// (equalized when CLE ran: its channels are scaled like the simulation's) on `x` (name,
    /// dB), in placement order: signal and noise power summed over all batches.
    pub fn per_layer_sqnr<'a>(
        &self,
        x: impl Into<Samples<'a>>,
        piece: usize,
    ) -> Result<Vec<(String, f64)>> {
        Ok(self
            .per_layer_error(x, piece)?
            .into_iter()
            .map(|(n, p)| (n, p.db()))
            .collect())
    }

    /// Signal and noise power of every quantized activation against its value in the
    /// prepared FP32 model on `x`, in placement order (see [`QuantSim::per_layer_sqnr`]).
    pub fn per_layer_error<'a>(
        &self,
        x: impl Into<Samples<'a>>,
        piece: usize,
    ) -> Result<Vec<(String, Sqnr)>> {
        let x = x.into();
        let names: Vec<String> = self.activations.iter().map(|(n, _)| n.clone()).collect();
        // Every quantized value is a tap, the input too: its quantized copy is an ordinary
        // activation buffer that would otherwise be reused after its last reader.
        let fp = self.runner(Model::Fp32)?.taps(&names).batch(piece);
        let q = self.runner(Model::Simulated)?.taps(&names).batch(piece);
        let mut power = vec![Sqnr::default(); names.len()];
        for chunk in x.chunks(piece) {
            let feed = chunk.feed(&self.inputs)?;
            let a = fp.run_names(&feed, &names)?;
            let c = q.run_names(&feed, &names)?;
            for (p, (f, t)) in power.iter_mut().zip(a.iter().zip(&c)) {
                p.add(f, t);
            }
        }
        Ok(names.into_iter().zip(power).collect())
    }

    /// Per-output-channel (min, max) of the weights feeding the layer that produces `activation`
    /// (following Relu/Clip back to their Conv/Gemm), with the weight's name.
    pub fn weight_ranges_for(
        &self,
        activation: &str,
    ) -> Result<Option<crate::quant::params::WeightRanges>> {
        let g = self.model.at(1)?;
        let mut value = activation.to_string();
        for _ in 0..3 {
            let Some(i) = g.producer_of(&value) else {
                return Ok(None);
            };
            let n = &g.nodes[i];
            if let Some(q) = self
                .placement
                .params
                .iter()
                .find(|q| n.inputs.get(1) == Some(&q.tensor))
            {
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

    /// The quantsim config.
    pub fn config(&self) -> &QuantConfig {
        &self.config
    }

    /// The calibration scheme last used.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Parameter encodings (name, encoding).
    pub fn param_encodings(&self) -> &[(String, Encoding)] {
        &self.params
    }

    /// Activation encodings (empty until calibrated).
    pub fn activation_encodings(&self) -> &[(String, Encoding)] {
        &self.activations
    }
}
