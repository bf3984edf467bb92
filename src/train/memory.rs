//! What a training step holds in GPU memory next to inference, from the buffer pool's live and
//! peak bytes (size classes included): the training engine's budget is 3 x the inference
//! activations + 4 x the parameters (parameters, their gradients and Adam's two moments).

use std::collections::HashSet;
use std::sync::Arc;

use ndarray::ArrayViewD;

use crate::error::Result;
use crate::exec::{Compile, Params, Plan};
use crate::gpu::Gpu;
use crate::graph::ir::Graph;
use crate::train::{Target, TrainConfig, Trainer};

/// A training step's GPU memory and inference's, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct StepMemory {
    /// The parameters an inference plan binds.
    pub params: u64,
    /// Everything else an inference plan holds after a forward.
    pub activations: u64,
    /// The most held while a trainer is built and runs one step.
    pub peak: u64,
}

impl StepMemory {
    /// Measures `g` at its compiled batch on `gpu`, which nothing else may use meanwhile: an
    /// inference plan after one forward on `inputs`, then the peak while a trainer of
    /// `trainable` is built and takes one step against `target`. Returns the trainer too.
    pub fn measure(
        gpu: &Arc<Gpu>,
        g: &Graph,
        trainable: &HashSet<String>,
        cfg: TrainConfig,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        target: Target<'_>,
    ) -> Result<(StepMemory, Trainer)> {
        let base = gpu.pool_stats().live_bytes;
        let plan = Plan::compile(gpu.clone(), g, Compile::default())?;
        plan.run(inputs, plan.outputs())?;
        let inference = gpu.pool_stats().live_bytes - base;
        let params: u64 = plan
            .params()
            .names()
            .iter()
            .filter_map(|n| plan.params().get(n))
            .map(|t| crate::gpu::pool::size_class(t.bytes()))
            .sum();
        drop(plan);
        let base = gpu.pool_stats().live_bytes;
        gpu.reset_peak_bytes();
        let store = Arc::new(Params::new(gpu.clone()));
        let mut t = Trainer::new(gpu.clone(), g, store, trainable, &g.outputs[0], cfg)?;
        t.step(inputs, target)?;
        t.read_loss()?;
        let m = StepMemory {
            params,
            activations: inference.saturating_sub(params),
            peak: gpu.pool_stats().peak_bytes - base,
        };
        Ok((m, t))
    }

    /// The peak as a share of 3 x activations + 4 x parameters.
    pub fn budget_ratio(&self) -> f64 {
        self.peak as f64 / (3 * self.activations + 4 * self.params).max(1) as f64
    }
}
