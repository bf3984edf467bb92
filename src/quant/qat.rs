//! Quantization-aware training: the simulated model fine-tuned on the GPU with every quantizer
//! in the loop (`quantize --qat`).
//!
//! The simulation's quantizers become `FakeQuant` nodes of a training graph built from the
//! prepared (BN-folded, as AIMET folds before QAT) model: one on each quantized weight (per
//! channel where its encoding is), one on each quantized activation. Weights and biases train
//! through the straight-through estimator. With range learning each quantizer's scale (and an
//! asymmetric grid's offset) is a parameter too, initialised from calibration, with the
//! gradients of AIMET v2's QuantDequantFunc (the fake-quant backward kernel); the encoding
//! table the forward reads is computed from it each step (`train::Reparam`), a learned offset
//! rounded onto the grid as it is exported. The scale is learned as its logarithm, at its own
//! rate (`range_lr`): one step moves a weight channel's scale and an activation's by the same
//! fraction, where a shared absolute rate would move the first a hundred times as much (at
//! the weights' rate, 3 epochs moved the Fashion-MNIST CNN's ranges by under 1%). The loss is
//! distillation from the FP32 model (no labels needed) or cross-entropy with labels. After
//! training, the weights, biases and learned encodings are written back into the simulation,
//! so its evaluation, encodings and QDQ export are the trained model.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};

use crate::data::augment::Augment;
use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::exec::{Compile, Params, Plan, Samples};
use crate::gpu::{Gpu, GpuTensor, Steps};
use crate::graph::ir::{Const, Graph, Node, Op};
use crate::graph::{Edits, Prepared};
use crate::ops::train as kernels;
use crate::quant::encoding::{Encoding, QuantKind, MIN_SCALE};
use crate::quant::sim::QuantSim;
use crate::train::{self, LossKind, Optimizer, Reparam, Schedule, Target, TrainConfig, Trainer};

/// How to train.
#[derive(Clone, Debug)]
pub struct QatOptions {
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Adam's learning rate of the weights and biases.
    pub lr: f32,
    /// Adam's learning rate of the ranges' logarithms: the fraction by which a step moves a
    /// scale (same schedule as `lr`).
    pub range_lr: f32,
    /// Learn the quantizers' scales (and asymmetric offsets); `false` keeps the calibrated
    /// ranges and trains the weights only.
    pub learn_ranges: bool,
    /// Class per image: cross-entropy instead of distillation from the FP32 model.
    pub labels: Option<Vec<usize>>,
    /// Learning-rate schedule by name (`train::Schedule::named`): constant, step, cosine.
    pub schedule: String,
    /// LSQ's gradient scale: each quantizer's range gradient times `1 / sqrt(n * Qp)`, `n` the
    /// elements one scale quantizes (per sample for activations), `Qp` the grid's positive
    /// levels (Esser et al., "Learned Step Size Quantization").
    pub lsq: bool,
    /// Distillation temperature (ignored with `labels`): the KL divergence of the
    /// temperature-softened outputs, times T^2.
    pub temperature: f32,
    /// Applied to each training image as it enters a batch (images `[N, C, H, W]` of a
    /// one-input model); the teacher sees the same varied image.
    pub augment: Augment,
    /// Seeds the shuffles and augmentations (epoch `e` draws from `seed + e`).
    pub seed: u64,
}

impl Default for QatOptions {
    fn default() -> QatOptions {
        QatOptions {
            epochs: 1,
            batch: 32,
            lr: 1e-4,
            range_lr: 1e-2,
            learn_ranges: true,
            labels: None,
            schedule: "constant".into(),
            lsq: false,
            temperature: 1.0,
            augment: Augment::NONE,
            seed: 0,
        }
    }
}

/// One quantizer's range before and after training.
#[derive(Clone, Debug)]
pub struct RangeChange {
    pub name: String,
    /// Mean scale over its channels, from calibration and after training.
    pub before: f32,
    pub after: f32,
    /// Channels whose learned scale fell to AIMET's minimum (held there).
    pub clamped: usize,
}

impl QatReport {
    /// One line: steps, images, the loss's first and last readings, the ranges' change.
    pub fn summary(&self, epochs: usize) -> String {
        let first = self.loss.first().map_or(f64::NAN, |l| l.1);
        let last = self.loss.last().map_or(f64::NAN, |l| l.1);
        let ranges = match self.range_curve.last() {
            Some((_, r)) => format!(
                ", learned ranges at {:.1}% of calibration's (mean){}",
                100.0 * r,
                match self.ranges.iter().map(|r| r.clamped).sum::<usize>() {
                    0 => String::new(),
                    k => format!(", {k} channels held at the minimum scale"),
                }
            ),
            None => ", ranges frozen".to_string(),
        };
        format!(
            "QAT: {epochs} epochs on {} images ({} steps), loss {first:.4} -> {last:.4}{ranges}, {:.0} s",
            self.images, self.steps, self.seconds
        )
    }
}

