//! Quantizer placement: which activations and parameters of a prepared graph get quantizers,
//! following a [`QuantConfig`] the way AIMET places them.
//!
//! * Activations: the model inputs (when `model_input` says so) and every op output whose op
//!   type is quantized, except outputs inside a supergroup (a Conv followed only by its Relu
//!   has one quantizer, after the Relu) and outputs of ops that only move or reinterpret data
//!   (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout, Transpose, Gather, Cast): those
//!   reuse their input's grid. In the targets' style a view's output (Reshape, Flatten,
//!   Squeeze, Unsqueeze, Identity, Dropout, Transpose) whose input is quantized is quantized
//!   again, as onnxruntime's QDQ quantizer does: the same values, so calibration gives it its
//!   input's grid, and the op reading it runs on integers (QGemm after Flatten).
//! * Supergroups are matched per the config's [`PlacementStyle`]: by default as the targets
//!   fuse (a supergroup's `Conv` is every convolution, depthwise included: onnxruntime's QDQ
//!   quantizer, QNN and TFLite fuse a depthwise Conv with its Clip as a dense one); with
//!   `AimetOnnx` by AIMET's op types, where a depthwise convolution is `DepthwiseConv2d`, so
//!   `Conv + Clip` does not fuse it (AIMET's reference encodings of MobileNetV2 quantize
//!   depthwise outputs before their Clip).
//! * Op-type settings (`op_type`) use AIMET's op types in either style: a `DepthwiseConv2d`
//!   entry, where present, applies to depthwise convolutions.
//! * Parameters: the weight (input 1) of Conv, ConvTranspose, Gemm, MatMul with a constant B,
//!   and PRelu's slope, per channel along the output-channel axis when the op type says so;
//!   biases only when `params.bias.is_quantized`.

use crate::graph::ir::{Graph, Node, Op};
use crate::quant::config::{PlacementStyle, QuantConfig};

/// What a quantizer is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A runtime tensor (model input or op output).
    Activation,
    /// A constant input of `node` ("weight", "bias").
    Param { node: String, role: &'static str },
}

/// One quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantizer {
    /// The tensor it quantizes (ONNX name).
    pub tensor: String,
    pub role: Role,
    pub symmetric: bool,
    /// Channel axis for per-channel quantizers.
    pub axis: Option<usize>,
    /// (min, max) the range is pinned to, from the op type's encoding constraints.
    pub constraints: Option<(Option<f32>, Option<f32>)>,
}

/// All quantizers of a graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub activations: Vec<Quantizer>,
    pub params: Vec<Quantizer>,
}

impl Placement {
    /// The activation quantizers' tensors a run must keep readable to observe them: every one
    /// but the graph's inputs (read directly), in placement order.
    pub fn taps(&self, g: &Graph) -> Vec<String> {
        self.activations
            .iter()
            .map(|q| q.tensor.clone())
            .filter(|t| !g.inputs.contains(t))
            .collect()
    }
}

/// AIMET's op type for a node (depthwise convolutions are their own type).
pub fn aimet_type(n: &Node, g: &Graph) -> &'static str {
    if let Op::Conv(a) = &n.op {
        let cin = g
            .shapes
            .get(&n.inputs[0])
            .and_then(|s| s.get(1))
            .copied()
            .unwrap_or(0);
        if a.groups > 1 && a.groups == cin {
            return "DepthwiseConv2d";
        }
    }
    n.op.onnx_type()
}

fn passes_through(op: &Op) -> bool {
    op.is_view()
        || matches!(
            op,
            Op::Transpose { .. } | Op::Gather { .. } | Op::Cast { .. }
        )
}

/// Whether `n`'s output is the inside of a supergroup: its only consumer continues a
/// configured op sequence that starts at `n`.
fn inside_supergroup(g: &Graph, i: usize, cfg: &QuantConfig) -> bool {
    let n = &g.nodes[i];
    let consumers = g.consumers_of(&n.outputs[0]);
    let [c] = consumers[..] else { return false };
    if g.outputs.contains(&n.outputs[0]) {
        return false;
    }
    let ty = |n: &Node| match cfg.placement {
        PlacementStyle::AimetOnnx => aimet_type(n, g),
        PlacementStyle::Targets => n.op.onnx_type(),
    };
    let (t0, t1) = (ty(n), ty(&g.nodes[c]));
    cfg.supergroups
        .iter()
        .any(|sg| sg.windows(2).any(|w| w[0] == t0 && w[1] == t1))
}

/// A Relu whose only reader is a Min against a constant: CLE's per-channel clip, one
/// activation (quantized after the Min) in the aimet-onnx style. Targets run the Min as its
/// own op (ONNX's Clip bounds are scalars), with a quantized input: two activations.
fn inside_channel_clip(g: &Graph, i: usize) -> bool {
    let n = &g.nodes[i];
    if !matches!(n.op, Op::Unary(crate::graph::attrs::Unary::Relu))
        || g.outputs.contains(&n.outputs[0])
    {
        return false;
    }
    matches!(g.consumers_of(&n.outputs[0])[..], [c] if matches!(g.nodes[c].op, Op::Binary(crate::graph::attrs::Binary::Min)) && g.nodes[c].inputs.get(1).is_some_and(|b| g.weight(b).is_some()))
}

