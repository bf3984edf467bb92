//! Optimizer settings and learning-rate schedules (the kernels are `ops::train`).

use crate::error::{Error, Result};
use crate::ops::train::Step;

/// Which optimizer, with its fixed settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// SGD with momentum (0: plain), optionally Nesterov, and L2 weight decay (PyTorch's).
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    /// Adam with L2 weight decay added to the gradient (PyTorch's `Adam`).
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
    /// Adam with decoupled weight decay (PyTorch's `AdamW`).
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
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
        }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// By name: `sgd`, `adam` or `adamw` (defaults as above).
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
    pub fn with_weight_decay(self, wd: f32) -> Optimizer {
        match self {
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay: wd,
            },
            Optimizer::Adam {
                beta1, beta2, eps, ..
            } => Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            },
            Optimizer::AdamW {
                beta1, beta2, eps, ..
            } => Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            },
        }
    }

    /// Whether it keeps a second moment per parameter.
    pub fn has_second_moment(&self) -> bool {
        !matches!(self, Optimizer::Sgd { .. })
    }

    /// (beta1, beta2) for the bias corrections (SGD: none).
    pub fn betas(&self) -> Option<(f32, f32)> {
        match *self {
            Optimizer::Sgd { .. } => None,
            Optimizer::Adam { beta1, beta2, .. } | Optimizer::AdamW { beta1, beta2, .. } => {
                Some((beta1, beta2))
            }
        }
    }

    /// The kernel's settings.
    pub(crate) fn step(&self) -> Step {
        match *self {
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => Step::Sgd {
                momentum,
                nesterov,
                weight_decay,
            },
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Step::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled: false,
            },
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Step::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled: true,
            },
        }
    }
}

/// The learning rate over optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// The base rate times `gamma` every `every` steps.
    Step { every: u64, gamma: f32 },
    /// Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` steps.
    Cosine { warmup: u64, total: u64 },
}

impl Schedule {
    /// By name for `total` steps: `constant`, `step` (x0.1 at each third), `cosine`
    /// (5% warm-up).
    pub fn named(name: &str, total: u64) -> Result<Schedule> {
        match name {
            "constant" => Ok(Schedule::Constant),
            "step" => Ok(Schedule::Step {
                every: (total / 3).max(1),
                gamma: 0.1,
            }),
            "cosine" => Ok(Schedule::Cosine {
                warmup: total / 20,
                total,
            }),
            _ => Err(Error::invalid(
                "schedule",
                "name",
                name,
                "expected constant, step or cosine",
            )),
        }
    }

    /// The rate at optimizer step `t` (from 0) for base rate `lr`.
    pub fn rate(&self, lr: f32, t: u64) -> f32 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => lr * gamma.powi((t / every.max(1)) as i32),
            Schedule::Cosine { warmup, total } => {
                if t < warmup {
                    lr * (t + 1) as f32 / warmup as f32
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let done = ((t - warmup) as f64 / span).min(1.0);
                    (lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())) as f32
                }
            }
        }
    }
}
