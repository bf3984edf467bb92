//! QuantAnalyzer, as AIMET's: where a calibrated simulation loses its accuracy. Scores of the
//! weight-only, activation-only and fully quantized models; per layer, the score with only
//! that layer's quantizers enabled and with all but them; histograms of what each quantizer
//! saw with its encoding's range; each activation's error against FP32.
//!
//! A layer is a node with quantizers, as aimet-onnx groups them: its output activations, its
//! parameters, and the model inputs it is the first to read. Scores compare the first output
//! with the reference FP32 model's on evaluation data.
//!
//! The per-layer runs share their prefixes: layers are visited in graph order, and the values
//! crossing the cut before each layer are advanced once per batch in the FP32 model (the
//! prefix of "only this layer") and in the fully quantized one (the prefix of "all but this
//! layer"); each layer then runs only the nodes from itself to the end, twice.

use std::time::Instant;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::eval::{self, Sqnr};
use crate::exec::Samples;
use crate::quant::prefix::Prefix;
use crate::quant::sim::{Enabled, Model, QuantSim};

/// How a (partially) quantized model's first output compares with FP32's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub sqnr_db: f64,
    /// Top-1 agreement with FP32 (outputs of rank 2: `[samples, classes]`).
    pub top1_agreement: Option<f64>,
    /// Accuracy when labels were given.
    pub accuracy: Option<f64>,
}

impl Score {
    /// The value of `kind`: SQNR in dB, or accuracy (top-1 agreement without labels).
    pub fn value(&self, kind: crate::eval::ScoreKind) -> f64 {
        match kind {
            crate::eval::ScoreKind::Sqnr => self.sqnr_db,
            crate::eval::ScoreKind::Agreement => self
                .accuracy
                .or(self.top1_agreement)
                .unwrap_or(self.sqnr_db),
        }
    }

    pub(crate) fn of(reference: &ArrayD<f32>, y: &ArrayD<f32>, labels: Option<&[usize]>) -> Score {
        let ranked = y.ndim() == 2;
        Score {
            sqnr_db: eval::sqnr_db(reference, y),
            top1_agreement: ranked.then(|| eval::top1_agreement(reference, y)),
            accuracy: labels.filter(|_| ranked).map(|l| eval::accuracy(y, l)),
        }
    }
}

/// A layer: a node and the quantizers that belong to it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The node's name and ONNX op type.
    pub name: String,
    pub op: String,
    /// Its position in [`QuantSim::prepared`]'s nodes.
    pub position: usize,
    pub quantizers: Enabled,
}

/// A layer's sensitivity.
#[derive(Clone, Debug)]
pub struct Sensitivity {
    pub layer: Layer,
    /// Only this layer's quantizers enabled.
    pub only: Score,
    /// Every quantizer enabled but this layer's.
    pub all_but: Score,
}

/// What one quantizer saw: a histogram of its tensor's values with its encoding's range.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub tensor: String,
    /// Whether it is a parameter (weights: every channel together) or an activation.
    pub param: bool,
    /// The bins' range and counts (equal widths).
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
    /// The encoding's range (the widest channel's bounds for per-channel weights).
    pub encoding: (f32, f32),
}

/// Seconds per phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// FP32 reference and the weight-only, activation-only and fully quantized models.
    pub whole: f64,
    /// The per-layer runs (only this layer, all but this layer).
    pub per_layer: f64,
    /// Each activation's error against FP32.
    pub errors: f64,
    pub histograms: f64,
}

/// What the analysis found.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Evaluation samples every score rests on.
    pub samples: usize,
    /// FP32 accuracy when labels were given.
    pub fp32_accuracy: Option<f64>,
    pub weights_only: Score,
    pub activations_only: Score,
    pub quantized: Score,
    /// Per layer, in graph order.
    pub layers: Vec<Sensitivity>,
    /// Each quantized activation against its FP32 value (placement order).
    pub errors: Vec<(String, Sqnr)>,
    /// Activations (on the histogram samples) then parameters.
    pub histograms: Vec<Histogram>,
    pub histogram_samples: usize,
    pub seconds: Phases,
}

