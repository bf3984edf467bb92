//! `analyze`: QuantAnalyzer on a model — the simulation `quantize` would build (same data
//! split, config, placement, scheme, bitwidths and techniques), analysed on the held-out
//! images; analysis.html, analysis.json and split.json written into an output folder at once.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::jobs::output::Outputs;
use crate::jobs::quantize::{calibrated, setup_summary, Calibrated, QuantizeJob};
use crate::jobs::{at_least_one, Progress};
use crate::quant::analysis::{self, Analysis, AnalysisOptions, Score, FEW_SAMPLES};
use crate::quant::encoding::Encoding;
use crate::quant::sim::Arithmetic;

/// Everything `analyze` needs.
#[derive(Clone, Debug)]
pub struct AnalyzeJob {
    /// The simulation to analyse, as `quantize` builds it; the analysis goes into its `out`.
    pub quantize: QuantizeJob,
    /// Calibration samples the activation histograms are drawn from.
    pub histogram_samples: usize,
    /// Bins per histogram.
    pub bins: usize,
}

/// What `analyze` found and wrote.
pub struct AnalyzeOutcome {
    pub stem: String,
    pub adapter: String,
    pub analysis: Analysis,
    /// "held-out" or "in-sample", and which images the scores rest on.
    pub label: &'static str,
    pub held_out: String,
    /// Seconds: load, prepare, techniques, calibrate (the simulation), then the report.
    pub setup_seconds: [f64; 4],
    pub report_seconds: f64,
    /// Warnings the analysis raised (also logged).
    pub warnings: Vec<String>,
    pub written: Vec<PathBuf>,
}

const NAMES: [&str; 3] = ["analysis.html", "analysis.json", "split.json"];

/// Runs `analyze`; `progress` hears of each phase.
pub fn analyze(job: &AnalyzeJob, progress: &mut dyn Progress) -> Result<AnalyzeOutcome> {
    let q = &job.quantize;
    at_least_one("analyze", "--histogram-samples", job.histogram_samples)?;
    at_least_one("analyze", "--bins", job.bins)?;
    if q.arithmetic == Arithmetic::Integer {
        return Err(Error::invalid(
            "analyze",
            "--integer",
            "integer",
            "the analysis enables quantizers one by one in the float simulation",
        ));
    }
    if q.calib.is_none() {
        return Err(Error::invalid(
            "analyze",
            "--calib",
            "none",
            "the analysis calibrates on data (histograms show what calibration saw)",
        ));
    }
    let inputs = q.inputs();
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    Outputs::check(&q.out, &names, &inputs)?;
    let Calibrated {
        sim,
        sets,
        gpu,
        techniques,
        seconds: setup_seconds,
        ..
    } = calibrated(q, progress)?;
    let ev = &sets.eval;
    let n = ev.len();
    let layers = analysis::layers(&sim)?;
    let mut warnings = Vec::new();
    if n < FEW_SAMPLES {
        warnings.push(format!("{n} evaluation samples: top-1 agreement moves in steps of {:.0}%, too coarse to rank layers; rank them by SQNR, or evaluate on at least {FEW_SAMPLES} samples", 100.0 / n as f64));
    }
    if layers.len() < 2 {
        warnings.push(format!(
            "the model has {} quantized layer(s): per-layer sensitivity repeats the whole-model scores",
            layers.len()
        ));
    }
    for w in &warnings {
        log::warn!("{w}");
    }
    let hist_x = sets.fit.first(job.histogram_samples);
    let mut report = |what: &str, done: usize, total: usize| {
        if total <= 1 {
            progress.phase(what)
        } else {
            progress.step(what, done, total)
        }
    };
    let a = analysis::analyze(
        &sim,
        ev,
        sets.eval_labels.as_deref(),
        &hist_x,
        AnalysisOptions {
            piece: q.batch,
            bins: job.bins,
        },
        &mut report,
    )?;

    let t = std::time::Instant::now();
    let stem = q
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let mut summary = setup_summary(q, &sim, &techniques, &sets, gpu.describe());
    summary.extend([
        (
            "layers".to_string(),
            format!("{} with quantizers (grouped per op as aimet-onnx groups them)", a.layers.len()),
        ),
        (
            "time".to_string(),
            format!(
                "calibration {:.1} s; whole-model scores {:.1} s, per-layer {:.1} s, per-activation {:.1} s, histograms {:.1} s",
                setup_seconds[3],
                a.seconds.whole,
                a.seconds.per_layer,
                a.seconds.errors,
                a.seconds.histograms
            ),
        ),
    ]);
    for w in &warnings {
        summary.push(("warning".to_string(), w.clone()));
    }
    let html =
        crate::report::analysis::analysis_report_html(&crate::report::analysis::AnalysisReport {
            model: &stem,
            summary: summary.clone(),
            analysis: &a,
            activations: sim.activation_encodings(),
            params: sim.param_encodings(),
            bitwidths: (q.param_bw, q.act_bw),
        });
    let json = to_json(
        &a,
        &summary,
        sim.activation_encodings(),
        sim.param_encodings(),
        sets.label(),
    );
    let mut out = Outputs::new(&q.out, &inputs)?;
    out.write("analysis.html", html.as_bytes())?;
    out.write(
        "analysis.json",
        serde_json::to_string_pretty(&json)
            .expect("JSON values serialize")
            .as_bytes(),
    )?;
    out.write("split.json", sets.to_json().as_bytes())?;
    let written = out.commit()?;
    Ok(AnalyzeOutcome {
        stem,
        adapter: gpu.describe(),
        analysis: a,
        label: sets.label(),
        held_out: sets.describe(),
        setup_seconds,
        report_seconds: t.elapsed().as_secs_f64(),
        warnings,
        written,
    })
}

