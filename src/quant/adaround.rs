//! AdaRound (AIMET's `Adaround.apply_adaround`): learned rounding of the weights, layer by
//! layer in graph order, on the training engine.
//!
//! Each Conv, ConvTranspose, Gemm and MatMul weight with a parameter encoding keeps that
//! encoding (frozen, as AIMET freezes it) and learns, per element, whether to round down or
//! up: `w = (clamp(floor(w / s) + h(a) - o, 0, N) + o) s` with AdaRound's rectified sigmoid
//! `h`, trained by Adam to reconstruct the layer's FP32 output (the following Relu or Clip
//! applied to both) from its input in the model whose earlier layers are already rounded
//! (activation quantizers off), plus `reg * sum(1 - |2h - 1|^beta)` with beta annealed from 20
//! to 2 (cosine) after a warm start. The layer's inputs and targets are cached for the
//! layer's iterations: on the GPU within a byte budget, in host memory beyond it. At the end the
//! rounding is hard (`a >= 0` rounds up) and the FP32 model's weight is replaced by the rounded
//! one, so the simulated, exported and QDQ models all carry it.
//!
//! The one reconstruction loss is AIMET's: squares summed over dim 1, averaged over the rest.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::exec::{Params, Runner, Samples};
use crate::gpu::{Encoder, Gpu, GpuTensor, Steps};
use crate::graph::attrs::Unary;
use crate::graph::ir::{Const, Dim, Graph, Node, Op};
use crate::graph::{Edits, Prepared};
use crate::ops::train::{self as kernels, SoftGrid};
use crate::quant::encoding::Encoding;
use crate::quant::prefix::Prefix;
use crate::quant::sim::{Enabled, QuantSim};
use crate::train::{LossKind, Optimizer, Reparam, Schedule, TrainConfig, Trainer};

/// AdaRound's settings (AIMET's defaults).
#[derive(Clone, Debug)]
pub struct AdaroundOptions {
    /// Iterations per layer (`None`: 10,000, or 15,000 below 8 bits).
    pub iterations: Option<usize>,
    /// Samples drawn from the cache per iteration.
    pub batch: usize,
    /// Weight of the rounding regularizer.
    pub reg: f32,
    /// Beta annealed from `.0` to `.1`.
    pub beta: (f32, f32),
    /// Share of the iterations before the regularizer starts.
    pub warm_start: f64,
    /// Adam's learning rate.
    pub lr: f32,
    /// Seeds the batches drawn.
    pub seed: u64,
    /// Bytes of cached layer inputs and targets kept on the GPU; a layer whose cache is larger
    /// keeps it in host memory and uploads each batch.
    pub gpu_cache_bytes: u64,
}

impl Default for AdaroundOptions {
    fn default() -> AdaroundOptions {
        AdaroundOptions {
            iterations: None,
            batch: 32,
            reg: 0.01,
            beta: (20.0, 2.0),
            warm_start: 0.2,
            lr: 1e-3,
            seed: 0,
            gpu_cache_bytes: 1 << 30,
        }
    }
}

impl AdaroundOptions {
    /// Iterations per layer for weights of `bitwidth` bits.
    pub fn iterations_for(&self, bitwidth: u32) -> usize {
        self.iterations
            .unwrap_or(if bitwidth < 8 { 15_000 } else { 10_000 })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, v: String, why: &str| {
            Err(Error::invalid("adaround", what, v, why.to_string()))
        };
        if self.iterations == Some(0) {
            return bad("iterations", "0".into(), "at least 1");
        }
        if self.batch == 0 {
            return bad("batch", "0".into(), "at least 1");
        }
        if !(self.reg >= 0.0 && self.reg.is_finite()) {
            return bad("reg", self.reg.to_string(), "a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.warm_start) {
            return bad("warm start", self.warm_start.to_string(), "in [0, 1)");
        }
        if !(self.beta.0.is_finite() && self.beta.1 >= 1.0 && self.beta.0 >= self.beta.1) {
            return bad("beta", format!("{:?}", self.beta), "start >= end >= 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", self.lr.to_string(), "a finite number > 0");
        }
        Ok(())
    }

    /// (beta, regularizer on) at iteration `it` of `total` (AIMET's cosine schedule).
    pub fn beta_at(&self, it: usize, total: usize) -> (f32, bool) {
        let warm = self.warm_start * total as f64;
        if (it as f64) < warm {
            return (self.beta.0, false);
        }
        let rel = (it as f64 - warm) / (total as f64 - warm);
        let (b0, b1) = (self.beta.0 as f64, self.beta.1 as f64);
        let beta = b1 + 0.5 * (b0 - b1) * (1.0 + (rel * std::f64::consts::PI).cos());
        (beta as f32, true)
    }
}

/// Where a layer's cached samples lived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOn {
    Gpu,
    Host,
}