/// Options of [`analyze`].
#[derive(Clone, Copy, Debug)]
pub struct AnalysisOptions {
    /// Samples per GPU batch.
    pub piece: usize,
    /// Bins per histogram.
    pub bins: usize,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions { piece: 8, bins: 64 }
    }
}

/// Fewer evaluation samples than this rank layers by top-1 agreement in steps too coarse to
/// tell them apart (1/n); the SQNR still ranks them.
pub const FEW_SAMPLES: usize = 8;

/// The layers of a simulation in graph order (nodes without quantizers left out).
pub fn layers(sim: &QuantSim) -> Result<Vec<Layer>> {
    let g = sim.prepared(1)?;
    let acts: std::collections::HashSet<&str> = sim
        .activation_encodings()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let params: std::collections::HashSet<&str> = sim
        .param_encodings()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let mut seen_inputs = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (position, n) in g.nodes.iter().enumerate() {
        let mut q = Enabled::default();
        for i in &n.inputs {
            if g.inputs.contains(i) && acts.contains(i.as_str()) && seen_inputs.insert(i.clone()) {
                q.activations.insert(i.clone());
            }
            if params.contains(i.as_str()) {
                q.params.insert(i.clone());
            }
        }
        for o in &n.outputs {
            if acts.contains(o.as_str()) {
                q.activations.insert(o.clone());
            }
        }
        if !q.is_empty() {
            out.push(Layer {
                name: n.name.clone(),
                op: n.op.onnx_type().to_string(),
                position,
                quantizers: q,
            });
        }
    }
    Ok(out)
}

