//! Training on the GPU: [`Trainer`] (one compiled step: forward, loss, backward through
//! `exec::Backward`, optimizer update in place), optimizers and schedules ([`optim`]),
//! checkpoints ([`checkpoint`]), the epoch loop ([`fit`]). QuantSim, compression and fine-tuning jobs call it.

pub mod checkpoint;
pub mod fit;
pub mod optim;
mod trainer;

pub use crate::ops::train::LossKind;
pub use optim::{Optimizer, Schedule};
pub use trainer::{parameters, LossReading, Target, TrainConfig, Trainer};
