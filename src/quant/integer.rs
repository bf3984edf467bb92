//! The integer simulation: which nodes an integer runtime runs on integer codes, and the
//! constants it runs them with, following onnxruntime's CPU execution of a QDQ model.
//!
//! onnxruntime fuses `DequantizeLinear -> op -> QuantizeLinear` into integer kernels: Conv and
//! Gemm into QLinearConv / QGemm (i32 accumulation of the codes, an int32 bias quantized with
//! scale `s_x * s_w`, then `round(f32(acc) * (s_x * s_w / s_y))`), Add into QLinearAdd and
//! GlobalAveragePool into QLinearGlobalAveragePool. A Relu or Clip between the op and the
//! QuantizeLinear is dropped first when the output grid lies inside its bounds (its
//! ReluQuantFusion / ClipQuantFusion). Every other node stays a float op between a dequantize
//! and a quantize. An [`IntegerPlan`] marks the fused nodes of a simulated graph with those
//! constants; [`lower`] records them with the integer kernels, and the QDQ export
//! writes the same int32 biases, so the simulation and onnxruntime agree bit for bit.

use std::collections::{HashMap, HashSet};

use ndarray::{Array4, Ix2};

use crate::error::{DType, Error, Result};
use crate::exec::Lowering;
use crate::graph::attrs::{AddGrids, Binary, Conv2d, IntGrid, Unary};
use crate::graph::ir::{Graph, Node, Op};
use crate::graph::shape::conv_output_shape;
use crate::ops::gemm::{self, Bias};
use crate::ops::{conv, quant};
use crate::quant::encoding::Encoding;
use crate::quant::params::stored_weight_codes;

/// How one fused node runs.
// Convs carry their weights; a model has a few dozen of these.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum IntegerOp {
    /// Conv, or Gemm as a 1x1 convolution over `[m, k, 1, 1]`: weight codes
    /// `[cout, cin / groups, kh, kw]`, int32 bias codes, per-channel multipliers
    /// `s_x * s_w / s_y`, the input's grid. `f32_exact`: a pointwise layer whose every partial
    /// sum of code products stays below 2^24 in magnitude (checked from the weights and the
    /// input grid), so an f32 GEMM on the codes adds them up exactly, in any order.
    Conv {
        attrs: Conv2d,
        weight: Array4<i32>,
        bias: Vec<i32>,
        multiplier: Vec<f32>,
        x: IntGrid,
        out: IntGrid,
        gemm: bool,
        f32_exact: bool,
    },
    /// Global average pooling: the integer sum per channel times `s_x / (s_y * h * w)`.
    GlobalAvgPool {
        x_inv: f32,
        multiplier: f32,
        out: IntGrid,
    },
    /// Same-shape addition of two quantized tensors.
    Add(AddGrids),
}

/// The fused nodes of one simulated graph.
#[derive(Clone, Debug, Default)]
pub struct IntegerPlan {
    /// Node name → how it runs; its first output is written on the quantized grid.
    pub ops: HashMap<String, IntegerOp>,
    /// Relu / Clip nodes folded into the op before them (their output aliases its input).
    pub absorbed: HashSet<String>,
    /// Values the fused kernels leave quantized (their quantizers do not run again).
    pub quantized: HashSet<String>,
    /// Bias name → (int32 codes, scales `s_x * s_w`) for the QDQ export.
    pub biases: HashMap<String, (Vec<i32>, Vec<f32>)>,
}

/// Scale and ONNX zero point of a per-tensor encoding, with its codes' range.
fn onnx_grid(e: &Encoding) -> (f32, f32, f32, f32) {
    let n = e.steps() as f32;
    if e.signed_codes() {
        (e.scale[0], 0.0, e.offset[0], e.offset[0] + n)
    } else {
        (e.scale[0], -e.offset[0], 0.0, n)
    }
}

