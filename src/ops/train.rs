//! Training kernels (`shaders/train.wgsl`), record-only: losses with the gradient of the
//! outputs, the global gradient norm and its clipping factor, SGD and Adam(W) steps. What
//! changes per step (learning rate, bias corrections) is read from a `hyper` buffer of
//! [`HYPER_LEN`] floats the host rewrites, so prepared steps replay unchanged.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, grid_stride, LOOP_BUDGET, WG};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};

use Access::{Read, ReadWrite, Uniform};

/// `hyper` slots (train.wgsl's constants).
pub mod hyper {
    pub const LR: usize = 0;
    /// 1 - beta1^t.
    pub const BIAS1: usize = 1;
    /// 1 - beta2^t.
    pub const BIAS2: usize = 2;
    /// The factor gradients are multiplied by (written by the clipping kernel).
    pub const CLIP: usize = 3;
    /// The clipping threshold (0: none).
    pub const MAX_NORM: usize = 4;
    /// The last step's global gradient norm.
    pub const NORM: usize = 5;
}

/// Rows the loss accumulator sums (one thread).
pub const MAX_LOSS_ROWS: usize = LOOP_BUDGET as usize;

/// Floats in a `hyper` buffer.
pub const HYPER_LEN: usize = 8;

static LOSS: Kernel = Kernel {
    family: Family::Train,
    entry: "loss_rows",
    bindings: &[Uniform, Read, Read, ReadWrite, ReadWrite],
};
static LOSS_SUM: Kernel = Kernel {
    family: Family::Train,
    entry: "loss_sum",
    bindings: &[Uniform, Read, ReadWrite],
};
static SQ_SUM: Kernel = Kernel {
    family: Family::Train,
    entry: "sq_sum",
    bindings: &[Uniform, Read, ReadWrite],
};
static CLIP: Kernel = Kernel {
    family: Family::Train,
    entry: "clip_scale",
    bindings: &[Uniform, Read, ReadWrite],
};
static SGD: Kernel = Kernel {
    family: Family::Train,
    entry: "sgd_step",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
};
static ADAM: Kernel = Kernel {
    family: Family::Train,
    entry: "adam_step",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite],
};

/// What a loss compares the outputs with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossKind {
    /// Softmax cross-entropy with a class index per row (as f32).
    CrossEntropy,
    /// Hinton's distillation: T^2 KL(softmax(teacher / T) || softmax(student / T)).
    Distill { temperature: f32 },
    /// Sum of squared differences to the teacher's outputs.
    Mse,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    rows: u32,
    len: u32,
    mode: u32,
    _pad0: u32,
    scale: f32,
    temperature: f32,
    _pad1: [u32; 2],
}

