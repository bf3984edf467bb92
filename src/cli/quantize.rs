//! `qforge quantize`: AIMET's QuantSim end to end on a model.

use std::path::PathBuf;

use qforge::data::augment::Augment;
use qforge::eval::ScoreKind;
use qforge::jobs::amp::AmpRequest;
use qforge::jobs::quantize::{quantize, AdaroundRequest, BiasCorrection, QuantizeJob, Techniques};
use qforge::quant::adaround::AdaroundOptions;
use qforge::quant::amp::{baseline, AmpSearch, Candidate};
use qforge::quant::analyzers::Scheme;
use qforge::quant::export::EncodingsVersion;
use qforge::quant::qat::QatOptions;
use qforge::quant::sim::Arithmetic;
use qforge::quant::PlacementStyle;

/// The options every command that builds a simulation takes: model, data, config,
/// placement, scheme, bitwidths and techniques.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The ONNX model (default: the bundled MobileNetV2).
    model: Option<PathBuf>,
    /// Calibration data: a folder of images, an .npy batch or IDX images; for a model with
    /// several inputs, an .npz with one array per input or a folder holding NAME.npy for each
    /// (each input's samples along its batch dim). Default: the bundled photos; none with
    /// --dfq (ranges from batch-norm statistics). Without --eval, --holdout of it is held out
    /// (by sample) for the evaluation.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// An explicit evaluation set, in --calib's forms (default: --holdout of the calibration
    /// data).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Share of the calibration data held out for the evaluation, split by image with a fixed
    /// seed; 0 evaluates on the calibration images themselves (figures labelled in-sample).
    #[arg(long, default_value_t = 0.25, conflicts_with = "eval")]
    holdout: f64,
    /// An AIMET quantsim config JSON (default: AIMET's per-channel default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Quantize every weight per tensor (overrides the config's per-channel settings).
    #[arg(long)]
    per_tensor: bool,
    /// Quantizer placement: targets (the config's supergroups fuse every Conv, depthwise
    /// included, as onnxruntime, QNN and TFLite fuse them) or aimet-onnx (aimet-onnx 2.42's
    /// exact placement: depthwise outputs quantized before their Clip/Relu; its encodings load
    /// strictly into aimet-onnx).
    #[arg(long, default_value = "targets")]
    placement: PlacementStyle,
    /// Calibration scheme: minmax, tf-enhanced (AIMET's SQNR search, weights too), mse (the same search, clipping weighed as rounding) or percentile[:P] (activations; weights min-max).
    #[arg(long, default_value = "minmax")]
    scheme: Scheme,
    /// Parameter bitwidth.
    #[arg(long, default_value_t = 8)]
    param_bw: u32,
    /// Activation bitwidth.
    #[arg(long, default_value_t = 8)]
    act_bw: u32,
    /// Labels (IDX, e.g. Fashion-MNIST's t10k-labels-idx1-ubyte.gz) of the images evaluated:
    /// of --eval, or of the calibration data it splits. Reports FP32 and simulated accuracy.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Labels (IDX) of the calibration images: --qat trains on them by cross-entropy instead of
    /// distilling from the FP32 model.
    #[arg(long)]
    calib_labels: Option<PathBuf>,
    /// Use at most this many calibration samples (after the held-out split).
    #[arg(long)]
    calib_count: Option<usize>,
    /// Use at most this many evaluation samples (of --eval, or of the held-out share).
    #[arg(long)]
    eval_count: Option<usize>,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Cross-layer equalization (with high-bias absorption) before quantizing.
    #[arg(long)]
    cle: bool,
    /// Bias correction: empirical (on calibration data) or analytical (data-free).
    #[arg(long, value_parser = ["empirical", "analytical"])]
    bias_correction: Option<String>,
    /// Sequential MSE: per-channel weight ranges searched layer by layer.
    #[arg(long)]
    seq_mse: bool,
    /// Candidate ranges per layer for --seq-mse.
    #[arg(long, default_value_t = 20)]
    seq_mse_candidates: usize,
    /// Data-free quantization: CLE + analytical bias correction; without --calib the
    /// activation ranges come from batch-norm statistics too.
    #[arg(long)]
    dfq: bool,
    /// Calibration samples used by --seq-mse and empirical bias correction.
    #[arg(long, default_value_t = 8)]
    ptq_samples: usize,
    /// AdaRound: learned weight rounding, layer by layer (after --cle and --seq-mse).
    #[arg(long)]
    adaround: bool,
    /// AdaRound iterations per layer (default 10,000; 15,000 below 8 bits).
    #[arg(long)]
    adaround_iters: Option<usize>,
    /// Calibration samples AdaRound caches per layer (default: all of the calibration part).
    #[arg(long)]
    adaround_samples: Option<usize>,
    /// Samples per AdaRound iteration.
    #[arg(long, default_value_t = 32)]
    adaround_batch: usize,
    /// MiB of cached layer inputs and targets AdaRound keeps on the GPU (beyond: host memory).
    #[arg(long, default_value_t = 1024)]
    adaround_gpu_cache_mb: u64,
    /// Quantization-aware training after calibration: the simulated model distilled from the
    /// FP32 one on the calibration part.
    #[arg(long)]
    qat: bool,
    /// QAT epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// QAT learning rate of the weights and biases (Adam).
    #[arg(long, default_value_t = 1e-4)]
    qat_lr: f32,
    /// QAT learning rate of the learned ranges, which are learned as logarithms: about the
    /// fraction of a scale one step can move it (Adam, same schedule as --qat-lr).
    #[arg(long, default_value_t = 1e-2)]
    qat_range_lr: f32,
    /// Images per QAT step.
    #[arg(long, default_value_t = 32)]
    qat_batch: usize,
    /// QAT range learning: scales (and asymmetric offsets) learned from the calibrated ranges
    /// (tf-init: min-max calibration, tf-enhanced-init: tf-enhanced), or none (ranges frozen).
    #[arg(long, value_parser = ["tf-init", "tf-enhanced-init", "none"])]
    range_learning: Option<String>,
    /// QAT learning-rate schedule: constant, step (x0.1 at 1/3 and 2/3 of the steps) or cosine
    /// (5% warm-up, then cosine decay to 0).
    #[arg(long, default_value = "constant", value_parser = ["constant", "step", "cosine"])]
    qat_schedule: String,
    /// Scale each learned range's gradient by LSQ's 1 / sqrt(elements x positive levels).
    #[arg(long)]
    qat_lsq: bool,
    /// QAT distillation temperature: the loss is the KL divergence of the FP32 and simulated
    /// outputs softened by T, times T^2 (ignored with --calib-labels).
    #[arg(long, default_value_t = 1.0)]
    qat_temperature: f32,
    /// Seed of QAT's shuffles and augmentations (epoch e draws with seed + e).
    #[arg(long, default_value_t = 0)]
    qat_seed: u64,
    /// QAT augmentation of each training image: none, or a comma list of flip, crop (the
    /// teacher sees the same varied image).
    #[arg(long, default_value = "none")]
    qat_augment: String,
    /// Smallest share of the image area a QAT random crop keeps.
    #[arg(long, default_value_t = 0.35)]
    qat_crop_scale: f64,
}

