//! A [`Plan`]: a resolved [`Graph`] compiled for one [`Gpu`] — weights uploaded, every
//! dispatch prepared (pipelines and bind groups made once), activation buffers shared by
//! liveness — run with one submission per forward.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{DType, Error, Result};
use crate::gpu::{Encoder, Gpu, GpuTensor, Steps};
use crate::graph::ir::{Const, Graph, Node, Op};
use crate::graph::resolve::{norm_axis, slice_spec};
use crate::ops::elementwise::{self as ew, strides, StridedView};
use crate::ops::gemm::{self, Bias};
use crate::ops::{conv, pool, quant, reduce};
use crate::quant::integer::{IntegerOp, IntegerPlan};

/// A compiled forward pass.
pub struct Plan {
    gpu: Arc<Gpu>,
    name: String,
    inputs: Vec<String>,
    /// The buffers the host writes inputs into (before any input quantizer).
    input_buffers: HashMap<String, GpuTensor>,
    outputs: Vec<String>,
    values: HashMap<String, GpuTensor>,
    steps: Steps,
    /// (node name, index of its first step) for profiling and error messages.
    node_steps: Vec<(String, usize)>,
}

/// Which inputs of a node are read at run time (the others are folded attributes).
fn data_inputs(node: &Node) -> &[String] {
    let n = match node.op {
        Op::Reshape { .. } | Op::Pad { .. } | Op::Slice | Op::Resize { .. } => 1,
        _ => node.inputs.len(),
    };
    &node.inputs[..n.min(node.inputs.len())]
}

/// Resize's (h, w) scales: the constant scales input, or output / input when sizes were given.
pub fn resize_scales(g: &Graph, node: &Node, x: &[usize], y: &[usize]) -> [f32; 2] {
    let given = node.inputs.get(2).filter(|n| !n.is_empty()).and_then(|n| g.consts.get(n)).map(|c| c.to_f32().iter().copied().collect::<Vec<f32>>()).filter(|v| v.len() == 4);
    match given {
        Some(v) => [v[2], v[3]],
        None => [y[2] as f32 / x[2] as f32, y[3] as f32 / x[3] as f32],
    }
}

struct Builder<'g> {
    gpu: &'g Gpu,
    g: &'g Graph,
    values: HashMap<String, GpuTensor>,
    weights: HashMap<String, GpuTensor>,
    /// Free activation buffers (whole pooled tensors) available for reuse.
    free: Vec<GpuTensor>,
    /// Live values per buffer, to return a buffer when its last alias dies.
    users: HashMap<*const (), usize>,
    steps: Steps,
    /// The integer simulation's fused nodes (with exact-division quantizers elsewhere).
    integer: Option<&'g IntegerPlan>,
}

fn key(t: &GpuTensor) -> *const () {
    Arc::as_ptr(&t.buf) as *const ()
}

impl<'g> Builder<'g> {
    fn err(&self, node: &Node, message: impl Into<String>) -> Error {
        Error::Graph { model: self.g.name.clone(), message: format!("node '{}' ({}): {}", node.name, node.op.onnx_type(), message.into()) }
    }