/// Per-row losses into `row_loss` (`[rows]`) and `ds += scale * d loss / d s` for outputs
/// `s` of `[rows, len]`; `target` is `[rows]` class indices or `[rows, len]` teacher values.
#[allow(clippy::too_many_arguments)]
pub fn loss_rows_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    kind: LossKind,
    s: &GpuTensor,
    target: &GpuTensor,
    len: usize,
    scale: f32,
    ds: &GpuTensor,
    row_loss: &GpuTensor,
) -> Result<()> {
    const OP: &str = "loss";
    for (n, t) in [
        ("s", s),
        ("target", target),
        ("ds", ds),
        ("row_loss", row_loss),
    ] {
        t.expect_dtype(OP, n, DType::F32)?;
    }
    if len == 0 || s.len() % len != 0 || ds.len() != s.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "s".into(),
            expected: format!("rows of {len}"),
            got: s.shape().to_vec(),
        });
    }
    let rows = s.len() / len;
    let want_target = match kind {
        LossKind::CrossEntropy => rows,
        _ => s.len(),
    };
    if target.len() != want_target || row_loss.len() != rows {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "target".into(),
            expected: format!("{want_target} elements"),
            got: target.shape().to_vec(),
        });
    }
    if 4 * len > LOOP_BUDGET as usize {
        return Err(Error::invalid(
            OP,
            "row length",
            len,
            format!("at most {}", LOOP_BUDGET / 4),
        ));
    }
    let (mode, temperature) = match kind {
        LossKind::CrossEntropy => (0, 1.0),
        LossKind::Distill { temperature } => (1, temperature),
        LossKind::Mse => (2, 1.0),
    };
    let params = LossParams {
        rows: rows as u32,
        len: len as u32,
        mode,
        scale,
        temperature,
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &LOSS,
        &[],
        &params,
        &[
            Bind::Whole(s),
            Bind::Whole(target),
            Bind::Whole(ds),
            Bind::Whole(row_loss),
        ],
        grid_1d((rows as u64).div_ceil(64), gpu.limits().max_groups)?,
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Count {
    n: u32,
    offset: u32,
    slot: u32,
    _pad: u32,
}

/// `acc[0..3] += (sum of row_loss, rows, 1)`.
pub fn loss_sum_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    row_loss: &GpuTensor,
    acc: &GpuTensor,
) -> Result<()> {
    if acc.len() < 3 || row_loss.len() > LOOP_BUDGET as usize {
        return Err(Error::invalid(
            "loss sum",
            "rows",
            row_loss.len(),
            format!("at most {LOOP_BUDGET}, into an accumulator of 3"),
        ));
    }
    let params = Count {
        n: row_loss.len() as u32,
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &LOSS_SUM,
        &[],
        &params,
        &[Bind::Whole(row_loss), Bind::Whole(acc)],
        [1, 1, 1],
    )
}

/// Slots of a norm buffer one gradient of `len` elements needs.
pub fn norm_slots(len: usize) -> usize {
    len.div_ceil(chunk_len()).max(1)
}

fn chunk_len() -> usize {
    (LOOP_BUDGET * WG) as usize
}

/// Sums of squares of `g` into `sums[slot..slot + norm_slots(g.len())]`.
pub fn sq_sum_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    g: &GpuTensor,
    sums: &GpuTensor,
    slot: usize,
) -> Result<()> {
    let chunk = chunk_len();
    if slot + norm_slots(g.len()) > sums.len() {
        return Err(Error::invalid(
            "gradient norm",
            "slot",
            slot,
            format!("past the {} slots", sums.len()),
        ));
    }
    for (i, offset) in (0..g.len().max(1)).step_by(chunk).enumerate() {
        let params = Count {
            n: (g.len() - offset).min(chunk) as u32,
            offset: offset as u32,
            slot: (slot + i) as u32,
            _pad: 0,
        };
        enc.dispatch(
            gpu,
            &SQ_SUM,
            &[],
            &params,
            &[Bind::Whole(g), Bind::Whole(sums)],
            [1, 1, 1],
        )?;
    }
    Ok(())
}

/// `hyper[NORM] = sqrt(sum of sums)`, `hyper[CLIP] = min(1, hyper[MAX_NORM] / norm)` (1 when
/// there is no threshold).
pub fn clip_scale_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    sums: &GpuTensor,
    hyper: &GpuTensor,
) -> Result<()> {
    if sums.len() > LOOP_BUDGET as usize || hyper.len() < HYPER_LEN {
        return Err(Error::invalid(
            "gradient norm",
            "slots",
            sums.len(),
            format!("at most {LOOP_BUDGET}"),
        ));
    }
    let params = Count {
        n: sums.len() as u32,
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &CLIP,
        &[],
        &params,
        &[Bind::Whole(sums), Bind::Whole(hyper)],
        [1, 1, 1],
    )
}

/// Which optimizer, with its fixed settings (the learning rate comes from `hyper`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// PyTorch's SGD (dampening 0): momentum (0: plain), optionally Nesterov, L2 weight decay.
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    /// PyTorch's Adam (`decoupled: false`, L2 added to the gradient) or AdamW (`true`).
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        decoupled: bool,
    },
}