/// What AdaRound did to one layer.
#[derive(Clone, Debug)]
pub struct AdaroundLayer {
    /// The weight and its node.
    pub weight: String,
    pub node: String,
    /// The activation applied after the layer in the loss, if any (its ONNX type).
    pub activation: Option<&'static str>,
    pub iterations: usize,
    pub samples: usize,
    /// AIMET's reconstruction loss on the cached samples with rounding to nearest and with
    /// AdaRound's hard rounding.
    pub loss_nearest: f64,
    pub loss_adaround: f64,
    /// Share of the weights rounded up (the rest rounded down).
    pub rounded_up: f64,
    /// Share whose code differs from rounding to nearest.
    pub changed: f64,
    pub cache: CacheOn,
    /// Bytes of its cached inputs and targets.
    pub cache_bytes: u64,
    /// Seconds for the layer: caching its samples, the iterations, the final losses.
    pub seconds: f64,
    /// Seconds of the iterations alone.
    pub train_seconds: f64,
}

impl AdaroundLayer {
    /// Optimizer iterations per second.
    pub fn iterations_per_s(&self) -> f64 {
        self.iterations as f64 / self.train_seconds.max(1e-9)
    }
}

/// What AdaRound did.
#[derive(Clone, Debug, Default)]
pub struct AdaroundReport {
    pub layers: Vec<AdaroundLayer>,
    /// (weight or node, why it was left to nearest rounding).
    pub skipped: Vec<(String, String)>,
}

impl AdaroundReport {
    /// One line: layers rounded, the mean loss change, the share of weights changed.
    pub fn summary(&self, samples: usize) -> String {
        let n = self.layers.len().max(1) as f64;
        let ratio = self
            .layers
            .iter()
            .map(|l| l.loss_adaround / l.loss_nearest.max(1e-30))
            .sum::<f64>()
            / n;
        let changed = self.layers.iter().map(|l| l.changed).sum::<f64>() / n;
        let seconds: f64 = self.layers.iter().map(|l| l.seconds).sum();
        let train: f64 = self.layers.iter().map(|l| l.train_seconds).sum();
        let its: usize = self.layers.iter().map(|l| l.iterations).sum();
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        format!(
            "AdaRound: {} layers on {samples} samples, reconstruction loss {:.0}% of rounding to nearest (mean over layers), {:.1}% of weights rounded the other way, {:.0} s ({:.0} iterations/s){}",
            self.layers.len(),
            100.0 * ratio,
            100.0 * changed,
            seconds,
            its as f64 / train.max(1e-9),
            if skipped.is_empty() { String::new() } else { format!("; skipped {}", skipped.join(", ")) }
        )
    }
}

/// One layer AdaRound can round: the node, its weight's encoding, the activation after it.
struct Layer {
    node: Node,
    weight: String,
    encoding: Encoding,
    activation: Option<Node>,
}

