//! Values the backward recomputes instead of the forward keeping them: the activation after a
//! pointwise expansion (a 1x1 convolution from at most 64 channels to at least twice as many,
//! then a Relu/Clip-like unary op). The forward keeps the narrow input instead, and the
//! backward runs the convolution with the activation in its epilogue again, into a scratch
//! buffer, when the first rule reads the wide value. The kernel is the one the forward picks,
//! so the values are the forward's bits. In MobileNetV2 at batch 16 this takes a training
//! step's peak from 767 to 536 MiB at about the same step time on lavapipe.

use std::collections::HashMap;

use crate::graph::attrs::Unary;
use crate::graph::ir::{Graph, Op};

/// The most input channels of a recomputed expansion. A 1x1 convolution spends its input's
/// channels in multiply-adds on each element it recomputes, so narrow inputs free the most
/// memory for the least work: in MobileNetV2 the expansions of 16 to 64 channels are its
/// early, large activations, and the wider ones (96 and 160 channels, at 14 x 14 and 7 x 7)
/// would cost as many multiply-adds again for a tenth of the memory.
const MAX_INPUT_CHANNELS: usize = 64;

/// How to recompute one value: the convolution node it comes from (index), the activation
/// applied after it, and the convolution's input (kept by the forward instead).
#[derive(Clone, Debug)]
pub(crate) struct Recompute {
    pub conv: usize,
    pub act: Unary,
    pub input: String,
}

/// The values of `g` among `reads` (what the backward's rules read) that are recomputed: each
/// the output of a unary node whose input is a pointwise convolution's output read by nothing
/// else, the convolution's weight and bias constants, its output channels at least twice its
/// input channels and those at most [`MAX_INPUT_CHANNELS`], neither value a graph output.
pub(crate) fn choose(g: &Graph, reads: &[String]) -> HashMap<String, Recompute> {
    let mut readers: HashMap<&str, usize> = HashMap::new();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (k, n) in g.nodes.iter().enumerate() {
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            *readers.entry(i.as_str()).or_default() += 1;
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), k);
        }
    }
    let mut out = HashMap::new();
    for v in reads {
        let Some(&k) = producer.get(v.as_str()) else {
            continue;
        };
        let n = &g.nodes[k];
        let Op::Unary(act) = n.op else {
            continue;
        };
        let c = n.inputs[0].as_str();
        let Some(&pk) = producer.get(c) else {
            continue;
        };
        let p = &g.nodes[pk];
        let Op::Conv(a) = &p.op else {
            continue;
        };
        let w = g.consts.get(&p.inputs[1]).map(|w| w.shape().to_vec());
        let bias_const = p
            .inputs
            .get(2)
            .is_none_or(|b| b.is_empty() || g.consts.contains_key(b));
        let pointwise = w.as_ref().is_some_and(|w| {
            w.len() == 4
                && w[2..] == [1, 1]
                && a.groups == 1
                && a.strides == [1, 1]
                && a.pads == [0; 4]
                && w[0] >= 2 * w[1]
                && w[1] <= MAX_INPUT_CHANNELS
        });
        let outputs = |s: &str| g.outputs.iter().any(|o| o == s);
        if pointwise
            && bias_const
            && readers.get(c) == Some(&1)
            && !outputs(c)
            && !outputs(v)
            && !g.consts.contains_key(&p.inputs[0])
        {
            out.insert(
                v.clone(),
                Recompute {
                    conv: pk,
                    act,
                    input: p.inputs[0].clone(),
                },
            );
        }
    }
    out
}
