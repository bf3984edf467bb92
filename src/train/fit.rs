//! [`fit`]: the epoch loop every fine-tuning goes through (`qforge finetune`, `compress
//! --finetune-epochs`): seeded shuffling and augmentation per epoch, drop-last batches, a
//! [`Trainer`] step per batch, the loss read every few optimizer steps, an evaluation of the
//! trained model after every epoch, and a checkpoint written atomically after every epoch
//! that `resume` continues from exactly (same shuffles, same augmentations).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};

use crate::data::augment::Augment;
use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::exec::{Compile, Params, Plan};
use crate::gpu::Gpu;
use crate::graph::ir::{Const, Graph};
use crate::graph::{Edits, Prepared};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::{LossKind, Target, TrainConfig, Trainer};

/// The images a model is fitted on.
pub struct FitData<'a> {
    /// `[N, ...]` model inputs (the model's first input).
    pub images: &'a ArrayD<f32>,
    /// A class per image (read by the cross-entropy loss).
    pub labels: Option<&'a [usize]>,
    /// Applied to each `[C, H, W]` image as it enters a batch.
    pub augment: Augment,
}

/// How long and how to fit.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Optimizer, learning rate, schedule (its total in optimizer steps: see
    /// [`steps_per_epoch`]), loss, clipping, accumulation.
    pub config: TrainConfig,
    pub epochs: usize,
    /// Images per micro-batch.
    pub batch: usize,
    /// Seeds the shuffles and augmentations (epoch `e` draws from `seed + e`).
    pub seed: u64,
    /// Read the loss back every this many micro-batches (and at each epoch's end).
    pub read_every: usize,
    /// Written after every epoch; with `resume`, read first.
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
}

/// Where a fit stands, for progress displays.
#[derive(Clone, Copy, Debug)]
pub struct FitProgress {
    /// 1-based epoch.
    pub epoch: usize,
    pub epochs: usize,
    /// Micro-batches done of this epoch.
    pub done: usize,
    pub batches: usize,
    /// The latest mean loss read.
    pub loss: Option<f64>,
    /// Training images per second in this epoch so far.
    pub images_per_s: f64,
}

/// What a fit did.
pub struct Fitted {
    /// The trained parameters by name.
    pub values: BTreeMap<String, ArrayD<f32>>,
    /// (optimizer step, mean loss since the previous reading).
    pub loss: Vec<(f64, f64)>,
    /// (epoch, score of the evaluation): epoch 0 is before training (or at the resumed epoch).
    pub scores: Vec<(f64, f64)>,
    /// Epoch reached, counting resumed ones.
    pub epochs: usize,
    pub steps: u64,
    /// Training images per second over the epochs run here.
    pub images_per_s: f64,
    /// The epoch training resumed from (0: from the start).
    pub resumed_from: usize,
}

/// Optimizer steps one epoch of `n` images takes (drop-last batches of `batch`, an update
/// every `accumulate` micro-batches).
pub fn steps_per_epoch(n: usize, batch: usize, accumulate: usize) -> u64 {
    ((n / batch.max(1)) / accumulate.max(1)) as u64
}

/// `student` with `values` in place of its constants, resolved at batch 1.
pub fn with_values(student: &Prepared, values: &BTreeMap<String, ArrayD<f32>>) -> Result<Graph> {
    let consts = values
        .iter()
        .map(|(n, a)| (n.clone(), Const::F32(a.clone())))
        .collect();
    let mut p = student.clone();
    p.edit(Edits::consts(consts));
    Ok(p.at(1)?.as_ref().clone())
}