/// Places quantizers on a resolved (and usually BN-folded) graph.
pub fn place(g: &Graph, cfg: &QuantConfig) -> Placement {
    let mut p = placed(g, cfg);
    // Only float values have grids: a bool mask, integer ids and shapes pass as they are.
    p.activations
        .retain(|q| g.elem_type(&q.tensor) == crate::graph::ir::ElemType::F32);
    // A value that carries a constant's infinity (an attention mask filled with -inf, and the
    // scores it is added to) is left in float: a grid would saturate -inf to its minimum and
    // unmask, in the simulation and on the targets alike.
    let infinite = infinite_values(g);
    let before = p.activations.len();
    p.activations.retain(|q| !infinite.contains(&q.tensor));
    if p.activations.len() < before {
        log::info!(
            "{} activations carry a constant's infinity (attention masks) and stay in float",
            before - p.activations.len()
        );
    }
    p
}

/// The values that may hold an infinity taken from an f32 constant: the constant itself and
/// everything computed from it, up to an op that maps infinities to finite values (Softmax,
/// Sigmoid, Tanh, Erf, HardSigmoid) or reads only the shape.
fn infinite_values(g: &Graph) -> std::collections::HashSet<String> {
    use crate::graph::attrs::Unary;
    use crate::graph::ir::Const;
    let mut marked: std::collections::HashSet<String> = g
        .consts
        .iter()
        .filter(|(_, c)| matches!(c, Const::F32(a) if a.iter().any(|v| v.is_infinite())))
        .map(|(n, _)| n.clone())
        .collect();
    if marked.is_empty() {
        return marked;
    }
    for n in &g.nodes {
        let finite = matches!(
            n.op,
            Op::Softmax { .. }
                | Op::Shape { .. }
                | Op::Unary(Unary::Sigmoid | Unary::Tanh | Unary::Erf | Unary::HardSigmoid(..))
        );
        if !finite && n.inputs.iter().any(|i| marked.contains(i)) {
            marked.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    marked
}

/// The quantizers `cfg` places on `g`, before values that carry infinities are left out.
fn placed(g: &Graph, cfg: &QuantConfig) -> Placement {
    let mut p = Placement::default();
    if cfg.model_input_quantized {
        for i in &g.inputs {
            p.activations.push(Quantizer {
                tensor: i.clone(),
                role: Role::Activation,
                symmetric: cfg.ops_symmetric,
                axis: None,
                constraints: None,
            });
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let t = aimet_type(n, g);
        let op_cfg = cfg
            .op_type
            .get(t)
            .or_else(|| cfg.op_type.get(n.op.onnx_type()));
        let out_q = op_cfg
            .and_then(|o| o.is_output_quantized)
            .unwrap_or(cfg.ops_output_quantized);
        let view_of = match cfg.placement {
            PlacementStyle::Targets if n.op.is_view() || matches!(n.op, Op::Transpose { .. }) => n
                .inputs
                .first()
                .and_then(|x| p.activations.iter().find(|q| &q.tensor == x))
                .cloned(),
            _ => None,
        };
        if let (Some(q), Some(o)) = (view_of, n.outputs.first()) {
            p.activations.push(Quantizer {
                tensor: o.clone(),
                ..q
            });
        } else if out_q
            && !passes_through(&n.op)
            && !inside_supergroup(g, i, cfg)
            && (cfg.placement != PlacementStyle::AimetOnnx || !inside_channel_clip(g, i))
        {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                p.activations.push(Quantizer {
                    tensor: o.clone(),
                    role: Role::Activation,
                    symmetric: op_cfg
                        .and_then(|o| o.is_symmetric)
                        .unwrap_or(cfg.ops_symmetric),
                    axis: None,
                    constraints: op_cfg.and_then(|o| o.encoding_constraints),
                });
            }
        }
        let per_channel = op_cfg
            .and_then(|o| o.per_channel_quantization)
            .unwrap_or(cfg.per_channel);
        let weight = match &n.op {
            Op::Conv(_)
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::ConvTranspose { .. }
            | Op::Binary(crate::graph::attrs::Binary::PRelu) => n.inputs.get(1),
            _ => None,
        };
        let mut params = vec![];
        if let Some(w) = weight.filter(|w| g.weight(w).is_some()) {
            let axis = match &n.op {
                Op::Gemm { trans_b: false, .. } | Op::MatMul => {
                    Some(g.weight(w).map_or(1, |a| a.ndim().saturating_sub(1)))
                }
                Op::ConvTranspose { .. } => Some(1),
                _ => Some(0),
            };
            params.push(("weight", w.clone(), axis.filter(|_| per_channel)));
        }
        if matches!(
            n.op,
            Op::Conv(_) | Op::Gemm { .. } | Op::ConvTranspose { .. }
        ) {
            if let Some(b) = n
                .inputs
                .get(2)
                .filter(|b| !b.is_empty() && g.weight(b).is_some())
            {
                params.push(("bias", b.clone(), None));
            }
        }
        for (role, tensor, axis) in params {
            let over = op_cfg.and_then(|o| o.params.get(role));
            let global = cfg.params.get(role);
            let quantized = over
                .and_then(|s| s.is_quantized)
                .or(global.and_then(|s| s.is_quantized))
                .unwrap_or(cfg.params_quantized);
            if !quantized || p.params.iter().any(|q| q.tensor == tensor) {
                continue;
            }
            let symmetric = over
                .and_then(|s| s.is_symmetric)
                .or(global.and_then(|s| s.is_symmetric))
                .unwrap_or(cfg.params_symmetric);
            p.params.push(Quantizer {
                tensor,
                role: Role::Param {
                    node: n.name.clone(),
                    role,
                },
                symmetric,
                axis,
                constraints: None,
            });
        }
    }
    p
}