/// Arguments of `qforge quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    sim: SimArgs,
    /// Also write the evaluation inputs (.npy; an .npz of one array per input for a model with
    /// several), e.g. to run the QDQ export on the same samples.
    #[arg(long)]
    eval_inputs: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Also write the simulated outputs on the evaluation data (.npy), e.g. to compare with
    /// an ONNX Runtime run of the QDQ model.
    #[arg(long)]
    sim_outputs: Option<PathBuf>,
    /// Simulate in integer arithmetic as onnxruntime runs the QDQ export on a CPU (Conv, Gemm,
    /// Add and GlobalAveragePool on integer codes with its requantization; int32 biases in
    /// the export) instead of AIMET's float simulation. 8-bit grids only.
    #[arg(long)]
    integer: bool,
    /// AIMET encodings format: 0.6.1, 1.0.0 or 2.0.0.
    #[arg(long, default_value = "1.0.0")]
    encodings_version: EncodingsVersion,
    /// Evaluation samples for the per-layer SQNR table (0 skips it).
    #[arg(long, default_value_t = 16)]
    per_layer_samples: usize,
    /// Automatic mixed precision: a candidate per quantizer group, the fewest bit-operations
    /// within --allowed-drop of the widest candidate (the simulation is built at the widest
    /// candidate; --param-bw/--act-bw are not used). Writes amp_scores.json (phase 1, reused
    /// by a rerun) and the Pareto curve in report.html.
    #[arg(long)]
    amp: bool,
    /// AMP's candidates, W<bits>A<bits> with 4, 8 or 16 bits.
    #[arg(long, default_value = "W4A8,W8A8,W8A16,W16A16", requires = "amp")]
    candidates: String,
    /// The score drop AMP allows from the widest candidate's: a fraction in [0, 1] of top-1
    /// agreement (accuracy with --labels), or dB with --amp-score sqnr.
    #[arg(long, default_value_t = 0.01, requires = "amp")]
    allowed_drop: f64,
    /// What AMP holds within the drop: agreement (accuracy with labels, else top-1 agreement
    /// with FP32) or sqnr (logits SQNR against FP32, dB).
    #[arg(long, default_value = "agreement", value_parser = ["agreement", "sqnr"], requires = "amp")]
    amp_score: String,
    /// AMP's phase 2: binary (search along the ordered moves) or greedy (each move in order,
    /// kept while within the drop).
    #[arg(long, default_value = "binary", value_parser = ["binary", "greedy"], requires = "amp")]
    amp_search: String,
    /// Calibration samples AMP scores configurations on (never held-out ones; a choice fitted
    /// on few holds less well on new data).
    #[arg(long, default_value_t = 64, requires = "amp")]
    amp_samples: usize,
    /// Evaluate AMP's phase 1 again even if a matching amp_scores.json is in --out.
    #[arg(long, requires = "amp")]
    amp_fresh: bool,
}

