//! Running graphs on the GPU. [`Plan`]: one resolved graph compiled for one batch size
//! (lowering in `lower`, buffers by liveness in `memory`, parameters by name in [`Params`]).
//! [`Runner`]: any batch, one plan cache, pieces that fit the adapter. [`Prefix`]: a model's
//! values at a cut, so runs that differ only after it start there. [`Samples`]: a model's
//! inputs for a number of samples.

mod backward;
mod fuse;
mod grads;
mod lower;
mod memory;
mod params;
mod plan;
mod prefix;
mod recompute;
mod rules;
mod runner;
mod samples;

pub use backward::{Backward, GradCx};
pub use grads::{rule as grad_rule, GradFn, GradRule};
pub use lower::{FakeQuant, Lowering, Scratch, Simulation};
pub use params::Params;
pub use plan::{Compile, Plan};
pub use prefix::Prefix;
pub use rules::{rule, LowerFn};
pub use runner::{filled, join_batches, Runner};
pub use samples::Samples;
