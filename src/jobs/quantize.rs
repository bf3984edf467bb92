//! `quantize`: a model through QuantSim end to end — prepare, techniques, calibration,
//! evaluation, per-layer SQNR — then the prepared model, encodings, QDQ model and report
//! written into an output folder at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data;
use crate::error::{Error, Result};
use crate::exec::Samples;
use crate::gpu::Gpu;
use crate::jobs::amp::AmpRequest;
use crate::jobs::output::Outputs;
use crate::jobs::sets::{write_samples, Sets, SetsRequest};
use crate::jobs::{at_least_one, Progress};
use crate::quant::adaround::{self, AdaroundOptions, AdaroundReport};
use crate::quant::amp::AmpResult;
use crate::quant::analyzers::Scheme;
use crate::quant::export::EncodingsVersion;
use crate::quant::params::{channel_summary, ParamRange};
use crate::quant::qat::{self, QatOptions, QatReport};
use crate::quant::sim::{Arithmetic, Evaluation, QuantOptions, QuantSim};
use crate::quant::{bias_correction, seq_mse, PlacementStyle, QuantConfig};

/// Bias correction's two forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasCorrection {
    /// On calibration data (layer by layer, the simulated model against FP32).
    Empirical,
    /// Data-free, from batch-norm statistics.
    Analytical,
}

/// Post-training techniques applied around calibration.
#[derive(Clone, Debug, Default)]
pub struct Techniques {
    /// Cross-layer equalization (with high-bias absorption) before quantizing.
    pub cle: bool,
    pub bias_correction: Option<BiasCorrection>,
    /// Sequential MSE with this many candidate ranges per layer.
    pub seq_mse: Option<usize>,
    /// Data-free quantization: CLE + analytical bias correction (+ ranges from batch norms
    /// when there is no calibration data).
    pub dfq: bool,
    /// Calibration samples used by seq-MSE and empirical bias correction.
    pub samples: usize,
    /// AdaRound after CLE and seq-MSE, before calibration.
    pub adaround: Option<AdaroundRequest>,
    /// Quantization-aware training after calibration, on the calibration part.
    pub qat: Option<QatOptions>,
}

/// AdaRound's settings and the calibration samples it caches.
#[derive(Clone, Debug)]
pub struct AdaroundRequest {
    pub options: AdaroundOptions,
    /// Samples of the calibration part (`None`: all of it).
    pub samples: Option<usize>,
}

/// Everything `quantize` needs.
#[derive(Clone, Debug)]
pub struct QuantizeJob {
    pub model: PathBuf,
    /// Calibration data (`None`: data-free, which needs `techniques.dfq`).
    pub calib: Option<PathBuf>,
    pub calib_count: Option<usize>,
    /// An explicit evaluation set (`None`: `holdout` of the calibration data, split by image).
    pub eval: Option<PathBuf>,
    pub eval_count: Option<usize>,
    /// Share of the calibration data held out for evaluation when there is no `eval` (0: the
    /// evaluation is in-sample, and says so).
    pub holdout: f64,
    /// Labels (IDX) of the images evaluated: of `eval`, or of the calibration data it splits.
    pub labels: Option<PathBuf>,
    /// Labels (IDX) of the calibration images: QAT trains on them by cross-entropy instead of
    /// distilling from the FP32 model. Without `eval` they also label the held-out part (then
    /// `labels` is not given).
    pub calib_labels: Option<PathBuf>,
    /// Also write the evaluation inputs here (.npy), e.g. to run the QDQ export on them.
    pub eval_inputs: Option<PathBuf>,
    /// An AIMET quantsim config (`None`: AIMET's per-channel default).
    pub config: Option<PathBuf>,
    pub per_tensor: bool,
    /// Whose fusion rules place the quantizers (default: the targets').
    pub placement: PlacementStyle,
    pub scheme: Scheme,
    pub param_bw: u32,
    pub act_bw: u32,
    pub arithmetic: Arithmetic,
    pub techniques: Techniques,
    /// Evaluation samples for the per-layer SQNR table (0 skips it).
    pub per_layer_samples: usize,
    /// Samples per GPU batch.
    pub batch: usize,
    pub out: PathBuf,
    pub encodings_version: EncodingsVersion,
    /// Also write the simulated outputs on the evaluation data here (.npy).
    pub sim_outputs: Option<PathBuf>,
    /// Mixed precision: `param_bw`/`act_bw` are the widest candidate's, and the search picks
    /// each quantizer group's candidate.
    pub amp: Option<AmpRequest>,
}

