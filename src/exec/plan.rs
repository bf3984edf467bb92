//! A [`Plan`]: a resolved [`Graph`] compiled for one [`Gpu`] — parameters bound by name from
//! a [`Params`] store, every dispatch prepared (pipelines and bind groups made once),
//! activation buffers shared by liveness — run with one submission per forward.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{Error, Result};
use crate::exec::lower::{lower, Simulation, Spare};
use crate::exec::params::Params;
use crate::gpu::{Encoder, Gpu, GpuTensor, Steps};
use crate::graph::ir::Graph;

/// A compiled forward pass.
pub struct Plan {
    gpu: Arc<Gpu>,
    name: String,
    inputs: Vec<String>,
    /// The buffers the host writes inputs into (before any input quantizer).
    input_buffers: HashMap<String, GpuTensor>,
    outputs: Vec<String>,
    /// Outputs and taps, readable after a forward.
    kept: HashMap<String, GpuTensor>,
    params: Arc<Params>,
    steps: Steps,
    /// (node name, index of its first step) for profiling and error messages.
    node_steps: Vec<(String, usize)>,
    /// Activation buffers free for reuse after a forward (see [`Spare`]).
    spare: Vec<Spare>,
}

/// How to compile a plan: values to keep readable, the parameter store, a simulation.
#[derive(Default)]
pub struct Compile<'a> {
    /// Values kept readable after a forward besides the outputs (never shared with others).
    pub taps: &'a [String],
    /// Where parameters come from (a new store when `None`).
    pub params: Option<Arc<Params>>,
    /// Quantizers and nodes a quantization simulation adds.
    pub simulation: Option<&'a dyn Simulation>,
}

impl Plan {
    /// Compiles a resolved graph.
    pub fn compile(gpu: Arc<Gpu>, g: &Graph, c: Compile<'_>) -> Result<Plan> {
        for t in c.taps {
            if !g.shapes.contains_key(t) {
                return Err(Error::Graph {
                    model: g.name.clone(),
                    message: format!("tap '{t}' is not a runtime value of the graph"),
                });
            }
        }
        let params = c
            .params
            .unwrap_or_else(|| Arc::new(Params::new(gpu.clone())));
        let keep: HashSet<&str> = g.outputs.iter().chain(c.taps).map(String::as_str).collect();
        let l = lower(&gpu, g, &params, c.simulation, &keep)?;
        Ok(Plan {
            gpu: gpu.clone(),
            name: g.name.clone(),
            inputs: g.inputs.clone(),
            input_buffers: l.inputs.into_iter().collect(),
            outputs: g.outputs.clone(),
            kept: l.kept.into_iter().collect(),
            params,
            steps: l.steps,
            node_steps: l.node_steps,
            spare: l.spare,
        })
    }

    /// The GPU tensor of an output, a tap or an input (holding its value after a forward;
    /// a tapped input's value is after its quantizer, if it has one).
    pub fn tensor(&self, name: &str) -> Option<&GpuTensor> {
        self.kept.get(name).or_else(|| self.input_buffers.get(name))
    }

    /// The activation buffers that work recorded after a forward (a backward pass) may reuse:
    /// none holds an input or an output, each lists the taps living in it.
    pub(crate) fn spare(&self) -> &[Spare] {
        &self.spare
    }

    /// The buffer an input is written into before a forward (to fill it on the GPU).
    pub fn input_buffer(&self, name: &str) -> Option<&GpuTensor> {
        self.input_buffers.get(name)
    }

    /// The parameter store the plan binds.
    pub fn params(&self) -> &Arc<Params> {
        &self.params
    }

    /// Input names in model order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Output names in model order.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Number of prepared dispatches in one forward.
    pub fn dispatch_count(&self) -> usize {
        self.steps.0.len()
    }

    /// Seconds per kernel of one forward on the inputs written last, slowest first
    /// ([`Steps::profile`]).
    pub fn profile(&self) -> Result<Vec<(String, f64)>> {
        self.steps.profile(&self.gpu)
    }

    /// (node name, first step index) of every node, in order.
    pub fn node_steps(&self) -> &[(String, usize)] {
        &self.node_steps
    }

    /// Writes the inputs (checked against the compiled shapes) for the next forward.
    pub fn write_inputs(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<()> {
        for name in &self.inputs {
            let Some((_, data)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::Graph {
                    model: self.name.clone(),
                    message: format!("missing input '{name}'"),
                });
            };
            let t = &self.input_buffers[name];
            if data.shape() != t.shape() {
                return Err(Error::ShapeMismatch {
                    op: "forward",
                    tensor: name.clone(),
                    expected: format!("{:?}", t.shape()),
                    got: data.shape().to_vec(),
                });
            }
            let standard = data.as_standard_layout();
            self.gpu.queue.write_buffer(
                t.buf.raw(),
                0,
                bytemuck::cast_slice(standard.as_slice().expect("standard layout")),
            );
        }
        for (n, _) in inputs {
            if !self.inputs.iter().any(|i| i == n) {
                return Err(Error::Graph {
                    model: self.name.clone(),
                    message: format!("'{n}' is not an input of the model"),
                });
            }
        }
        Ok(())
    }

    /// Records the whole forward pass into `enc` (one compute pass).
    pub fn record(&self, enc: &mut Encoder) {
        enc.run(&self.steps.0);
    }

    /// Runs a forward and reads back `names` (outputs or taps) with one submission and one wait.
    pub fn run(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        names: &[String],
    ) -> Result<Vec<ArrayD<f32>>> {
        self.write_inputs(inputs)?;
        let mut enc = self.gpu.encoder();
        self.record(&mut enc);
        let tensors: Vec<&GpuTensor> = names
            .iter()
            .map(|n| {
                self.kept.get(n).ok_or_else(|| Error::Graph {
                    model: self.name.clone(),
                    message: format!("'{n}' is not an output or tap of this plan"),
                })
            })
            .collect::<Result<_>>()?;
        let bytes = self.gpu.submit_and_read(enc, &tensors)?;
        tensors
            .iter()
            .zip(bytes)
            .map(|(t, b)| crate::gpu::to_array::<f32>(t, &b))
            .collect()
    }

    /// Runs a forward and lets `extra` record more work on the plan's tensors (taps) into
    /// the same submission — the hook calibration observers use. Returns `extra`'s value after
    /// the GPU finished.
    pub fn run_with<T>(
        &self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
        extra: impl FnOnce(&mut Encoder, &Plan) -> Result<T>,
    ) -> Result<T> {
        self.write_inputs(inputs)?;
        let mut enc = self.gpu.encoder();
        self.record(&mut enc);
        let out = extra(&mut enc, self)?;
        self.gpu.finish(enc)?;
        Ok(out)
    }
}
