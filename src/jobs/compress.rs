//! `compress`: spatial/weight SVD and channel pruning with per-layer ratios chosen greedily to
//! a target; writes the compressed model and the report at once (score tables are kept as a
//! cache in `<out>/<model>.scores/`, each written whole).
//!
//! The data is split by image three ways: held-out images (`--holdout` of it, or `--eval`)
//! that only the headline figures use; scoring images the greedy selection scores layers on,
//! which also check each rebuild's ridge; and rebuild images the least-squares rebuilds fit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compress::pipeline::{compress as compress_model, Outcome};
use crate::compress::rebuild::Rebuild;
use crate::compress::{CompressOptions, CostMetric, Method, Scorer};
use crate::data;
use crate::data::split::{draw, take, SEED};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::Prepared;
use crate::jobs::finetune::{default_augment, tune, tuned_lines, TrainSettings, Tuned};
use crate::jobs::output::Outputs;
use crate::jobs::sets::{Sets, SetsRequest};
use crate::jobs::{at_least_one, Progress};

/// Everything `compress` needs.
#[derive(Clone, Debug)]
pub struct CompressJob {
    pub model: PathBuf,
    /// Methods in order.
    pub methods: Vec<Method>,
    /// Target, ratios, candidates, layers to leave alone, rebuild settings.
    pub options: CompressOptions,
    /// The images compression fits and scores on; `holdout` of them is held out unless
    /// `eval` is given.
    pub data: PathBuf,
    /// An explicit held-out evaluation set.
    pub eval: Option<PathBuf>,
    pub holdout: f64,
    /// At most this many fitting (scoring + rebuild) images, and held-out images.
    pub data_count: Option<usize>,
    pub eval_count: Option<usize>,
    /// Labels (IDX) of the images the held-out figures come from (of `eval`, or of `data`):
    /// score by accuracy.
    pub labels: Option<PathBuf>,
    /// Fitting images each layer is scored on; the rest (at most `rebuild_count`) rebuild
    /// pruned layers.
    pub score_count: usize,
    pub rebuild_count: usize,
    /// Also write the held-out inputs here (.npy).
    pub eval_inputs: Option<PathBuf>,
    /// Score every layer again even if a matching table is saved.
    pub rescore: bool,
    /// Then fine-tune the compressed model on the fitting images by distillation from the
    /// original (its loss is always `kd`).
    pub finetune: Option<TrainSettings>,
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
    /// The fine-tuning, when asked for; its model is the one written.
    pub tuned: Option<Tuned>,
}

/// Runs `compress`; `progress` hears of every evaluation.
pub fn compress(job: &CompressJob, progress: &mut dyn Progress) -> Result<CompressOutcome> {
    job.options.validate()?;
    at_least_one("compress", "--multiplicity", job.options.multiplicity)?;
    for (flag, n) in [
        ("--eval-count", job.eval_count),
        ("--data-count", job.data_count),
    ] {
        if let Some(n) = n {
            at_least_one("compress", flag, n)?;
        }
    }
    at_least_one("compress", "--score-count", job.score_count)?;
    at_least_one("compress", "--rebuild-count", job.rebuild_count)?;
    if let Some(t) = &job.finetune {
        t.validate(&job.data)?;
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
        Some(job.data.as_path()),
        job.eval.as_deref(),
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
        &[
            format!("{stem}_compressed.onnx"),
            "report.html".into(),
            "split.json".into(),
        ],
        &inputs,
    )?;
    if let Some(p) = &job.eval_inputs {
        crate::files::check_output(p, &inputs)?;
    }
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
    let sets = Sets::load(&SetsRequest {
        what: "the compression data",
        model: &g,
        data: &job.data,
        eval: job.eval.as_deref(),
        labels: job.labels.as_deref(),
        data_labels: None,
        holdout: job.holdout,
        fit_count: job.data_count,
        eval_count: job.eval_count,
    })?;
    let (score_idx, rebuild_idx) = fitting_parts(job, sets.fit_len())?;
    let (fit, eval) = sets.single("compress")?;
    let gpu = Arc::new(Gpu::new()?);
    let part_labels = |idx: &[usize]| {
        sets.fit_labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect::<Vec<_>>())
    };
    let scorer = Scorer::new(
        gpu.clone(),
        &g,
        take(&fit, &score_idx),
        part_labels(&score_idx),
    )?;
    let rebuild_images = take(&fit, &rebuild_idx);
    let held = Scorer::new(gpu.clone(), &g, eval.clone(), sets.eval_labels.clone())?;
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
        &rebuild_images,
        Some(&tables),
        |m: Method, done, total| {
            progress.step(&format!("scoring {} layers", m.name()), done, total)
        },
    )?;
    let tuned = match &job.finetune {
        Some(settings) => {
            let settings = TrainSettings {
                loss: Some("kd".into()),
                ..settings.clone()
            };
            let augment = default_augment(&settings, &job.data)?;
            Some(tune(
                gpu.clone(),
                &Prepared::new(outcome.graph.clone()),
                &Prepared::new(g.clone()),
                &sets,
                &settings,
                augment,
                None,
                false,
                progress,
            )?)
        }
        None => None,
    };
    let model = tuned.as_ref().map_or(&outcome.graph, |t| &t.graph);
    progress.phase(&format!(
        "evaluating on {} {} images",
        sets.eval_len(),
        sets.label()
    ));
    let held_out = HeldOutScores {
        labelled: held.labelled(),
        before: held.baseline(),
        after: held.evaluate(model)?,
    };
    for st in &outcome.stages {
        let few: Vec<&Rebuild> = st.rebuilds.iter().filter(|r| r.few_images()).collect();
        for r in &few {
            log::warn!(
                "{}: rebuilt from {} images for {} unknowns per output (AIMET's 10 positions per image want {}); on the {} check images the relative output error is {:.4} rebuilt vs {:.4} sliced: {}",
                r.node,
                r.fit_images,
                r.features,
                r.images_wanted(),
                r.check_images,
                r.rebuilt_error,
                r.sliced_error,
                if r.ridge.is_some() { "rebuild kept" } else { "sliced weights kept" }
            );
        }
    }
    let counts = Counts {
        score: score_idx.len(),
        rebuild: rebuild_idx.len(),
    };
    let mut summary = summary_lines(
        job,
        &sets,
        counts,
        &scorer,
        &outcome,
        held_out,
        t0.elapsed().as_secs_f64(),
    );
    if let (Some(t), Some(s)) = (&tuned, &job.finetune) {
        summary.extend(
            tuned_lines(t, s, sets.label(), sets.eval_len())
                .into_iter()
                .map(|(k, v)| (format!("fine-tuning: {k}"), v)),
        );
    }
    crate::graph::export::save(
        model,
        &out.path(&format!("{stem}_compressed.onnx"))?,
        Some(&job.model),
    )?;
    out.write(
        "report.html",
        crate::report::compress::compress_report_html(&stem, &summary, &outcome).as_bytes(),
    )?;
    out.write("split.json", sets.to_json().as_bytes())?;
    let mut written = out.commit()?;
    if let Some(p) = &job.eval_inputs {
        data::npy::write(p, &eval)?;
        written.push(p.clone());
    }
    Ok(CompressOutcome {
        adapter: gpu.describe(),
        outcome,
        summary,
        written,
        tables,
        tuned,
    })
}

