//! Reverse mode over a compiled forward [`Plan`]: [`Backward`] records, node by node in reverse
//! order, the gradient kernels of every node between the trainable parameters and the
//! outputs, as prepared steps replayed after each forward (no host round trip, nothing
//! recompiled between steps).
//!
//! - Which nodes take part: those whose output depends on a trainable parameter and reaches an
//!   output. Each must have a rule in `grads` (checked when the plan is built, before any step,
//!   with the node named); a frozen prefix of the model needs none.
//! - What the forward keeps for it: the values the rules read ([`Backward::taps`]), compiled
//!   into the forward plan as taps, so liveness keeps exactly those and a fusion that would
//!   hide one is not made. Relu and Clip read their output, so a convolution keeps its fused
//!   activation.
//! - Gradient buffers: every kernel adds into its gradient buffer, so a value read by several
//!   nodes sums its gradients in place. Activation gradients live in slots shared by liveness
//!   in reverse order (a value's gradient exists from its last reader's backward to its
//!   producer's), zeroed when a slot is taken. The forward's activation buffers join those
//!   slots as their taps are read for the last time (`Plan::spare`), so the first layers'
//!   gradients reuse the last layers' activations. Parameter gradients are persistent and are
//!   zeroed by the optimizer step, so micro-batches accumulate into them. The outputs'
//!   gradients are zeroed by [`Backward::record_zero`], before the loss adds into them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{DType, Error, Result};
use crate::exec::grads::{rule, GradRule};
use crate::exec::memory::{data_inputs, Memory};
use crate::exec::recompute::{self, Recompute};
use crate::exec::{Params, Plan};
use crate::gpu::{Gpu, GpuTensor, Steps};
use crate::graph::ir::{Graph, Node, Op};
use crate::ops::conv::{self, ConvKernel};
use crate::ops::elementwise as ew;
use crate::ops::epilogue::Epilogue;

/// The recorded backward pass of one forward plan.
pub struct Backward {
    zero: Steps,
    steps: Steps,
    outputs: Vec<(String, GpuTensor)>,
    params: Vec<(String, GpuTensor)>,
}

/// Which values carry gradients and which nodes take part.
struct Analysis {
    requires: HashSet<String>,
    active: Vec<bool>,
}

impl Analysis {
    fn of(g: &Graph, trainable: &HashSet<String>) -> Result<Analysis> {
        for t in trainable {
            if !g.consts.contains_key(t) {
                return Err(Error::Graph {
                    model: g.name.clone(),
                    message: format!("trainable parameter '{t}' is not a constant of the graph"),
                });
            }
        }
        let mut requires: HashSet<String> = trainable.clone();
        for n in &g.nodes {
            if data_inputs(n).iter().any(|i| requires.contains(i)) {
                requires.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
            }
        }
        let mut matters: HashSet<&str> = g.outputs.iter().map(String::as_str).collect();
        let mut active = vec![false; g.nodes.len()];
        for (k, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs
                .iter()
                .any(|o| matters.contains(o.as_str()) && requires.contains(o))
            {
                active[k] = true;
                matters.extend(
                    data_inputs(n)
                        .iter()
                        .filter(|i| requires.contains(*i))
                        .map(String::as_str),
                );
            }
        }
        if !active.iter().any(|&a| a) {
            return Err(Error::Graph {
                model: g.name.clone(),
                message: "no trainable parameter reaches an output".into(),
            });
        }
        for (_, n) in g.nodes.iter().enumerate().filter(|(k, _)| active[*k]) {
            if rule(&n.op).is_none() {
                return Err(Error::Graph {
                    model: g.name.clone(),
                    message: format!(
                        "node '{}' ({}) lies between trainable parameters and the outputs and has \
                         no backward; freeze the parameters before it",
                        n.name,
                        n.op.onnx_type()
                    ),
                });
            }
        }
        Ok(Analysis { requires, active })
    }