impl SimArgs {
    /// The quantize job these options ask for (float arithmetic, written to `out`), with the
    /// bundled model and photos as defaults.
    pub fn job(self, out: PathBuf) -> qforge::Result<QuantizeJob> {
        let qat_augment = Augment::named(&self.qat_augment, self.qat_crop_scale)?;
        let photos = super::bundled("data/images");
        let data_free = self.dfq && self.calib.is_none();
        let calib = if data_free {
            None
        } else {
            Some(self.calib.unwrap_or_else(|| photos.clone()))
        };
        let eval = if data_free {
            Some(self.eval.unwrap_or(photos))
        } else {
            self.eval
        };
        Ok(QuantizeJob {
            model: self
                .model
                .unwrap_or_else(|| super::bundled("models/mobilenet_v2.onnx")),
            calib,
            calib_count: self.calib_count,
            eval,
            eval_count: self.eval_count,
            holdout: self.holdout,
            labels: self.labels,
            calib_labels: self.calib_labels,
            eval_inputs: None,
            config: self.config,
            per_tensor: self.per_tensor,
            placement: self.placement,
            // QAT's range learning starts from the ranges its mode names.
            scheme: match (self.qat, self.range_learning.as_deref()) {
                (true, Some("tf-init")) => Scheme::MinMax,
                (true, Some("tf-enhanced-init")) => Scheme::TfEnhanced { gamma: 3.0 },
                _ => self.scheme,
            },
            param_bw: self.param_bw,
            act_bw: self.act_bw,
            arithmetic: Arithmetic::Float,
            techniques: Techniques {
                cle: self.cle,
                bias_correction: self.bias_correction.as_deref().map(|b| {
                    if b == "empirical" {
                        BiasCorrection::Empirical
                    } else {
                        BiasCorrection::Analytical
                    }
                }),
                seq_mse: self.seq_mse.then_some(self.seq_mse_candidates),
                dfq: self.dfq,
                samples: self.ptq_samples,
                adaround: self.adaround.then(|| AdaroundRequest {
                    options: AdaroundOptions {
                        iterations: self.adaround_iters,
                        batch: self.adaround_batch,
                        gpu_cache_bytes: self.adaround_gpu_cache_mb << 20,
                        ..Default::default()
                    },
                    samples: self.adaround_samples,
                }),
                qat: self.qat.then(|| QatOptions {
                    epochs: self.epochs,
                    batch: self.qat_batch,
                    lr: self.qat_lr,
                    range_lr: self.qat_range_lr,
                    learn_ranges: self.range_learning.as_deref() != Some("none"),
                    schedule: self.qat_schedule,
                    lsq: self.qat_lsq,
                    temperature: self.qat_temperature,
                    augment: qat_augment,
                    seed: self.qat_seed,
                    ..Default::default()
                }),
            },
            per_layer_samples: 0,
            batch: self.batch,
            out,
            encodings_version: EncodingsVersion::V1_0_0,
            sim_outputs: None,
            amp: None,
        })
    }
}

impl QuantizeArgs {
    /// The job these arguments ask for, with the bundled model and photos as defaults.
    pub fn job(self) -> qforge::Result<QuantizeJob> {
        let amp = if self.amp {
            Some(AmpRequest {
                candidates: Candidate::parse_list(&self.candidates)?,
                allowed_drop: self.allowed_drop,
                score: if self.amp_score == "sqnr" {
                    ScoreKind::Sqnr
                } else {
                    ScoreKind::Agreement
                },
                search: if self.amp_search == "greedy" {
                    AmpSearch::Greedy
                } else {
                    AmpSearch::Binary
                },
                samples: self.amp_samples,
                fresh: self.amp_fresh,
            })
        } else {
            None
        };
        let sim = self.sim.job(self.out)?;
        let (param_bw, act_bw) = match &amp {
            Some(a) => {
                let top = baseline(&a.candidates);
                (top.param_bw, top.act_bw)
            }
            None => (sim.param_bw, sim.act_bw),
        };
        Ok(QuantizeJob {
            eval_inputs: self.eval_inputs,
            arithmetic: if self.integer {
                Arithmetic::Integer
            } else {
                Arithmetic::Float
            },
            per_layer_samples: self.per_layer_samples,
            encodings_version: self.encodings_version,
            sim_outputs: self.sim_outputs,
            param_bw,
            act_bw,
            amp,
            ..sim
        })
    }
}

