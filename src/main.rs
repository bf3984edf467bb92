//! The `qforge` command line: thin over the library.

use std::process::ExitCode;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod cli;
use ndarray::{ArrayD, Axis};
use qforge::compress::cost;
use qforge::data::{images, npy};
use qforge::exec::Executor;
use qforge::gpu::{list_adapters, pick_adapter, Gpu};
use qforge::graph::{self, Dim};

#[derive(Parser)]
#[command(name = "qforge", version, about = "Quantize and compress neural networks on any GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter (name, backend, type, driver, key limits) and the one qforge picks.
    Devices {
        /// Also create a device on the chosen adapter and build every kernel.
        #[arg(long)]
        check: bool,
    },
    /// Show a model's inputs, outputs, op counts, parameters and MACs per layer.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Batch size for the MAC counts.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Sizes of other named dims, e.g. `--dim height=224`.
        #[arg(long = "dim", value_parser = parse_dim)]
        dims: Vec<(String, usize)>,
    },
    /// Quantize a model (AIMET's QuantSim: BN fold, quantizers from a config, min-max
    /// calibration, fake-quant simulation); writes the prepared model and AIMET encodings.
    Quantize {
        /// The ONNX model (default: the bundled MobileNetV2).
        model: Option<PathBuf>,
        /// Calibration data: a folder of images or an .npy batch (default: the bundled photos).
        #[arg(long)]
        calib: Option<PathBuf>,
        /// Evaluation data (default: the calibration data).
        #[arg(long)]
        eval: Option<PathBuf>,
        /// An AIMET quantsim config JSON (default: AIMET's per-channel default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Quantize every weight per tensor (overrides the config's per-channel settings).
        #[arg(long)]
        per_tensor: bool,
        /// Calibration scheme: minmax, tf-enhanced (AIMET's SQNR search, weights too), mse (the same search, clipping weighed as rounding) or percentile[:P] (activations; weights min-max).
        #[arg(long, default_value = "minmax")]
        scheme: qforge::quant::analyzers::Scheme,
        /// Parameter bitwidth.
        #[arg(long, default_value_t = 8)]
        param_bw: u32,
        /// Activation bitwidth.
        #[arg(long, default_value_t = 8)]
        act_bw: u32,
        /// Labels of the evaluation data (IDX, e.g. Fashion-MNIST's t10k-labels-idx1-ubyte.gz):
        /// reports FP32 and simulated accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Use at most this many calibration samples.
        #[arg(long)]
        calib_count: Option<usize>,
        /// Use at most this many evaluation samples (of --eval, or of the calibration data without it).
        #[arg(long)]
        eval_count: Option<usize>,
        /// Images per GPU batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
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
        encodings_version: qforge::quant::export::EncodingsVersion,
        #[command(flatten)]
        ptq: PtqArgs,
    },
    /// Compress a model: spatial/weight SVD and channel pruning (least-squares rebuilt), with
    /// per-layer ratios chosen greedily to meet a target MAC or memory ratio.
    Compress(cli::compress::CompressArgs),
    /// Run a model on the GPU: on a .npy input, or on a folder of images (prints top-5).
    Run {
        /// The ONNX model.
        model: PathBuf,
        /// Input tensor (.npy, f32); its shape gives the batch and other named dims.
        #[arg(long, conflicts_with = "images")]
        input: Option<PathBuf>,
        /// A folder of .jpg/.png images, resized, centre-cropped and normalised.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Crop size for --images.
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Shorter side before cropping (default: size * 256 / 224).
        #[arg(long)]
        resize: Option<u32>,
        /// Per-channel mean for --images (default ImageNet's).
        #[arg(long, value_delimiter = ',', default_values_t = vec![0.485, 0.456, 0.406])]
        mean: Vec<f32>,
        /// Per-channel std for --images (default ImageNet's).
        #[arg(long, value_delimiter = ',', default_values_t = vec![0.229, 0.224, 0.225])]
        std: Vec<f32>,
        /// Write the first output here (.npy).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Write every output as DIR/<output name>.npy.
        #[arg(long)]
        outputs: Option<PathBuf>,
    },
}