/// What `quantize` did and measured.
pub struct QuantizeOutcome {
    pub stem: String,
    pub adapter: String,
    /// (activation quantizers, parameter quantizers).
    pub quantizers: (usize, usize),
    /// Calibration samples (0: data-free).
    pub calib_samples: usize,
    /// One line per technique applied.
    pub techniques: Vec<String>,
    pub evaluation: Evaluation,
    /// "held-out" or "in-sample", and a line saying which images the evaluation rests on.
    pub label: &'static str,
    pub held_out: String,
    /// Per-layer SQNR (activation, dB) in placement order, and the samples it used.
    pub per_layer: Vec<(String, f64)>,
    pub per_layer_samples: usize,
    /// Seconds per phase: load, prepare, techniques, calibrate, evaluate, per-layer, export.
    pub seconds: [f64; 7],
    /// Files written.
    pub written: Vec<PathBuf>,
    /// The summary the report shows (label, value).
    pub summary: Vec<(String, String)>,
    /// What mixed precision chose, with `--amp`.
    pub amp: Option<AmpResult>,
}

/// Per-output-channel weight ranges of every equalized layer, before and after CLE.
type CleRanges = Vec<crate::report::CleLayer>;

impl QuantizeJob {
    /// The files the job reads (no output may replace one).
    pub fn inputs(&self) -> Vec<&Path> {
        [
            Some(self.model.as_path()),
            self.calib.as_deref(),
            self.eval.as_deref(),
            self.labels.as_deref(),
            self.config.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn check(job: &QuantizeJob) -> Result<()> {
    at_least_one("quantize", "--batch", job.batch)?;
    at_least_one("quantize", "--ptq-samples", job.techniques.samples)?;
    if let Some(n) = job.calib_count {
        at_least_one("quantize", "--calib-count", n)?;
    }
    if let Some(n) = job.eval_count {
        at_least_one("quantize", "--eval-count", n)?;
    }
    if let Some(n) = job.techniques.seq_mse {
        at_least_one("quantize", "--seq-mse-candidates", n)?;
    }
    if job.calib_labels.is_some() {
        if job.calib.is_none() {
            return Err(Error::invalid(
                "quantize",
                "--calib-labels",
                "given",
                "label calibration images (--calib)",
            ));
        }
        if job.eval.is_none() && job.labels.is_some() {
            return Err(Error::invalid(
                "quantize",
                "--calib-labels",
                "given with --labels",
                "without --eval both label the same split data: give one of them",
            ));
        }
    }
    if let Some(a) = &job.techniques.adaround {
        a.options.validate()?;
        if let Some(n) = a.samples {
            at_least_one("quantize", "--adaround-samples", n)?;
        }
        let t = &job.techniques;
        let refused = [
            (t.bias_correction.is_some() || t.dfq, "--bias-correction / --dfq", "AdaRound fits each layer's rounding to its FP32 output itself; a bias correction before it would be fitted to rounding to nearest, after it would shift the outputs the rounding was fitted to"),
            (job.amp.is_some(), "--amp", "AdaRound freezes one bitwidth's weight encodings; AMP takes each candidate's from the weights"),
            (job.calib.is_none(), "--calib", "AdaRound fits the rounding on calibration data"),
        ];
        if let Some((_, flag, why)) = refused.into_iter().find(|r| r.0) {
            return Err(Error::invalid("quantize --adaround", flag, "given", why));
        }
    }
    if let Some(q) = &job.techniques.qat {
        at_least_one("quantize", "--epochs", q.epochs)?;
        at_least_one("quantize", "--qat-batch", q.batch)?;
        if !(q.lr > 0.0 && q.lr.is_finite()) {
            return Err(Error::invalid(
                "quantize",
                "--qat-lr",
                q.lr,
                "a finite number > 0",
            ));
        }
        let t = &job.techniques;
        let refused = [
            (
                t.adaround.is_some(),
                "--adaround",
                "QAT trains the weights in FP32 and would undo the learned rounding",
            ),
            (
                t.bias_correction == Some(BiasCorrection::Empirical),
                "--bias-correction empirical",
                "QAT trains the biases itself",
            ),
            (
                job.arithmetic == Arithmetic::Integer,
                "--integer",
                "QAT trains the float simulation",
            ),
            (
                job.calib.is_none(),
                "--calib",
                "QAT trains on calibration data",
            ),
        ];
        if let Some((_, flag, why)) = refused.into_iter().find(|r| r.0) {
            return Err(Error::invalid("quantize --qat", flag, "given", why));
        }
    }
    if job.calib.is_none() && !job.techniques.dfq {
        return Err(Error::invalid(
            "quantize",
            "--calib",
            "none",
            "give calibration data (or --dfq for data-free quantization)",
        ));
    }
    for (flag, bw) in [("--param-bw", job.param_bw), ("--act-bw", job.act_bw)] {
        if !(2..=16).contains(&bw) {
            return Err(Error::invalid(
                "quantize",
                flag,
                bw,
                "the bitwidth must be in 2..=16",
            ));
        }
    }
    if let Some(a) = &job.amp {
        a.check((job.param_bw, job.act_bw))?;
        let refused = [
            (job.arithmetic == Arithmetic::Integer, "--integer", "the integer simulation runs 8-bit grids only"),
            (job.techniques.seq_mse.is_some(), "--seq-mse", "seq-MSE searches one bitwidth's weight ranges; AMP takes each candidate's from the weights"),
            (job.calib.is_none(), "--calib", "AMP scores configurations on calibration data"),
        ];
        if let Some((_, flag, why)) = refused.into_iter().find(|r| r.0) {
            return Err(Error::invalid("quantize --amp", flag, "given", why));
        }
    }
    if job.arithmetic == Arithmetic::Integer && (job.param_bw != 8 || job.act_bw != 8) {
        return Err(Error::invalid(
            "quantize",
            "--integer",
            format!("W{}A{}", job.param_bw, job.act_bw),
            "the integer simulation runs 8-bit grids",
        ));
    }
    Ok(())
}

/// Runs `quantize`; `progress` hears of each phase.
pub fn quantize(job: &QuantizeJob, progress: &mut dyn Progress) -> Result<QuantizeOutcome> {
    check(job)?;
    let inputs = job.inputs();
    for p in job.sim_outputs.iter().chain(&job.eval_inputs) {
        crate::files::check_output(p, &inputs)?;
    }
    let stem = job
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let names = [
        format!("{stem}.onnx"),
        format!("{stem}.encodings"),
        format!("{stem}_qdq.onnx"),
        "report.html".to_string(),
        "split.json".to_string(),
        crate::jobs::amp::TABLE.to_string(),
    ];
    Outputs::check(&job.out, &names, &inputs)?;
    let Calibrated {
        mut sim,
        sets,
        gpu,
        techniques,
        cle_ranges,
        adaround,
        qat,
        seconds: [t_load, t_prepare, t_ptq, t_calib],
    } = calibrated(job, progress)?;
    let ev = &sets.eval;
    let labels = &sets.eval_labels;

    let amp = match &job.amp {
        Some(req) => Some(crate::jobs::amp::mixed(
            req, &mut sim, &sets, &job.out, job.batch, progress,
        )?),
        None => None,
    };
    let mut techniques = techniques;
    let qat = match (&amp, qat) {
        (Some(_), _) => trained(&mut sim, job, &sets, &mut techniques, progress)?,
        (None, q) => q,
    };

    let t = std::time::Instant::now();
    progress.phase(&format!(
        "evaluating FP32 and simulated on {} samples",
        ev.len()
    ));
    let e = sim.evaluate(ev, job.batch, labels.as_deref())?;
    let t_eval = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    progress.phase("per-layer SQNR");
    let probe = ev.first(job.per_layer_samples);
    let per_layer = if job.per_layer_samples > 0 {
        sim.per_layer_sqnr(&probe, job.batch)?
    } else {
        Vec::new()
    };
    let t_layers = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let mut out = Outputs::new(&job.out, &inputs)?;
    let scratch = out.path(&format!("{stem}.onnx"))?;
    let scratch_dir = scratch
        .parent()
        .expect("inside the scratch folder")
        .to_path_buf();
    out.path(&format!("{stem}.encodings"))?;
    sim.export(&scratch_dir, &stem, job.encodings_version)?;
    let odd: std::collections::BTreeSet<u32> = sim
        .activation_encodings()
        .iter()
        .chain(sim.param_encodings())
        .map(|(_, e)| e.bitwidth)
        .filter(|b| !crate::quant::amp::BITWIDTHS.contains(b))
        .collect();
    if odd.is_empty() {
        out.path(&format!("{stem}_qdq.onnx"))?;
        sim.export_qdq(&scratch_dir, &stem)?;
    } else {
        log::warn!(
            "QDQ export skipped (ONNX QuantizeLinear holds 4-, 8- and 16-bit grids; this run has {odd:?}-bit ones)"
        );
    }
    if let Some(a) = &amp {
        out.write(
            crate::jobs::amp::TABLE,
            a.sensitivities.to_json().as_bytes(),
        )?;
    }
    let sim_outputs = match &job.sim_outputs {
        Some(_) => Some(sim.simulate(ev, job.batch)?.remove(0)),
        None => None,
    };
    let summary = summary_lines(job, &sim, &techniques, &e, &sets, gpu.describe());
    let mut worst: Vec<&(String, f64)> = per_layer.iter().collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut weight_ranges: Vec<crate::quant::params::WeightRanges> = Vec::new();
    for (name, _) in worst.iter().take(3) {
        if let Some(w) = sim.weight_ranges_for(name)? {
            if !weight_ranges.iter().any(|(n, _)| *n == w.0) {
                weight_ranges.push(w);
            }
        }
    }
    let report = crate::report::QuantReport {
        model: &stem,
        summary: summary.clone(),
        per_layer: &per_layer,
        activations: sim.activation_encodings(),
        params: sim.param_encodings(),
        weight_ranges,
        cle_ranges,
        amp: amp.as_ref(),
        adaround: adaround.as_ref(),
        qat: qat.as_ref(),
    };
    out.write(
        "report.html",
        crate::report::quant_report_html(&report).as_bytes(),
    )?;
    out.write("split.json", sets.to_json().as_bytes())?;
    let mut written = out.commit()?;
    if let (Some(p), Some(y)) = (&job.sim_outputs, sim_outputs) {
        data::npy::write(p, &y)?;
        written.push(p.clone());
    }
    if let Some(p) = &job.eval_inputs {
        write_samples(p, ev, &*sim.reference_graph(1)?)?;
        written.push(p.clone());
    }
    let t_export = t.elapsed().as_secs_f64();
    let p = sim.placement();
    Ok(QuantizeOutcome {
        stem,
        adapter: gpu.describe(),
        quantizers: (p.activations.len(), p.params.len()),
        calib_samples: sim.calibrated_on(),
        techniques,
        evaluation: e,
        label: sets.label(),
        held_out: sets.describe(),
        per_layer,
        per_layer_samples: probe.len(),
        seconds: [
            t_load, t_prepare, t_ptq, t_calib, t_eval, t_layers, t_export,
        ],
        written,
        summary,
        amp,
    })
}

/// A model loaded, prepared, put through the techniques and calibrated as a job asks: what
/// `quantize` evaluates and exports, and what `analyze` analyzes.
pub struct Calibrated {
    pub sim: QuantSim,
    /// The data, split by image into what calibration fits and what evaluations use.
    pub sets: Sets,
    pub gpu: Arc<Gpu>,
    /// One line per technique applied.
    pub techniques: Vec<String>,
    /// Weight ranges CLE changed (before, after).
    pub cle_ranges: CleRanges,
    /// What AdaRound did, with `--adaround`.
    pub adaround: Option<AdaroundReport>,
    /// What QAT did, with `--qat`.
    pub qat: Option<QatReport>,
    /// Seconds per phase: load, prepare, techniques, calibrate.
    pub seconds: [f64; 4],
}

/// Loads, prepares and calibrates `job`'s model with its techniques (the job is checked).
pub fn calibrated(job: &QuantizeJob, progress: &mut dyn Progress) -> Result<Calibrated> {
    check(job)?;
    let t = std::time::Instant::now();
    let cfg = match &job.config {
        Some(p) => QuantConfig::load(p)?,
        None => QuantConfig::default_per_channel(),
    };
    let cfg = if job.per_tensor {
        cfg.per_tensor()
    } else {
        cfg
    }
    .with_placement(job.placement);
    let g = crate::graph::load(&job.model)?;
    g.check_finite_weights()?;
    // A model that fixes its batch at k > 1 runs k samples at a time (the runner fills up
    // the last piece); calibration, which leaves out a filled piece, is fed whole ones.
    let fixed = g
        .inputs
        .first()
        .and_then(|i| match g.input_dims[i].first() {
            Some(crate::graph::ir::Dim::Fixed(k)) if *k > 1 && *k != job.batch => Some(*k),
            _ => None,
        });
    let resized;
    let job = match fixed {
        Some(k) => {
            log::info!(
                "the model fixes its batch at {k}: batches of {k} instead of {}",
                job.batch
            );
            resized = QuantizeJob {
                batch: k,
                ..job.clone()
            };
            &resized
        }
        None => job,
    };
    let ops: std::collections::BTreeSet<&str> = g.nodes.iter().map(|n| n.op.onnx_type()).collect();
    let outside = cfg.unsupported(job.act_bw, job.param_bw, ops);
    if !outside.is_empty() {
        log::warn!("the config's supported_kernels do not list W{}A{} integer grids for: {}; the target may not run this model as simulated", job.param_bw, job.act_bw, outside.join(", "));
    }
    let sets = match &job.calib {
        Some(c) => Sets::load(&SetsRequest {
            what: "the calibration data",
            model: &g,
            data: c,
            eval: job.eval.as_deref(),
            labels: job.labels.as_deref().or(match job.eval {
                None => job.calib_labels.as_deref(),
                Some(_) => None,
            }),
            data_labels: job.calib_labels.as_deref(),
            holdout: job.holdout,
            fit_count: job.calib_count,
            eval_count: job.eval_count,
        })?,
        None => {
            let p = job.eval.as_deref().ok_or_else(|| {
                Error::invalid(
                    "quantize",
                    "--eval",
                    "none",
                    "data-free quantization needs evaluation data",
                )
            })?;
            Sets::data_free(&g, p, job.eval_count, job.labels.as_deref())?
        }
    };
    // Data-free: nothing is calibrated on data.
    let x = job.calib.as_ref().map(|_| &sets.fit);
    let ev = &sets.eval;
    let labels = &sets.eval_labels;
    let t_load = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let gpu = Arc::new(Gpu::new()?);
    // AIMET applies tf-enhanced to weights too; percentile clips activations only.
    let param_range = match job.scheme {
        Scheme::TfEnhanced { gamma } => ParamRange::TfEnhanced { gamma },
        _ => ParamRange::MinMax,
    };
    // Named dims after the batch (an OCR model's height and width) are the data's.
    let data = x.unwrap_or(ev).feed(&g.inputs)?;
    let shapes: Vec<(&str, &[usize])> = data.iter().map(|(n, v)| (*n, v.shape())).collect();
    let dims = g.dims_from_data(&shapes)?;
    let mut sim = QuantSim::new(
        gpu.clone(),
        g,
        &cfg,
        QuantOptions {
            param_bw: job.param_bw,
            act_bw: job.act_bw,
            param_range,
            arithmetic: job.arithmetic,
        },
        dims,
    )?;
    if let Some(l) = &labels {
        sim.reference_graph(1)?
            .check_labels("quantize", l, ev.len())?;
    }
    let t_prepare = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let ptq_x = x.as_ref().map(|x| x.first(job.techniques.samples));
    let (mut techniques, cle_ranges) = techniques_before(
        &mut sim,
        &job.techniques,
        &match &ptq_x {
            Some(p) => p.view(),
            None => ev.view(),
        },
        job.batch,
        progress,
    )?;
    let mut rounding = None;
    if let (Some(req), Some(x)) = (&job.techniques.adaround, &x) {
        let xa = x.first(req.samples.unwrap_or(usize::MAX));
        let r = rounded(&mut sim, &xa, job.batch, &req.options, progress)?;
        techniques.push(r.summary(xa.len()));
        rounding = Some(r);
    }
    let mut t_ptq = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    match &x {
        None => sim.calibrate_data_free()?,
        Some(x) => {
            let chunks = x.len().div_ceil(job.batch);
            let mut done = 0;
            sim.calibrate(
                job.scheme,
                x.chunks(job.batch).inspect(|_| {
                    done += 1;
                    progress.step("calibrating", done, chunks);
                }),
            )?;
        }
    }
    let t_calib = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    // With AMP, QAT trains the mix AMP chooses (after it, in `quantize`).
    let trained = match job.amp {
        None => trained(&mut sim, job, &sets, &mut techniques, progress)?,
        Some(_) => None,
    };
    if job.techniques.bias_correction == Some(BiasCorrection::Empirical) {
        let px = ptq_x.as_ref().ok_or_else(|| {
            Error::invalid(
                "quantize",
                "--bias-correction",
                "empirical",
                "needs calibration data",
            )
        })?;
        progress.phase(&format!(
            "empirical bias correction on {} samples",
            px.len()
        ));
        let bc = bias_correction::empirical(&mut sim, px, job.batch)?;
        techniques.push(format!(
            "empirical bias correction: {} layers corrected, {} skipped",
            bc.corrected.len(),
            bc.skipped.len()
        ));
    }
    t_ptq += t.elapsed().as_secs_f64();

    Ok(Calibrated {
        sim,
        sets,
        gpu,
        techniques,
        cle_ranges,
        adaround: rounding,
        qat: trained,
        seconds: [t_load, t_prepare, t_ptq, t_calib],
    })
}

/// QAT on the calibration part when the job asks for it (labelled calibration images train
/// by cross-entropy), its summary added to `techniques`.
fn trained(
    sim: &mut QuantSim,
    job: &QuantizeJob,
    sets: &Sets,
    techniques: &mut Vec<String>,
    progress: &mut dyn Progress,
) -> Result<Option<QatReport>> {
    let (Some(opts), Some(_)) = (&job.techniques.qat, &job.calib) else {
        return Ok(None);
    };
    let x = &sets.fit;
    progress.phase(&format!(
        "quantization-aware training: {} epochs on {} samples",
        opts.epochs,
        x.len()
    ));
    let opts = &QatOptions {
        labels: opts.labels.clone().or_else(|| {
            sets.fit_labels
                .clone()
                .filter(|_| job.calib_labels.is_some())
        }),
        ..opts.clone()
    };
    let r = qat::apply(sim, x, opts, &mut |epoch, epochs, done, _| {
        progress.step(
            &format!("QAT epoch {}/{epochs}", epoch + 1),
            done,
            x.len() / opts.batch.max(1),
        )
    })?;
    techniques.push(r.summary(opts.epochs));
    Ok(Some(r))
}

/// AdaRound on `x`, with progress per layer.
fn rounded(
    sim: &mut QuantSim,
    x: &Samples,
    batch: usize,
    opts: &AdaroundOptions,
    progress: &mut dyn Progress,
) -> Result<AdaroundReport> {
    progress.phase(&format!(
        "AdaRound on {} samples, {} iterations per layer",
        x.len(),
        opts.iterations_for(sim.options().param_bw)
    ));
    adaround::apply(sim, x, batch, opts, &mut |layer, layers, it, its| {
        progress.step(&format!("AdaRound layer {}/{layers}", layer + 1), it, its)
    })
}

/// The report's rows on the simulation a job built: model, adapter, quantizers, calibration,
/// techniques, evaluation data.
pub fn setup_summary(
    job: &QuantizeJob,
    sim: &QuantSim,
    techniques: &[String],
    sets: &Sets,
    adapter: String,
) -> Vec<(String, String)> {
    let calib_samples = sim.calibrated_on();
    let p = sim.placement();
    let (w, a) = (job.param_bw, job.act_bw);
    let arithmetic = if job.arithmetic == Arithmetic::Integer {
        "integer (onnxruntime's)"
    } else {
        "float (AIMET's)"
    };
    vec![
        ("model".to_string(), job.model.display().to_string()),
        ("adapter".to_string(), adapter),
        (
            "quantizers".to_string(),
            format!(
                "{} activations, {} parameters, W{w}A{a}, {arithmetic} arithmetic, placed as {}",
                p.activations.len(),
                p.params.len(),
                job.placement.describe()
            ),
        ),
        (
            "calibration".to_string(),
            if calib_samples == 0 {
                "data-free (batch-norm statistics)".to_string()
            } else {
                format!("{calib_samples} samples, {:?}", job.scheme)
            },
        ),
        (
            "techniques".to_string(),
            if techniques.is_empty() {
                "none".to_string()
            } else {
                techniques.join("; ")
            },
        ),
        ("evaluation".to_string(), sets.describe()),
    ]
}

fn summary_lines(
    job: &QuantizeJob,
    sim: &QuantSim,
    techniques: &[String],
    e: &Evaluation,
    sets: &Sets,
    adapter: String,
) -> Vec<(String, String)> {
    let label = sets.label();
    let mut s = setup_summary(job, sim, techniques, sets, adapter);
    s.extend([
        (
            format!("top-1 agreement (FP32 vs simulated, {label})"),
            format!("{:.1}% of {}", 100.0 * e.top1_agreement, e.samples),
        ),
        (
            format!("top-5 agreement ({label})"),
            format!("{:.1}%", 100.0 * e.top5_agreement),
        ),
        (
            format!("output SQNR ({label})"),
            format!("{:.2} dB", e.sqnr_db),
        ),
    ]);
    if let Some((f, q)) = e.accuracy {
        s.push((
            format!("accuracy (labels, {label})"),
            format!("FP32 {:.2}%, simulated {:.2}%", 100.0 * f, 100.0 * q),
        ));
    }
    s
}

/// The techniques that run before calibration (CLE, analytical bias correction, seq-MSE);
/// returns a line per technique and the weight ranges CLE changed.
fn techniques_before(
    sim: &mut QuantSim,
    t: &Techniques,
    x: &Samples,
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<(Vec<String>, CleRanges)> {
    let mut lines = Vec::new();
    let mut ranges = Vec::new();
    if t.cle || t.dfq {
        let before = sim.prepared(1)?;
        let r = sim.equalize(Default::default())?;
        let after = sim.prepared(1)?;
        let probe = x.first(4);
        let change = sim.fp32_change_db(&probe, batch)?;
        for name in r.sets.iter().flatten() {
            let Some(n) = after.nodes.iter().find(|n| &n.name == name) else {
                continue;
            };
            let w = &n.inputs[1];
            if let (Some(a), Some(b)) = (before.weight(w), after.weight(w)) {
                if !ranges.iter().any(|(x, _, _): &(String, _, _)| x == w) {
                    ranges.push((w.clone(), channel_summary(a, 0), channel_summary(b, 0)));
                }
            }
        }
        lines.push(format!(
            "CLE: {} sets ({} depthwise triplets), {} passes, {} Clips made per-channel, high-bias absorbed in {} pairs; equalized FP32 vs original {:.1} dB SQNR on {} samples{}",
            r.sets.len(),
            r.sets.iter().filter(|s| s.len() == 3).count(),
            r.iterations,
            r.relu6_replaced.len(),
            r.absorbed.len(),
            change,
            probe.len(),
            if r.zero_channels.is_empty() { String::new() } else { format!(", zero-range channels left alone: {:?}", r.zero_channels) }
        ));
    }
    if t.bias_correction == Some(BiasCorrection::Analytical) || t.dfq {
        let bc = bias_correction::analytical(sim)?;
        let skipped: Vec<String> = bc
            .skipped
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        lines.push(format!(
            "analytical bias correction: {} layers corrected, {} skipped{}",
            bc.corrected.len(),
            skipped.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join(", "))
            }
        ));
    }
    if let Some(candidates) = t.seq_mse {
        progress.phase(&format!(
            "sequential MSE on {} samples, {candidates} candidates per layer",
            x.len()
        ));
        let r = seq_mse::apply(sim, x, batch, candidates)?;
        let mean_frac = r.layers.iter().map(|l| l.1).sum::<f32>() / r.layers.len().max(1) as f32;
        lines.push(format!(
            "seq-MSE: {} layers, mean chosen range {:.0}% of max |w|",
            r.layers.len(),
            100.0 * mean_frac
        ));
    }
    Ok((lines, ranges))
}
