//! `finetune`: a model trained on the GPU (BN-folded, every Conv/Gemm/MatMul weight and bias
//! trainable unless frozen) with cross-entropy on labels or by distillation from a teacher (by
//! default the model's own original), evaluated on held-out images after every epoch; writes
//! the fine-tuned ONNX, the training report and the split at once, and a checkpoint after every
//! epoch that `--resume` continues from.
//!
//! [`tune`] is the part `compress --finetune-epochs` shares: settings to a [`TrainConfig`], the
//! epoch loop, held-out scores.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compress::Scorer;
use crate::data::augment::Augment;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::ir::Graph;
use crate::graph::Prepared;
use crate::jobs::output::Outputs;
use crate::jobs::sets::{HeldOut, Sets, SetsRequest};
use crate::jobs::{at_least_one, Progress};
use crate::train::fit::{self, FitData, FitOptions, FitProgress, Fitted};
use crate::train::{LossKind, Optimizer, Schedule, TrainConfig};

/// How to train: the settings `finetune` and `compress --finetune-epochs` share.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub epochs: usize,
    pub lr: f32,
    /// Images per micro-batch.
    pub batch: usize,
    /// sgd, adam or adamw.
    pub optimizer: String,
    /// constant, step or cosine.
    pub schedule: String,
    /// Replaces the optimizer's default weight decay.
    pub weight_decay: Option<f32>,
    /// SGD's momentum (default 0.9) and Nesterov's form of it.
    pub momentum: Option<f32>,
    pub nesterov: bool,
    /// ce (labels), kd (distillation from the teacher) or mse (to the teacher's outputs);
    /// `None`: ce with labels, kd without.
    pub loss: Option<String>,
    pub temperature: f32,
    pub max_grad_norm: Option<f32>,
    /// Micro-batches per optimizer step.
    pub accumulate: usize,
    /// Parameters not trained: a parameter name or the name of the node it feeds, `*`
    /// matching any run of characters.
    pub freeze: Vec<String>,
    /// none, or a comma list of flip, crop (`None`: crop,flip for image folders, none else).
    pub augment: Option<String>,
    /// Smallest area share a crop keeps.
    pub crop_scale: f64,
    pub seed: u64,
    /// Read the loss back every this many micro-batches.
    pub read_every: usize,
    /// Recompute pointwise expansions' activations instead of keeping them (the default:
    /// less memory for at most a tenth more time per step).
    pub recompute: bool,
}

impl Default for TrainSettings {
    fn default() -> TrainSettings {
        TrainSettings {
            epochs: 1,
            lr: 1e-4,
            batch: 32,
            optimizer: "adam".into(),
            schedule: "cosine".into(),
            weight_decay: None,
            momentum: None,
            nesterov: false,
            loss: None,
            temperature: 2.0,
            max_grad_norm: None,
            accumulate: 1,
            freeze: Vec::new(),
            augment: None,
            crop_scale: 0.35,
            seed: 0,
            read_every: 10,
            recompute: true,
        }
    }
}

impl TrainSettings {
    /// Checks every setting before any work: counts, rates, names, augmentation.
    pub fn validate(&self, data: &Path) -> Result<()> {
        config(self, 1, true)?;
        default_augment(self, data)?;
        Ok(())
    }
}

/// Everything `finetune` needs.
#[derive(Clone, Debug)]
pub struct FinetuneJob {
    pub model: PathBuf,
    /// Training images: a folder, .npy or IDX.
    pub data: PathBuf,
    /// Labels (IDX) of `data`.
    pub labels: Option<PathBuf>,
    /// The model distilled from (default: `model` itself, as it was).
    pub teacher: Option<PathBuf>,
    /// An explicit held-out evaluation set, and its labels.
    pub eval: Option<PathBuf>,
    pub eval_labels: Option<PathBuf>,
    /// Share of `data` held out when there is no `eval`.
    pub holdout: f64,
    pub data_count: Option<usize>,
    pub eval_count: Option<usize>,
    pub train: TrainSettings,
    /// Continue from `<out>/checkpoint.qfck`.
    pub resume: bool,
    pub out: PathBuf,
}

/// What `finetune` did.
pub struct FinetuneOutcome {
    pub adapter: String,
    pub tuned: Tuned,
    pub summary: Vec<(String, String)>,
    pub written: Vec<PathBuf>,
}

