//! `qforge compress`: spatial/weight SVD and channel pruning with automatic per-layer ratios.

use std::path::PathBuf;
use std::sync::Arc;

use qforge::compress::pipeline::compress;
use qforge::compress::{CompressOptions, CostMetric, Method, Scorer};
use qforge::gpu::Gpu;
use qforge::graph;

/// Arguments of `qforge compress`.
#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    /// The ONNX model (default: the bundled MobileNetV2).
    model: Option<PathBuf>,
    /// Target MAC ratio of the compressed model, in (0, 1].
    #[arg(long, conflicts_with = "target_memory")]
    target_macs: Option<f64>,
    /// Target parameter-memory ratio instead, in (0, 1].
    #[arg(long)]
    target_memory: Option<f64>,
    /// Methods in order: ssvd, wsvd, cp, or a comma list such as ssvd,cp.
    #[arg(long, default_value = "ssvd,cp")]
    method: String,
    /// Evaluation data: a folder of images, an .npy batch or IDX images (default: the bundled
    /// photos). Pruned layers are also rebuilt from samples of it.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Labels of the evaluation data (IDX): score by accuracy instead of agreement with FP32.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Use at most this many evaluation samples.
    #[arg(long)]
    eval_count: Option<usize>,
    /// Candidate per-layer ratios.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])]
    candidates: Vec<f64>,
    /// Layers (node names) to leave alone, comma separated.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Round ranks and kept channels to a multiple of this.
    #[arg(long, default_value_t = 1)]
    multiplicity: usize,
    /// Output positions sampled per image for the least-squares rebuild of pruned layers.
    #[arg(long, default_value_t = 10)]
    samples_per_image: usize,
    /// How pruning ranks input channels: magnitude (AIMET's L1 norm of the weights) or energy
    /// (each channel's output energy on the sampled inputs).
    #[arg(long, default_value = "magnitude")]
    selection: String,
    /// Prune without rebuilding the weights by least squares.
    #[arg(long)]
    no_reconstruct: bool,
    /// Evaluate every layer again even if a matching score table is saved in --out.
    #[arg(long)]
    rescore: bool,
    /// Output folder.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

/// Runs `qforge compress`.
pub fn run(a: CompressArgs) -> qforge::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = a.model.unwrap_or_else(|| root.join("models/mobilenet_v2.onnx"));
    let eval = a.eval.unwrap_or_else(|| root.join("data/photos"));
    let (target, metric) = match (a.target_macs, a.target_memory) {
        (_, Some(t)) => (t, CostMetric::Memory),
        (Some(t), None) => (t, CostMetric::Macs),
        (None, None) => (0.5, CostMetric::Macs),
    };
    let methods = a.method.split(',').map(Method::parse).collect::<qforge::Result<Vec<_>>>()?;
    let selection = match a.selection.as_str() {
        "magnitude" => qforge::compress::prune::Selection::Magnitude,
        "energy" => qforge::compress::prune::Selection::Energy,
        other => return Err(qforge::Error::invalid("compress", "selection", other, "expected magnitude or energy")),
    };
    let opts = CompressOptions { selection, target, metric, candidates: a.candidates, ignore: a.ignore, multiplicity: a.multiplicity, samples_per_image: a.samples_per_image, reconstruct: !a.no_reconstruct, ..Default::default() };
    opts.validate()?;
    let t0 = std::time::Instant::now();
    let g = graph::load(&model)?;
    let gpu = Arc::new(Gpu::new()?);
    eprintln!("adapter: {}", gpu.describe());
    let x = crate::load_data(&eval, a.eval_count)?;
    let labels = a.labels.map(|l| qforge::data::idx::read_labels(&l, Some(x.shape()[0]))).transpose()?;
    let scorer = Scorer::new(gpu.clone(), &g, x, labels)?;
    std::fs::create_dir_all(&a.out).map_err(|e| qforge::Error::Io { action: "creating", path: a.out.display().to_string(), message: e.to_string() })?;
    let stem = model.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    let tables = a.out.join(format!("{stem}.scores"));
    std::fs::create_dir_all(&tables).map_err(|e| qforge::Error::Io { action: "creating", path: tables.display().to_string(), message: e.to_string() })?;
    if a.rescore {
        for m in &methods {
            let _ = std::fs::remove_file(tables.join(format!("{}.scores.json", m.name())));
        }
    }
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} evaluations {elapsed}").expect("valid template"));
    let outcome = compress(gpu, &g, &methods, &opts, &scorer, Some(&tables), |m, done, total| {
        bar.set_message(format!("scoring {} layers", m.name()));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let what = if scorer.labelled() { "accuracy" } else { "top-1 agreement with FP32" };
    let ratio = |after: u64, before: u64| after as f64 / before.max(1) as f64;
    let (c0, c1) = (outcome.cost_before, outcome.cost_after);
    let mut summary = vec![
        ("model".to_string(), model.display().to_string()),
        ("methods".to_string(), methods.iter().map(|m| m.name()).collect::<Vec<_>>().join(" then ")),
        ("target".to_string(), format!("{target} of the {}", metric.name())),
        ("MACs (batch 1)".to_string(), format!("{} -> {} ({:.3})", c0.macs, c1.macs, ratio(c1.macs, c0.macs))),
        ("parameters".to_string(), format!("{} -> {} ({:.3})", c0.params, c1.params, ratio(c1.params, c0.params))),
        (format!("{what} on {} samples", scorer.images().shape()[0]), format!("{:.2}% -> {:.2}%", 100.0 * outcome.score_before, 100.0 * outcome.score_after)),
    ];
    for st in &outcome.stages {
        let chosen = st.selection.as_ref().map_or("skipped (share out of reach)".to_string(), |s| {
            let n = s.ratios.iter().filter(|r| r.1 < 1.0).count();
            format!("{n} of {} layers compressed, threshold {:.3}", s.ratios.len(), s.threshold)
        });
        summary.push((format!("{} stage", st.method.name()), format!("{chosen}; {} layers skipped; {}{:.1} s", st.skipped.len(), if st.reused_scores { "scores reused, " } else { "" }, st.seconds)));
    }
    summary.push(("total time".to_string(), format!("{:.1} s", t0.elapsed().as_secs_f64())));
    let onnx = a.out.join(format!("{stem}_compressed.onnx"));
    graph::export::save(&outcome.graph, &onnx, Some(&model))?;
    let html = qforge::report::compress::compress_report_html(&stem, &summary, &outcome);
    graph::export::write_atomic(&a.out.join("report.html"), html.as_bytes())?;
    for (k, v) in &summary {
        println!("{k:<36} {v}");
    }
    println!("wrote {}, {}, score tables in {}", onnx.display(), a.out.join("report.html").display(), tables.display());
    Ok(())
}
