//! [`Trainer`]: one compiled training step — forward, loss, backward and optimizer update
//! recorded as prepared steps and submitted together, parameters updated in place in the
//! shared [`Params`] store (so every plan on that store sees them), the loss read back only
//! when asked.

use std::collections::HashSet;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{DType, Error, Result};
use crate::exec::{Backward, Compile, Params, Plan};
use crate::gpu::{Encoder, Gpu, GpuTensor, Steps};
use crate::graph::ir::{Graph, Op};
use crate::ops::train::{self as kernels, hyper, LossKind, Optimizer, HYPER_LEN};
use crate::train::optim::Schedule;

/// How to train.
#[derive(Clone, Copy, Debug)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    /// Base learning rate (> 0).
    pub lr: f32,
    pub schedule: Schedule,
    pub loss: LossKind,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f32>,
    /// Micro-batches whose gradients add up before each optimizer step (>= 1).
    pub accumulate: usize,
    /// Recompute the activations after pointwise expansions from narrow inputs in the
    /// backward instead of keeping them (`exec::recompute`: less memory, one more 1x1
    /// convolution each per step).
    pub recompute: bool,
}

impl TrainConfig {
    /// Checks the settings: a finite learning rate > 0, accumulation >= 1, a finite
    /// distillation temperature > 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(
                "train",
                "learning rate",
                self.lr,
                "must be a finite number > 0",
            ));
        }
        if self.accumulate == 0 {
            return Err(Error::invalid("train", "accumulate", 0, "must be >= 1"));
        }
        if let LossKind::Distill { temperature } = self.loss {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(Error::invalid(
                    "train",
                    "temperature",
                    temperature,
                    "must be a finite number > 0",
                ));
            }
        }
        Ok(())
    }
}

