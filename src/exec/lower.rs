//! Lowering: each node of a resolved graph becomes prepared dispatches. [`Lowering`] is the
//! context every lowering function records through (values, parameters, buffers by
//! liveness); [`rules::rule`] is the table from an op to its lowering function; the fusions
//! `fuse` finds let a convolution or GEMM record the nodes after it. A [`Simulation`]
//! (defined here, implemented by the quantization layer) adds quantizers after values and may
//! lower nodes itself.

use std::collections::HashSet;

use ndarray::ArrayD;

use crate::error::{DType, Error, Result};
use crate::exec::fuse::Fuser;
use crate::exec::memory::{Liveness, Memory};
use crate::exec::params::Params;
use crate::exec::rules;
use crate::gpu::{Gpu, GpuTensor, Steps};
use crate::graph::ir::{Const, Graph, Node};
use crate::ops::epilogue::Epilogue;
use crate::ops::quant;

/// A fake-quantizer the plan applies to a value: an encoding table on the GPU (`[channels,
/// 4]`, rewritable between runs), the grid's largest code, and whether to round the exactly
/// divided quotient (as onnxruntime's QuantizeLinear) instead of the product with 1 / scale.
#[derive(Clone, Debug)]
pub struct FakeQuant {
    pub table: GpuTensor,
    pub steps: u32,
    pub exact: bool,
}

/// What a quantization simulation adds to a plan.
pub trait Simulation: Send + Sync {
    /// The quantizer applied to `value` as it is computed (or as it enters, for inputs).
    fn quantizer(&self, value: &str) -> Option<FakeQuant>;

    /// True when the simulation lowers `node` itself ([`Simulation::lower`]) instead of the
    /// op table.
    fn owns(&self, _node: &Node) -> bool {
        false
    }

    /// Lowers a node it [owns](Simulation::owns) (e.g. an integer kernel writing already
    /// quantized output).
    fn lower(&self, cx: &mut Lowering<'_>, node: &Node) -> Result<()> {
        Err(cx.err(node, "the simulation does not lower this node"))
    }
}

/// A value's tensor and the memory slot it lives in (`None` for parameters).
#[derive(Clone)]
struct Value {
    tensor: GpuTensor,
    slot: Option<usize>,
}

/// The state of one plan being lowered.
pub struct Lowering<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    params: &'a Params,
    steps: Steps,
    live: Liveness,
    values: Vec<Option<Value>>,
    memory: Memory,
    /// Slots of the buffers the host writes inputs into.
    input_slots: Vec<usize>,
    /// Values kept to the end of the plan (outputs and taps).
    keep: HashSet<String>,
}

impl<'a> Lowering<'a> {
    pub(crate) fn new(gpu: &'a Gpu, graph: &'a Graph, params: &'a Params) -> Lowering<'a> {
        let live = Liveness::of(graph);
        let values = vec![None; live.len()];
        Lowering {
            gpu,
            graph,
            params,
            steps: Steps::default(),
            live,
            values,
            memory: Memory::default(),
            input_slots: Vec::new(),
            keep: HashSet::new(),
        }
    }

    /// The GPU.
    pub fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    /// The graph being lowered.
    pub fn graph(&self) -> &'a Graph {
        self.graph
    }

    /// The steps recorded so far (ops record into it).
    pub fn steps(&mut self) -> &mut Steps {
        &mut self.steps
    }

    pub(crate) fn into_steps(self) -> Steps {
        self.steps
    }

    /// An error naming the node.
    pub fn err(&self, node: &Node, message: impl Into<String>) -> Error {
        Error::Graph {
            model: self.graph.name.clone(),
            message: format!(
                "node '{}' ({}): {}",
                node.name,
                node.op.onnx_type(),
                message.into()
            ),
        }
    }

    fn id(&self, name: &str) -> Result<usize> {
        self.live.get(name).ok_or_else(|| Error::Graph {
            model: self.graph.name.clone(),
            message: format!("value '{name}' has no producer"),
        })
    }