    /// The values the forward keeps for the backward on `gpu` (sorted), and those the backward
    /// recomputes instead when asked to ([`recompute`]; where the adapter runs epilogues).
    fn kept(
        &self,
        gpu: &Gpu,
        g: &Graph,
        recompute: bool,
    ) -> (Vec<String>, HashMap<String, Recompute>) {
        let mut reads: Vec<String> = self
            .rules(g)
            .into_iter()
            .flat_map(|(n, r)| (r.reads)(n, &|v: &str| self.requires.contains(v)))
            .filter(|v| !v.is_empty() && !g.consts.contains_key(v))
            .collect();
        reads.sort();
        reads.dedup();
        let again = match recompute && Epilogue::supported(gpu) {
            true => recompute::choose(g, &reads),
            false => HashMap::new(),
        };
        let mut taps: Vec<String> = reads
            .into_iter()
            .filter(|v| !again.contains_key(v))
            .chain(again.values().map(|r| r.input.clone()))
            .collect();
        taps.sort();
        taps.dedup();
        (taps, again)
    }

    /// The active nodes with their rules, in graph order.
    fn rules<'g>(&self, g: &'g Graph) -> Vec<(&'g Node, GradRule)> {
        g.nodes
            .iter()
            .enumerate()
            .filter(|(k, _)| self.active[*k])
            .filter_map(|(_, n)| rule(&n.op).map(|r| (n, r)))
            .collect()
    }
}

impl Backward {
    /// The runtime values the backward of `g` on `gpu` reads from the forward (compile the
    /// forward with them as taps): what the rules read, except the values it recomputes, whose
    /// inputs it keeps instead. Fails, naming the node, when a node between the trainable
    /// parameters and the outputs has no backward.
    pub fn taps(
        gpu: &Gpu,
        g: &Graph,
        trainable: &HashSet<String>,
        recompute: bool,
    ) -> Result<Vec<String>> {
        let a = Analysis::of(g, trainable)?;
        Ok(a.kept(gpu, g, recompute).0)
    }

    /// Records the backward of `forward` (compiled from `g` with [`Backward::taps`], with the
    /// same `recompute`) for the `trainable` parameters.
    pub fn build(
        gpu: Arc<Gpu>,
        g: &Graph,
        forward: &Plan,
        trainable: &HashSet<String>,
        recompute: bool,
    ) -> Result<Backward> {
        let a = Analysis::of(g, trainable)?;
        let rules = a.rules(g);
        let (_, again) = a.kept(&gpu, g, recompute);
        let mut spare = SpareSlots::new(forward, &rules, &a.requires, &again);
        let mut cx = GradCx {
            gpu: &gpu,
            graph: g,
            forward,
            params: forward.params(),
            requires: &a.requires,
            memory: Memory::default(),
            grads: HashMap::new(),
            param_grads: HashMap::new(),
            steps: Steps::default(),
            donated: HashSet::new(),
            again,
            recomputed: HashMap::new(),
        };
        spare.release(&mut cx, None);
        let mut zero = Steps::default();
        let mut outputs = Vec::new();
        for o in g.outputs.iter().filter(|o| a.requires.contains(*o)) {
            let t = gpu.empty(&cx.shape(o), DType::F32)?;
            ew::fill_into(&mut zero, &gpu, &t, 0.0)?;
            cx.grads.insert(o.clone(), (t.clone(), None));
            outputs.push((o.clone(), t));
        }
        for (n, r) in rules.into_iter().rev() {
            if n.outputs.iter().any(|o| cx.grads.contains_key(o)) {
                (r.grad)(&mut cx, n)?;
            }
            spare.release(&mut cx, Some((n, &r)));
            for o in &n.outputs {
                if g.outputs.contains(o) {
                    continue;
                }
                if let Some((_, Some(slot))) = cx.grads.remove(o) {
                    cx.memory.release(slot);
                }
            }
        }
        let mut params: Vec<(String, GpuTensor)> = cx.param_grads.into_iter().collect();
        params.sort_by(|x, y| x.0.cmp(&y.0));
        // Parameter gradients start at zero; the optimizer zeroes them after each step.
        let mut enc = gpu.encoder();
        let mut init = Steps::default();
        for (_, t) in &params {
            ew::fill_into(&mut init, &gpu, t, 0.0)?;
        }
        enc.run(&init.0);
        gpu.finish(enc)?;
        Ok(Backward {
            zero,
            steps: cx.steps,
            outputs,
            params,
        })
    }