/// What the loss compares the outputs with, for one micro-batch.
pub enum Target<'a> {
    /// A class index per sample (cross-entropy).
    Labels(&'a [usize]),
    /// Values of the output's shape (a teacher's outputs computed elsewhere).
    Values(ArrayViewD<'a, f32>),
    /// A teacher plan run on the same inputs in the same submission.
    Teacher(&'a Plan),
}

/// The loss averaged since the last reading.
#[derive(Clone, Copy, Debug)]
pub struct LossReading {
    /// Mean loss per sample (cross-entropy, distillation) or per element (MSE).
    pub mean: f64,
    /// Micro-batches it averages.
    pub batches: u64,
    /// The global gradient norm of the last optimizer step (before clipping).
    pub grad_norm: f32,
}

/// A parameter trained through another tensor, its latent (AdaRound trains rounding
/// variables that set a weight): the optimizer updates the latent; before each forward the
/// parameter is computed from it, after each backward the parameter's gradient is turned into
/// the latent's.
pub trait Reparam {
    /// The parameter of the graph it sets.
    fn param(&self) -> &str;
    /// The name its optimizer state is saved under.
    fn latent_name(&self) -> String;
    /// The tensor the optimizer updates.
    fn latent(&self) -> &GpuTensor;
    /// Records `param = f(latent)`.
    fn record_forward(&self, steps: &mut Steps, gpu: &Gpu, param: &GpuTensor) -> Result<()>;
    /// Records `latent_grad += d param / d latent * param_grad` (plus any regularizer of the
    /// latent) and zeroes `param_grad`.
    fn record_backward(
        &self,
        steps: &mut Steps,
        gpu: &Gpu,
        param_grad: &GpuTensor,
        latent_grad: &GpuTensor,
    ) -> Result<()>;
    /// The latent's learning rate relative to the schedule's (1: the same).
    fn lr_scale(&self) -> f32 {
        1.0
    }
}

/// One trainable parameter (or latent) with its gradient and optimizer state.
struct Slot {
    name: String,
    lr_scale: f32,
    value: GpuTensor,
    grad: GpuTensor,
    m: GpuTensor,
    v: Option<GpuTensor>,
}

/// A compiled training step for one batch size.
pub struct Trainer {
    gpu: Arc<Gpu>,
    forward: Plan,
    backward: Backward,
    output: String,
    len: usize,
    cfg: TrainConfig,
    target: GpuTensor,
    loss_acc: GpuTensor,
    hyper: GpuTensor,
    /// The reparameterized parameters' values from their latents.
    reparam_steps: Steps,
    loss_steps: Steps,
    /// The latents' gradients from their parameters'.
    unreparam_steps: Steps,
    update_steps: Steps,
    slots: Vec<Slot>,
    step: u64,
    micro: usize,
}

/// The parameters training changes by default: the float constants that are the weights and
/// biases of Conv, ConvTranspose, Gemm and MatMul, and PRelu slopes (in graph order).
pub fn parameters(g: &Graph) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in &g.nodes {
        let idx: &[usize] = match n.op {
            Op::Conv(_) | Op::ConvTranspose { .. } => &[1, 2],
            Op::Gemm { .. } | Op::MatMul => &[0, 1, 2],
            Op::Binary(crate::graph::attrs::Binary::PRelu) => &[1],
            _ => &[],
        };
        for &i in idx {
            if let Some(name) = n.inputs.get(i).filter(|v| !v.is_empty()) {
                let is_float = matches!(g.consts.get(name), Some(crate::graph::ir::Const::F32(_)));
                if is_float && !out.contains(name) {
                    out.push(name.clone());
                }
            }
        }
    }
    out
}

/// The row length the MSE loss kernels split `total` elements into: the last dim, or, when
/// that makes more rows than one thread sums, the smallest divisor of `total` that does not
/// (a squared error sums the same over any rows).
fn mse_row(total: usize, last: usize) -> usize {
    let budget = kernels::MAX_LOSS_ROWS;
    if total.div_ceil(last.max(1)) <= budget {
        return last.max(1);
    }
    (total.div_ceil(budget)..=total)
        .find(|d| total % d == 0)
        .unwrap_or(total)
}

impl Trainer {
    /// Compiles the training step of `g` (resolved for its batch) on the parameter store
    /// `params`, training `trainable` and computing the loss on `output`.
    pub fn new(
        gpu: Arc<Gpu>,
        g: &Graph,
        params: Arc<Params>,
        trainable: &HashSet<String>,
        output: &str,
        cfg: TrainConfig,
    ) -> Result<Trainer> {
        Trainer::reparameterized(gpu, g, params, trainable, output, cfg, &[])
    }

    /// [`Trainer::new`] where the parameters `reparams` name are trained through their
    /// latents (each must also be in `trainable`).
    pub fn reparameterized(
        gpu: Arc<Gpu>,
        g: &Graph,
        params: Arc<Params>,
        trainable: &HashSet<String>,
        output: &str,
        cfg: TrainConfig,
        reparams: &[&dyn Reparam],
    ) -> Result<Trainer> {
        cfg.validate()?;
        if let Some(r) = reparams.iter().find(|r| !trainable.contains(r.param())) {
            return Err(Error::Graph {
                model: g.name.clone(),
                message: format!("reparameterized '{}' is not trainable", r.param()),
            });
        }
        if !g.outputs.iter().any(|o| o == output) {
            return Err(Error::Graph {
                model: g.name.clone(),
                message: format!("'{output}' is not an output of the model"),
            });
        }
        let taps = Backward::taps(&gpu, g, trainable, cfg.recompute)?;
        let forward = Plan::compile(
            gpu.clone(),
            g,
            Compile {
                taps: &taps,
                params: Some(params.clone()),
                simulation: None,
            },
        )?;
        let backward = Backward::build(gpu.clone(), g, &forward, trainable, cfg.recompute)?;
        let out_shape = g.shapes.get(output).cloned().unwrap_or_default();
        let total: usize = out_shape.iter().product();
        let len = match cfg.loss {
            LossKind::Mse => mse_row(total, *out_shape.last().unwrap_or(&1)),
            _ => total / out_shape.first().copied().unwrap_or(1).max(1),
        };
        let rows = total / len.max(1);
        let micro = cfg.accumulate as f32;
        let scale = match cfg.loss {
            LossKind::Mse => 1.0 / (total as f32 * micro),
            _ => 1.0 / (rows as f32 * micro),
        };
        let target = gpu.empty(
            &match cfg.loss {
                LossKind::CrossEntropy => vec![rows],
                _ => out_shape.clone(),
            },
            DType::F32,
        )?;
        let row_loss = gpu.empty(&[rows], DType::F32)?;
        let loss_acc = gpu.upload_slice(&[4], &[0f32; 4])?;
        let hyper_buf = gpu.upload_slice(&[HYPER_LEN], &[0f32; HYPER_LEN])?;
        let ds = backward.output_grad(output).ok_or_else(|| Error::Graph {
            model: g.name.clone(),
            message: format!("output '{output}' does not depend on a trainable parameter"),
        })?;
        let y = forward.tensor(output).expect("outputs are kept").clone();
        let mut loss_steps = Steps::default();
        kernels::loss_rows_into(
            &mut loss_steps,
            &gpu,
            cfg.loss,
            &y,
            &target,
            len,
            scale,
            ds,
            &row_loss,
        )?;
        kernels::loss_sum_into(&mut loss_steps, &gpu, &row_loss, &loss_acc)?;
        let mut slots = Vec::new();
        let (mut reparam_steps, mut unreparam_steps) = (Steps::default(), Steps::default());
        for (name, grad) in backward.param_grads() {
            let value = params.get(name).ok_or_else(|| Error::Graph {
                model: g.name.clone(),
                message: format!("parameter '{name}' is not bound by the plan"),
            })?;
            let (name, lr_scale, value, grad) = match reparams.iter().find(|r| r.param() == name) {
                Some(r) => {
                    let latent = r.latent().clone();
                    let latent_grad =
                        gpu.upload_slice(latent.shape(), &vec![0f32; latent.len()])?;
                    r.record_forward(&mut reparam_steps, &gpu, &value)?;
                    r.record_backward(&mut unreparam_steps, &gpu, grad, &latent_grad)?;
                    (r.latent_name(), r.lr_scale(), latent, latent_grad)
                }
                None => (name.clone(), 1.0, value, grad.clone()),
            };
            let zeros = vec![0f32; value.len()];
            let m = gpu.upload_slice(value.shape(), &zeros)?;
            let v = match cfg.optimizer.has_second_moment() {
                true => Some(gpu.upload_slice(value.shape(), &zeros)?),
                false => None,
            };
            slots.push(Slot {
                name,
                lr_scale,
                value,
                grad,
                m,
                v,
            });
        }
        let norm_slots: usize = slots
            .iter()
            .map(|s| kernels::norm_slots(s.grad.len()))
            .sum();
        let sums = gpu.empty(&[norm_slots.max(1)], DType::F32)?;
        let mut update_steps = Steps::default();
        let mut at = 0;
        for s in &slots {
            kernels::sq_sum_into(&mut update_steps, &gpu, &s.grad, &sums, at)?;
            at += kernels::norm_slots(s.grad.len());
        }
        kernels::clip_scale_into(&mut update_steps, &gpu, &sums, &hyper_buf)?;
        for s in &slots {
            kernels::optimizer_step_into(
                &mut update_steps,
                &gpu,
                &cfg.optimizer,
                &hyper_buf,
                s.lr_scale,
                &s.value,
                &s.grad,
                &s.m,
                s.v.as_ref(),
            )?;
        }
        Ok(Trainer {
            gpu,
            forward,
            backward,
            output: output.to_string(),
            len,
            cfg,
            target,
            loss_acc,
            hyper: hyper_buf,
            reparam_steps,
            loss_steps,
            unreparam_steps,
            update_steps,
            slots,
            step: 0,
            micro: 0,
        })
    }

    /// The forward plan (its outputs hold the last micro-batch's values).
    pub fn forward(&self) -> &Plan {
        &self.forward
    }

    /// The backward pass.
    pub fn backward(&self) -> &Backward {
        &self.backward
    }

    /// Names of the parameters trained, sorted.
    pub fn trained(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Sets the number of optimizer steps taken (resuming from a checkpoint).
    pub fn set_steps(&mut self, step: u64) {
        self.step = step;
    }

    /// The batch size one micro-batch has.
    pub fn batch(&self) -> usize {
        self.forward
            .tensor(&self.forward.inputs()[0])
            .map(|t| t.shape()[0])
            .unwrap_or(1)
    }

    /// Records and submits one micro-batch: forward, loss against `target`, backward, and,
    /// every `accumulate` micro-batches, the optimizer step. Does not wait.
    pub fn step(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        target: Target<'_>,
    ) -> Result<()> {
        self.forward.write_inputs(inputs)?;
        let mut enc = self.gpu.encoder();
        match target {
            Target::Labels(labels) => {
                let rows = self.target.len();
                if labels.len() != rows {
                    return Err(Error::ShapeMismatch {
                        op: "train",
                        tensor: "labels".into(),
                        expected: format!("{rows} labels (one per sample)"),
                        got: vec![labels.len()],
                    });
                }
                if let Some(&bad) = labels.iter().find(|&&l| l >= self.len) {
                    return Err(Error::invalid(
                        "train",
                        "label",
                        bad,
                        format!("the model has {} classes", self.len),
                    ));
                }
                let v: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                self.gpu
                    .queue
                    .write_buffer(self.target.buf.raw(), 0, bytemuck::cast_slice(&v));
            }
            Target::Values(v) => {
                if v.shape() != self.target.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "train",
                        tensor: "target".into(),
                        expected: format!("{:?}", self.target.shape()),
                        got: v.shape().to_vec(),
                    });
                }
                self.check_finite("target", v.iter().copied())?;
                let std = v.as_standard_layout();
                self.gpu.queue.write_buffer(
                    self.target.buf.raw(),
                    0,
                    bytemuck::cast_slice(std.as_slice().expect("standard")),
                );
            }
            Target::Teacher(t) => {
                let out = t.tensor(&t.outputs()[0]).ok_or_else(|| Error::Graph {
                    model: "teacher".into(),
                    message: "the teacher plan keeps no output".into(),
                })?;
                if out.shape() != self.target.shape() || self.cfg.loss == LossKind::CrossEntropy {
                    return Err(Error::ShapeMismatch {
                        op: "train",
                        tensor: "teacher output".into(),
                        expected: format!(
                            "{:?} (the student's '{}') with a distillation or MSE loss",
                            self.target.shape(),
                            self.output
                        ),
                        got: out.shape().to_vec(),
                    });
                }
                t.write_inputs(inputs)?;
                t.record(&mut enc);
                enc.copy(out, 0, &self.target, 0, out.bytes());
            }
        }
        self.record_step(enc)
    }

    /// Like [`Trainer::step`], with the inputs and the target already on the GPU: `fill`
    /// records their copies into the forward plan's input tensors and the loss target (a
    /// class index per row for cross-entropy, else the output's shape).
    pub fn step_recorded(
        &mut self,
        fill: impl FnOnce(&mut Encoder, &Plan, &GpuTensor) -> Result<()>,
    ) -> Result<()> {
        let mut enc = self.gpu.encoder();
        fill(&mut enc, &self.forward, &self.target)?;
        self.record_step(enc)
    }

    /// Records the step after the inputs and target are in place, and submits it.
    fn record_step(&mut self, mut enc: Encoder) -> Result<()> {
        enc.run(&self.reparam_steps.0);
        self.forward.record(&mut enc);
        self.backward.record_zero(&mut enc);
        enc.run(&self.loss_steps.0);
        self.backward.record(&mut enc);
        enc.run(&self.unreparam_steps.0);
        self.micro += 1;
        if self.micro == self.cfg.accumulate {
            self.write_hyper();
            enc.run(&self.update_steps.0);
            self.step += 1;
            self.micro = 0;
        }
        self.gpu.submit(enc)
    }

    fn check_finite(&self, what: &str, v: impl Iterator<Item = f32>) -> Result<()> {
        let bad = v.filter(|x| !x.is_finite()).count() as u64;
        if bad > 0 {
            return Err(Error::NonFinite {
                op: "train",
                tensor: what.into(),
                count: bad,
            });
        }
        Ok(())
    }

    /// The step-dependent numbers of the coming optimizer step.
    fn write_hyper(&self) {
        let t = self.step + 1;
        let mut h = [0f32; HYPER_LEN];
        h[hyper::LR] = self.cfg.schedule.rate(self.cfg.lr, self.step);
        let (b1, b2) = self.cfg.optimizer.betas().unwrap_or((0.0, 0.0));
        h[hyper::BIAS1] = (1.0 - (b1 as f64).powi(t as i32)) as f32;
        h[hyper::BIAS2] = (1.0 - (b2 as f64).powi(t as i32)) as f32;
        h[hyper::CLIP] = 1.0;
        h[hyper::MAX_NORM] = self.cfg.max_grad_norm.unwrap_or(0.0);
        self.gpu
            .queue
            .write_buffer(self.hyper.buf.raw(), 0, bytemuck::cast_slice(&h));
    }

    /// Waits for the submitted steps and returns the loss averaged since the last reading.
    pub fn read_loss(&self) -> Result<LossReading> {
        let enc = self.gpu.encoder();
        let bytes = self
            .gpu
            .submit_and_read(enc, &[&self.loss_acc, &self.hyper])?;
        let acc: &[f32] = bytemuck::cast_slice(&bytes[0]);
        let h: &[f32] = bytemuck::cast_slice(&bytes[1]);
        self.gpu
            .queue
            .write_buffer(self.loss_acc.buf.raw(), 0, bytemuck::cast_slice(&[0f32; 4]));
        let per = match self.cfg.loss {
            LossKind::Mse => acc[1] as f64 * self.len as f64,
            _ => acc[1] as f64,
        };
        Ok(LossReading {
            mean: acc[0] as f64 / per.max(1.0),
            batches: acc[2] as u64,
            grad_norm: h[hyper::NORM],
        })
    }

    /// Every trained parameter's value and optimizer state, by name (`<name>`, `<name>.m`,
    /// `<name>.v`), read back in one submission.
    pub fn state(&self) -> Result<Vec<(String, ArrayD<f32>)>> {
        let mut names = Vec::new();
        let mut tensors = Vec::new();
        for s in &self.slots {
            names.push(s.name.clone());
            tensors.push(&s.value);
            names.push(format!("{}.m", s.name));
            tensors.push(&s.m);
            if let Some(v) = &s.v {
                names.push(format!("{}.v", s.name));
                tensors.push(v);
            }
        }
        let bytes = self.gpu.submit_and_read(self.gpu.encoder(), &tensors)?;
        names
            .into_iter()
            .zip(tensors.iter().zip(bytes))
            .map(|(n, (t, b))| Ok((n, crate::gpu::to_array::<f32>(t, &b)?)))
            .collect()
    }

    /// Restores values and optimizer state written by [`Trainer::state`]; every trained
    /// parameter must be present with its shape.
    pub fn load_state(&self, state: &[(String, ArrayD<f32>)]) -> Result<()> {
        let find = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, a)| a);
        for s in &self.slots {
            let mut pairs = vec![(s.name.clone(), &s.value), (format!("{}.m", s.name), &s.m)];
            if let Some(v) = &s.v {
                pairs.push((format!("{}.v", s.name), v));
            }
            for (name, t) in pairs {
                let a = find(&name).ok_or_else(|| Error::invalid(
                    "checkpoint",
                    "tensor",
                    &name,
                    "missing (was the checkpoint made with other trainable parameters or optimizer?)",
                ))?;
                if a.shape() != t.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "checkpoint",
                        tensor: name,
                        expected: format!("{:?}", t.shape()),
                        got: a.shape().to_vec(),
                    });
                }
                let std = a.as_standard_layout();
                self.gpu.queue.write_buffer(
                    t.buf.raw(),
                    0,
                    bytemuck::cast_slice(std.as_slice().expect("standard")),
                );
            }
        }
        Ok(())
    }
}