impl Optimizer {
    /// SGD, momentum 0.9.
    pub fn sgd() -> Optimizer {
        Optimizer::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults.
    pub fn adam() -> Optimizer {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw() -> Optimizer {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
        }
    }

    /// `sgd`, `adam` or `adamw` with their defaults.
    pub fn named(name: &str) -> Result<Optimizer> {
        match name {
            "sgd" => Ok(Optimizer::sgd()),
            "adam" => Ok(Optimizer::adam()),
            "adamw" => Ok(Optimizer::adamw()),
            _ => Err(Error::invalid(
                "optimizer",
                "name",
                name,
                "expected sgd, adam or adamw",
            )),
        }
    }

    /// The same optimizer with another weight decay.
    pub fn with_weight_decay(mut self, wd: f32) -> Optimizer {
        match &mut self {
            Optimizer::Sgd { weight_decay, .. } | Optimizer::Adam { weight_decay, .. } => {
                *weight_decay = wd
            }
        }
        self
    }

    /// Whether it keeps a second moment per parameter.
    pub fn has_second_moment(&self) -> bool {
        matches!(self, Optimizer::Adam { .. })
    }

    /// (beta1, beta2) for the bias corrections (SGD: none).
    pub fn betas(&self) -> Option<(f32, f32)> {
        match *self {
            Optimizer::Sgd { .. } => None,
            Optimizer::Adam { beta1, beta2, .. } => Some((beta1, beta2)),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct OptParams {
    n: u32,
    step: u32,
    nesterov: u32,
    decoupled: u32,
    momentum: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    lr_scale: f32,
    _pad: [u32; 2],
}

/// One optimizer step on parameter `p` with gradient `g` (times `hyper[CLIP]`), state `m`
/// (and `v` for Adam), at `lr_scale` times the learning rate `hyper[LR]`; `g` is zeroed for
/// the next accumulation.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    step: &Optimizer,
    hyper: &GpuTensor,
    lr_scale: f32,
    p: &GpuTensor,
    g: &GpuTensor,
    m: &GpuTensor,
    v: Option<&GpuTensor>,
) -> Result<()> {
    const OP: &str = "optimizer step";
    if !(lr_scale >= 0.0 && lr_scale.is_finite()) {
        return Err(Error::invalid(
            OP,
            "lr_scale",
            lr_scale,
            "a finite number >= 0",
        ));
    }
    for (n, t) in [("g", g), ("m", m)] {
        if t.len() != p.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                tensor: n.into(),
                expected: format!("{} elements", p.len()),
                got: t.shape().to_vec(),
            });
        }
    }
    let (grid, stride) = grid_stride(p.len() as u64, gpu.limits().max_groups)?;
    let mut params = OptParams {
        n: p.len() as u32,
        step: stride as u32,
        lr_scale,
        ..Default::default()
    };
    match *step {
        Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay,
        } => {
            params.momentum = momentum;
            params.nesterov = nesterov as u32;
            params.weight_decay = weight_decay;
            enc.dispatch(
                gpu,
                &SGD,
                &[],
                &params,
                &[
                    Bind::Whole(hyper),
                    Bind::Whole(p),
                    Bind::Whole(g),
                    Bind::Whole(m),
                ],
                grid,
            )
        }
        Optimizer::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
        } => {
            let v = v.ok_or_else(|| Error::invalid(OP, "state", "m", "Adam needs m and v"))?;
            if v.len() != p.len() {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    tensor: "v".into(),
                    expected: format!("{} elements", p.len()),
                    got: v.shape().to_vec(),
                });
            }
            params.beta1 = beta1;
            params.beta2 = beta2;
            params.eps = eps;
            params.weight_decay = weight_decay;
            params.decoupled = decoupled as u32;
            enc.dispatch(
                gpu,
                &ADAM,
                &[],
                &params,
                &[
                    Bind::Whole(hyper),
                    Bind::Whole(p),
                    Bind::Whole(g),
                    Bind::Whole(m),
                    Bind::Whole(v),
                ],
                grid,
            )
        }
    }
}