    /// The tensor of a value: an activation, or a weight uploaded on first use.
    fn get(&mut self, name: &str) -> Result<GpuTensor> {
        if let Some(t) = self.values.get(name).or_else(|| self.weights.get(name)) {
            return Ok(t.clone());
        }
        let c = self.g.consts.get(name).ok_or_else(|| Error::Graph { model: self.g.name.clone(), message: format!("value '{name}' has no producer") })?;
        let t = self.gpu.upload(&c.to_f32().view())?;
        self.weights.insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn upload<T: crate::gpu::Element>(&self, shape: &[usize], data: &[T]) -> Result<GpuTensor> {
        self.gpu.upload_slice(shape, data)
    }

    /// A buffer for a new activation: the smallest free one that fits, or a new one.
    fn alloc(&mut self, shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let best = self.free.iter().enumerate().filter(|(_, t)| t.capacity() >= n).min_by_key(|(_, t)| t.capacity()).map(|(i, _)| i);
        let t = match best {
            Some(i) => self.free.swap_remove(i).view(shape, DType::F32)?,
            None => self.gpu.empty(shape, DType::F32)?,
        };
        Ok(t)
    }

    fn define(&mut self, name: &str, t: GpuTensor) {
        *self.users.entry(key(&t)).or_default() += 1;
        self.values.insert(name.to_string(), t);
    }

    fn release(&mut self, name: &str) {
        if let Some(t) = self.values.get(name) {
            let k = key(t);
            let left = self.users.get_mut(&k).expect("defined");
            *left -= 1;
            if *left == 0 {
                let whole = t.view(&[t.capacity()], DType::F32).expect("capacity fits");
                self.free.push(whole);
            }
        }
    }

    fn out(&mut self, node: &Node, i: usize) -> Result<GpuTensor> {
        let name = &node.outputs[i];
        let shape = self.g.shapes.get(name).ok_or_else(|| self.err(node, format!("no shape for output '{name}'")))?.clone();
        let t = self.alloc(&shape)?;
        self.define(name, t.clone());
        Ok(t)
    }

    /// Replaces `name`'s value by its fake-quantized copy when it has a quantizer.
    fn quantize(&mut self, name: &str, act_quant: &HashMap<String, (GpuTensor, u32)>) -> Result<()> {
        let Some((table, steps)) = act_quant.get(name) else { return Ok(()) };
        if self.integer.is_some_and(|p| p.quantized.contains(name)) {
            return Ok(());
        }
        let x = self.values[name].clone();
        let y = self.alloc(x.shape())?;
        quant::fake_quant_table_into(&mut self.steps, self.gpu, &x, table, *steps, None, self.integer.is_some(), &y)?;
        self.release(name);
        self.define(name, y);
        Ok(())
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.g.shapes.get(name).cloned().or_else(|| self.g.consts.get(name).map(|c| c.shape().to_vec())).unwrap_or_default()
    }

    fn const_f32(&self, name: &str) -> Option<ArrayD<f32>> {
        self.g.consts.get(name).map(Const::to_f32)
    }

    /// A scratch buffer from the pool, returned with [`Builder::give_back`] once recorded.
    fn scratch(&mut self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        self.alloc(shape)?.view(shape, dtype)
    }

    fn give_back(&mut self, t: GpuTensor) -> Result<()> {
        self.free.push(t.view(&[t.capacity()], DType::F32)?);
        Ok(())
    }

    /// A node the integer simulation fuses (see [`IntegerPlan`]).
    fn integer_node(&mut self, node: &Node, op: &IntegerOp) -> Result<()> {
        let gpu = self.gpu;
        match op {
            IntegerOp::Conv { attrs, weight, bias, multiplier, x: grid, out, gemm, f32_exact } => {
                let mut x = self.get(&node.inputs[0])?;
                if *gemm {
                    let s = x.shape().to_vec();
                    x = x.view(&[s[0], s[1], 1, 1], DType::F32)?;
                }
                let (b, m) = (self.upload(&[bias.len()], bias)?, self.upload(&[multiplier.len()], multiplier)?);
                let y = self.out(node, 0)?;
                let shape = conv::output_shape(x.shape(), weight.shape(), attrs)?;
                let inner = shape[2] * shape[3];
                if *f32_exact {
                    // The input's codes as f32 (a grid of scale 1 over the same codes), one
                    // f32 GEMM with the weight codes, exact under the layer's checked bound.
                    let table = self.upload(&[1, 4], &[1.0, 1.0 / grid.scale, grid.lo, 0.0])?;
                    let r = self.scratch(x.shape(), DType::F32)?;
                    quant::fake_quant_table_into(&mut self.steps, gpu, &x, &table, (grid.hi - grid.lo) as u32, None, false, &r)?;
                    let (cout, cin) = (shape[1], x.shape()[1]);
                    let w = self.upload(&[cout, cin], &weight.iter().map(|&v| v as f32).collect::<Vec<f32>>())?;
                    let acc = self.scratch(&shape, DType::F32)?;
                    if *gemm {
                        let (rv, av) = (r.view(&[shape[0], cin], DType::F32)?, acc.view(&[shape[0], cout], DType::F32)?);
                        gemm::matmul_into(&mut self.steps, gpu, &rv, &w, false, true, 1.0, Bias::None, &av)?;
                    } else {
                        let (rv, av) = (r.view(&[shape[0], cin, inner], DType::F32)?, acc.view(&[shape[0], cout, inner], DType::F32)?);
                        gemm::matmul_into(&mut self.steps, gpu, &w, &rv, false, false, 1.0, Bias::None, &av)?;
                    }
                    quant::requant_into(&mut self.steps, gpu, &acc, &quant::Requant { bias: &b, multiplier: &m, inner, grid: *out }, &y)?;
                    self.give_back(r)?;
                    return self.give_back(acc);
                }
                let w = gpu.upload(&weight.view().into_dyn())?;
                let acc = self.scratch(&shape, DType::I32)?;
                conv::qconv2d_into(&mut self.steps, gpu, &x, 1.0 / grid.scale, &w, attrs, &acc)?;
                quant::requant_into(&mut self.steps, gpu, &acc, &quant::Requant { bias: &b, multiplier: &m, inner, grid: *out }, &y)?;
                self.give_back(acc)
            }
            IntegerOp::GlobalAvgPool { x_inv, multiplier, out } => {
                let x = self.get(&node.inputs[0])?;
                let s = x.shape().to_vec();
                let (c, hw) = (s[1], s[2] * s[3]);
                let w = self.upload(&[c, 1, s[2], s[3]], &vec![1; c * hw])?;
                let (b, m) = (self.upload(&[c], &vec![0; c])?, self.upload(&[c], &vec![*multiplier; c])?);
                let y = self.out(node, 0)?;
                let acc = self.scratch(&[s[0], c, 1, 1], DType::I32)?;
                conv::qconv2d_into(&mut self.steps, gpu, &x, *x_inv, &w, &conv::Conv2d { groups: c, ..Default::default() }, &acc)?;
                quant::requant_into(&mut self.steps, gpu, &acc, &quant::Requant { bias: &b, multiplier: &m, inner: 1, grid: *out }, &y)?;
                self.give_back(acc)
            }
            IntegerOp::Add(grids) => {
                let (a, c) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let y = self.out(node, 0)?;
                quant::qadd_into(&mut self.steps, gpu, &a, &c, *grids, &y)
            }
        }
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        let gpu = self.gpu;
        if let Some(ip) = self.integer {
            if ip.absorbed.contains(&node.name) {
                let x = self.get(&node.inputs[0])?;
                let v = x.view(&self.shape(&node.outputs[0]), DType::F32)?;
                self.define(&node.outputs[0], v);
                return Ok(());
            }
            if let Some(op) = ip.ops.get(&node.name) {
                return self.integer_node(node, op);
            }
        }
        match &node.op {
            op if op.is_view() => {
                let x = self.get(&node.inputs[0])?;
                let shape = self.shape(&node.outputs[0]);
                let v = x.view(&shape, DType::F32)?;
                self.define(&node.outputs[0], v);
            }
            Op::Conv(a) => {
                let (x, w) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let b = match node.inputs.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => Some(self.get(b)?),
                    None => None,
                };
                let y = self.out(node, 0)?;
                conv::conv2d_into(&mut self.steps, gpu, &x, &w, b.as_ref(), a, &y)?;
            }
            Op::ConvTranspose { conv: a, output_padding } => {
                let (x, w) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let b = match node.inputs.get(2).filter(|b| !b.is_empty()) {
                    Some(b) => Some(self.get(b)?),
                    None => None,
                };
                let y = self.out(node, 0)?;
                conv::conv_transpose2d_into(&mut self.steps, gpu, &x, &w, b.as_ref(), a, *output_padding, &y)?;
            }
            Op::Resize { mode, coordinate_transformation, nearest_mode } => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                let r = pool::Resize::from_onnx(mode, coordinate_transformation, nearest_mode).ok_or_else(|| self.err(node, "unsupported mode"))?;
                let scales = resize_scales(self.g, node, x.shape(), y.shape());
                pool::resize_into(&mut self.steps, gpu, &x, r, scales, &y)?;
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                let (a, b) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let y = self.out(node, 0)?;
                let (m, n) = (y.shape()[0], y.shape()[1]);
                let c = match node.inputs.get(2).filter(|c| !c.is_empty()) {
                    None => None,
                    Some(c) => {
                        let v = self.const_f32(c).ok_or_else(|| self.err(node, "a runtime C input is not supported (constant bias only)"))?;
                        let full = v.broadcast(IxDyn(&[m, n])).ok_or_else(|| self.err(node, "C does not broadcast"))?.mapv(|e| e * beta);
                        Some((v.shape().to_vec(), full))
                    }
                };
                let bias_t;
                let bias = match &c {
                    None => Bias::None,
                    Some((shape, full)) if shape.iter().rev().skip(1).all(|&d| d == 1) && shape.last().copied().unwrap_or(1) == n => {
                        bias_t = self.upload(&[n], &full.iter().take(n).copied().collect::<Vec<f32>>())?;
                        Bias::PerColumn(&bias_t)
                    }
                    Some((_, full)) => {
                        bias_t = self.upload(&[m, n], full.as_standard_layout().as_slice().expect("contiguous"))?;
                        Bias::Full(&bias_t)
                    }
                };
                gemm::matmul_into(&mut self.steps, gpu, &a, &b, *trans_a, *trans_b, *alpha, bias, &y)?;
            }
            Op::MatMul => {
                let (a, b) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let y = self.out(node, 0)?;
                let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
                let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
                let batch_a: usize = sa[..sa.len() - 2].iter().product();
                let batch_b: usize = sb[..sb.len() - 2].iter().product();
                let (av, bv) = if batch_b == 1 {
                    (a.view(&[batch_a * m, k], DType::F32)?, b.view(&[k, n], DType::F32)?)
                } else if sa[..sa.len() - 2] == sb[..sb.len() - 2] {
                    (a.view(&[batch_a, m, k], DType::F32)?, b.view(&[batch_b, k, n], DType::F32)?)
                } else if batch_a == 1 {
                    (a.view(&[1, m, k], DType::F32)?, b.view(&[batch_b, k, n], DType::F32)?)
                } else {
                    return Err(self.err(node, format!("batch dims of {sa:?} and {sb:?} broadcast in a way qforge does not run")));
                };
                let yv = y.view(&gemm::output_shape(av.shape(), bv.shape(), false, false)?, DType::F32)?;
                gemm::matmul_into(&mut self.steps, gpu, &av, &bv, false, false, 1.0, Bias::None, &yv)?;
            }
            Op::BatchNorm { epsilon } => {
                let x = self.get(&node.inputs[0])?;
                let p: Vec<ArrayD<f32>> = node.inputs[1..5].iter().map(|n| self.const_f32(n).ok_or_else(|| self.err(node, format!("'{n}' must be a constant")))).collect::<Result<_>>()?;
                let ab: Vec<f32> = (0..p[0].len())
                    .flat_map(|c| {
                        let s = p[0].as_slice().unwrap()[c] / (p[3].as_slice().unwrap()[c] + epsilon).sqrt();
                        [s, p[1].as_slice().unwrap()[c] - p[2].as_slice().unwrap()[c] * s]
                    })
                    .collect();
                let ab = self.upload(&[ab.len() / 2, 2], &ab)?;
                let inner: usize = x.shape()[2..].iter().product();
                let y = self.out(node, 0)?;
                ew::channel_affine_into(&mut self.steps, gpu, &x, &ab, inner.max(1), &y)?;
            }
            Op::Unary(f) => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                ew::unary_into(&mut self.steps, gpu, *f, &x, &y)?;
            }
            Op::Binary(b) => {
                let (a, c) = (self.get(&node.inputs[0])?, self.get(&node.inputs[1])?);
                let y = self.out(node, 0)?;
                ew::binary_into(&mut self.steps, gpu, *b, &a, &c, &y)?;
            }
            Op::MaxPool(a) | Op::AveragePool(a) => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                pool::pool2d_into(&mut self.steps, gpu, &x, a, matches!(node.op, Op::MaxPool(_)), &y)?;
            }
            Op::GlobalAveragePool => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                pool::global_avg_pool_into(&mut self.steps, gpu, &x, &y)?;
            }
            Op::Transpose { perm } => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                let perm: Vec<usize> = if perm.is_empty() { (0..x.shape().len()).rev().collect() } else { perm.clone() };
                let xs = strides(x.shape());
                let src = StridedView { offset: 0, strides: perm.iter().map(|&p| xs[p]).collect() };
                let dst = StridedView { offset: 0, strides: strides(y.shape()) };
                ew::strided_copy_into(&mut self.steps, gpu, &x, &src, &y, &dst, y.shape())?;
            }
            Op::Concat { axis } => {
                let y = self.out(node, 0)?;
                let a = norm_axis(*axis, y.shape().len()).expect("resolved");
                let ys = strides(y.shape());
                let mut at = 0;
                for i in &node.inputs {
                    let x = self.get(i)?;
                    let dst = StridedView { offset: at * ys[a], strides: ys.clone() };
                    ew::strided_copy_into(&mut self.steps, gpu, &x, &StridedView { offset: 0, strides: strides(x.shape()) }, &y, &dst, x.shape())?;
                    at += x.shape()[a];
                }
            }
            Op::Split { axis, .. } => {
                let x = self.get(&node.inputs[0])?;
                let a = norm_axis(*axis, x.shape().len()).expect("resolved");
                let xs = strides(x.shape());
                let mut at = 0;
                for i in 0..node.outputs.len() {
                    let y = self.out(node, i)?;
                    let src = StridedView { offset: at * xs[a], strides: xs.clone() };
                    ew::strided_copy_into(&mut self.steps, gpu, &x, &src, &y, &StridedView { offset: 0, strides: strides(y.shape()) }, y.shape())?;
                    at += y.shape()[a];
                }
            }
            Op::Slice => {
                let x = self.get(&node.inputs[0])?;
                let ints = |i: usize| node.inputs.get(i).filter(|n| !n.is_empty()).map(|n| self.g.consts.get(n).map(Const::to_i64).ok_or_else(|| self.err(node, "slice bounds must be constants"))).transpose();
                let spec = slice_spec(x.shape(), &ints(1)?.unwrap_or_default(), &ints(2)?.unwrap_or_default(), ints(3)?.as_deref(), ints(4)?.as_deref()).map_err(|m| self.err(node, m))?;
                if spec.iter().any(|s| s.step < 0) {
                    return Err(self.err(node, "negative slice steps on runtime tensors are not supported"));
                }
                let xs = strides(x.shape());
                let y = self.out(node, 0)?;
                let src = StridedView { offset: spec.iter().zip(&xs).map(|(s, st)| s.start * st).sum(), strides: spec.iter().zip(&xs).map(|(s, st)| s.step as usize * st).collect() };
                ew::strided_copy_into(&mut self.steps, gpu, &x, &src, &y, &StridedView { offset: 0, strides: strides(y.shape()) }, y.shape())?;
            }
            Op::Pad { value, .. } => {
                let x = self.get(&node.inputs[0])?;
                let pads = self.g.consts.get(&node.inputs[1]).map(Const::to_i64).ok_or_else(|| self.err(node, "pads must be a constant"))?;
                let y = self.out(node, 0)?;
                ew::fill_into(&mut self.steps, gpu, &y, *value)?;
                let ys = strides(y.shape());
                let dst = StridedView { offset: ys.iter().enumerate().map(|(d, s)| pads[d] as usize * s).sum(), strides: ys };
                ew::strided_copy_into(&mut self.steps, gpu, &x, &StridedView { offset: 0, strides: strides(x.shape()) }, &y, &dst, x.shape())?;
            }
            Op::Softmax { axis, legacy } => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                let s = x.shape().to_vec();
                let a = norm_axis(*axis, s.len()).expect("resolved");
                if *legacy || a == s.len() - 1 {
                    let len: usize = s[a..].iter().product();
                    reduce::softmax_rows_into(&mut self.steps, gpu, &x, len, &y)?;
                } else {
                    // Move the axis last, softmax the rows, move it back.
                    let mut perm: Vec<usize> = (0..s.len()).filter(|&d| d != a).collect();
                    perm.push(a);
                    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                    let (t1, t2) = (self.gpu.empty(&t_shape, DType::F32)?, self.gpu.empty(&t_shape, DType::F32)?);
                    let xs = strides(&s);
                    ew::strided_copy_into(&mut self.steps, gpu, &x, &StridedView { offset: 0, strides: perm.iter().map(|&p| xs[p]).collect() }, &t1, &StridedView { offset: 0, strides: strides(&t_shape) }, &t_shape)?;
                    reduce::softmax_rows_into(&mut self.steps, gpu, &t1, s[a], &t2)?;
                    let ts = strides(&t_shape);
                    let mut back = vec![0; s.len()];
                    for (i, &p) in perm.iter().enumerate() {
                        back[p] = ts[i];
                    }
                    ew::strided_copy_into(&mut self.steps, gpu, &t2, &StridedView { offset: 0, strides: back }, &y, &StridedView { offset: 0, strides: strides(&s) }, &s)?;
                }
            }
            Op::ReduceMean { axes, .. } => {
                let x = self.get(&node.inputs[0])?;
                let y = self.out(node, 0)?;
                let s = x.shape().to_vec();
                let axes: HashSet<usize> = if axes.is_empty() { (0..s.len()).collect() } else { axes.iter().map(|&a| norm_axis(a, s.len()).expect("resolved")).collect() };
                let mut perm: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
                let kept = perm.len();
                perm.extend((0..s.len()).filter(|d| axes.contains(d)));
                let len: usize = perm[kept..].iter().map(|&p| s[p]).product();
                if perm.iter().enumerate().all(|(i, &p)| i == p) {
                    reduce::mean_rows_into(&mut self.steps, gpu, &x, len, &y)?;
                } else {
                    let t_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                    let t = self.gpu.empty(&t_shape, DType::F32)?;
                    let xs = strides(&s);
                    ew::strided_copy_into(&mut self.steps, gpu, &x, &StridedView { offset: 0, strides: perm.iter().map(|&p| xs[p]).collect() }, &t, &StridedView { offset: 0, strides: strides(&t_shape) }, &t_shape)?;
                    reduce::mean_rows_into(&mut self.steps, gpu, &t, len, &y)?;
                }
            }
            op => return Err(self.err(node, format!("{} is not run by the executor", op.onnx_type()))),
        }
        Ok(())
    }
}