/// Fits `trainable` parameters of `student` (trained on its first output) to `data`: to its
/// labels with cross-entropy, otherwise to `teacher`'s outputs, run beside it in each step; `evaluate` scores the model
/// (with the parameters so far) before training and after every epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    gpu: Arc<Gpu>,
    student: &Prepared,
    teacher: Option<&Prepared>,
    trainable: &HashSet<String>,
    data: &FitData<'_>,
    opts: &FitOptions,
    evaluate: &mut dyn FnMut(&Graph) -> Result<f64>,
    progress: &mut dyn FnMut(&FitProgress),
) -> Result<Fitted> {
    let n = data.images.len_of(Axis(0));
    if n == 0 {
        return Err(Error::EmptyTensor {
            op: "fine-tune",
            tensor: "training images".into(),
        });
    }
    for (what, v) in [("epochs", opts.epochs), ("read_every", opts.read_every)] {
        if v == 0 {
            return Err(Error::invalid("fine-tune", what, 0, "must be at least 1"));
        }
    }
    if opts.batch == 0 || opts.batch > n {
        return Err(Error::invalid(
            "fine-tune",
            "--batch",
            opts.batch,
            format!("must be in 1..={n} (the training images)"),
        ));
    }
    let g = student.at(opts.batch)?;
    let labelled = opts.config.loss == LossKind::CrossEntropy;
    match (labelled, data.labels, teacher) {
        (true, Some(l), _) => g.check_labels("fine-tune", l, n)?,
        (true, None, _) => {
            return Err(Error::invalid(
                "fine-tune",
                "labels",
                "none",
                "cross-entropy needs a label per training image",
            ))
        }
        (false, _, Some(t)) => {
            let (ts, ss) = (output_shape(&*t.at(opts.batch)?), output_shape(&g));
            if ts != ss {
                return Err(Error::ShapeMismatch {
                    op: "fine-tune",
                    tensor: "the teacher's first output".into(),
                    expected: format!("{ss:?} (the student's first output)"),
                    got: ts,
                });
            }
        }
        (false, _, None) => {
            return Err(Error::invalid(
                "fine-tune",
                "teacher",
                "none",
                "a distillation or MSE loss needs a teacher model",
            ))
        }
    }
    let input = g.inputs.first().cloned().ok_or_else(|| Error::Graph {
        model: g.name.clone(),
        message: "no input".into(),
    })?;
    let want = g.shapes.get(&input).map(|s| s[1..].to_vec());
    if want.as_deref() != Some(&data.images.shape()[1..]) {
        return Err(Error::ShapeMismatch {
            op: "fine-tune",
            tensor: "training images".into(),
            expected: format!("[N, ...] with the model input's sample shape {want:?}"),
            got: data.images.shape().to_vec(),
        });
    }
    // The checkpoint is read before the plans are built, so a missing or spent one fails fast.
    let resumed = match opts.resume {
        true => {
            let path = opts.checkpoint.as_ref().ok_or_else(|| {
                Error::invalid("fine-tune", "--resume", "set", "needs a checkpoint path")
            })?;
            let c = checkpoint::load(path)?;
            if c.epoch as usize >= opts.epochs {
                return Err(Error::invalid(
                    "fine-tune",
                    "--epochs",
                    opts.epochs,
                    format!(
                        "more than the {} epochs the checkpoint has already trained (--resume continues to --epochs)",
                        c.epoch
                    ),
                ));
            }
            Some(c)
        }
        false => None,
    };
    let params = Arc::new(Params::new(gpu.clone()));
    let mut trainer = Trainer::new(
        gpu.clone(),
        &g,
        params,
        trainable,
        &g.outputs[0],
        opts.config,
    )?;
    let teacher_plan = match (labelled, teacher) {
        (false, Some(t)) => Some(teacher_plan(gpu.clone(), t, opts.batch)?),
        _ => None,
    };
    let mut epoch0 = 0;
    if let Some(c) = resumed {
        trainer.load_state(&c.tensors)?;
        trainer.set_steps(c.step);
        epoch0 = c.epoch as usize;
    }
    // The trained values within a state read back (which also holds the optimizer's moments).
    let trained: HashSet<String> = trainer.trained().into_iter().collect();
    let values_of = |state: &[(String, ArrayD<f32>)]| -> BTreeMap<String, ArrayD<f32>> {
        state
            .iter()
            .filter(|(n, _)| trained.contains(n))
            .cloned()
            .collect()
    };
    let mut values = values_of(&trainer.state()?);
    let mut scores = vec![(epoch0 as f64, evaluate(&with_values(student, &values)?)?)];
    let mut loss = Vec::new();
    let batches = n / opts.batch;
    let (mut seen, mut secs) = (0usize, 0f64);
    for epoch in epoch0..opts.epochs {
        let mut rng = Rng::new(opts.seed.wrapping_add(epoch as u64));
        let order = rng.permutation(n);
        let t0 = std::time::Instant::now();
        let mut last = None;
        for b in 0..batches {
            let idx = &order[b * opts.batch..(b + 1) * opts.batch];
            let x = data
                .augment
                .batch(data.images.select(Axis(0), idx), &mut rng);
            let labels: Vec<usize> = match (labelled, data.labels) {
                (true, Some(l)) => idx.iter().map(|&i| l[i]).collect(),
                _ => Vec::new(),
            };
            let target = match &teacher_plan {
                Some(p) => Target::Teacher(p),
                None => Target::Labels(&labels),
            };
            trainer.step(&[(&input, x.view())], target)?;
            if (b + 1) % opts.read_every == 0 || b + 1 == batches {
                let r = trainer.read_loss()?;
                if !r.mean.is_finite() {
                    return Err(diverged(trainer.steps(), "the loss", opts, epoch));
                }
                loss.push((trainer.steps() as f64, r.mean));
                last = Some(r.mean);
            }
            let el = t0.elapsed().as_secs_f64();
            progress(&FitProgress {
                epoch: epoch + 1,
                epochs: opts.epochs,
                done: b + 1,
                batches,
                loss: last,
                images_per_s: ((b + 1) * opts.batch) as f64 / el.max(1e-9),
            });
        }
        secs += t0.elapsed().as_secs_f64();
        seen += batches * opts.batch;
        let state = trainer.state()?;
        if state.iter().any(|(_, a)| a.iter().any(|v| !v.is_finite())) {
            return Err(diverged(trainer.steps(), "a parameter", opts, epoch));
        }
        values = values_of(&state);
        if let Some(p) = &opts.checkpoint {
            checkpoint::save(
                p,
                &Checkpoint {
                    step: trainer.steps(),
                    epoch: epoch as u64 + 1,
                    tensors: state,
                },
            )?;
        }
        let score = evaluate(&with_values(student, &values)?)?;
        scores.push(((epoch + 1) as f64, score));
    }
    Ok(Fitted {
        values,
        loss,
        scores,
        epochs: opts.epochs.max(epoch0),
        steps: trainer.steps(),
        images_per_s: seen as f64 / secs.max(1e-9),
        resumed_from: epoch0,
    })
}

/// The shape of `g`'s first output.
fn output_shape(g: &Graph) -> Vec<usize> {
    g.outputs
        .first()
        .and_then(|o| g.shapes.get(o))
        .cloned()
        .unwrap_or_default()
}

/// The teacher compiled for `batch`, on parameters of its own.
fn teacher_plan(gpu: Arc<Gpu>, teacher: &Prepared, batch: usize) -> Result<Plan> {
    let g = teacher.at(batch)?;
    Plan::compile(
        gpu.clone(),
        &g,
        Compile {
            taps: &[],
            params: Some(Arc::new(Params::new(gpu))),
            simulation: None,
        },
    )
}

/// The error of a fit that stopped on a non-finite value during `epoch` (0-based).
fn diverged(step: u64, what: &str, opts: &FitOptions, epoch: usize) -> Error {
    let kept = match &opts.checkpoint {
        Some(p) if epoch > 0 || opts.resume => format!(
            "the last finite checkpoint ({}, after epoch {epoch}) is kept; lower --lr or set --max-grad-norm",
            p.display()
        ),
        _ => "no epoch finished, so there is no checkpoint; lower --lr or set --max-grad-norm".into(),
    };
    Error::Diverged {
        step,
        what: what.into(),
        kept,
    }
}