/// Post-training techniques applied before and after calibration.
#[derive(clap::Args, Clone, Debug)]
struct PtqArgs {
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
    /// Evaluation samples for the per-layer SQNR table (0 skips it).
    #[arg(long, default_value_t = 16)]
    per_layer_samples: usize,
    /// Calibration samples used by --seq-mse and empirical bias correction.
    #[arg(long, default_value_t = 8)]
    ptq_samples: usize,
}

/// Calibration or evaluation data: an image folder (ImageNet preprocessing), IDX images
/// (Fashion-MNIST normalisation) or an .npy batch; at most `limit` samples.
fn load_data(p: &PathBuf, limit: Option<usize>) -> qforge::Result<ArrayD<f32>> {
    use qforge::data::idx;
    let x = if p.is_dir() {
        images::load_dir(p, &images::Preprocess::imagenet())?.1
    } else if idx::is_idx(p) {
        return idx::read_images(p, limit, idx::FASHION_MNIST_MEAN, idx::FASHION_MNIST_STD);
    } else {
        npy::read(p)?
    };
    Ok(match limit {
        Some(n) if n < x.shape()[0] => x.slice_axis(Axis(0), (0..n).into()).to_owned(),
        _ => x,
    })
}

#[allow(clippy::too_many_arguments)]
struct QuantizeArgs {
    model: Option<PathBuf>,
    calib: Option<PathBuf>,
    eval: Option<PathBuf>,
    labels: Option<PathBuf>,
    calib_count: Option<usize>,
    eval_count: Option<usize>,
    config: Option<PathBuf>,
    per_tensor: bool,
    scheme: qforge::quant::analyzers::Scheme,
    param_bw: u32,
    act_bw: u32,
    batch: usize,
    out: PathBuf,
    version: qforge::quant::export::EncodingsVersion,
    sim_outputs: Option<PathBuf>,
    integer: bool,
    ptq: PtqArgs,
}