    /// Records the zeroing of the outputs' gradients (before the loss adds into them).
    pub fn record_zero(&self, enc: &mut crate::gpu::Encoder) {
        enc.run(&self.zero.0);
    }

    /// Records the backward pass (after the loss).
    pub fn record(&self, enc: &mut crate::gpu::Encoder) {
        enc.run(&self.steps.0);
    }

    /// The gradient buffer of an output (the loss adds into it).
    pub fn output_grad(&self, name: &str) -> Option<&GpuTensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The gradient of every trainable parameter the outputs depend on, by name.
    pub fn param_grads(&self) -> &[(String, GpuTensor)] {
        &self.params
    }

    /// Seconds per backward kernel, slowest first ([`Steps::profile`]); gradients are added
    /// into as in a real pass.
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<(String, f64)>> {
        self.steps.profile(gpu)
    }

    /// Number of prepared dispatches in one backward.
    pub fn dispatch_count(&self) -> usize {
        self.steps.0.len()
    }
}

/// The state of one backward pass being recorded; what gradient rules record through.
pub struct GradCx<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    forward: &'a Plan,
    params: &'a Arc<Params>,
    requires: &'a HashSet<String>,
    memory: Memory,
    grads: HashMap<String, (GpuTensor, Option<usize>)>,
    param_grads: HashMap<String, GpuTensor>,
    steps: Steps,
    /// Taps whose buffers gradients may now occupy (reading one is an error).
    donated: HashSet<String>,
    /// Values recomputed when first read instead of kept, and those recomputed so far (slot,
    /// tensor) until their last reader's backward.
    again: HashMap<String, Recompute>,
    recomputed: HashMap<String, (usize, GpuTensor)>,
}

/// The forward's spare activation buffers ([`Plan::spare`]) handed to the backward's memory
/// as soon as the taps in them are read for the last time: the gradients of the first layers
/// (the largest) then live where the last layers' activations were, instead of beside every
/// activation. Slots holding a tap the backward does not read are never handed over.
struct SpareSlots {
    /// Per spare slot: its buffer and the taps in it not yet read for the last time.
    slots: Vec<(GpuTensor, Vec<String>)>,
    /// Readers left per tap (active nodes whose rule reads it).
    readers: HashMap<String, usize>,
}

/// The values node `n`'s rule reads, each once.
fn node_reads(n: &Node, r: &GradRule, requires: &HashSet<String>) -> Vec<String> {
    let mut reads = (r.reads)(n, &|v: &str| requires.contains(v));
    reads.sort();
    reads.dedup();
    reads
}

impl SpareSlots {
    fn new(
        forward: &Plan,
        rules: &[(&Node, GradRule)],
        requires: &HashSet<String>,
        again: &HashMap<String, Recompute>,
    ) -> SpareSlots {
        let mut readers: HashMap<String, usize> = HashMap::new();
        for (n, r) in rules {
            for v in node_reads(n, r, requires) {
                *readers.entry(v).or_default() += 1;
            }
        }
        // A recomputation reads its input until the recomputed value's last reader is done.
        for r in again.values() {
            *readers.entry(r.input.clone()).or_default() += 1;
        }
        let slots = forward
            .spare()
            .iter()
            .filter(|s| s.taps.iter().all(|t| readers.contains_key(t)))
            .map(|s| (s.buffer.clone(), s.taps.clone()))
            .collect();
        SpareSlots { slots, readers }
    }