fn score(s: &Score) -> Value {
    json!({"sqnr_db": finite(s.sqnr_db), "top1_agreement": s.top1_agreement, "accuracy": s.accuracy})
}

/// JSON has no infinities: an exact match (+inf dB) is written as the string "inf".
fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

fn encoding(e: &Encoding) -> Value {
    let ranges: Vec<(f32, f32)> = (0..e.channels()).map(|c| e.grid_range(c)).collect();
    json!({
        "bitwidth": e.bitwidth,
        "axis": e.axis,
        "min": ranges.iter().map(|r| r.0).collect::<Vec<_>>(),
        "max": ranges.iter().map(|r| r.1).collect::<Vec<_>>(),
        "scale": e.scale,
        "offset": e.offset,
    })
}

fn to_json(
    a: &Analysis,
    summary: &[(String, String)],
    activations: &[(String, Encoding)],
    params: &[(String, Encoding)],
    label: &str,
) -> Value {
    json!({
        "summary": summary.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "evaluation": label,
        "samples": a.samples,
        "fp32_accuracy": a.fp32_accuracy,
        "weights_only": score(&a.weights_only),
        "activations_only": score(&a.activations_only),
        "quantized": score(&a.quantized),
        "per_layer": a.layers.iter().map(|s| json!({
            "layer": s.layer.name,
            "op": s.layer.op,
            "activations": s.layer.quantizers.activations,
            "params": s.layer.quantizers.params,
            "only_this_quantized": score(&s.only),
            "all_but_this_quantized": score(&s.all_but),
        })).collect::<Vec<_>>(),
        "per_activation": a.errors.iter().map(|(n, p)| json!({
            "tensor": n, "sqnr_db": finite(p.db()), "mse": p.mse(),
        })).collect::<Vec<_>>(),
        "encodings": {
            "activations": activations.iter().map(|(n, e)| (n.clone(), encoding(e))).collect::<serde_json::Map<_, _>>(),
            "params": params.iter().map(|(n, e)| (n.clone(), encoding(e))).collect::<serde_json::Map<_, _>>(),
        },
        "histogram_samples": a.histogram_samples,
        "histograms": a.histograms.iter().map(|h| json!({
            "tensor": h.tensor, "param": h.param, "lo": h.lo, "hi": h.hi,
            "counts": h.counts, "encoding_min": h.encoding.0, "encoding_max": h.encoding.1,
        })).collect::<Vec<_>>(),
        "seconds": {
            "whole_model": a.seconds.whole, "per_layer": a.seconds.per_layer,
            "per_activation": a.seconds.errors, "histograms": a.seconds.histograms,
        },
    })
}