    /// The tensor of a value: an activation computed earlier, or a parameter (a constant
    /// bound as it is, from the plan's parameter store).
    pub fn input(&mut self, name: &str) -> Result<GpuTensor> {
        if let Some(c) = self.graph.consts.get(name) {
            return self.params.get_or_upload(name, c);
        }
        let id = self.id(name)?;
        self.values[id]
            .as_ref()
            .map(|v| v.tensor.clone())
            .ok_or_else(|| Error::Graph {
                model: self.graph.name.clone(),
                message: format!("value '{name}' is read before it is computed"),
            })
    }

    /// The optional input `i` of a node (`None` when absent or empty).
    pub fn optional_input(&mut self, node: &Node, i: usize) -> Result<Option<GpuTensor>> {
        match node.inputs.get(i).filter(|b| !b.is_empty()) {
            Some(b) => Ok(Some(self.input(b)?)),
            None => Ok(None),
        }
    }

    /// A constant's value (for derived constants such as batch-norm affine maps).
    pub fn constant(&self, name: &str) -> Option<ArrayD<f32>> {
        self.graph.consts.get(name).map(Const::to_f32)
    }

    /// The static shape of a value.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.graph
            .shapes
            .get(name)
            .cloned()
            .or_else(|| self.graph.consts.get(name).map(|c| c.shape().to_vec()))
            .unwrap_or_default()
    }

    /// A derived constant on the GPU (not a named parameter).
    pub fn upload<T: crate::gpu::Element>(&self, shape: &[usize], data: &[T]) -> Result<GpuTensor> {
        self.gpu.upload_slice(shape, data)
    }

    /// A buffer for output `i` of `node`, defined as that value.
    pub fn output(&mut self, node: &Node, i: usize) -> Result<GpuTensor> {
        self.output_value(node, &node.outputs[i])
    }

    /// A buffer defined as the value `name` that `node` writes (its output, or the last output
    /// of the nodes fused into it).
    pub(crate) fn output_value(&mut self, node: &Node, name: &str) -> Result<GpuTensor> {
        let shape = self
            .graph
            .shapes
            .get(name)
            .ok_or_else(|| self.err(node, format!("no shape for output '{name}'")))?
            .clone();
        Ok(self.define_new(name, &shape)?.1)
    }

    /// A new buffer of `shape` defined as the value `name`; returns its slot and tensor. A value
    /// kept to the end takes a free slot at most twice its size (or a new one), so that the
    /// larger slots stay free for the work after the forward (`spare`).
    fn define_new(&mut self, name: &str, shape: &[usize]) -> Result<(usize, GpuTensor)> {
        let slack = match self.keep.contains(name) {
            true => 2,
            false => usize::MAX,
        };
        let (slot, tensor) = self
            .memory
            .alloc_within(self.gpu, shape, DType::F32, slack)?;
        self.set(
            name,
            Value {
                tensor: tensor.clone(),
                slot: Some(slot),
            },
        )?;
        Ok((slot, tensor))
    }

    /// Defines `name` as a view of the value `of` (same buffer, another shape).
    pub fn alias(&mut self, name: &str, of: &str) -> Result<()> {
        let shape = self.shape(name);
        let v = if self.graph.consts.contains_key(of) {
            Value {
                tensor: self.input(of)?,
                slot: None,
            }
        } else {
            self.values[self.id(of)?]
                .clone()
                .ok_or_else(|| Error::Graph {
                    model: self.graph.name.clone(),
                    message: format!("value '{of}' is read before it is computed"),
                })?
        };
        if let Some(s) = v.slot {
            self.memory.retain(s);
        }
        self.set(
            name,
            Value {
                tensor: v.tensor.view(&shape, DType::F32)?,
                slot: v.slot,
            },
        )
    }

    /// A scratch buffer for work inside one node; give it back with [`Lowering::free`] once
    /// the steps using it are recorded.
    pub fn scratch(&mut self, shape: &[usize], dtype: DType) -> Result<Scratch> {
        let (slot, tensor) = self.memory.alloc(self.gpu, shape, dtype)?;
        Ok(Scratch { tensor, slot })
    }

    /// Returns a scratch buffer.
    pub fn free(&mut self, s: Scratch) {
        self.memory.release(s.slot);
    }

    fn set(&mut self, name: &str, v: Value) -> Result<()> {
        let id = self.id(name)?;
        if let Some(old) = self.values[id].replace(v) {
            if let Some(s) = old.slot {
                self.memory.release(s);
            }
        }
        Ok(())
    }

    /// Defines a graph input: a buffer the host writes before each run, never reused.
    pub(crate) fn define_input(&mut self, name: &str) -> Result<GpuTensor> {
        let (slot, t) = self.define_new(name, &self.shape(name))?;
        self.memory.retain(slot);
        self.input_slots.push(slot);
        Ok(t)
    }

    /// Keeps `name`'s buffer for the whole plan (an output or a tap).
    pub(crate) fn pin(&mut self, name: &str) -> Result<()> {
        let id = self.id(name)?;
        if let Some(s) = self.values[id].as_ref().and_then(|v| v.slot) {
            self.memory.retain(s);
        }
        Ok(())
    }

    /// Replaces `name` by its quantized copy.
    pub(crate) fn quantize(&mut self, name: &str, q: &FakeQuant) -> Result<()> {
        let x = self.input(name)?;
        let (slot, y) = self.memory.alloc(self.gpu, x.shape(), DType::F32)?;
        quant::fake_quant_table_into(
            &mut self.steps,
            self.gpu,
            &x,
            &q.table,
            q.steps,
            None,
            q.exact,
            &y,
        )?;
        self.set(
            name,
            Value {
                tensor: y,
                slot: Some(slot),
            },
        )
    }

    /// Frees the values whose last reader is node `k`, and outputs of it nobody reads.
    pub(crate) fn retire(&mut self, node: &Node, k: usize, keep: &HashSet<&str>) {
        let kept: HashSet<usize> = keep.iter().filter_map(|k| self.live.get(k)).collect();
        let mut dead = self.live.dying_at(node, k);
        dead.extend(
            node.outputs
                .iter()
                .filter(|o| !o.is_empty())
                .filter_map(|o| self.live.get(o))
                .filter(|&id| self.live.unread(id)),
        );
        dead.retain(|id| !kept.contains(id));
        for id in dead {
            if let Some(v) = self.values[id].take() {
                if let Some(s) = v.slot {
                    self.memory.release(s);
                }
            }
        }
    }

    /// The activation buffers whose contents nothing needs once a forward's values have been
    /// read: every slot but those of inputs and outputs, each with the taps living in it
    /// (none: a slot of values and scratch the forward alone used).
    fn spare(&self, keep: &HashSet<&str>) -> Vec<Spare> {
        let slot_of = |name: &str| {
            self.live
                .get(name)
                .and_then(|id| self.values[id].as_ref())
                .and_then(|v| v.slot)
        };
        let mut taps: Vec<Vec<String>> = vec![Vec::new(); self.memory.buffers().len()];
        let mut held: HashSet<usize> = self.input_slots.iter().copied().collect();
        for name in keep.iter().copied() {
            match slot_of(name) {
                Some(s) if self.graph.outputs.iter().any(|o| o == name) => {
                    held.insert(s);
                }
                Some(s) => taps[s].push(name.to_string()),
                None => {}
            }
        }
        let users = self.memory.users();
        self.memory
            .buffers()
            .iter()
            .zip(taps)
            .enumerate()
            // A slot still used by something other than taps is never spare.
            .filter(|(s, (_, t))| !held.contains(s) && (users[*s] == 0 || !t.is_empty()))
            .map(|(_, (buffer, mut taps))| {
                taps.sort();
                Spare {
                    buffer: buffer.clone(),
                    taps,
                }
            })
            .collect()
    }

    /// The tensor of every value still defined, by name (inputs, outputs, taps).
    pub(crate) fn tensor_of(&self, name: &str) -> Option<GpuTensor> {
        self.live
            .get(name)
            .and_then(|id| self.values[id].as_ref())
            .map(|v| v.tensor.clone())
    }
}