/// The layers in graph order, and those skipped with the reason.
fn layers(g: &Graph, params: &[(String, Encoding)]) -> (Vec<Layer>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for n in &g.nodes {
        let eligible = matches!(
            n.op,
            Op::Conv(_) | Op::ConvTranspose { .. } | Op::Gemm { .. } | Op::MatMul
        );
        let Some(w) = n.inputs.get(1).filter(|_| eligible) else {
            continue;
        };
        let Some((_, enc)) = params.iter().find(|(p, _)| p == w) else {
            continue;
        };
        let readers = g
            .nodes
            .iter()
            .filter(|m| m.inputs.iter().any(|i| i == w))
            .count();
        let why = if readers > 1 {
            Some(format!("its weight '{w}' is shared by {readers} nodes"))
        } else if matches!(n.op, Op::Gemm { trans_a: true, .. }) {
            Some("Gemm with transA".to_string())
        } else if g.weight(w).is_none() {
            Some(format!("its weight '{w}' is not a constant"))
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push((n.name.clone(), why));
            continue;
        }
        let y = &n.outputs[0];
        let consumers = g.consumers_of(y);
        let activation = match consumers.as_slice() {
            [k] if !g.outputs.contains(y)
                && matches!(g.nodes[*k].op, Op::Unary(Unary::Relu | Unary::Clip(..))) =>
            {
                Some(g.nodes[*k].clone())
            }
            _ => None,
        };
        out.push(Layer {
            node: n.clone(),
            weight: w.clone(),
            encoding: enc.clone(),
            activation,
        });
    }
    (out, skipped)
}

/// The graph of one layer alone: input `x` of `shape`, weight `w`, bias `b`, the activation.
fn layer_graph(g: &Graph, l: &Layer, shape: &[usize]) -> Graph {
    let mut lg = Graph {
        name: format!("adaround:{}", l.node.name),
        opset: g.opset,
        ..Default::default()
    };
    lg.inputs = vec!["x".into()];
    lg.input_dims.insert(
        "x".into(),
        shape
            .iter()
            .enumerate()
            .map(|(i, &d)| match i {
                0 => Dim::Named("batch".into()),
                _ => Dim::Fixed(d),
            })
            .collect(),
    );
    let mut inputs = vec!["x".to_string(), "w".to_string()];
    lg.consts.insert(
        "w".into(),
        Const::F32(g.weight(&l.weight).expect("checked").clone()),
    );
    if let Some(b) = l.node.inputs.get(2).filter(|b| !b.is_empty()) {
        if let Some(c) = g.consts.get(b) {
            lg.consts.insert("b".into(), c.clone());
            inputs.push("b".into());
        }
    }
    lg.nodes.push(Node {
        name: "layer".into(),
        op: l.node.op.clone(),
        inputs,
        outputs: vec!["y".into()],
    });
    let out = match &l.activation {
        Some(a) => {
            lg.nodes.push(Node {
                name: "act".into(),
                op: a.op.clone(),
                inputs: vec!["y".into()],
                outputs: vec!["a".into()],
            });
            "a"
        }
        None => "y",
    };
    lg.outputs = vec![out.into()];
    lg
}

/// The soft rounding of one weight as the trainer's reparameterization.
struct SoftRounding {
    alpha: GpuTensor,
    floor: GpuTensor,
    grid: GpuTensor,
    channels: usize,
    inner: usize,
    levels: u32,
    /// `[beta, regularizer weight]`, rewritten before each step.
    hyper: GpuTensor,
}

impl SoftRounding {
    fn grid(&self) -> SoftGrid<'_> {
        SoftGrid {
            grid: &self.grid,
            channels: self.channels,
            inner: self.inner,
            levels: self.levels,
        }
    }
}

impl Reparam for SoftRounding {
    fn param(&self) -> &str {
        "w"
    }

    fn latent_name(&self) -> String {
        "w.alpha".into()
    }

    fn latent(&self) -> &GpuTensor {
        &self.alpha
    }

    fn record_forward(&self, steps: &mut Steps, gpu: &Gpu, param: &GpuTensor) -> Result<()> {
        kernels::soft_round_into(steps, gpu, &self.alpha, &self.floor, self.grid(), param)
    }

    fn record_backward(
        &self,
        steps: &mut Steps,
        gpu: &Gpu,
        param_grad: &GpuTensor,
        latent_grad: &GpuTensor,
    ) -> Result<()> {
        kernels::soft_round_grad_into(
            steps,
            gpu,
            &self.alpha,
            &self.floor,
            self.grid(),
            param_grad,
            &self.hyper,
            latent_grad,
        )
    }
}