    /// After `done`'s backward is recorded (`None`: before any), hands over the slots whose
    /// taps have no reader left.
    fn release(&mut self, cx: &mut GradCx<'_>, done: Option<(&Node, &GradRule)>) {
        if let Some((n, r)) = done {
            for v in node_reads(n, r, cx.requires) {
                if let Some(k) = self.readers.get_mut(&v) {
                    *k -= 1;
                    if *k == 0 {
                        if let Some(r) = cx.again.get(&v) {
                            let input = r.input.clone();
                            if let Some((slot, _)) = cx.recomputed.remove(&v) {
                                cx.memory.release(slot);
                            }
                            if let Some(k) = self.readers.get_mut(&input) {
                                *k -= 1;
                            }
                        }
                    }
                }
            }
        }
        let readers = &self.readers;
        let finished = |t: &String| readers.get(t).is_some_and(|&k| k == 0);
        let mut kept = Vec::with_capacity(self.slots.len());
        for (buffer, taps) in self.slots.drain(..) {
            if taps.iter().all(finished) {
                cx.donated.extend(taps);
                cx.memory.donate(buffer);
            } else {
                kept.push((buffer, taps));
            }
        }
        self.slots = kept;
    }
}

impl<'a> GradCx<'a> {
    /// The GPU.
    pub fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    /// The graph.
    pub fn graph(&self) -> &'a Graph {
        self.graph
    }

    /// The steps recorded so far.
    pub fn steps(&mut self) -> &mut Steps {
        &mut self.steps
    }

    /// An error naming the node.
    pub fn err(&self, node: &Node, message: impl Into<String>) -> Error {
        Error::Graph {
            model: self.graph.name.clone(),
            message: format!(
                "backward of node '{}' ({}): {}",
                node.name,
                node.op.onnx_type(),
                message.into()
            ),
        }
    }

    /// The static shape of a value or constant.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.graph
            .shapes
            .get(name)
            .cloned()
            .or_else(|| self.graph.consts.get(name).map(|c| c.shape().to_vec()))
            .unwrap_or_default()
    }

    /// The forward value of `name`: a parameter, a value the forward kept for backward, or one
    /// recomputed from a kept one (recorded the first time it is read).
    pub fn value(&mut self, name: &str) -> Result<GpuTensor> {
        if let Some(c) = self.graph.consts.get(name) {
            return self.params.get_or_upload(name, c);
        }
        if let Some(r) = self.again.get(name).cloned() {
            return self.recomputed(name, &r);
        }
        if self.donated.contains(name) {
            return Err(Error::Graph {
                model: self.graph.name.clone(),
                message: format!(
                    "backward reads '{name}' after its last listed reader (its buffer holds \
                     gradients now)"
                ),
            });
        }
        self.forward
            .tensor(name)
            .cloned()
            .ok_or_else(|| Error::Graph {
                model: self.graph.name.clone(),
                message: format!("backward reads '{name}', which the forward plan did not keep"),
            })
    }

    /// `name` computed again as `r` says, into a buffer of its own until its last reader's
    /// backward is recorded.
    fn recomputed(&mut self, name: &str, r: &Recompute) -> Result<GpuTensor> {
        if let Some((_, t)) = self.recomputed.get(name) {
            return Ok(t.clone());
        }
        let p = &self.graph.nodes[r.conv];
        let Op::Conv(a) = &p.op else {
            return Err(self.err(p, "is recomputed as a convolution but is not one"));
        };
        let x = self.value(&p.inputs[0])?;
        let w = self.value(&p.inputs[1])?;
        let b = match p.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => Some(self.value(b)?),
            None => None,
        };
        let kernel = ConvKernel::pick(self.gpu, x.shape(), w.shape(), a);
        let col = match kernel.scratch(x.shape(), w.shape(), a)? {
            Some(s) => Some(self.scratch(&s)?),
            None => None,
        };
        let (slot, y) = self.memory.alloc(self.gpu, &self.shape(name), DType::F32)?;
        let epi = Epilogue {
            act: Some(r.act),
            ..Epilogue::NONE
        };
        let c = col.as_ref().map(|(_, t)| t);
        conv::conv2d_with(
            &mut self.steps,
            self.gpu,
            kernel,
            &x,
            &w,
            b.as_ref(),
            a,
            &epi,
            c,
            &y,
        )?;
        if let Some((s, _)) = col {
            self.free(s);
        }
        self.recomputed.insert(name.to_string(), (slot, y.clone()));
        Ok(y)
    }

    /// A scratch buffer for work inside one node's backward; give it back with
    /// [`GradCx::free`] once the steps using it are recorded.
    pub fn scratch(&mut self, shape: &[usize]) -> Result<(usize, GpuTensor)> {
        self.memory.alloc(self.gpu, shape, DType::F32)
    }

    /// Returns a scratch buffer.
    pub fn free(&mut self, slot: usize) {
        self.memory.release(slot);
    }

    /// The gradient of output `i` of `node` (`None`: nothing downstream depends on it).
    pub fn dy(&self, node: &Node, i: usize) -> Option<GpuTensor> {
        node.outputs
            .get(i)
            .and_then(|o| self.grads.get(o))
            .map(|(t, _)| t.clone())
    }

    /// Hands the gradient buffer of `node`'s output 0 to its input `i` when that input
    /// carries a gradient no other rule has added to yet and has as many elements: the caller
    /// then writes the input's gradient over the output's in place, instead of adding into a
    /// new zeroed buffer. `None` (nothing changed) where that cannot be done: the input is
    /// a parameter, is read twice by `node`, already has a gradient, or the output's
    /// gradient is a graph output's.
    pub fn take_dy(&mut self, node: &Node, i: usize) -> Option<GpuTensor> {
        let name = node.inputs.get(i).filter(|v| !v.is_empty())?;
        let out = node.outputs.first()?;
        let once = node.inputs.iter().filter(|v| *v == name).count() == 1;
        if !once
            || !self.requires.contains(name)
            || self.graph.consts.contains_key(name)
            || self.grads.contains_key(name)
        {
            return None;
        }
        let Some((t, Some(slot))) = self.grads.get(out) else {
            return None;
        };
        let shape = self.shape(name);
        if shape.iter().product::<usize>() != t.len() {
            return None;
        }
        let (t, slot) = (t.view(&shape, DType::F32).ok()?, *slot);
        self.grads.remove(out);
        self.grads.insert(name.clone(), (t.clone(), Some(slot)));
        Some(t)
    }

    /// The gradient buffer of input `i` of `node`, to add into (`None`: the input carries no
    /// gradient — data, a frozen parameter, or a value nothing trainable feeds).
    pub fn dx(&mut self, node: &Node, i: usize) -> Result<Option<GpuTensor>> {
        let Some(name) = node.inputs.get(i).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if !self.requires.contains(name) {
            return Ok(None);
        }
        if self.graph.consts.contains_key(name) {
            if let Some(t) = self.param_grads.get(name) {
                return Ok(Some(t.clone()));
            }
            let t = self.gpu.empty(&self.shape(name), DType::F32)?;
            self.param_grads.insert(name.clone(), t.clone());
            return Ok(Some(t));
        }
        if let Some((t, _)) = self.grads.get(name) {
            return Ok(Some(t.clone()));
        }
        let shape = self.shape(name);
        let (slot, t) = self.memory.alloc(self.gpu, &shape, DType::F32)?;
        ew::fill_into(&mut self.steps, self.gpu, &t, 0.0)?;
        self.grads.insert(name.clone(), (t.clone(), Some(slot)));
        Ok(Some(t))
    }
}