static SOFT_ROUND: Kernel = Kernel {
    family: Family::Train,
    entry: "soft_round",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static SOFT_ROUND_GRAD: Kernel = Kernel {
    family: Family::Train,
    entry: "soft_round_grad",
    bindings: &[Uniform, Read, Read, Read, ReadWrite, Read, ReadWrite],
};

/// Where a soft-rounded weight's grid lives: `grid` holds the channels' scales then their
/// offsets (`[2 * channels]`), channel `c` of element `i` is `(i / inner) % channels`, and
/// codes run over `0..=levels`.
#[derive(Clone, Copy, Debug)]
pub struct SoftGrid<'a> {
    pub grid: &'a GpuTensor,
    pub channels: usize,
    pub inner: usize,
    pub levels: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftParams {
    n: u32,
    inner: u32,
    channels: u32,
    step: u32,
    levels: f32,
    _pad: [u32; 3],
}

fn soft_params(
    op: &'static str,
    gpu: &Gpu,
    n: usize,
    grid: &SoftGrid<'_>,
) -> Result<(SoftParams, [u32; 3])> {
    if grid.channels == 0
        || grid.inner == 0
        || grid.grid.len() != 2 * grid.channels
        || n % (grid.channels * grid.inner) != 0
    {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "grid".into(),
            expected: format!(
                "scales and offsets of {} channels (every {} elements) over {n} weights",
                grid.channels, grid.inner
            ),
            got: grid.grid.shape().to_vec(),
        });
    }
    let (groups, stride) = grid_stride(n as u64, gpu.limits().max_groups)?;
    Ok((
        SoftParams {
            n: n as u32,
            inner: grid.inner as u32,
            channels: grid.channels as u32,
            step: stride as u32,
            levels: grid.levels as f32,
            _pad: [0; 3],
        },
        groups,
    ))
}

fn same_len(op: &'static str, n: usize, tensors: &[(&str, &GpuTensor)]) -> Result<()> {
    for (name, t) in tensors {
        if t.len() != n {
            return Err(Error::ShapeMismatch {
                op,
                tensor: name.to_string(),
                expected: format!("{n} elements"),
                got: t.shape().to_vec(),
            });
        }
    }
    Ok(())
}

/// `w = (clamp(floor + h(a) - offset, 0, levels) + offset) * scale` per element, with AdaRound's
/// rectified sigmoid `h(a) = clamp(sigmoid(a) * 1.2 - 0.1, 0, 1)`.
pub fn soft_round_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    floor: &GpuTensor,
    grid: SoftGrid<'_>,
    w: &GpuTensor,
) -> Result<()> {
    const OP: &str = "soft rounding";
    same_len(OP, a.len(), &[("floor", floor), ("w", w)])?;
    let (params, groups) = soft_params(OP, gpu, a.len(), &grid)?;
    enc.dispatch(
        gpu,
        &SOFT_ROUND,
        &[],
        &params,
        &[
            Bind::Whole(a),
            Bind::Whole(floor),
            Bind::Whole(grid.grid),
            Bind::Whole(w),
        ],
        groups,
    )
}

/// `da += (dw * scale * [0 <= code <= levels] + reg * d(1 - |2h - 1|^beta)/dh) * dh/da` with
/// `hyper = [beta, reg]` (reg 0: no regularizer), then `dw = 0`.
#[allow(clippy::too_many_arguments)]
pub fn soft_round_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    floor: &GpuTensor,
    grid: SoftGrid<'_>,
    dw: &GpuTensor,
    hyper: &GpuTensor,
    da: &GpuTensor,
) -> Result<()> {
    const OP: &str = "soft rounding gradient";
    same_len(OP, a.len(), &[("floor", floor), ("dw", dw), ("da", da)])?;
    if hyper.len() < 2 {
        return Err(Error::invalid(
            OP,
            "hyper",
            hyper.len(),
            "needs [beta, reg]",
        ));
    }
    let (params, groups) = soft_params(OP, gpu, a.len(), &grid)?;
    enc.dispatch(
        gpu,
        &SOFT_ROUND_GRAD,
        &[],
        &params,
        &[
            Bind::Whole(a),
            Bind::Whole(floor),
            Bind::Whole(grid.grid),
            Bind::Whole(dw),
            Bind::Whole(hyper),
            Bind::Whole(da),
        ],
        groups,
    )
}