/// Whether onnxruntime drops `act` (a Relu or Clip) in front of a QuantizeLinear with `e`.
fn dropped_before(act: &Unary, e: &Encoding) -> bool {
    let (s, zp, qmin, qmax) = onnx_grid(e);
    match act {
        Unary::Relu => zp == qmin,
        Unary::Clip(min, max) => {
            let (lower, upper) = (s * (qmin - zp), s * (qmax - zp));
            !(f32::EPSILON < min - lower || f32::EPSILON < upper - max)
        }
        _ => false,
    }
}

impl IntegerPlan {
    /// Finds the nodes onnxruntime would fuse in `g` (the prepared FP32 graph: its weights and
    /// biases are quantized here) given the activation and parameter encodings. Integer kernels
    /// take 8-bit grids only.
    pub fn new(
        g: &Graph,
        activations: &[(String, Encoding)],
        params: &[(String, Encoding)],
    ) -> Result<IntegerPlan> {
        for (name, e) in activations.iter().chain(params) {
            if e.bitwidth != 8 {
                return Err(Error::invalid(
                    "integer simulation",
                    "bitwidth",
                    format!("{} ({name})", e.bitwidth),
                    "integer kernels run 8-bit grids (uint8/int8)",
                ));
            }
        }
        let signed = activations.iter().filter(|(_, e)| e.signed_codes()).count();
        if signed > 0 {
            log::warn!("integer simulation: {signed} activations have signed (int8) grids; onnxruntime converts them to uint8 and runs some of their layers in f32 (Conv + Clip as FusedConv), so its results differ from the simulation there");
        }
        let acts: HashMap<&str, &Encoding> =
            activations.iter().map(|(n, e)| (n.as_str(), e)).collect();
        let params: HashMap<&str, &Encoding> =
            params.iter().map(|(n, e)| (n.as_str(), e)).collect();
        let mut plan = IntegerPlan::default();
        for n in &g.nodes {
            let Some(out) = n.outputs.first() else {
                continue;
            };
            // The quantized value the fused kernel writes: its own output, or that of a Relu /
            // Clip onnxruntime drops.
            let (target, absorbed) = match acts.get(out.as_str()) {
                Some(_) => (out.clone(), None),
                None => match follower(g, out) {
                    Some((i, act)) => match acts.get(g.nodes[i].outputs[0].as_str()) {
                        Some(e) if dropped_before(act, e) => {
                            (g.nodes[i].outputs[0].clone(), Some(g.nodes[i].name.clone()))
                        }
                        _ => continue,
                    },
                    None => continue,
                },
            };
            let e_out = acts[target.as_str()];
            let op = match &n.op {
                Op::Conv(a) => conv_op(g, n, *a, &acts, &params, e_out, None)?,
                Op::Gemm {
                    alpha,
                    beta,
                    trans_a: false,
                    trans_b,
                } if *alpha == 1.0 && *beta == 1.0 => conv_op(
                    g,
                    n,
                    Conv2d::default(),
                    &acts,
                    &params,
                    e_out,
                    Some(*trans_b),
                )?,
                Op::GlobalAveragePool => acts.get(n.inputs[0].as_str()).and_then(|e_in| {
                    let s = g.shapes.get(&n.inputs[0])?;
                    let hw = s.get(2..)?.iter().product::<usize>() as f32;
                    Some((
                        IntegerOp::GlobalAvgPool {
                            x_inv: 1.0 / e_in.scale[0],
                            multiplier: e_in.scale[0] / (e_out.scale[0] * hw),
                            out: e_out.int_grid(),
                        },
                        None,
                    ))
                }),
                Op::Binary(Binary::Add)
                    if n.inputs.len() == 2
                        && g.shapes.get(&n.inputs[0]) == g.shapes.get(&n.inputs[1]) =>
                {
                    match (
                        acts.get(n.inputs[0].as_str()),
                        acts.get(n.inputs[1].as_str()),
                    ) {
                        // One code type for all three, as QLinearAdd takes them.
                        (Some(a), Some(b))
                            if a.signed_codes() == e_out.signed_codes()
                                && b.signed_codes() == e_out.signed_codes() =>
                        {
                            let ((sa, za, ..), (sb, zb, ..), (sc, zc, qmin, qmax)) =
                                (onnx_grid(a), onnx_grid(b), onnx_grid(e_out));
                            Some((
                                IntegerOp::Add(AddGrids {
                                    a: (sa, za),
                                    b: (sb, zb),
                                    c: (sc, zc),
                                    qmin,
                                    qmax,
                                }),
                                None,
                            ))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some((op, bias)) = op else { continue };
            plan.ops.insert(n.name.clone(), op);
            plan.quantized.insert(target);
            if let Some(a) = absorbed {
                plan.absorbed.insert(a);
            }
            if let Some((name, codes)) = bias {
                plan.biases.insert(name, codes);
            }
        }
        Ok(plan)
    }
}

/// The single Relu / Clip reading `value`, if that is its only reader.
fn follower<'g>(g: &'g Graph, value: &str) -> Option<(usize, &'g Unary)> {
    if g.outputs.iter().any(|o| o == value) {
        return None;
    }
    match g.consumers_of(value)[..] {
        [i] => match &g.nodes[i].op {
            Op::Unary(u @ (Unary::Relu | Unary::Clip(..))) => Some((i, u)),
            _ => None,
        },
        _ => None,
    }
}

type Fused = Option<(IntegerOp, Option<(String, (Vec<i32>, Vec<f32>))>)>;

/// A Conv (or a Gemm: `gemm` = Some(trans_b); without trans_b its weight is `[k, n]`) with a
/// quantized input and int8 symmetric weights quantized per output channel or per tensor.
#[allow(clippy::too_many_arguments)]
fn conv_op(
    g: &Graph,
    n: &Node,
    attrs: Conv2d,
    acts: &HashMap<&str, &Encoding>,
    params: &HashMap<&str, &Encoding>,
    e_out: &Encoding,
    gemm: Option<bool>,
) -> Result<Fused> {
    let transpose = gemm == Some(false);
    let (Some(e_x), Some(w_name)) = (acts.get(n.inputs[0].as_str()), n.inputs.get(1)) else {
        return Ok(None);
    };
    let Some(e_w) = params.get(w_name.as_str()) else {
        return Ok(None);
    };
    let Some(w) = g.weight(w_name) else {
        return Ok(None);
    };
    let out_axis = if transpose { 1 } else { 0 };
    if !e_w.signed_codes() || e_w.axis.is_some_and(|a| a != out_axis) {
        return Ok(None);
    }
    let codes = stored_weight_codes(w, e_w)?;
    let weight: Array4<i32> = match codes.ndim() {
        4 => codes.into_dimensionality().expect("4-D"),
        2 => {
            let m = codes.into_dimensionality::<Ix2>().expect("2-D");
            let m = if transpose { m.reversed_axes() } else { m };
            let (co, ci) = m.dim();
            m.as_standard_layout()
                .into_owned()
                .into_shape_with_order((co, ci, 1, 1))
                .expect("same length")
        }
        _ => return Ok(None),
    };
    let cout = weight.shape()[0];
    let sx = e_x.scale[0];
    let bias_scales: Vec<f32> = (0..cout)
        .map(|c| sx * e_w.scale[if e_w.axis.is_some() { c } else { 0 }])
        .collect();
    let multiplier: Vec<f32> = bias_scales.iter().map(|&s| s / e_out.scale[0]).collect();
    let (bias, export) = match n.inputs.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            let Some(v) = g.weight(b) else {
                return Ok(None);
            };
            if v.len() != cout {
                return Ok(None);
            }
            let codes: Vec<i32> = v
                .iter()
                .zip(&bias_scales)
                .map(|(&b, &s)| {
                    (b / s)
                        .round_ties_even()
                        .clamp(i32::MIN as f32, i32::MAX as f32) as i32
                })
                .collect();
            (codes.clone(), Some((b.clone(), (codes, bias_scales))))
        }
        None => (vec![0; cout], None),
    };
    let x = e_x.int_grid();
    let pointwise = weight.shape()[2..] == [1, 1]
        && attrs.strides == [1, 1]
        && attrs.pads == [0; 4]
        && attrs.groups == 1;
    let largest_code = x.lo.abs().max(x.hi.abs()) as u64;
    let f32_exact = pointwise
        && weight.outer_iter().all(|w| {
            w.iter().map(|&v| v.unsigned_abs() as u64).sum::<u64>() * largest_code < 1 << 24
        });
    let op = IntegerOp::Conv {
        attrs,
        weight,
        bias,
        multiplier,
        x,
        out: e_out.int_grid(),
        gemm: gemm.is_some(),
        f32_exact,
    };
    Ok(Some((op, export)))
}

/// Records a fused node with the integer kernels: its first output is written on its
/// quantized grid.
pub(crate) fn lower(cx: &mut Lowering<'_>, node: &Node, op: &IntegerOp) -> Result<()> {
    let gpu = cx.gpu();
    match op {
        IntegerOp::Conv {
            attrs,
            weight,
            bias,
            multiplier,
            x: grid,
            out,
            gemm,
            f32_exact,
        } => {
            let mut x = cx.input(&node.inputs[0])?;
            if *gemm {
                let s = x.shape().to_vec();
                x = x.view(&[s[0], s[1], 1, 1], DType::F32)?;
            }
            let (b, m) = (
                cx.upload(&[bias.len()], bias)?,
                cx.upload(&[multiplier.len()], multiplier)?,
            );
            let y = cx.output(node, 0)?;
            let shape = conv_output_shape(x.shape(), weight.shape(), attrs)?;
            let inner = shape[2] * shape[3];
            let requant = quant::Requant {
                bias: &b,
                multiplier: &m,
                inner,
                grid: *out,
            };
            if *f32_exact {
                // The input's codes as f32 (a grid of scale 1 over the same codes), one f32
                // GEMM with the weight codes, exact under the layer's checked bound.
                let table = cx.upload(&[1, 4], &[1.0, 1.0 / grid.scale, grid.lo, 0.0])?;
                let r = cx.scratch(x.shape(), DType::F32)?;
                quant::fake_quant_table_into(
                    cx.steps(),
                    gpu,
                    &x,
                    &table,
                    (grid.hi - grid.lo) as u32,
                    None,
                    false,
                    &r.tensor,
                )?;
                let (cout, cin) = (shape[1], x.shape()[1]);
                let w = cx.upload(
                    &[cout, cin],
                    &weight.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                )?;
                let acc = cx.scratch(&shape, DType::F32)?;
                if *gemm {
                    let (rv, av) = (
                        r.tensor.view(&[shape[0], cin], DType::F32)?,
                        acc.tensor.view(&[shape[0], cout], DType::F32)?,
                    );
                    gemm::matmul_into(cx.steps(), gpu, &rv, &w, false, true, 1.0, Bias::None, &av)?;
                } else {
                    let (rv, av) = (
                        r.tensor.view(&[shape[0], cin, inner], DType::F32)?,
                        acc.tensor.view(&[shape[0], cout, inner], DType::F32)?,
                    );
                    gemm::matmul_into(
                        cx.steps(),
                        gpu,
                        &w,
                        &rv,
                        false,
                        false,
                        1.0,
                        Bias::None,
                        &av,
                    )?;
                }
                quant::requant_into(cx.steps(), gpu, &acc.tensor, &requant, &y)?;
                cx.free(r);
                cx.free(acc);
                return Ok(());
            }
            let w = gpu.upload(&weight.view().into_dyn())?;
            let acc = cx.scratch(&shape, DType::I32)?;
            conv::qconv2d_into(
                cx.steps(),
                gpu,
                &x,
                1.0 / grid.scale,
                &w,
                attrs,
                &acc.tensor,
            )?;
            quant::requant_into(cx.steps(), gpu, &acc.tensor, &requant, &y)?;
            cx.free(acc);
            Ok(())
        }
        IntegerOp::GlobalAvgPool {
            x_inv,
            multiplier,
            out,
        } => {
            let x = cx.input(&node.inputs[0])?;
            let s = x.shape().to_vec();
            let (c, hw) = (s[1], s[2] * s[3]);
            let w = cx.upload(&[c, 1, s[2], s[3]], &vec![1; c * hw])?;
            let (b, m) = (
                cx.upload(&[c], &vec![0; c])?,
                cx.upload(&[c], &vec![*multiplier; c])?,
            );
            let y = cx.output(node, 0)?;
            let acc = cx.scratch(&[s[0], c, 1, 1], DType::I32)?;
            conv::qconv2d_into(
                cx.steps(),
                gpu,
                &x,
                *x_inv,
                &w,
                &Conv2d {
                    groups: c,
                    ..Default::default()
                },
                &acc.tensor,
            )?;
            quant::requant_into(
                cx.steps(),
                gpu,
                &acc.tensor,
                &quant::Requant {
                    bias: &b,
                    multiplier: &m,
                    inner: 1,
                    grid: *out,
                },
                &y,
            )?;
            cx.free(acc);
            Ok(())
        }
        IntegerOp::Add(grids) => {
            let (a, c) = (cx.input(&node.inputs[0])?, cx.input(&node.inputs[1])?);
            let y = cx.output(node, 0)?;
            quant::qadd_into(cx.steps(), gpu, &a, &c, *grids, &y)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantKind;

    fn grid(lo: f32, hi: f32, kind: QuantKind) -> Encoding {
        Encoding::from_ranges(&[lo], &[hi], 8, kind, None).unwrap()
    }

    #[test]
    fn relu_is_dropped_only_when_zero_is_the_lowest_code() {
        assert!(dropped_before(
            &Unary::Relu,
            &grid(0.0, 5.0, QuantKind::Asymmetric)
        ));
        assert!(!dropped_before(
            &Unary::Relu,
            &grid(-1.0, 5.0, QuantKind::Asymmetric)
        ));
        assert!(!dropped_before(
            &Unary::Relu,
            &grid(-5.0, 5.0, QuantKind::SignedSymmetric)
        ));
    }

    #[test]
    fn clip_is_dropped_only_when_the_grid_lies_inside_its_bounds() {
        let relu6 = Unary::Clip(0.0, 6.0);
        assert!(dropped_before(
            &relu6,
            &grid(0.0, 5.5, QuantKind::Asymmetric)
        ));
        assert!(dropped_before(
            &relu6,
            &grid(0.0, 6.0, QuantKind::Asymmetric)
        ));
        assert!(
            !dropped_before(&relu6, &grid(0.0, 6.5, QuantKind::Asymmetric)),
            "codes above 6 would survive"
        );
        assert!(
            !dropped_before(&relu6, &grid(-0.5, 5.5, QuantKind::Asymmetric)),
            "codes below 0 would survive"
        );
        assert!(!dropped_before(
            &Unary::Sigmoid,
            &grid(0.0, 1.0, QuantKind::Asymmetric)
        ));
    }

    #[test]
    fn onnx_grids_follow_the_export() {
        // Unsigned grids: zero point -offset, codes 0..=255; signed: zero point 0, -128..=127.
        let u = grid(-1.0, 3.0, QuantKind::Asymmetric);
        assert_eq!(onnx_grid(&u), (u.scale[0], -u.offset[0], 0.0, 255.0));
        let s = grid(-3.0, 3.0, QuantKind::SignedSymmetric);
        assert_eq!(onnx_grid(&s), (s.scale[0], 0.0, -128.0, 127.0));
    }
}