fn quantize(a: QuantizeArgs) -> qforge::Result<()> {
    let QuantizeArgs { model, calib, eval, labels, calib_count, eval_count, config, per_tensor, scheme, param_bw, act_bw, batch, out, version, sim_outputs, integer, ptq } = a;
    let data_free = ptq.dfq && calib.is_none();
    use qforge::quant::{sim::{QuantOptions, QuantSim}, QuantConfig};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = model.unwrap_or_else(|| root.join("models/mobilenet_v2.onnx"));
    let calib = calib.unwrap_or_else(|| root.join("data/photos"));
    let cfg = match &config {
        Some(p) => QuantConfig::load(p)?,
        None => QuantConfig::default_per_channel(),
    };
    let cfg = if per_tensor { cfg.per_tensor() } else { cfg };
    let t = std::time::Instant::now();
    let g = graph::load(&model)?;
    let gpu = Arc::new(Gpu::new()?);
    eprintln!("adapter: {}", gpu.describe());
    let ops: std::collections::BTreeSet<&str> = g.nodes.iter().map(|n| n.op.onnx_type()).collect();
    let outside = cfg.unsupported(act_bw, param_bw, ops);
    if !outside.is_empty() {
        log::warn!("the config's supported_kernels do not list W{param_bw}A{act_bw} integer grids for: {}; the target may not run this model as simulated", outside.join(", "));
    }
    let x = load_data(&calib, calib_count)?;
    let ev = match &eval {
        Some(p) => load_data(p, eval_count)?,
        // Without --eval the calibration samples are evaluated, at most --eval-count of them.
        None => x.slice_axis(Axis(0), (0..eval_count.unwrap_or(usize::MAX).min(x.shape()[0])).into()).to_owned(),
    };
    let labels = labels.map(|l| qforge::data::idx::read_labels(&l, Some(ev.shape()[0]))).transpose()?;
    let dims: std::collections::HashMap<String, usize> = Default::default();
    let t_load = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    // AIMET applies tf-enhanced to weights too; percentile clips activations only.
    let param_range = match scheme {
        qforge::quant::analyzers::Scheme::TfEnhanced { gamma } => qforge::quant::params::ParamRange::TfEnhanced { gamma },
        _ => qforge::quant::params::ParamRange::MinMax,
    };
    let arithmetic = if integer { qforge::quant::sim::Arithmetic::Integer } else { qforge::quant::sim::Arithmetic::Float };
    let mut sim = QuantSim::new(gpu, g, &cfg, QuantOptions { param_bw, act_bw, param_range, arithmetic }, dims)?;
    let t_prepare = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let ptq_x = x.slice_axis(Axis(0), (0..x.shape()[0].min(ptq.ptq_samples.max(1))).into()).to_owned();
    let (techniques, cle_ranges) = apply_ptq_before(&mut sim, &ptq, &ptq_x, batch)?;
    let t_ptq = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    if data_free {
        sim.calibrate_data_free()?;
    } else {
        let chunks = x.shape()[0].div_ceil(batch.max(1)) as u64;
        let bar = indicatif::ProgressBar::new(chunks).with_style(indicatif::ProgressStyle::with_template("calibrating {bar:40} {pos}/{len} batches {elapsed}").expect("valid template"));
        sim.calibrate(scheme, indicatif::ProgressIterator::progress_with(x.axis_chunks_iter(Axis(0), batch.max(1)), bar.clone()))?;
        bar.finish_and_clear();
    }
    let t_calib = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut techniques = techniques;
    if ptq.bias_correction.as_deref() == Some("empirical") {
        let spinner = spinner(format!("empirical bias correction on {} samples", ptq_x.shape()[0]));
        let bc = qforge::quant::bias_correction::empirical(&mut sim, &ptq_x, batch.max(1))?;
        spinner.finish_and_clear();
        techniques.push(format!("empirical bias correction: {} layers corrected, {} skipped", bc.corrected.len(), bc.skipped.len()));
    }
    let t_ptq = t_ptq + t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let spinner = spinner(format!("evaluating FP32 and simulated on {} samples", ev.shape()[0]));
    let e = sim.evaluate(&ev, batch.max(1), labels.as_deref())?;
    spinner.set_message("per-layer SQNR");
    let t_eval = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let probe = ev.slice_axis(Axis(0), (0..ev.shape()[0].min(ptq.per_layer_samples)).into()).to_owned();
    let per_layer = if probe.shape()[0] > 0 { sim.per_layer_sqnr(&probe, batch.max(1))? } else { Vec::new() };
    spinner.finish_and_clear();
    let t_layers = t.elapsed().as_secs_f64();
    let mut worst: Vec<&(String, f64)> = per_layer.iter().collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    let stem = model.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    // Everything is written into a scratch folder first and moved into `out` at the end, so a
    // failure leaves no partial output behind.
    let t = std::time::Instant::now();
    let scratch = out.join(format!(".qforge-partial-{}", std::process::id()));
    let cleanup = |e: qforge::Error| {
        let _ = std::fs::remove_dir_all(&scratch);
        e
    };
    sim.export(&scratch, &stem, version).map_err(cleanup)?;
    let mut written = vec![format!("{stem}.onnx"), format!("{stem}.encodings")];
    if act_bw == 8 && param_bw == 8 {
        sim.export_qdq(&scratch, &stem).map_err(cleanup)?;
        written.push(format!("{stem}_qdq.onnx"));
    } else {
        eprintln!("note: QDQ export skipped (ONNX QuantizeLinear holds 8-bit grids; this run is W{param_bw}A{act_bw})");
    }
    if let Some(p) = &sim_outputs {
        npy::write(p, &sim.simulate(&ev, batch.max(1)).map_err(cleanup)?.remove(0)).map_err(cleanup)?;
    }
    let mut weight_ranges = Vec::new();
    for (name, _) in worst.iter().take(3) {
        if let Some(w) = sim.weight_ranges_for(name)? {
            if !weight_ranges.iter().any(|(n, _): &(String, Vec<(f32, f32)>)| *n == w.0) {
                weight_ranges.push(w);
            }
        }
    }
    let mut summary = vec![
        ("model".to_string(), model.display().to_string()),
        ("quantizers".to_string(), format!("{} activations, {} parameters, W{param_bw}A{act_bw}, {} arithmetic", sim.placement().activations.len(), sim.placement().params.len(), if integer { "integer (onnxruntime's)" } else { "float (AIMET's)" })),
        ("calibration".to_string(), if data_free { "data-free (batch-norm statistics)".to_string() } else { format!("{} samples, {scheme:?}", x.shape()[0]) }),
        ("techniques".to_string(), if techniques.is_empty() { "none".to_string() } else { techniques.join("; ") }),
        ("top-1 agreement (FP32 vs simulated)".to_string(), format!("{:.1}% of {}", 100.0 * e.top1_agreement, e.samples)),
        ("top-5 agreement".to_string(), format!("{:.1}%", 100.0 * e.top5_agreement)),
        ("output SQNR".to_string(), format!("{:.2} dB", e.sqnr_db)),
    ];
    if let Some((f, q)) = e.accuracy {
        summary.push(("accuracy (labels)".to_string(), format!("FP32 {:.2}%, simulated {:.2}%", 100.0 * f, 100.0 * q)));
    }
    let report = qforge::report::QuantReport {
        model: &stem,
        summary,
        per_layer: &per_layer,
        activations: sim.activation_encodings(),
        params: sim.param_encodings(),
        weight_ranges,
        cle_ranges,
    };
    qforge::graph::export::write_atomic(&scratch.join("report.html"), qforge::report::quant_report_html(&report).as_bytes()).map_err(cleanup)?;
    written.push("report.html".into());
    for f in &written {
        std::fs::rename(scratch.join(f), out.join(f)).map_err(|e| qforge::Error::Io { action: "moving into", path: out.join(f).display().to_string(), message: e.to_string() })?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let t_export = t.elapsed().as_secs_f64();
    let p = sim.placement();
    println!("model            {}", model.display());
    println!("quantizers       {} activations, {} parameters (W{param_bw}A{act_bw}, {})", p.activations.len(), p.params.len(), config.as_ref().map_or("AIMET per-channel default".to_string(), |c| c.display().to_string()));
    println!("simulation       {}", if integer { "integer: onnxruntime's kernels on the QDQ export (int32 biases), bit for bit" } else { "float: AIMET's QuantSim (--integer simulates onnxruntime's run of the QDQ export bit for bit)" });
    if data_free {
        println!("calibration      data-free: activation ranges from batch-norm statistics");
    } else {
        println!("calibration      {} samples ({}), {scheme:?}", x.shape()[0], calib.display());
    }
    for t in &techniques {
        println!("technique        {t}");
    }
    println!("evaluation       {} samples: FP32 vs simulated INT: top-1 agreement {:.1}%, top-5 {:.1}%, SQNR {:.2} dB", e.samples, 100.0 * e.top1_agreement, 100.0 * e.top5_agreement, e.sqnr_db);
    if let Some((f, q)) = e.accuracy {
        println!("accuracy         FP32 {:.2}%, simulated {:.2}% (labels)", 100.0 * f, 100.0 * q);
    }
    let worst5: Vec<String> = worst.iter().take(5).map(|(n, v)| format!("{n} {v:.1} dB")).collect();
    println!("worst layers     {} (SQNR on {} samples)", worst5.join(", "), probe.shape()[0]);
    println!("time             load {t_load:.1} s, prepare {t_prepare:.1} s, techniques {t_ptq:.1} s, calibrate {t_calib:.1} s, evaluate {t_eval:.1} s, per-layer {t_layers:.1} s, export {t_export:.2} s");
    println!("wrote            {} into {} ({stem}.onnx is the BN-folded FP32 model; encodings in AIMET {version:?})", written.join(", "), out.display());
    Ok(())
}

fn spinner(message: String) -> indicatif::ProgressBar {
    let s = indicatif::ProgressBar::new_spinner().with_message(message);
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}

/// Per-output-channel weight ranges of every equalized layer, before and after CLE.
type CleRanges = Vec<(String, Vec<[f32; 4]>, Vec<[f32; 4]>)>;

/// The techniques that run before calibration (CLE, analytical bias correction, seq-MSE);
/// returns a line per technique and the weight ranges CLE changed.
fn apply_ptq_before(sim: &mut qforge::quant::sim::QuantSim, ptq: &PtqArgs, x: &ArrayD<f32>, batch: usize) -> qforge::Result<(Vec<String>, CleRanges)> {
    use qforge::quant::params::channel_summary;
    let mut lines = Vec::new();
    let mut ranges = Vec::new();
    if ptq.cle || ptq.dfq {
        let before = sim.prepared(1)?;
        let r = sim.equalize(Default::default())?;
        let after = sim.prepared(1)?;
        let probe = x.slice_axis(Axis(0), (0..x.shape()[0].min(4)).into()).to_owned();
        let change = sim.fp32_change_db(&probe, batch.max(1))?;
        for name in r.sets.iter().flatten() {
            let Some(n) = after.nodes.iter().find(|n| &n.name == name) else { continue };
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
            probe.shape()[0],
            if r.zero_channels.is_empty() { String::new() } else { format!(", zero-range channels left alone: {:?}", r.zero_channels) }
        ));
    }
    if ptq.bias_correction.as_deref() == Some("analytical") || ptq.dfq {
        let bc = qforge::quant::bias_correction::analytical(sim)?;
        let skipped: Vec<String> = bc.skipped.iter().map(|(n, why)| format!("{n}: {why}")).collect();
        lines.push(format!("analytical bias correction: {} layers corrected, {} skipped{}", bc.corrected.len(), skipped.len(), if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join(", ")) }));
    }
    if ptq.seq_mse {
        let s = spinner(format!("sequential MSE on {} samples, {} candidates per layer", x.shape()[0], ptq.seq_mse_candidates));
        let r = qforge::quant::seq_mse::apply(sim, x, batch.max(1), ptq.seq_mse_candidates)?;
        s.finish_and_clear();
        let mean_frac = r.layers.iter().map(|l| l.1).sum::<f32>() / r.layers.len().max(1) as f32;
        lines.push(format!("seq-MSE: {} layers, mean chosen range {:.0}% of max |w|", r.layers.len(), 100.0 * mean_frac));
    }
    Ok((lines, ranges))
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    Ok((k.to_string(), v.parse().map_err(|_| format!("'{v}' is not a size"))?))
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn inspect(model: &PathBuf, batch: usize, dims: &[(String, usize)]) -> qforge::Result<()> {
    let g = match graph::load(model) {
        Err(qforge::Error::Unsupported { model, opset, ops }) => {
            println!("model: {model} (opset {opset})");
            println!("unsupported ops ({}):", ops.len());
            for o in &ops {
                println!("  {o}");
            }
            return Err(qforge::Error::Unsupported { model, opset, ops });
        }
        other => other?,
    };
    println!("model: {} (opset {}, producer '{}')", model.display(), g.opset, g.producer);
    for i in &g.inputs {
        let d: Vec<String> = g.input_dims[i].iter().map(|d| match d { Dim::Fixed(v) => v.to_string(), Dim::Named(n) => n.clone() }).collect();
        println!("input  {i}: [{}]", d.join(", "));
    }
    let mut r = g.clone();
    r.resolve_with_batch(&dims.iter().cloned().collect(), Some(batch))?;
    for o in &r.outputs {
        println!("output {o}: {:?} (batch {batch})", r.shapes[o]);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &r.nodes {
        *counts.entry(n.op.onnx_type()).or_default() += 1;
    }
    println!("ops: {}", counts.iter().map(|(k, v)| format!("{k} x{v}")).collect::<Vec<_>>().join(", "));
    let costs = cost::layer_costs(&r);
    let total_macs: u64 = costs.iter().map(|c| c.macs).sum();
    println!("parameters: {} ({} bytes as f32)", human(r.param_count() as u64), human(r.param_count() as u64 * 4));
    println!("MACs (batch {batch}): {}", human(total_macs));
    println!("unsupported ops: none");
    println!("\n{:<40} {:<20} {:>12} {:>10} {:>6}  output", "layer", "op", "MACs", "params", "%MACs");
    for c in costs.iter().filter(|c| c.macs > 0 || c.params > 0) {
        let pct = if total_macs > 0 { 100.0 * c.macs as f64 / total_macs as f64 } else { 0.0 };
        println!("{:<40} {:<20} {:>12} {:>10} {:>5.1}%  {:?}", c.node, c.op, human(c.macs), human(c.params), pct, c.output_shape);
    }
    Ok(())
}

/// File name for an output: characters other than letters, digits, '-', '_' and '.' become '_'.
fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() { "output".into() } else { s }
}

