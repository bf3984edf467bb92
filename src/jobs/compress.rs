//! `compress`: spatial/weight SVD and channel pruning with per-layer ratios chosen greedily to
//! a target; writes the compressed model and the report at once (score tables are kept as a
//! cache in `<out>/<model>.scores/`, each written whole).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Axis;

use crate::compress::pipeline::{compress as compress_model, Outcome};
use crate::compress::{CompressOptions, CostMetric, Method, Scorer};
use crate::data;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::jobs::output::Outputs;
use crate::jobs::{at_least_one, Progress};

/// Everything `compress` needs.
#[derive(Clone, Debug)]
pub struct CompressJob {
    pub model: PathBuf,
    /// Methods in order.
    pub methods: Vec<Method>,
    /// Target, ratios, candidates, layers to leave alone, rebuild settings.
    pub options: CompressOptions,
    /// Evaluation data (also the samples pruned layers are rebuilt from).
    pub eval: PathBuf,
    pub eval_count: Option<usize>,
    /// Labels of the evaluation data (IDX): score by accuracy.
    pub labels: Option<PathBuf>,
    /// Score every layer again even if a matching table is saved.
    pub rescore: bool,
    pub out: PathBuf,
}

/// What `compress` did.
pub struct CompressOutcome {
    pub adapter: String,
    pub outcome: Outcome,
    /// The report's summary (label, value).
    pub summary: Vec<(String, String)>,
    pub written: Vec<PathBuf>,
    pub tables: PathBuf,
}

/// Runs `compress`; `progress` hears of every evaluation.
pub fn compress(job: &CompressJob, progress: &mut dyn Progress) -> Result<CompressOutcome> {
    job.options.validate()?;
    at_least_one("compress", "--multiplicity", job.options.multiplicity)?;
    if let Some(n) = job.eval_count {
        at_least_one("compress", "--eval-count", n)?;
    }
    if job.methods.is_empty() {
        return Err(Error::invalid(
            "compress",
            "--method",
            "none",
            "give at least one of ssvd, wsvd, cp",
        ));
    }
    let t0 = std::time::Instant::now();
    let inputs: Vec<&Path> = [
        Some(job.model.as_path()),
        Some(job.eval.as_path()),
        job.labels.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let stem = job
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    Outputs::check(
        &job.out,
        &[format!("{stem}_compressed.onnx"), "report.html".into()],
        &inputs,
    )?;
    let g = crate::graph::load(&job.model)?;
    g.check_finite_weights()?;
    let unknown: Vec<&String> = job
        .options
        .ignore
        .iter()
        .filter(|n| !g.nodes.iter().any(|m| &m.name == *n))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(
            "compress",
            "--ignore",
            format!("{unknown:?}"),
            "no node of the model has this name (see `qforge inspect`)",
        ));
    }
    let x = data::load(&job.eval, job.eval_count)?;
    let labels = job
        .labels
        .as_ref()
        .map(|l| data::idx::read_labels(l, Some(x.len_of(Axis(0)))))
        .transpose()?;
    let gpu = Arc::new(Gpu::new()?);
    let scorer = Scorer::new(gpu.clone(), &g, x, labels)?;
    let mut out = Outputs::new(&job.out, &inputs)?;
    let tables = job.out.join(format!("{stem}.scores"));
    if job.rescore {
        for m in &job.methods {
            let _ = std::fs::remove_file(tables.join(format!("{}.scores.json", m.name())));
        }
    }
    let outcome = compress_model(
        gpu.clone(),
        &g,
        &job.methods,
        &job.options,
        &scorer,
        Some(&tables),
        |m, done, total| progress.step(&format!("scoring {} layers", m.name()), done, total),
    )?;
    let summary = summary_lines(job, &scorer, &outcome, t0.elapsed().as_secs_f64());
    crate::graph::export::save(
        &outcome.graph,
        &out.path(&format!("{stem}_compressed.onnx"))?,
        Some(&job.model),
    )?;
    out.write(
        "report.html",
        crate::report::compress::compress_report_html(&stem, &summary, &outcome).as_bytes(),
    )?;
    let written = out.commit()?;
    Ok(CompressOutcome {
        adapter: gpu.describe(),
        outcome,
        summary,
        written,
        tables,
    })
}

fn summary_lines(
    job: &CompressJob,
    scorer: &Scorer,
    outcome: &Outcome,
    seconds: f64,
) -> Vec<(String, String)> {
    let what = if scorer.labelled() {
        "accuracy"
    } else {
        "top-1 agreement with FP32"
    };
    let ratio = |after: u64, before: u64| after as f64 / before.max(1) as f64;
    let (c0, c1) = (outcome.cost_before, outcome.cost_after);
    let o = &job.options;
    let mut summary = vec![
        ("model".to_string(), job.model.display().to_string()),
        (
            "methods".to_string(),
            job.methods
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(" then "),
        ),
        (
            "target".to_string(),
            format!("{} of the {}", o.target, o.metric.name()),
        ),
        (
            "MACs (batch 1)".to_string(),
            format!(
                "{} -> {} ({:.3})",
                c0.macs,
                c1.macs,
                ratio(c1.macs, c0.macs)
            ),
        ),
        (
            "parameters".to_string(),
            format!(
                "{} -> {} ({:.3})",
                c0.params,
                c1.params,
                ratio(c1.params, c0.params)
            ),
        ),
        (
            format!("{what} on {} samples", scorer.images().len_of(Axis(0))),
            format!(
                "{:.2}% -> {:.2}%",
                100.0 * outcome.score_before,
                100.0 * outcome.score_after
            ),
        ),
    ];
    for st in &outcome.stages {
        let chosen =
            st.selection
                .as_ref()
                .map_or("skipped (share out of reach)".to_string(), |s| {
                    let n = s.ratios.iter().filter(|r| r.1 < 1.0).count();
                    format!(
                        "{n} of {} layers compressed, threshold {:.3}",
                        s.ratios.len(),
                        s.threshold
                    )
                });
        summary.push((
            format!("{} stage", st.method.name()),
            format!(
                "{chosen}; {} layers skipped; {}{:.1} s",
                st.skipped.len(),
                if st.reused_scores {
                    "scores reused, "
                } else {
                    ""
                },
                st.seconds
            ),
        ));
    }
    summary.push(("total time".to_string(), format!("{seconds:.1} s")));
    summary
}

/// The target as (ratio, metric) from the two flags (MACs 0.5 when neither is given).
pub fn target(macs: Option<f64>, memory: Option<f64>) -> (f64, CostMetric) {
    match (macs, memory) {
        (_, Some(t)) => (t, CostMetric::Memory),
        (Some(t), None) => (t, CostMetric::Macs),
        (None, None) => (0.5, CostMetric::Macs),
    }
}