/// Per element: the channel's (scale, offset) of `e` on a weight of `shape`.
fn channel_of(shape: &[usize], e: &Encoding) -> (usize, usize) {
    let n: usize = shape.iter().product();
    match e.axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>().max(1)),
        None => (1, n.max(1)),
    }
}

/// AIMET's reconstruction loss: squares summed over dim 1, averaged over the other dims.
fn recon_loss(y: &ArrayD<f32>, t: &ArrayD<f32>) -> f64 {
    let d1 = if y.ndim() > 1 { y.shape()[1] } else { 1 };
    let sum: f64 = y
        .iter()
        .zip(t.iter())
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    sum * d1 as f64 / y.len().max(1) as f64
}

/// A layer's cached samples: on the GPU, or on the host.
enum Cache {
    Gpu { x: GpuTensor, t: GpuTensor },
    Host,
}

/// Runs AdaRound over `x` (in GPU batches of `piece`), layer by layer; `progress` hears
/// (layer, layers, iteration, iterations) every few hundred iterations.
pub fn apply<'a>(
    sim: &mut QuantSim,
    x: impl Into<Samples<'a>>,
    piece: usize,
    opts: &AdaroundOptions,
    progress: &mut dyn FnMut(usize, usize, usize, usize),
) -> Result<AdaroundReport> {
    opts.validate()?;
    let x = x.into();
    let samples = x.len();
    if samples == 0 {
        return Err(Error::invalid("adaround", "samples", 0, "at least 1"));
    }
    let piece = piece.max(1);
    let gpu = sim.gpu().clone();
    let g = sim.prepared(1)?;
    let (todo, skipped) = layers(&g, sim.param_encodings());
    let mut report = AdaroundReport {
        skipped,
        ..Default::default()
    };
    // Two cuts walk the model once: the model with quantized weights (earlier layers already
    // rounded) gives each layer its input, the FP32 model the input its target is computed
    // from. The FP32 cut passes a layer before that layer is rounded, so it never sees a
    // rounded weight; the quantized cut passes it after.
    let mut quantized = Prefix::new(sim, &x, Enabled::weights_only(sim), piece)?;
    let mut fp32 = Prefix::new(sim, &x, Enabled::default(), piece)?;
    let mut rng = Rng::new(opts.seed);
    for (li, l) in todo.iter().enumerate() {
        let t0 = Instant::now();
        let xname = &l.node.inputs[0];
        let at = g.node_index(&l.node.name)?;
        quantized.advance_to(sim, at)?;
        fp32.advance_to(sim, at)?;
        let input = |p: &Prefix| -> Result<ArrayD<f32>> {
            p.value(xname)?.ok_or_else(|| {
                Error::invalid("adaround", "layer input", xname, "a value crossing the cut")
            })
        };
        let xs = input(&quantized)?;
        let ts = {
            let lg = layer_graph(&g, l, xs.shape());
            Runner::new(gpu.clone(), Prepared::new(lg))
                .batch(piece)
                .run(&[("x", input(&fp32)?.view())])?
                .remove(0)
        };
        fp32.advance_to(sim, at + 1)?;
        let iterations = opts.iterations_for(l.encoding.bitwidth);
        let (layer, cache_on) = round_layer(
            &gpu,
            &g,
            l,
            &xs,
            &ts,
            iterations,
            opts,
            &mut rng,
            &mut |it| progress(li, todo.len(), it, iterations),
        )?;
        let mut consts = BTreeMap::new();
        consts.insert(l.weight.clone(), Const::F32(layer.weight.clone()));
        sim.edit(Edits::consts(consts))?;
        report.layers.push(AdaroundLayer {
            weight: l.weight.clone(),
            node: l.node.name.clone(),
            activation: l.activation.as_ref().map(|a| a.op.onnx_type()),
            iterations,
            samples,
            loss_nearest: layer.loss_nearest,
            loss_adaround: layer.loss_adaround,
            rounded_up: layer.rounded_up,
            changed: layer.changed,
            cache: cache_on,
            cache_bytes: 4 * (xs.len() + ts.len()) as u64,
            seconds: t0.elapsed().as_secs_f64(),
            train_seconds: layer.train_seconds,
        });
    }
    Ok(report)
}

