//! Lowering: each node of a resolved graph becomes prepared dispatches. [`Lowering`] is the
//! context every lowering function records through (values, parameters, buffers by
//! liveness); [`rule`] is the table from an op to its lowering function. A [`Simulation`]
//! (defined here, implemented by the quantization layer) adds quantizers after values and may
//! lower nodes itself.

use std::collections::HashSet;

use ndarray::{ArrayD, IxDyn};

use crate::error::{DType, Error, Result};
use crate::exec::memory::{Liveness, Memory};
use crate::exec::params::Params;
use crate::gpu::{Gpu, GpuTensor, Steps};
use crate::graph::attrs::Resize;
use crate::graph::ir::{Const, Graph, Node, Op};
use crate::graph::shape::{matmul_output_shape, norm_axis, resize_scales, slice_spec, strides};
use crate::ops::elementwise::{self as ew, StridedView};
use crate::ops::gemm::{self, Bias};
use crate::ops::{conv, pool, quant, reduce};

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

    /// Lowers `node` itself (e.g. an integer kernel writing already quantized output);
    /// `Ok(false)` leaves it to the op table.
    fn lower(&self, _cx: &mut Lowering<'_>, _node: &Node) -> Result<bool> {
        Ok(false)
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
        let name = &node.outputs[i];
        let shape = self
            .graph
            .shapes
            .get(name)
            .ok_or_else(|| self.err(node, format!("no shape for output '{name}'")))?
            .clone();
        Ok(self.define_new(name, &shape)?.1)
    }

    /// A new buffer of `shape` defined as the value `name`; returns its slot and tensor.
    fn define_new(&mut self, name: &str, shape: &[usize]) -> Result<(usize, GpuTensor)> {
        let (slot, tensor) = self.memory.alloc(self.gpu, shape, DType::F32)?;
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

/// A lowering function: records `node` through the context.
pub type LowerFn = fn(&mut Lowering<'_>, &Node) -> Result<()>;

/// The lowering of an op (`None`: the executor does not run it).
pub fn rule(op: &Op) -> Option<LowerFn> {
    Some(match op {
        op if op.is_view() => view,
        Op::Conv(_) => conv,
        Op::ConvTranspose { .. } => conv_transpose,
        Op::Gemm { .. } => gemm,
        Op::MatMul => matmul,
        Op::BatchNorm { .. } => batch_norm,
        Op::Unary(_) => unary,
        Op::Binary(_) => binary,
        Op::MaxPool(_) | Op::AveragePool(_) => pool2d,
        Op::GlobalAveragePool => global_avg_pool,
        Op::Resize { .. } => resize,
        Op::Transpose { .. } => transpose,
        Op::Concat { .. } => concat,
        Op::Split { .. } => split,
        Op::Slice => slice,
        Op::Pad { .. } => pad,
        Op::Softmax { .. } => softmax,
        Op::ReduceMean { .. } => reduce_mean,
        _ => return None,
    })
}

fn view(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    cx.alias(&n.outputs[0], &n.inputs[0])
}

fn conv(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Conv(a) = &n.op else {
        unreachable!("table")
    };
    let (x, w, b) = (
        cx.input(&n.inputs[0])?,
        cx.input(&n.inputs[1])?,
        cx.optional_input(n, 2)?,
    );
    let y = cx.output(n, 0)?;
    let kernel = conv::ConvKernel::pick(gpu, x.shape(), w.shape(), a);
    let scratch = match kernel.scratch(x.shape(), w.shape(), a)? {
        Some(shape) => Some(cx.scratch(&shape, DType::F32)?),
        None => None,
    };
    let col = scratch.as_ref().map(|s| &s.tensor);
    conv::conv2d_with(cx.steps(), gpu, kernel, &x, &w, b.as_ref(), a, col, &y)?;
    if let Some(s) = scratch {
        cx.free(s);
    }
    Ok(())
}

fn conv_transpose(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ConvTranspose {
        conv: a,
        output_padding,
    } = &n.op
    else {
        unreachable!("table")
    };
    let (x, w, b) = (
        cx.input(&n.inputs[0])?,
        cx.input(&n.inputs[1])?,
        cx.optional_input(n, 2)?,
    );
    let y = cx.output(n, 0)?;
    conv::conv_transpose2d_into(cx.steps(), gpu, &x, &w, b.as_ref(), a, *output_padding, &y)
}

fn gemm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Gemm {
        alpha,
        beta,
        trans_a,
        trans_b,
    } = n.op
    else {
        unreachable!("table")
    };
    let (a, b) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let y = cx.output(n, 0)?;
    let (m, cols) = (y.shape()[0], y.shape()[1]);
    let bias_t = match n.inputs.get(2).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let v = cx.constant(c).ok_or_else(|| {
                cx.err(n, "a runtime C input is not supported (constant bias only)")
            })?;
            let per_column = v.shape().iter().rev().skip(1).all(|&d| d == 1)
                && v.shape().last().copied().unwrap_or(1) == cols;
            Some(if per_column && beta == 1.0 {
                // The bias as it is: a parameter handle.
                (true, cx.input(c)?.view(&[cols], DType::F32)?)
            } else {
                let full = v
                    .broadcast(IxDyn(&[m, cols]))
                    .ok_or_else(|| cx.err(n, "C does not broadcast"))?
                    .mapv(|e| e * beta);
                if per_column {
                    (
                        true,
                        cx.upload(
                            &[cols],
                            &full.iter().take(cols).copied().collect::<Vec<f32>>(),
                        )?,
                    )
                } else {
                    (
                        false,
                        cx.upload(
                            &[m, cols],
                            full.as_standard_layout().as_slice().expect("contiguous"),
                        )?,
                    )
                }
            })
        }
    };
    let bias = match &bias_t {
        None => Bias::None,
        Some((true, t)) => Bias::PerColumn(t),
        Some((false, t)) => Bias::Full(t),
    };
    gemm::matmul_into(cx.steps(), gpu, &a, &b, trans_a, trans_b, alpha, bias, &y)
}

