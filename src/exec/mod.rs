//! Running graphs on the GPU: [`Plan`] (one batch size, prepared dispatches) and
//! [`Executor`] (any batch: picks a plan batch that fits the adapter and splits larger inputs).

mod plan;
mod runner;

pub use plan::{resize_scales, Plan};
pub use runner::{join_batches, Executor};