/// Analyzes a calibrated simulation on `x` (`labels` of its samples, optional); histograms
/// of activations on `calib` (what the ranges were fitted on). `progress` hears
/// (phase, done, total).
pub fn analyze<'a, 'c>(
    sim: &QuantSim,
    x: impl Into<Samples<'a>>,
    labels: Option<&[usize]>,
    calib: impl Into<Samples<'c>>,
    opts: AnalysisOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Analysis> {
    let (x, calib) = (x.into(), calib.into());
    let samples = x.len();
    if samples == 0 {
        return Err(Error::EmptyTensor {
            op: "analyze",
            tensor: "evaluation data".into(),
        });
    }
    if sim.activation_encodings().is_empty() {
        return Err(Error::invalid(
            "analyze",
            "encodings",
            "none",
            "calibrate first",
        ));
    }
    if let Some(l) = labels {
        if l.len() != samples {
            return Err(Error::invalid(
                "analyze",
                "labels",
                l.len(),
                format!("{samples} labels, one per evaluation sample"),
            ));
        }
    }
    if opts.bins == 0 {
        return Err(Error::invalid("analyze", "bins", 0, "at least one bin"));
    }
    let piece = opts.piece.max(1);
    let mut seconds = Phases::default();

    let t = Instant::now();
    progress("whole-model scores", 0, 4);
    let reference = sim.fp32(&x, piece)?.remove(0);
    let fp32_accuracy = labels
        .filter(|_| reference.ndim() == 2)
        .map(|l| eval::accuracy(&reference, l));
    let whole = |e: &Enabled| -> Result<Score> {
        let y = sim
            .partial_runner(e, None)?
            .batch(piece)
            .run(&x.feed(sim.inputs())?)?
            .remove(0);
        Ok(Score::of(&reference, &y, labels))
    };
    let weights_only = whole(&Enabled::weights_only(sim))?;
    progress("whole-model scores", 2, 4);
    let activations_only = whole(&Enabled::activations_only(sim))?;
    progress("whole-model scores", 3, 4);
    let quantized = whole(&Enabled::all(sim))?;
    progress("whole-model scores", 4, 4);
    seconds.whole = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let layers = per_layer(sim, &x, &reference, labels, piece, progress)?;
    seconds.per_layer = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress("per-activation error", 0, 1);
    let errors = sim.per_layer_error(x, piece)?;
    seconds.errors = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress("histograms", 0, 1);
    let histograms = histograms(sim, &calib, piece, opts.bins)?;
    seconds.histograms = t.elapsed().as_secs_f64();
    Ok(Analysis {
        samples,
        fp32_accuracy,
        weights_only,
        activations_only,
        quantized,
        layers,
        errors,
        histograms,
        histogram_samples: calib.len(),
        seconds,
    })
}

/// Only-this-layer and all-but-this-layer scores of every layer, prefixes shared.
fn per_layer(
    sim: &QuantSim,
    x: &Samples,
    reference: &ArrayD<f32>,
    labels: Option<&[usize]>,
    piece: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<Sensitivity>> {
    let all = Enabled::all(sim);
    let layers = layers(sim)?;
    let mut fp = Prefix::new(sim, x, Enabled::default(), piece)?;
    let mut q = Prefix::new(sim, x, all.clone(), piece)?;
    let mut out = Vec::with_capacity(layers.len());
    for (k, layer) in layers.into_iter().enumerate() {
        progress("per-layer sensitivity", k, out.capacity());
        fp.advance_to(sim, layer.position)?;
        q.advance_to(sim, layer.position)?;
        let only = Score::of(reference, &fp.finish(sim, &layer.quantizers)?, labels);
        let all_but = Score::of(
            reference,
            &q.finish(sim, &all.minus(&layer.quantizers))?,
            labels,
        );
        out.push(Sensitivity {
            layer,
            only,
            all_but,
        });
    }
    let n = out.len();
    progress("per-layer sensitivity", n, n);
    Ok(out)
}

/// Histograms of every activation quantizer's tensor on `calib` (in the weight-quantized
/// model, as calibration saw them) and of every parameter's FP32 values.
fn histograms(
    sim: &QuantSim,
    calib: &Samples,
    piece: usize,
    bins: usize,
) -> Result<Vec<Histogram>> {
    let names: Vec<String> = sim
        .activation_encodings()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); names.len()];
    if !calib.is_empty() {
        let r = sim.runner(Model::Weights)?.taps(&names).batch(piece);
        for chunk in calib.chunks(piece) {
            for (v, y) in values
                .iter_mut()
                .zip(r.run_names(&chunk.feed(sim.inputs())?, &names)?)
            {
                v.extend(y.iter().copied());
            }
        }
    }
    let mut out = Vec::new();
    for ((name, e), v) in sim.activation_encodings().iter().zip(&values) {
        out.push(histogram(
            name,
            false,
            v.iter().copied(),
            e.grid_range(0),
            bins,
        ));
    }
    let g = sim.prepared(1)?;
    for (name, e) in sim.param_encodings() {
        let Some(w) = g.weight(name) else { continue };
        let range = (0..e.channels())
            .map(|c| e.grid_range(c))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), (lo, hi)| {
                (a.min(lo), b.max(hi))
            });
        out.push(histogram(name, true, w.iter().copied(), range, bins));
    }
    Ok(out)
}

/// A histogram of `values` over the span of their finite values and `encoding`.
fn histogram(
    tensor: &str,
    param: bool,
    values: impl Iterator<Item = f32> + Clone,
    encoding: (f32, f32),
    bins: usize,
) -> Histogram {
    let (mut lo, mut hi) = values
        .clone()
        .filter(|v| v.is_finite())
        .fold(encoding, |(a, b), v| (a.min(v), b.max(v)));
    if hi <= lo {
        (lo, hi) = (lo - 0.5, lo + 0.5);
    }
    let mut counts = vec![0u64; bins];
    let width = (hi - lo) as f64 / bins as f64;
    for v in values.filter(|v| v.is_finite()) {
        let b = (((v - lo) as f64 / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    Histogram {
        tensor: tensor.to_string(),
        param,
        lo,
        hi,
        counts,
        encoding,
    }
}
