//! Learning-rate schedules (the optimizer settings are `ops::train::Optimizer`, the type its
//! kernels take).

use crate::error::{Error, Result};

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