static RANGE_TABLE: Kernel = Kernel {
    family: Family::Train,
    entry: "range_table",
    bindings: &[Uniform, Read, ReadWrite],
};
static RANGE_TABLE_GRAD: Kernel = Kernel {
    family: Family::Train,
    entry: "range_table_grad",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RangeParams {
    channels: u32,
    learn_offset: u32,
    min_scale: f32,
    grad_scale: f32,
    steps: f32,
    _pad: [u32; 3],
}

fn range_params(
    op: &'static str,
    range: &GpuTensor,
    table: &GpuTensor,
) -> Result<(RangeParams, [u32; 3])> {
    let channels = range.len() / 2;
    if channels == 0 || range.len() != 2 * channels || table.len() != 4 * channels {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "range / table".into(),
            expected: "[channels, 2] and [channels, 4]".into(),
            got: table.shape().to_vec(),
        });
    }
    Ok((
        RangeParams {
            channels: channels as u32,
            learn_offset: 0,
            min_scale: f32::EPSILON,
            grad_scale: 1.0,
            ..Default::default()
        },
        [(channels as u32).div_ceil(64), 1, 1],
    ))
}

/// A quantizer's encoding table `[channels, 4]` = (scale, 1 / scale, offset, 0) from its
/// learned range `[channels, 2]` = (ln scale, offset), the scale at least f32 epsilon (AIMET's
/// smallest step). The scale is learned as its logarithm so that one optimizer step changes
/// every scale by the same fraction, whatever its size (a weight channel's scale can be a
/// hundredth of an activation's), and no step takes it below zero. With
/// `learned_offset: Some(steps)` the offset is rounded (half away from zero) and held in
/// `[-steps, 0]`, as the exported encoding's is; else it is copied.
pub fn range_table_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    range: &GpuTensor,
    table: &GpuTensor,
    learned_offset: Option<u32>,
) -> Result<()> {
    let (mut params, groups) = range_params("range table", range, table)?;
    if let Some(steps) = learned_offset {
        params.learn_offset = 1;
        params.steps = steps as f32;
    }
    enc.dispatch(
        gpu,
        &RANGE_TABLE,
        &[],
        &params,
        &[Bind::Whole(range), Bind::Whole(table)],
        groups,
    )
}

/// `drange += grad_scale * (scale * dtable[.., 0], dtable[.., 2])` for the range `[channels, 2]`
/// = (ln scale, offset) that made the table (the offset's only with `learn_offset`), then
/// `dtable = 0`. `grad_scale` is 1, or LSQ's `1 / sqrt(elements * Qp)`.
pub fn range_table_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    range: &GpuTensor,
    dtable: &GpuTensor,
    drange: &GpuTensor,
    learn_offset: bool,
    grad_scale: f32,
) -> Result<()> {
    let (mut params, groups) = range_params("range table gradient", drange, dtable)?;
    if range.len() != drange.len() {
        return Err(Error::ShapeMismatch {
            op: "range table gradient",
            tensor: "range".into(),
            expected: format!("{:?}, the gradient's shape", drange.shape()),
            got: range.shape().to_vec(),
        });
    }
    params.learn_offset = learn_offset as u32;
    params.grad_scale = grad_scale;
    enc.dispatch(
        gpu,
        &RANGE_TABLE_GRAD,
        &[],
        &params,
        &[Bind::Whole(range), Bind::Whole(dtable), Bind::Whole(drange)],
        groups,
    )
}