fn matmul(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (a, b) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let y = cx.output(n, 0)?;
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    let (m, k, cols) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let batch_a: usize = sa[..sa.len() - 2].iter().product();
    let batch_b: usize = sb[..sb.len() - 2].iter().product();
    let (av, bv) = if batch_b == 1 {
        (
            a.view(&[batch_a * m, k], DType::F32)?,
            b.view(&[k, cols], DType::F32)?,
        )
    } else if sa[..sa.len() - 2] == sb[..sb.len() - 2] {
        (
            a.view(&[batch_a, m, k], DType::F32)?,
            b.view(&[batch_b, k, cols], DType::F32)?,
        )
    } else if batch_a == 1 {
        (
            a.view(&[1, m, k], DType::F32)?,
            b.view(&[batch_b, k, cols], DType::F32)?,
        )
    } else {
        return Err(cx.err(
            n,
            format!("batch dims of {sa:?} and {sb:?} broadcast in a way qforge does not run"),
        ));
    };
    let yv = y.view(
        &matmul_output_shape(av.shape(), bv.shape(), false, false)?,
        DType::F32,
    )?;
    gemm::matmul_into(
        cx.steps(),
        gpu,
        &av,
        &bv,
        false,
        false,
        1.0,
        Bias::None,
        &yv,
    )
}

fn batch_norm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::BatchNorm { epsilon } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let p: Vec<Vec<f32>> = n.inputs[1..5]
        .iter()
        .map(|i| {
            cx.constant(i)
                .map(|a| a.iter().copied().collect())
                .ok_or_else(|| cx.err(n, format!("'{i}' must be a constant")))
        })
        .collect::<Result<_>>()?;
    let ab: Vec<f32> = (0..p[0].len())
        .flat_map(|c| {
            let s = p[0][c] / (p[3][c] + epsilon).sqrt();
            [s, p[1][c] - p[2][c] * s]
        })
        .collect();
    let ab = cx.upload(&[ab.len() / 2, 2], &ab)?;
    let inner: usize = x.shape()[2..].iter().product();
    let y = cx.output(n, 0)?;
    ew::channel_affine_into(cx.steps(), gpu, &x, &ab, inner.max(1), &y)
}

fn unary(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Unary(f) = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    ew::unary_into(cx.steps(), gpu, f, &x, &y)
}

fn binary(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Binary(b) = n.op else {
        unreachable!("table")
    };
    let (a, c) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let y = cx.output(n, 0)?;
    ew::binary_into(cx.steps(), gpu, b, &a, &c, &y)
}