#[allow(clippy::too_many_arguments)]
fn run(model: &PathBuf, input: Option<&PathBuf>, image_dir: Option<&PathBuf>, pre: images::Preprocess, output: Option<&PathBuf>, outputs: Option<&PathBuf>) -> qforge::Result<()> {
    let g = graph::load(model)?;
    if g.inputs.len() != 1 {
        return Err(qforge::Error::Graph { model: model.display().to_string(), message: format!("`run` feeds one input; this model has {:?}", g.inputs) });
    }
    let (names, x): (Vec<String>, ArrayD<f32>) = match (input, image_dir) {
        (Some(p), None) => (vec![p.display().to_string()], npy::read(p)?),
        (None, Some(d)) => {
            let (files, x) = images::load_dir(d, &pre)?;
            (files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect(), x)
        }
        _ => return Err(qforge::Error::invalid("run", "input", "none", "give --input FILE.npy or --images DIR")),
    };
    let gpu = Arc::new(Gpu::new()?);
    eprintln!("adapter: {}", gpu.describe());
    let exec = Executor::new(gpu, g);
    let input_name = exec.graph().inputs[0].clone();
    let t0 = std::time::Instant::now();
    let ys = exec.run(&[(&input_name, x.view())])?;
    eprintln!("ran {} on {:?} in {:.3} s", model.display(), x.shape(), t0.elapsed().as_secs_f64());
    let y = &ys[0];
    if y.ndim() == 2 && y.shape()[1] > 1 {
        for (i, row) in y.axis_iter(Axis(0)).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let label = if names.len() == y.shape()[0] { names[i].clone() } else { format!("{} [{i}]", names[0]) };
            let top: Vec<String> = idx.iter().take(5).map(|&k| format!("{k} ({:.3})", row[k])).collect();
            println!("{label}: top-5 {}", top.join(", "));
        }
    } else {
        println!("output {:?}: shape {:?}", exec.graph().outputs[0], y.shape());
    }
    if let Some(p) = output {
        npy::write(p, y)?;
    }
    if let Some(dir) = outputs {
        std::fs::create_dir_all(dir).map_err(|e| qforge::Error::Io { action: "creating", path: dir.display().to_string(), message: e.to_string() })?;
        for (name, y) in exec.graph().outputs.iter().zip(&ys) {
            npy::write(&dir.join(format!("{}.npy", sanitize(name))), y)?;
        }
    }
    Ok(())
}