impl Plan {
    /// Compiles a resolved graph. `taps` are values kept readable after a forward (never
    /// shared with other activations).
    pub fn compile(gpu: Arc<Gpu>, g: &Graph, taps: &[String]) -> Result<Plan> {
        Plan::compile_quantized(gpu, g, taps, &HashMap::new())
    }

    /// Compiles with fake quantization after every value in `act_quant` (value name →
    /// (encoding table on the GPU, grid steps N)): the simulation of a quantized model. Inputs
    /// and node outputs listed there are replaced by their quantize-dequantized values; the
    /// tables can be rewritten between runs.
    pub fn compile_quantized(gpu: Arc<Gpu>, g: &Graph, taps: &[String], act_quant: &HashMap<String, (GpuTensor, u32)>) -> Result<Plan> {
        Plan::compile_integer(gpu, g, taps, act_quant, None)
    }

    /// [`Plan::compile_quantized`] with `integer`'s nodes run by integer kernels and every other
    /// quantizer rounding the correctly rounded quotient x / scale: the simulation of an
    /// integer runtime (onnxruntime) running the QDQ export. `None` is the float simulation.
    pub fn compile_integer(gpu: Arc<Gpu>, g: &Graph, taps: &[String], act_quant: &HashMap<String, (GpuTensor, u32)>, integer: Option<&IntegerPlan>) -> Result<Plan> {
        for t in taps {
            if !g.shapes.contains_key(t) {
                return Err(Error::Graph { model: g.name.clone(), message: format!("tap '{t}' is not a runtime value of the graph") });
            }
        }
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for input in data_inputs(n) {
                last_use.insert(input, i);
            }
        }
        let keep: HashSet<&str> = g.outputs.iter().chain(taps).map(String::as_str).collect();
        let mut b = Builder { gpu: &gpu, g, values: HashMap::new(), weights: HashMap::new(), free: Vec::new(), users: HashMap::new(), steps: Steps::default(), integer };
        let mut input_buffers = HashMap::new();
        for i in &g.inputs {
            let t = gpu.empty(&g.shapes[i], DType::F32)?;
            input_buffers.insert(i.clone(), t.clone());
            b.define(i, t);
            // Inputs are written by the host before each forward: never reuse their buffers.
            *b.users.entry(key(&b.values[i])).or_default() += 1;
            b.quantize(i, act_quant)?;
            if keep.contains(i.as_str()) {
                *b.users.entry(key(&b.values[i])).or_default() += 1;
            }
        }
        let mut node_steps = Vec::with_capacity(g.nodes.len());
        for (i, n) in g.nodes.iter().enumerate() {
            node_steps.push((n.name.clone(), b.steps.0.len()));
            b.node(n)?;
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                b.quantize(o, act_quant)?;
            }
            for o in &n.outputs {
                if keep.contains(o.as_str()) {
                    *b.users.entry(key(&b.values[o])).or_default() += 1;
                }
            }
            let dead: Vec<String> = data_inputs(n).iter().filter(|v| last_use.get(v.as_str()) == Some(&i) && b.values.contains_key(*v)).cloned().collect();
            let mut seen = HashSet::new();
            for v in dead {
                if seen.insert(v.clone()) {
                    b.release(&v);
                }
            }
            for o in &n.outputs {
                if !o.is_empty() && !last_use.contains_key(o.as_str()) && !keep.contains(o.as_str()) {
                    b.release(o);
                }
            }
        }
        Ok(Plan { gpu: gpu.clone(), name: g.name.clone(), inputs: g.inputs.clone(), input_buffers, outputs: g.outputs.clone(), values: b.values, steps: b.steps, node_steps })
    }

    /// The GPU tensor of a value (inputs, outputs and taps hold their value after a forward).
    pub fn tensor(&self, name: &str) -> Option<&GpuTensor> {
        self.values.get(name)
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

    /// (node name, first step index) of every node, in order.
    pub fn node_steps(&self) -> &[(String, usize)] {
        &self.node_steps
    }

    /// Writes the inputs (checked against the compiled shapes) for the next forward.
    pub fn write_inputs(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<()> {
        for name in &self.inputs {
            let Some((_, data)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::Graph { model: self.name.clone(), message: format!("missing input '{name}'") });
            };
            let t = &self.input_buffers[name];
            if data.shape() != t.shape() {
                return Err(Error::ShapeMismatch { op: "forward", tensor: name.clone(), expected: format!("{:?}", t.shape()), got: data.shape().to_vec() });
            }
            let standard = data.as_standard_layout();
            self.gpu.queue.write_buffer(t.buf.raw(), 0, bytemuck::cast_slice(standard.as_slice().expect("standard layout")));
        }
        for (n, _) in inputs {
            if !self.inputs.iter().any(|i| i == n) {
                return Err(Error::Graph { model: self.name.clone(), message: format!("'{n}' is not an input of the model") });
            }
        }
        Ok(())
    }

    /// Records the whole forward pass into `enc` (one compute pass).
    pub fn record(&self, enc: &mut Encoder) {
        enc.run(&self.steps.0);
    }

    /// Runs a forward and reads back `names` (outputs or taps) with one submission and one wait.
    pub fn run(&self, inputs: &[(&str, ArrayViewD<'_, f32>)], names: &[String]) -> Result<Vec<ArrayD<f32>>> {
        self.write_inputs(inputs)?;
        let mut enc = self.gpu.encoder();
        self.record(&mut enc);
        let tensors: Vec<&GpuTensor> = names.iter().map(|n| self.values.get(n).ok_or_else(|| Error::Graph { model: self.name.clone(), message: format!("'{n}' is not an output or tap of this plan") })).collect::<Result<_>>()?;
        let bytes = self.gpu.submit_and_read(enc, &tensors)?;
        tensors.iter().zip(bytes).map(|(t, b)| crate::gpu::to_array::<f32>(t, &b)).collect()
    }

    /// Runs a forward and lets `extra` record more work on the plan's tensors (taps) into
    /// the same submission — the hook calibration observers use. Returns `extra`'s value after
    /// the GPU finished.
    pub fn run_with<T>(&self, inputs: &[(&str, ArrayViewD<'_, f32>)], extra: impl FnOnce(&mut Encoder, &Plan) -> Result<T>) -> Result<T> {
        self.write_inputs(inputs)?;
        let mut enc = self.gpu.encoder();
        self.record(&mut enc);
        let out = extra(&mut enc, self)?;
        self.gpu.finish(enc)?;
        Ok(out)
    }
}