fn pool2d(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let (Op::MaxPool(a) | Op::AveragePool(a)) = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    pool::pool2d_into(cx.steps(), gpu, &x, a, matches!(n.op, Op::MaxPool(_)), &y)
}

fn global_avg_pool(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    pool::global_avg_pool_into(cx.steps(), gpu, &x, &y)
}

fn resize(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Resize {
        mode,
        coordinate_transformation,
        nearest_mode,
    } = &n.op
    else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let r = Resize::from_onnx(mode, coordinate_transformation, nearest_mode)
        .ok_or_else(|| cx.err(n, "unsupported mode"))?;
    let scales = resize_scales(cx.graph, n, x.shape(), y.shape());
    pool::resize_into(cx.steps(), gpu, &x, r, scales, &y)
}

/// A whole tensor as a strided view.
fn dense(shape: &[usize]) -> StridedView {
    StridedView {
        offset: 0,
        strides: strides(shape),
    }
}

/// The view of `shape` with its axes in `perm` order.
fn permuted(shape: &[usize], perm: &[usize]) -> StridedView {
    let s = strides(shape);
    StridedView {
        offset: 0,
        strides: perm.iter().map(|&p| s[p]).collect(),
    }
}

fn transpose(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Transpose { perm } = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let perm: Vec<usize> = if perm.is_empty() {
        (0..x.shape().len()).rev().collect()
    } else {
        perm.clone()
    };
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(x.shape(), &perm),
        &y,
        &dense(y.shape()),
        y.shape(),
    )
}

fn concat(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Concat { axis } = n.op else {
        unreachable!("table")
    };
    let y = cx.output(n, 0)?;
    let a = norm_axis(axis, y.shape().len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let ys = strides(y.shape());
    let mut at = 0;
    for i in &n.inputs {
        let x = cx.input(i)?;
        let dst = StridedView {
            offset: at * ys[a],
            strides: ys.clone(),
        };
        ew::strided_copy_into(cx.steps(), gpu, &x, &dense(x.shape()), &y, &dst, x.shape())?;
        at += x.shape()[a];
    }
    Ok(())
}

fn split(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Split { axis, .. } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let a = norm_axis(axis, x.shape().len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    let xs = strides(x.shape());
    let mut at = 0;
    for i in 0..n.outputs.len() {
        let y = cx.output(n, i)?;
        let src = StridedView {
            offset: at * xs[a],
            strides: xs.clone(),
        };
        ew::strided_copy_into(cx.steps(), gpu, &x, &src, &y, &dense(y.shape()), y.shape())?;
        at += y.shape()[a];
    }
    Ok(())
}

fn slice(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let x = cx.input(&n.inputs[0])?;
    let g = cx.graph;
    let ints = |i: usize| {
        n.inputs
            .get(i)
            .filter(|v| !v.is_empty())
            .map(|v| {
                g.consts
                    .get(v)
                    .map(Const::to_i64)
                    .ok_or_else(|| cx.err(n, "slice bounds must be constants"))
            })
            .transpose()
    };
    let spec = slice_spec(
        x.shape(),
        &ints(1)?.unwrap_or_default(),
        &ints(2)?.unwrap_or_default(),
        ints(3)?.as_deref(),
        ints(4)?.as_deref(),
    )
    .map_err(|m| cx.err(n, m))?;
    if spec.iter().any(|s| s.step < 0) {
        return Err(cx.err(
            n,
            "negative slice steps on runtime tensors are not supported",
        ));
    }
    let xs = strides(x.shape());
    let y = cx.output(n, 0)?;
    let src = StridedView {
        offset: spec.iter().zip(&xs).map(|(s, st)| s.start * st).sum(),
        strides: spec
            .iter()
            .zip(&xs)
            .map(|(s, st)| s.step as usize * st)
            .collect(),
    };
    ew::strided_copy_into(cx.steps(), gpu, &x, &src, &y, &dense(y.shape()), y.shape())
}

fn pad(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Pad { value, .. } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let pads = cx
        .graph
        .consts
        .get(&n.inputs[1])
        .map(Const::to_i64)
        .ok_or_else(|| cx.err(n, "pads must be a constant"))?;
    let y = cx.output(n, 0)?;
    ew::fill_into(cx.steps(), gpu, &y, value)?;
    let ys = strides(y.shape());
    let dst = StridedView {
        offset: ys
            .iter()
            .enumerate()
            .map(|(d, s)| pads[d] as usize * s)
            .sum(),
        strides: ys,
    };
    ew::strided_copy_into(cx.steps(), gpu, &x, &dense(x.shape()), &y, &dst, x.shape())
}

fn softmax(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Softmax { axis, legacy } = n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let s = x.shape().to_vec();
    let a = norm_axis(axis, s.len()).ok_or_else(|| cx.err(n, "axis out of range"))?;
    if legacy || a == s.len() - 1 {
        let len: usize = s[a..].iter().product();
        return reduce::softmax_rows_into(cx.steps(), gpu, &x, len, &y);
    }
    // Move the axis last, softmax the rows, move it back.
    let mut perm: Vec<usize> = (0..s.len()).filter(|&d| d != a).collect();
    perm.push(a);
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let (t1, t2) = (
        cx.scratch(&t_shape, DType::F32)?,
        cx.scratch(&t_shape, DType::F32)?,
    );
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(&s, &perm),
        &t1.tensor,
        &dense(&t_shape),
        &t_shape,
    )?;
    reduce::softmax_rows_into(cx.steps(), gpu, &t1.tensor, s[a], &t2.tensor)?;
    let ts = strides(&t_shape);
    let mut back = vec![0; s.len()];
    for (i, &p) in perm.iter().enumerate() {
        back[p] = ts[i];
    }
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &t2.tensor,
        &StridedView {
            offset: 0,
            strides: back,
        },
        &y,
        &dense(&s),
        &s,
    )?;
    cx.free(t1);
    cx.free(t2);
    Ok(())
}