/// Runs `qforge quantize`.
pub fn main(a: QuantizeArgs) -> qforge::Result<()> {
    let job = a.job()?;
    let r = quantize(&job, &mut super::Bar::new())?;
    let e = &r.evaluation;
    let [load, prepare, ptq, calib, eval, layers, export] = r.seconds;
    println!("model            {}", job.model.display());
    println!("adapter          {}", r.adapter);
    println!(
        "quantizers       {} activations, {} parameters (W{}A{}, {}, placed as {})",
        r.quantizers.0,
        r.quantizers.1,
        job.param_bw,
        job.act_bw,
        job.config
            .as_ref()
            .map_or("AIMET per-channel default".to_string(), |c| c
                .display()
                .to_string()),
        job.placement.describe()
    );
    println!(
        "simulation       {}",
        if job.arithmetic == Arithmetic::Integer {
            "integer: onnxruntime's kernels on the QDQ export (int32 biases), bit for bit"
        } else {
            "float: AIMET's QuantSim (--integer simulates onnxruntime's run of the QDQ export bit for bit)"
        }
    );
    match &job.calib {
        None => {
            println!("calibration      data-free: activation ranges from batch-norm statistics")
        }
        Some(c) => println!(
            "calibration      {} samples ({}), {:?}",
            r.calib_samples,
            c.display(),
            job.scheme
        ),
    }
    for t in &r.techniques {
        println!("technique        {t}");
    }
    if let Some(a) = &r.amp {
        let v = |s: &qforge::quant::analysis::Score| s.value(a.score);
        let unit = a.score.unit();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for c in &a.chosen {
            *counts.entry(c.to_string()).or_default() += 1;
        }
        println!(
            "mixed precision  {} groups: {}; {:.3} of {}'s bit-operations, score {:.4}{unit} vs {:.4}{unit} (allowed drop {}{unit}, on {} calibration samples)",
            a.groups.len(),
            counts.iter().map(|(c, n)| format!("{n} x {c}")).collect::<Vec<_>>().join(", "),
            a.point.relative_bit_ops,
            a.baseline,
            v(&a.point.score),
            v(&a.baseline_score),
            a.allowed_drop,
            a.samples
        );
        for (c, p) in &a.uniform {
            println!(
                "  uniform {c:<7} {:.3} of the bit-operations, score {:.4}{unit}, SQNR {:.2} dB",
                p.relative_bit_ops,
                v(&p.score),
                p.score.sqnr_db
            );
        }
        println!(
            "  time           encodings {:.1} s, phase 1 {}, phase 2 {:.1} s ({} evaluations)",
            a.seconds[0],
            if a.reused {
                "read from amp_scores.json".to_string()
            } else {
                format!("{:.1} s", a.seconds[1])
            },
            a.seconds[2],
            a.evaluations
        );
    }
    println!("evaluation       {}", r.held_out);
    println!("{:<16} {} samples: FP32 vs simulated INT: top-1 agreement {:.1}%, top-5 {:.1}%, SQNR {:.2} dB", r.label, e.samples, 100.0 * e.top1_agreement, 100.0 * e.top5_agreement, e.sqnr_db);
    if let Some((f, q)) = e.accuracy {
        println!(
            "accuracy         FP32 {:.2}%, simulated {:.2}% (labels, {})",
            100.0 * f,
            100.0 * q,
            r.label
        );
    }
    let mut worst: Vec<&(String, f64)> = r.per_layer.iter().collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    let worst5: Vec<String> = worst
        .iter()
        .take(5)
        .map(|(n, v)| format!("{n} {v:.1} dB"))
        .collect();
    if !worst5.is_empty() {
        println!(
            "worst layers     {} (SQNR on {} {} samples)",
            worst5.join(", "),
            r.per_layer_samples,
            r.label
        );
    }
    println!("time             load {load:.1} s, prepare {prepare:.1} s, techniques {ptq:.1} s, calibrate {calib:.1} s, evaluate {eval:.1} s, per-layer {layers:.1} s, export {export:.2} s");
    println!("wrote            {} into {} ({}.onnx is the BN-folded FP32 model; encodings in AIMET {:?})", super::file_names(&r.written), job.out.display(), r.stem, job.encodings_version);
    Ok(())
}