/// A fine-tuned model and how it got there.
pub struct Tuned {
    /// The trained model, resolved at batch 1.
    pub graph: Graph,
    pub fitted: Fitted,
    /// "accuracy" or "top-1 agreement with the teacher".
    pub metric: &'static str,
    pub loss: LossKind,
    /// Parameters trained, of all the trainable ones.
    pub trained: usize,
    pub trainable: usize,
    pub augment: Augment,
}

/// The checkpoint's name in the output folder.
pub const CHECKPOINT: &str = "checkpoint.qfck";

/// Runs `finetune`.
pub fn finetune(job: &FinetuneJob, progress: &mut dyn Progress) -> Result<FinetuneOutcome> {
    let t0 = std::time::Instant::now();
    let inputs: Vec<&Path> = [
        Some(job.model.as_path()),
        Some(job.data.as_path()),
        job.labels.as_deref(),
        job.teacher.as_deref(),
        job.eval.as_deref(),
        job.eval_labels.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let stem = stem(&job.model);
    let names = [
        format!("{stem}_finetuned.onnx"),
        "report.html".into(),
        "split.json".into(),
        CHECKPOINT.into(),
    ];
    Outputs::check(&job.out, &names, &inputs)?;
    job.train.validate(&job.data)?;
    if job.eval.is_none() && job.eval_labels.is_some() {
        return Err(Error::invalid(
            "finetune",
            "--eval-labels",
            "given",
            "needs --eval (the labels of a held-out split come from --labels)",
        ));
    }
    let g = crate::graph::load(&job.model)?;
    g.check_finite_weights()?;
    let teacher = match &job.teacher {
        Some(p) => {
            let t = crate::graph::load(p)?;
            t.check_finite_weights()?;
            t
        }
        None => g.clone(),
    };
    let sets = Sets::load(&SetsRequest {
        what: "the training data",
        model: &g,
        data: &job.data,
        eval: job.eval.as_deref(),
        labels: if job.eval.is_some() {
            job.eval_labels.as_deref()
        } else {
            job.labels.as_deref()
        },
        data_labels: job.labels.as_deref(),
        holdout: job.holdout,
        fit_count: job.data_count,
        eval_count: job.eval_count,
    })?;
    if sets.held_out == HeldOut::InSample {
        log::warn!("--holdout 0: the figures are measured on the training images themselves");
    }
    let gpu = Arc::new(Gpu::new()?);
    let mut out = Outputs::new(&job.out, &inputs)?;
    let (student, _) = Prepared::bn_folded(g, Default::default())?;
    let teacher = Prepared::new(teacher);
    let augment = default_augment(&job.train, &job.data)?;
    let tuned = tune(
        gpu.clone(),
        &student,
        &teacher,
        &sets,
        &job.train,
        augment,
        Some(job.out.join(CHECKPOINT)),
        job.resume,
        progress,
    )?;
    let summary = summary_lines(job, &sets, &tuned, t0.elapsed().as_secs_f64());
    crate::graph::export::save(
        &tuned.graph,
        &out.path(&format!("{stem}_finetuned.onnx"))?,
        Some(&job.model),
    )?;
    out.write(
        "report.html",
        report_html(&stem, &summary, &tuned).as_bytes(),
    )?;
    out.write("split.json", sets.to_json().as_bytes())?;
    let mut written = out.commit()?;
    written.push(job.out.join(CHECKPOINT));
    Ok(FinetuneOutcome {
        adapter: gpu.describe(),
        tuned,
        summary,
        written,
    })
}

/// The training report of `tuned`.
pub fn report_html(model: &str, summary: &[(String, String)], tuned: &Tuned) -> String {
    crate::report::train::train_report_html(
        model,
        summary,
        &tuned.fitted.loss,
        &tuned.fitted.scores,
        tuned.metric,
    )
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

/// Crop and flip for a folder of images, nothing for tensors, unless the settings say.
pub fn default_augment(s: &TrainSettings, data: &Path) -> Result<Augment> {
    match &s.augment {
        Some(list) => Augment::named(list, s.crop_scale),
        None if data.is_dir() => Augment::named("crop,flip", s.crop_scale),
        None => Ok(Augment::NONE),
    }
}

/// The train config of `s` for `n` training images.
fn config(s: &TrainSettings, n: usize, labelled: bool) -> Result<TrainConfig> {
    at_least_one("finetune", "--epochs", s.epochs)?;
    at_least_one("finetune", "--batch", s.batch)?;
    at_least_one("finetune", "--accumulate", s.accumulate)?;
    at_least_one("finetune", "--read-every", s.read_every)?;
    let loss = match s.loss.as_deref() {
        None if labelled => LossKind::CrossEntropy,
        None | Some("kd") => LossKind::Distill {
            temperature: s.temperature,
        },
        Some("ce") => LossKind::CrossEntropy,
        Some("mse") => LossKind::Mse,
        Some(other) => {
            return Err(Error::invalid(
                "finetune",
                "--loss",
                other,
                "expected ce, kd or mse",
            ))
        }
    };
    let mut optimizer = Optimizer::named(&s.optimizer)?;
    if let Some(wd) = s.weight_decay {
        if !(wd >= 0.0 && wd.is_finite()) {
            return Err(Error::invalid(
                "finetune",
                "--weight-decay",
                wd,
                "must be a finite number >= 0",
            ));
        }
        optimizer = optimizer.with_weight_decay(wd);
    }
    if s.momentum.is_some() || s.nesterov {
        let Optimizer::Sgd { weight_decay, .. } = optimizer else {
            return Err(Error::invalid(
                "finetune",
                "--momentum/--nesterov",
                &s.optimizer,
                "apply to sgd only",
            ));
        };
        let momentum = s.momentum.unwrap_or(0.9);
        if !(0.0..1.0).contains(&momentum) || (s.nesterov && momentum == 0.0) {
            return Err(Error::invalid(
                "finetune",
                "--momentum",
                momentum,
                "must be in [0, 1), and > 0 with --nesterov",
            ));
        }
        optimizer = Optimizer::Sgd {
            momentum,
            nesterov: s.nesterov,
            weight_decay,
        };
    }
    if let Some(m) = s.max_grad_norm {
        if !(m > 0.0 && m.is_finite()) {
            return Err(Error::invalid(
                "finetune",
                "--max-grad-norm",
                m,
                "must be a finite number > 0",
            ));
        }
    }
    let total = s.epochs as u64 * fit::steps_per_epoch(n, s.batch, s.accumulate);
    let cfg = TrainConfig {
        optimizer,
        lr: s.lr,
        schedule: Schedule::named(&s.schedule, total.max(1))?,
        loss,
        max_grad_norm: s.max_grad_norm,
        accumulate: s.accumulate,
        recompute: s.recompute,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Whether `name` matches `pattern` (`*`: any run of characters).
fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The trainable parameters of `g` not frozen by `freeze`; a pattern that matches nothing is
/// an error (a typo would silently train everything).
fn trainable(g: &Graph, freeze: &[String]) -> Result<(HashSet<String>, usize)> {
    let all = crate::train::parameters(g);
    let feeds = |p: &str| -> Vec<&str> {
        g.nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == p))
            .map(|n| n.name.as_str())
            .collect()
    };
    for pat in freeze {
        let hit = all
            .iter()
            .any(|p| matches(pat, p) || feeds(p).iter().any(|n| matches(pat, n)));
        if !hit {
            return Err(Error::invalid(
                "finetune",
                "--freeze",
                pat,
                "matches no trainable parameter or the node it feeds (see `qforge inspect`)",
            ));
        }
    }
    let kept: HashSet<String> = all
        .iter()
        .filter(|p| {
            !freeze
                .iter()
                .any(|pat| matches(pat, p) || feeds(p).iter().any(|n| matches(pat, n)))
        })
        .cloned()
        .collect();
    Ok((kept, all.len()))
}

/// Fine-tunes `student` on the fitting images of `sets` (against `teacher` when the loss
/// needs one), scoring on the held-out images after each epoch: accuracy with their labels,
/// else top-1 agreement with the teacher.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    gpu: Arc<Gpu>,
    student: &Prepared,
    teacher: &Prepared,
    sets: &Sets,
    settings: &TrainSettings,
    augment: Augment,
    checkpoint: Option<PathBuf>,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<Tuned> {
    let cfg = config(settings, sets.fit_len(), sets.fit_labels.is_some())?;
    if cfg.loss == LossKind::CrossEntropy && sets.fit_labels.is_none() {
        return Err(Error::invalid(
            "finetune",
            "--loss",
            "ce",
            "cross-entropy needs --labels for the training images",
        ));
    }
    let g1 = student.at(1)?;
    let (trainable, all) = trainable(&g1, &settings.freeze)?;
    let teacher_graph = teacher.at(1)?;
    let (fit, eval) = sets.single("finetune")?;
    let scorer = Scorer::new(gpu.clone(), &teacher_graph, eval, sets.eval_labels.clone())?;
    let metric = if scorer.labelled() {
        "accuracy"
    } else {
        "top-1 agreement with the teacher"
    };
    let opts = FitOptions {
        config: cfg,
        epochs: settings.epochs,
        batch: settings.batch,
        seed: settings.seed,
        read_every: settings.read_every,
        checkpoint,
        resume,
    };
    let data = FitData {
        images: &fit,
        labels: sets.fit_labels.as_deref(),
        augment,
    };
    progress.phase("scoring the model before training");
    let mut evaluate = |g: &Graph| -> Result<f64> {
        let s = scorer.score(g)?;
        if s.is_nan() {
            return Err(Error::Diverged {
                step: 0,
                what: "the model's output on the held-out images".into(),
                kept: "nothing was exported".into(),
            });
        }
        Ok(s)
    };
    let mut show = |p: &FitProgress| {
        let loss = p.loss.map_or(String::new(), |l| format!(", loss {l:.4}"));
        progress.step(
            &format!(
                "epoch {}/{}{loss}, {:.1} images/s",
                p.epoch, p.epochs, p.images_per_s
            ),
            p.done,
            p.batches,
        );
    };
    let fitted = fit::fit(
        gpu,
        student,
        Some(teacher),
        &trainable,
        &data,
        &opts,
        &mut evaluate,
        &mut show,
    )?;
    let graph = fit::with_values(student, &fitted.values)?;
    Ok(Tuned {
        graph,
        fitted,
        metric,
        loss: cfg.loss,
        trained: trainable.len(),
        trainable: all,
        augment,
    })
}

/// The summary lines of `tune`'s outcome (shared with compress's report).
pub fn tuned_lines(
    t: &Tuned,
    s: &TrainSettings,
    label: &str,
    eval_len: usize,
) -> Vec<(String, String)> {
    let f = &t.fitted;
    let first = f.scores.first().map_or(f64::NAN, |s| s.1);
    let last = f.scores.last().map_or(f64::NAN, |s| s.1);
    vec![
        (
            "training".to_string(),
            format!(
                "{} epoch(s){}, {} optimizer steps, batch {} x {} accumulated, {} lr {} ({}), loss {:?}",
                f.epochs,
                if f.resumed_from > 0 {
                    format!(" (resumed after epoch {})", f.resumed_from)
                } else {
                    String::new()
                },
                f.steps,
                s.batch,
                s.accumulate,
                s.optimizer,
                s.lr,
                s.schedule,
                t.loss
            ),
        ),
        (
            "parameters trained".to_string(),
            format!("{} of {} tensors", t.trained, t.trainable),
        ),
        ("augmentation".to_string(), format!("{:?}", t.augment)),
        (
            format!("{} ({label}, {eval_len} images)", t.metric),
            format!("{:.2}% -> {:.2}%", 100.0 * first, 100.0 * last),
        ),
        (
            "training speed".to_string(),
            format!("{:.1} images/s", f.images_per_s),
        ),
    ]
}

fn summary_lines(job: &FinetuneJob, sets: &Sets, t: &Tuned, seconds: f64) -> Vec<(String, String)> {
    let mut v = vec![
        ("model".to_string(), job.model.display().to_string()),
        (
            "teacher".to_string(),
            job.teacher
                .as_ref()
                .map_or("the model as it was".into(), |p| p.display().to_string()),
        ),
        ("evaluation".to_string(), sets.describe()),
    ];
    v.extend(tuned_lines(t, &job.train, sets.label(), sets.eval_len()));
    v.push(("time".to_string(), format!("{seconds:.1} s")));
    v
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_names() {
        assert!(matches("conv1", "conv1"));
        assert!(!matches("conv1", "conv10"));
        assert!(matches("conv*", "conv10"));
        assert!(matches("*.bias", "fc.bias"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("*", "anything"));
    }
}