fn reduce_mean(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    let gpu = cx.gpu();
    let Op::ReduceMean { axes, .. } = &n.op else {
        unreachable!("table")
    };
    let x = cx.input(&n.inputs[0])?;
    let y = cx.output(n, 0)?;
    let s = x.shape().to_vec();
    let axes: HashSet<usize> = if axes.is_empty() {
        (0..s.len()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, s.len()).ok_or_else(|| cx.err(n, "axis out of range")))
            .collect::<Result<_>>()?
    };
    let mut perm: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
    let kept = perm.len();
    perm.extend((0..s.len()).filter(|d| axes.contains(d)));
    let len: usize = perm[kept..].iter().map(|&p| s[p]).product();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return reduce::mean_rows_into(cx.steps(), gpu, &x, len, &y);
    }
    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let t = cx.scratch(&t_shape, DType::F32)?;
    ew::strided_copy_into(
        cx.steps(),
        gpu,
        &x,
        &permuted(&s, &perm),
        &t.tensor,
        &dense(&t_shape),
        &t_shape,
    )?;
    reduce::mean_rows_into(cx.steps(), gpu, &t.tensor, len, &y)?;
    cx.free(t);
    Ok(())
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
    let mut node_steps = Vec::with_capacity(g.nodes.len());
    for (k, n) in g.nodes.iter().enumerate() {
        node_steps.push((n.name.clone(), cx.steps.0.len()));
        let done = match sim {
            Some(s) => s.lower(&mut cx, n)?,
            None => false,
        };
        if !done {
            let f = rule(&n.op).ok_or_else(|| cx.err(n, "not run by the executor"))?;
            f(&mut cx, n)?;
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if let Some(q) = sim.and_then(|s| s.quantizer(o)) {
                cx.quantize(o, &q)?;
            }
            if keep.contains(o.as_str()) {
                cx.pin(o)?;
            }
        }
        cx.retire(n, k, keep);
    }
    let kept = keep
        .iter()
        .filter_map(|k| cx.tensor_of(k).map(|t| (k.to_string(), t)))
        .collect();
    Ok(Lowered {
        steps: cx.into_steps(),
        inputs,
        kept,
        node_steps,
    })
}

/// What lowering produced.
pub(crate) struct Lowered {
    pub steps: Steps,
    /// Input buffers the host writes (before any input quantizer).
    pub inputs: Vec<(String, GpuTensor)>,
    /// Outputs and taps.
    pub kept: Vec<(String, GpuTensor)>,
    pub node_steps: Vec<(String, usize)>,
}