/// A rounded layer.
struct Rounded {
    weight: ArrayD<f32>,
    train_seconds: f64,
    loss_nearest: f64,
    loss_adaround: f64,
    rounded_up: f64,
    changed: f64,
}

/// Learns one layer's rounding on inputs `xs` and targets `ts`.
#[allow(clippy::too_many_arguments)]
fn round_layer(
    gpu: &Arc<Gpu>,
    g: &Graph,
    l: &Layer,
    xs: &ArrayD<f32>,
    ts: &ArrayD<f32>,
    iterations: usize,
    opts: &AdaroundOptions,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize),
) -> Result<(Rounded, CacheOn)> {
    let samples = xs.len_of(Axis(0));
    let batch = opts.batch.min(samples);
    let e = &l.encoding;
    let w = g.weight(&l.weight).expect("checked");
    let (channels, inner) = channel_of(w.shape(), e);
    let levels = e.steps();
    // floor(w / s) and the initial variables, so that h(a) is the fractional part of w / s.
    let mut floor = w.clone();
    let mut alpha = w.clone();
    for (i, (f, a)) in floor.iter_mut().zip(alpha.iter_mut()).enumerate() {
        let c = (i / inner) % channels;
        let v = *f / e.scale[c];
        let fl = v.floor();
        let rest = v - fl;
        *f = fl;
        *a = -((1.1 - -0.1) / (rest - -0.1) - 1.0).ln();
    }
    let mut grid = e.scale.clone();
    grid.extend_from_slice(&e.offset);
    let soft = SoftRounding {
        alpha: gpu.upload(&alpha.view())?,
        floor: gpu.upload(&floor.view())?,
        grid: gpu.upload_slice(&[grid.len()], &grid)?,
        channels,
        inner,
        levels,
        hyper: gpu.upload_slice(&[2], &[opts.beta.0, 0.0])?,
    };
    let mut xshape = xs.shape().to_vec();
    xshape[0] = batch;
    let lg = Prepared::new(layer_graph(g, l, &xshape)).at(batch)?;
    let params = Arc::new(Params::new(gpu.clone()));
    let trainable: HashSet<String> = ["w".to_string()].into();
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(),
        lr: opts.lr,
        schedule: Schedule::Constant,
        loss: LossKind::Mse,
        max_grad_norm: None,
        accumulate: 1,
        recompute: false,
    };
    let out = lg.outputs[0].clone();
    let mut trainer = Trainer::reparameterized(
        gpu.clone(),
        &lg,
        params.clone(),
        &trainable,
        &out,
        cfg,
        &[&soft],
    )?;
    // The trainer's MSE is the mean over elements; AIMET's loss sums dim 1 instead, so the
    // regularizer is divided by that dim to keep AIMET's balance (Adam ignores the scale).
    let out_shape = lg.shapes.get(&out).cloned().unwrap_or_default();
    let dim1 = out_shape.get(1).copied().unwrap_or(1).max(1) as f32;
    let row_x: usize = xs.shape()[1..].iter().product();
    let row_t: usize = ts.shape()[1..].iter().product();
    let bytes = 4 * (samples * (row_x + row_t)) as u64;
    let limits = gpu.limits();
    let cache = match bytes <= opts.gpu_cache_bytes
        && 4 * (samples * row_x.max(row_t)) as u64 <= limits.max_buffer
    {
        true => Cache::Gpu {
            x: gpu.upload(&xs.view())?,
            t: gpu.upload(&ts.view())?,
        },
        false => Cache::Host,
    };
    let xs_std = xs.as_standard_layout();
    let ts_std = ts.as_standard_layout();
    let (xflat, tflat) = (
        xs_std.as_slice().expect("standard"),
        ts_std.as_slice().expect("standard"),
    );
    let t0 = Instant::now();
    for it in 0..iterations {
        let (beta, on) = opts.beta_at(it, iterations);
        let reg = if on { opts.reg / dim1 } else { 0.0 };
        gpu.queue
            .write_buffer(soft.hyper.buf.raw(), 0, bytemuck::cast_slice(&[beta, reg]));
        let rows = draw(rng, samples, batch);
        match &cache {
            Cache::Gpu { x: cx, t: ct } => trainer.step_recorded(|enc, plan, target| {
                let input = plan.input_buffer("x").ok_or_else(|| Error::Graph {
                    model: "adaround".into(),
                    message: "the layer plan has no input 'x'".into(),
                })?;
                copy_rows(enc, cx, input, &rows, row_x);
                copy_rows(enc, ct, target, &rows, row_t);
                Ok(())
            })?,
            Cache::Host => {
                let mut bx = Vec::with_capacity(batch * row_x);
                let mut bt = Vec::with_capacity(batch * row_t);
                for &r in &rows {
                    bx.extend_from_slice(&xflat[r * row_x..(r + 1) * row_x]);
                    bt.extend_from_slice(&tflat[r * row_t..(r + 1) * row_t]);
                }
                let bx = ArrayD::from_shape_vec(IxDyn(&xshape), bx).expect("sized");
                let bt = ArrayD::from_shape_vec(IxDyn(&out_shape), bt).expect("sized");
                trainer.step(&[("x", bx.view())], crate::train::Target::Values(bt.view()))?
            }
        }
        if (it + 1) % 250 == 0 || it + 1 == iterations {
            // Waiting here keeps the queue of submitted steps short.
            trainer.read_loss()?;
            progress(it + 1);
        }
    }
    let alpha = gpu.download::<f32>(&soft.alpha)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let on_gpu = matches!(cache, Cache::Gpu { .. });
    drop(cache);
    // Hard rounding, and the nearest rounding AIMET's simulation would have used.
    let n_levels = levels as f32;
    let codes = crate::quant::params::weight_codes(w, e)?;
    let mut rounded = w.clone();
    let mut nearest = w.clone();
    let mut up = 0usize;
    let mut changed = 0usize;
    for (i, ((r, n), (&a, (&fl, &near)))) in rounded
        .iter_mut()
        .zip(nearest.iter_mut())
        .zip(alpha.iter().zip(floor.iter().zip(codes.iter())))
        .enumerate()
    {
        let c = (i / inner) % channels;
        let (s, o) = (e.scale[c], e.offset[c]);
        let h = if a >= 0.0 { 1.0 } else { 0.0 };
        up += h as usize;
        let q = (fl + h - o).clamp(0.0, n_levels);
        changed += (q != near) as usize;
        *r = (q + o) * s;
        *n = (near + o) * s;
    }
    let eval = Runner::new(gpu.clone(), Prepared::new(lg.as_ref().clone())).batch(batch);
    let loss_with = |weights: &ArrayD<f32>| -> Result<f64> {
        eval.params().set("w", &weights.view())?;
        let y = eval.run(&[("x", xs.view())])?.remove(0);
        Ok(recon_loss(&y, ts))
    };
    let loss_nearest = loss_with(&nearest)?;
    let loss_adaround = loss_with(&rounded)?;
    let total = rounded.len().max(1) as f64;
    Ok((
        Rounded {
            weight: rounded,
            train_seconds,
            loss_nearest,
            loss_adaround,
            rounded_up: up as f64 / total,
            changed: changed as f64 / total,
        },
        if on_gpu { CacheOn::Gpu } else { CacheOn::Host },
    ))
}

/// `batch` distinct sample indices of `samples` (AIMET's `randperm(n)[:batch]`).
fn draw(rng: &mut Rng, samples: usize, batch: usize) -> Vec<usize> {
    let mut p = rng.permutation(samples);
    p.truncate(batch);
    p
}

/// Records copies of rows `rows` (of `row` floats) of `src` into consecutive rows of `dst`.
fn copy_rows(enc: &mut Encoder, src: &GpuTensor, dst: &GpuTensor, rows: &[usize], row: usize) {
    let b = 4 * row as u64;
    for (j, &r) in rows.iter().enumerate() {
        enc.copy(src, r as u64 * b, dst, j as u64 * b, b);
    }
}
