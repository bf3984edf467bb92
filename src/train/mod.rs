//! Training on the GPU: [`Trainer`] (one compiled step: forward, loss, backward through
//! `exec::Backward`, optimizer update in place), learning-rate schedules ([`optim`]),
//! checkpoints ([`checkpoint`]), the epoch loop ([`fit`]), a step's memory ([`StepMemory`]); losses and optimizers are the types
//! their kernels take (`ops::train`). QuantSim, compression and fine-tuning jobs call it.

pub mod checkpoint;
pub mod fit;
mod memory;
pub mod optim;
mod trainer;

pub use crate::ops::train::{LossKind, Optimizer};
pub use memory::StepMemory;
pub use optim::Schedule;
pub use trainer::{parameters, LossReading, Reparam, Target, TrainConfig, Trainer};