/// What QAT did.
#[derive(Clone, Debug, Default)]
pub struct QatReport {
    /// (optimizer step, mean loss since the previous reading).
    pub loss: Vec<(u64, f64)>,
    /// (optimizer step, learned scales relative to calibration's, averaged over quantizers and
    /// channels) at each loss reading, with range learning.
    pub range_curve: Vec<(u64, f64)>,
    pub ranges: Vec<RangeChange>,
    pub steps: u64,
    pub images: usize,
    pub seconds: f64,
}

/// A quantizer of the training graph.
struct Quantizer {
    /// The tensor quantized (a weight or an activation).
    name: String,
    /// Its encoding table constant in the graph.
    table: String,
    encoding: Encoding,
    weight: bool,
}

/// Points every node reading `from` at `to`.
fn reroute(g: &mut Graph, from: &str, to: &str) {
    for n in &mut g.nodes {
        for i in &mut n.inputs {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// The training graph: `g` with a FakeQuant node on every quantized weight and activation.
fn training_graph(
    g: &Graph,
    params: &[(String, Encoding)],
    activations: &[(String, Encoding)],
) -> Result<(Graph, Vec<Quantizer>)> {
    let mut qg = g.clone();
    qg.name = format!("qat:{}", g.name);
    let mut quantizers = Vec::new();
    let table_const = |e: &Encoding| -> Result<Const> {
        let t: Vec<f32> = e.grid()?.table().into_iter().flatten().collect();
        Ok(Const::F32(
            ArrayD::from_shape_vec(IxDyn(&[e.scale.len(), 4]), t).expect("sized"),
        ))
    };
    for (w, e) in params {
        let table = format!("{w}#table");
        let q = format!("{w}#q");
        qg.consts.insert(table.clone(), table_const(e)?);
        reroute(&mut qg, w, &q);
        qg.nodes.insert(
            0,
            Node {
                name: q.clone(),
                op: Op::FakeQuant {
                    axis: e.axis,
                    steps: e.steps(),
                },
                inputs: vec![w.clone(), table.clone()],
                outputs: vec![q],
            },
        );
        quantizers.push(Quantizer {
            name: w.clone(),
            table,
            encoding: e.clone(),
            weight: true,
        });
    }
    for (v, e) in activations {
        let table = format!("{v}#table");
        qg.consts.insert(table.clone(), table_const(e)?);
        let op = Op::FakeQuant {
            axis: e.axis,
            steps: e.steps(),
        };
        if qg.inputs.contains(v) {
            let q = format!("{v}#q");
            reroute(&mut qg, v, &q);
            qg.nodes.insert(
                0,
                Node {
                    name: q.clone(),
                    op,
                    inputs: vec![v.clone(), table.clone()],
                    outputs: vec![q],
                },
            );
        } else {
            let k = qg
                .nodes
                .iter()
                .position(|n| n.outputs.contains(v))
                .ok_or_else(|| Error::Graph {
                    model: g.name.clone(),
                    message: format!("quantized activation '{v}' has no producer"),
                })?;
            let fp = format!("{v}#fp");
            for o in &mut qg.nodes[k].outputs {
                if o == v {
                    *o = fp.clone();
                }
            }
            qg.nodes.insert(
                k + 1,
                Node {
                    name: format!("{v}#q"),
                    op,
                    inputs: vec![fp, table.clone()],
                    outputs: vec![v.clone()],
                },
            );
        }
        quantizers.push(Quantizer {
            name: v.clone(),
            table,
            encoding: e.clone(),
            weight: false,
        });
    }
    qg.shapes.clear();
    Ok((qg, quantizers))
}

/// A quantizer's table computed from its learned range.
struct LearnedRange {
    table: String,
    range: GpuTensor,
    /// The grid's steps where the offset is learned (asymmetric grids): it stays in
    /// `[-steps, 0]`.
    learned_offset: Option<u32>,
    grad_scale: f32,
    lr_scale: f32,
}

impl Reparam for LearnedRange {
    fn param(&self) -> &str {
        &self.table
    }

    fn latent_name(&self) -> String {
        format!("{}.range", self.table)
    }

    fn latent(&self) -> &GpuTensor {
        &self.range
    }

    fn record_forward(&self, steps: &mut Steps, gpu: &Gpu, param: &GpuTensor) -> Result<()> {
        kernels::range_table_into(steps, gpu, &self.range, param, self.learned_offset)
    }

    fn record_backward(
        &self,
        steps: &mut Steps,
        gpu: &Gpu,
        param_grad: &GpuTensor,
        latent_grad: &GpuTensor,
    ) -> Result<()> {
        kernels::range_table_grad_into(
            steps,
            gpu,
            &self.range,
            param_grad,
            latent_grad,
            self.learned_offset.is_some(),
            self.grad_scale,
        )
    }

    fn lr_scale(&self) -> f32 {
        self.lr_scale
    }
}

/// LSQ's gradient scale of quantizer `q` in the training graph `g` resolved at `batch`:
/// `1 / sqrt(n * Qp)`, `n` the elements each of its scales quantizes in one sample (all of a
/// weight's channel), `Qp` the levels above zero (N for an asymmetric grid, which spans the
/// range from its minimum; half the steps for a symmetric one).
fn lsq_grad_scale(g: &Graph, q: &Quantizer, batch: usize) -> Result<f32> {
    let shape = match g.consts.get(&q.name) {
        Some(c) => Some(c.shape()),
        None => g.shapes.get(&q.name).map(|s| s.as_slice()),
    }
    .ok_or_else(|| Error::Graph {
        model: g.name.clone(),
        message: format!("no shape for quantized tensor '{}'", q.name),
    })?;
    let mut n = shape.iter().product::<usize>() / q.encoding.scale.len().max(1);
    if !q.weight {
        n /= batch.max(1);
    }
    let steps = q.encoding.steps() as f64;
    let qp = match q.encoding.kind {
        QuantKind::Asymmetric | QuantKind::UnsignedSymmetric => steps,
        _ => (steps / 2.0).floor().max(1.0),
    };
    Ok((1.0 / (n.max(1) as f64 * qp).sqrt()) as f32)
}

/// Trains `sim`'s simulated model on `x` (calibrate first) and writes the result back.
pub fn apply<'a>(
    sim: &mut QuantSim,
    x: impl Into<Samples<'a>>,
    opts: &QatOptions,
    progress: &mut dyn FnMut(usize, usize, usize, Option<f64>),
) -> Result<QatReport> {
    let x = x.into();
    let n = x.len();
    if sim.activation_encodings().is_empty() {
        return Err(Error::invalid(
            "qat",
            "encodings",
            "none",
            "calibrate first",
        ));
    }
    if opts.epochs == 0 {
        return Err(Error::invalid("qat", "epochs", 0, "at least 1"));
    }
    if !(opts.range_lr >= 0.0 && opts.range_lr.is_finite()) {
        return Err(Error::invalid(
            "qat",
            "range learning rate",
            opts.range_lr,
            "a finite number >= 0",
        ));
    }
    if opts.batch == 0 || opts.batch > n {
        return Err(Error::invalid(
            "qat",
            "batch",
            opts.batch,
            format!("must be in 1..={n} (the training images)"),
        ));
    }
    if let Some(l) = &opts.labels {
        if l.len() != n {
            return Err(Error::invalid(
                "qat",
                "labels",
                l.len(),
                format!("one per training image ({n})"),
            ));
        }
    }
    if !opts.augment.is_none() && x.single().is_none_or(|t| t.ndim() != 4) {
        return Err(Error::invalid(
            "qat",
            "augmentation",
            format!("{:?}", opts.augment),
            "needs one input of images [N, C, H, W]",
        ));
    }
    let t0 = Instant::now();
    let gpu = sim.gpu().clone();
    let base = sim.prepared(1)?;
    let weights_and_biases = train::parameters(&base);
    let (qg, quantizers) =
        training_graph(&base, sim.param_encodings(), sim.activation_encodings())?;
    if quantizers.is_empty() {
        return Err(Error::invalid(
            "qat",
            "quantizers",
            0,
            "the model has no trainable quantizer",
        ));
    }
    let g = Prepared::new(qg).at(opts.batch)?;
    let mut trainable: HashSet<String> = weights_and_biases.iter().cloned().collect();
    let mut ranges = Vec::new();
    if opts.learn_ranges {
        for q in &quantizers {
            let mut r = Vec::with_capacity(2 * q.encoding.scale.len());
            for (s, o) in q.encoding.scale.iter().zip(&q.encoding.offset) {
                r.extend([s.max(MIN_SCALE as f32).ln(), *o]);
            }
            let grad_scale = match opts.lsq {
                true => lsq_grad_scale(&g, q, opts.batch)?,
                false => 1.0,
            };
            ranges.push(LearnedRange {
                table: q.table.clone(),
                range: gpu.upload_slice(&[q.encoding.scale.len(), 2], &r)?,
                learned_offset: (q.encoding.kind == QuantKind::Asymmetric)
                    .then(|| q.encoding.steps()),
                grad_scale,
                lr_scale: opts.range_lr / opts.lr,
            });
            trainable.insert(q.table.clone());
        }
    }
    let reparams: Vec<&dyn Reparam> = ranges.iter().map(|r| r as &dyn Reparam).collect();
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(),
        lr: opts.lr,
        schedule: Schedule::named(&opts.schedule, (opts.epochs * (n / opts.batch)) as u64)?,
        loss: match opts.labels {
            Some(_) => LossKind::CrossEntropy,
            None => LossKind::Distill {
                temperature: opts.temperature,
            },
        },
        max_grad_norm: None,
        accumulate: 1,
        recompute: false,
    };
    let params = Arc::new(Params::new(gpu.clone()));
    let output = g.outputs[0].clone();
    let mut trainer =
        Trainer::reparameterized(gpu.clone(), &g, params, &trainable, &output, cfg, &reparams)?;
    let teacher = Plan::compile(
        gpu.clone(),
        &*sim.reference_graph(opts.batch)?,
        Compile::default(),
    )?;
    let inputs = sim.inputs().to_vec();
    let batches = n / opts.batch;
    let mut report = QatReport {
        images: n,
        ..Default::default()
    };
    for epoch in 0..opts.epochs {
        let mut rng = Rng::new(opts.seed + epoch as u64);
        let order = rng.permutation(n);
        for b in 0..batches {
            let rows = &order[b * opts.batch..(b + 1) * opts.batch];
            let mut xb = x.select(rows);
            if !opts.augment.is_none() {
                let images = xb.single().expect("checked above").to_owned();
                xb = opts.augment.batch(images, &mut rng).into();
            }
            let labels: Option<Vec<usize>> = opts
                .labels
                .as_ref()
                .map(|l| rows.iter().map(|&r| l[r]).collect());
            let target = match &labels {
                Some(l) => Target::Labels(l),
                None => Target::Teacher(&teacher),
            };
            trainer.step(&xb.feed(&inputs)?, target)?;
            let mut loss = None;
            if (b + 1) % 10 == 0 || b + 1 == batches {
                let r = trainer.read_loss()?;
                report.loss.push((trainer.steps(), r.mean));
                loss = Some(r.mean);
                if !ranges.is_empty() {
                    let tensors: Vec<&GpuTensor> = ranges.iter().map(|r| &r.range).collect();
                    let bytes = gpu.submit_and_read(gpu.encoder(), &tensors)?;
                    let (mut sum, mut count) = (0f64, 0usize);
                    for (q, b) in quantizers.iter().zip(&bytes) {
                        let v: &[f32] = bytemuck::cast_slice(b);
                        for (c, pair) in v.chunks(2).enumerate() {
                            sum += (pair[0] as f64).exp() / q.encoding.scale[c] as f64;
                            count += 1;
                        }
                    }
                    report
                        .range_curve
                        .push((trainer.steps(), sum / count.max(1) as f64));
                }
            }
            progress(epoch, opts.epochs, b + 1, loss);
        }
    }
    report.steps = trainer.steps();
    let state: BTreeMap<String, ArrayD<f32>> = trainer.state()?.into_iter().collect();
    // Write the trained model back: weights and biases, then the learned encodings.
    let consts: BTreeMap<String, Const> = weights_and_biases
        .iter()
        .filter_map(|w| state.get(w).map(|a| (w.clone(), Const::F32(a.clone()))))
        .collect();
    sim.edit(Edits::consts(consts))?;
    let learned = |q: &Quantizer, report: &mut QatReport| -> Encoding {
        let mut e = q.encoding.clone();
        if let Some(r) = state.get(&format!("{}.range", q.table)) {
            let mut clamped = 0;
            for (c, pair) in r.as_slice().expect("standard").chunks(2).enumerate() {
                let s = match pair[0].is_finite() {
                    true => pair[0].exp(),
                    false => 0.0,
                };
                if (s as f64) < MIN_SCALE {
                    clamped += 1;
                }
                e.scale[c] = s.max(MIN_SCALE as f32);
                if q.encoding.kind == QuantKind::Asymmetric {
                    let steps = e.steps() as f32;
                    e.offset[c] = pair[1].round().clamp(-steps, 0.0);
                }
            }
            let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
            report.ranges.push(RangeChange {
                name: q.name.clone(),
                before: mean(&q.encoding.scale),
                after: mean(&e.scale),
                clamped,
            });
        }
        e
    };
    let mut new_params = Vec::new();
    let mut new_acts = Vec::new();
    for q in &quantizers {
        let e = learned(q, &mut report);
        match q.weight {
            true => new_params.push((q.name.clone(), e)),
            false => new_acts.push((q.name.clone(), e)),
        }
    }
    sim.set_param_encodings(new_params)?;
    sim.set_activation_encodings(&new_acts)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