fn devices(check: bool) -> qforge::Result<()> {
    let adapters = list_adapters();
    let filter = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty());
    let low_power = matches!(std::env::var("WGPU_POWER_PREF").as_deref(), Ok("low") | Ok("low-power"));
    let chosen = pick_adapter(&adapters, filter.as_deref(), low_power);
    if adapters.is_empty() {
        println!("no adapters found");
    }
    for (i, a) in adapters.iter().enumerate() {
        let mark = if Some(i) == chosen { "*" } else { " " };
        println!("{mark} [{i}] {} ({:?}, {:?})", a.name, a.backend, a.device_type);
        println!("      driver: {} {}", a.driver, a.driver_info);
        println!(
            "      max storage binding {} MiB, max buffer {} MiB, {} workgroups/dim, {} invocations/workgroup, {} KiB workgroup memory",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroups_per_dim,
            a.max_invocations,
            a.workgroup_storage >> 10
        );
        println!("      subgroups: {}, timestamps: {}, f16: {}", a.subgroups, a.timestamps, a.f16);
    }
    if let Some(i) = chosen {
        let a = &adapters[i];
        let soft = if a.is_software() { " (software: correct but slow)" } else { "" };
        println!("qforge uses [{i}] {}{soft}", a.name);
    }
    if check || chosen.is_none() {
        let gpu = Gpu::new()?;
        for family in qforge::gpu::kernels::Family::ALL {
            gpu.check_family(family)?;
        }
        println!("device created on {}; every kernel family builds", gpu.describe());
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { check } => devices(check),
        Command::Inspect { model, batch, dims } => inspect(&model, batch, &dims),
        Command::Quantize { model, calib, eval, labels, calib_count, eval_count, config, per_tensor, scheme, param_bw, act_bw, batch, out, encodings_version, sim_outputs, integer, ptq } => {
            quantize(QuantizeArgs { model, calib, eval, labels, calib_count, eval_count, config, per_tensor, scheme, param_bw, act_bw, batch, out, version: encodings_version, sim_outputs, integer, ptq })
        }
        Command::Compress(args) => cli::compress::run(args),
        Command::Run { model, input, images: dir, size, resize, mean, std, output, outputs } => {
            let channels = mean.len();
            let pre = images::Preprocess { size, resize: resize.unwrap_or(size * 256 / 224), mean, std, channels };
            run(&model, input.as_ref(), dir.as_ref(), pre, output.as_ref(), outputs.as_ref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