/// A scratch buffer of one node's lowering.
pub struct Scratch {
    pub tensor: GpuTensor,
    slot: usize,
}

/// Lowers every node of `g` in order, with `sim`'s quantizers and nodes; keeps `keep`
/// (outputs and taps) readable. Returns the steps and the tensors of inputs and kept values.
pub(crate) fn lower(
    gpu: &Gpu,
    g: &Graph,
    params: &Params,
    sim: Option<&dyn Simulation>,
    keep: &HashSet<&str>,
) -> Result<Lowered> {
    let mut cx = Lowering::new(gpu, g, params);
    cx.keep = keep.iter().map(|k| k.to_string()).collect();
    let mut inputs = Vec::with_capacity(g.inputs.len());
    for i in &g.inputs {
        inputs.push((i.clone(), cx.define_input(i)?));
        if let Some(q) = sim.and_then(|s| s.quantizer(i)) {
            cx.quantize(i, &q)?;
        }
        if keep.contains(i.as_str()) {
            cx.pin(i)?;
        }
    }
    let fuser = Fuser::new(g, keep, sim);
    let fuse = gpu.fuses() && Epilogue::supported(gpu);
    let mut absorbed = HashSet::new();
    let mut node_steps = Vec::with_capacity(g.nodes.len());
    for (k, n) in g.nodes.iter().enumerate() {
        node_steps.push((n.name.clone(), cx.steps.0.len()));
        if absorbed.contains(&k) {
            // Recorded by the node it is fused into; its inputs still die here.
            cx.retire(n, k, keep);
            continue;
        }
        let fusion = if fuse && !rules::split::splits(gpu, g, n) {
            fuser.after(k)
        } else {
            None
        };
        match (sim, &fusion) {
            (Some(s), _) if s.owns(n) => s.lower(&mut cx, n)?,
            (_, Some(f)) => rules::fused(&mut cx, n, f)?,
            _ => {
                rules::rule(&n.op).ok_or_else(|| cx.err(n, "not run by the executor"))?(&mut cx, n)?
            }
        }
        let written: Vec<&str> = match &fusion {
            Some(f) => {
                absorbed.extend(f.followers.iter().copied());
                vec![f.out.as_str()]
            }
            None => n
                .outputs
                .iter()
                .map(String::as_str)
                .filter(|o| !o.is_empty())
                .collect(),
        };
        for o in written {
            let fused_quant = fusion.as_ref().is_some_and(|f| f.quant.is_some());
            if let Some(q) = sim.and_then(|s| s.quantizer(o)).filter(|_| !fused_quant) {
                cx.quantize(o, &q)?;
            }
            if keep.contains(o) {
                cx.pin(o)?;
            }
        }
        cx.retire(n, k, keep);
    }
    let kept = keep
        .iter()
        .filter_map(|k| cx.tensor_of(k).map(|t| (k.to_string(), t)))
        .collect();
    let spare = cx.spare(keep);
    Ok(Lowered {
        steps: cx.into_steps(),
        inputs,
        kept,
        node_steps,
        spare,
    })
}

/// An activation buffer of a plan that work recorded after a forward may reuse once the taps
/// living in it have been read for the last time (at once when there are none). The next
/// forward writes every value it holds before reading it.
#[derive(Clone)]
pub struct Spare {
    /// The whole buffer (an f32 view of its capacity).
    pub buffer: GpuTensor,
    /// The taps living in it, sorted.
    pub taps: Vec<String>,
}

/// What lowering produced.
pub(crate) struct Lowered {
    pub steps: Steps,
    /// Input buffers the host writes (before any input quantizer).
    pub inputs: Vec<(String, GpuTensor)>,
    /// Outputs and taps.
    pub kept: Vec<(String, GpuTensor)>,
    pub node_steps: Vec<(String, usize)>,
    pub spare: Vec<Spare>,
}