/// Held-out figures: the original's score, and the compressed model's score and logits SQNR.
#[derive(Clone, Copy)]
struct HeldOutScores {
    /// Accuracy on labels (otherwise top-1 agreement with the original).
    labelled: bool,
    before: f64,
    after: (f64, f64),
}

/// How many fitting images score layers and how many rebuild them.
#[derive(Clone, Copy)]
struct Counts {
    score: usize,
    rebuild: usize,
}

/// Splits the fitting images (by a seeded permutation) into the scoring images and the rebuild
/// images; channel pruning needs at least one of each.
fn fitting_parts(job: &CompressJob, n: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let prunes = job.methods.contains(&Method::ChannelPruning);
    if prunes && n < 2 {
        return Err(Error::invalid(
            "compress",
            "data",
            format!("{n} fitting image(s)"),
            "channel pruning needs at least 2 fitting images besides the held-out ones: some to rebuild layers on, others to score and check them",
        ));
    }
    let s = job.score_count.min(if prunes { n - 1 } else { n });
    let (mut score, mut rebuild) = draw(n, s, SEED + 1);
    rebuild.truncate(job.rebuild_count);
    score.sort_unstable();
    rebuild.sort_unstable();
    Ok((score, rebuild))
}

fn summary_lines(
    job: &CompressJob,
    sets: &Sets,
    counts: Counts,
    scorer: &Scorer,
    outcome: &Outcome,
    held: HeldOutScores,
    seconds: f64,
) -> Vec<(String, String)> {
    let name = |labelled: bool| {
        if labelled {
            "accuracy"
        } else {
            "top-1 agreement with FP32"
        }
    };
    let (what, held_what) = (name(scorer.labelled()), name(held.labelled));
    let ratio = |after: u64, before: u64| after as f64 / before.max(1) as f64;
    let (c0, c1) = (outcome.cost_before, outcome.cost_after);
    let o = &job.options;
    let label = sets.label();
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
        ("evaluation".to_string(), sets.describe()),
        (
            format!("{held_what} ({label}, {} images)", sets.eval_len()),
            format!(
                "{:.2}% -> {:.2}%",
                100.0 * held.before,
                100.0 * held.after.0
            ),
        ),
        (
            format!("logits SQNR vs FP32 ({label})"),
            format!("{:.2} dB", held.after.1),
        ),
        (
            "fitting images".to_string(),
            format!(
                "{} score layers for the greedy selection and check rebuilds; {} rebuild pruned layers",
                counts.score, counts.rebuild
            ),
        ),
        (
            format!("{what} on the {} scoring images (in-sample to the selection)", counts.score),
            format!(
                "{:.2}% -> {:.2}%",
                100.0 * outcome.score_before,
                100.0 * outcome.score_after
            ),
        ),
    ];
    let rebuilds: Vec<&Rebuild> = outcome.stages.iter().flat_map(|s| &s.rebuilds).collect();
    if !rebuilds.is_empty() {
        let kept = rebuilds.iter().filter(|r| r.ridge.is_some()).count();
        let few = rebuilds.iter().filter(|r| r.few_images()).count();
        summary.push((
            "rebuilds".to_string(),
            format!(
                "{kept} of {} pruned layers rebuilt, {} kept their sliced weights (no rebuild beat them on the check images); {few} rest on fewer images than AIMET's rule wants (see the rebuild table)",
                rebuilds.len(),
                rebuilds.len() - kept
            ),
        ));
    }
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
