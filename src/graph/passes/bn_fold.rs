//! Batch-norm folding into the neighbouring Conv/Gemm, as AIMET's `fold_all_batch_norms`:
//! Conv/Gemm → BN (the common case), and BN → Conv when the conv has no padding (zeros padded
//! after a BN shift would not be equivalent), one group, and the BN output feeds only the conv.

use ndarray::{ArrayD, Axis, IxDyn};

use crate::error::{Error, Result};
use crate::graph::ir::{Const, Graph, Op};

/// One fold that happened.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBn {
    /// The BN node removed.
    pub bn: String,
    /// The Conv/Gemm node that absorbed it.
    pub into: String,
    /// True for Conv/Gemm → BN, false for BN → Conv.
    pub forward: bool,
    /// The BN's scale (gamma) and shift (beta) per channel, kept for CLE's high-bias absorption.
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// A BN's parameters per channel.
struct BnParams {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    /// The BN as y = x * s + t.
    s: Vec<f32>,
    t: Vec<f32>,
}

/// The BN's parameters, with s = gamma / sqrt(var + eps) in f32 as AIMET computes it (so the
/// folded weights, and their quantization grids, are AIMET's bit for bit).
fn bn_affine(g: &Graph, inputs: &[String], eps: f32, node: &str) -> Result<BnParams> {
    let get = |i: usize| {
        g.weight(&inputs[i])
            .map(|a| a.iter().copied().collect::<Vec<f32>>())
            .ok_or_else(|| Error::Graph {
                model: g.name.clone(),
                message: format!(
                    "BatchNormalization '{node}': parameter '{}' is not a constant",
                    inputs[i]
                ),
            })
    };
    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let mut s = Vec::with_capacity(gamma.len());
    let mut t = Vec::with_capacity(gamma.len());
    for c in 0..gamma.len() {
        let sigma = (var[c] + eps).sqrt();
        // NaN fails `is_finite`, so it is caught here too.
        if sigma <= 0.0
            || !sigma.is_finite()
            || !gamma[c].is_finite()
            || !beta[c].is_finite()
            || !mean[c].is_finite()
        {
            return Err(Error::Graph { model: g.name.clone(), message: format!("BatchNormalization '{node}': channel {c} has variance {} + epsilon {eps} (or non-finite parameters); it cannot be folded", var[c]) });
        }
        let sc = gamma[c] / sigma;
        s.push(sc);
        t.push(beta[c] - mean[c] * sc);
    }
    Ok(BnParams {
        gamma,
        beta,
        mean,
        s,
        t,
    })
}

/// Folds every foldable BN; returns what was folded. The graph stays resolved.
pub fn fold_batch_norms(g: &mut Graph) -> Result<Vec<FoldedBn>> {
    let mut done = Vec::new();
    while let Some((bn_idx, target, forward)) = find_pair(g) {
        let bn = g.nodes[bn_idx].clone();
        let Op::BatchNorm { epsilon } = bn.op else {
            unreachable!()
        };
        let BnParams {
            gamma,
            beta,
            mean,
            s,
            t,
        } = bn_affine(g, &bn.inputs, epsilon, &bn.name)?;
        let tnode = g.nodes[target].clone();
        let w_name = tnode.inputs[1].clone();
        let mut w = g.weight(&w_name).cloned().expect("checked constant");
        let cout = match &tnode.op {
            Op::Gemm { trans_b: false, .. } => w.shape()[1],
            _ => w.shape()[0],
        };
        let old_bias: Vec<f32> = match tnode.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => g
                .weight(b)
                .expect("checked constant")
                .iter()
                .copied()
                .collect(),
            None => vec![0.0; cout],
        };
        let bias: Vec<f32> = if forward {
            let axis = if matches!(tnode.op, Op::Gemm { trans_b: false, .. }) {
                1
            } else {
                0
            };
            for (c, mut lane) in w.axis_iter_mut(Axis(axis)).enumerate() {
                lane.mapv_inplace(|v| v * s[c]);
            }
            (0..cout)
                .map(|c| beta[c] - (mean[c] - old_bias[c]) * s[c])
                .collect()
        } else {
            // y = conv(x * s + t) = conv_{W * s[ci]}(x) + sum_{ci,k} W * t[ci]
            let mut b = old_bias.clone();
            for (co, wc) in w.axis_iter_mut(Axis(0)).enumerate() {
                let mut wc = wc;
                for (ci, mut k) in wc.axis_iter_mut(Axis(0)).enumerate() {
                    b[co] += k.iter().map(|&v| v * t[ci]).sum::<f32>();
                    k.mapv_inplace(|v| v * s[ci]);
                }
            }
            b
        };
        g.consts.insert(w_name, Const::F32(w));
        let bias_name = match tnode.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) if g.consumers_of(b).len() == 1 => b.clone(),
            _ => g.unique_name(&format!("{}.bias", tnode.name)),
        };
        g.consts.insert(
            bias_name.clone(),
            Const::F32(ArrayD::from_shape_vec(IxDyn(&[cout]), bias).expect("1-D")),
        );
        let node = &mut g.nodes[target];
        if node.inputs.len() < 3 {
            node.inputs.resize(3, String::new());
        }
        node.inputs[2] = bias_name;
        // As AIMET: the conv keeps its output name and the BN's readers read it instead
        // (unless the BN's output is a model output, whose name stays).
        let bn_is_output = g.outputs.contains(&bn.outputs[0]);
        if forward && bn_is_output {
            g.nodes[target].outputs[0] = bn.outputs[0].clone();
        }
        let (removed_value, kept_value) = match (forward, bn_is_output) {
            (true, false) => (bn.outputs[0].clone(), tnode.outputs[0].clone()),
            (true, true) => (tnode.outputs[0].clone(), bn.outputs[0].clone()),
            (false, _) => (bn.outputs[0].clone(), bn.inputs[0].clone()),
        };
        for n in g.nodes.iter_mut() {
            for i in n.inputs.iter_mut().filter(|i| **i == removed_value) {
                *i = kept_value.clone();
            }
        }
        for o in g.outputs.iter_mut().filter(|o| **o == removed_value) {
            *o = kept_value.clone();
        }
        g.nodes.remove(bn_idx);
        g.shapes.remove(&removed_value);
        for p in &bn.inputs[1..] {
            if g.consumers_of(p).is_empty() {
                g.consts.remove(p);
            }
        }
        done.push(FoldedBn {
            bn: bn.name,
            into: tnode.name,
            forward,
            gamma,
            beta,
        });
    }
    Ok(done)
}

fn only_consumer(g: &Graph, value: &str, node: usize) -> bool {
    g.consumers_of(value) == [node] && !g.outputs.iter().any(|o| o == value)
}

/// The next (bn index, conv/gemm index, forward?) that can fold.
fn find_pair(g: &Graph) -> Option<(usize, usize, bool)> {
    for (i, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::BatchNorm { .. })
            || n.inputs[1..].iter().any(|p| g.weight(p).is_none())
        {
            continue;
        }
        let weight_const = |t: usize| {
            g.weight(&g.nodes[t].inputs[1]).is_some()
                && g.nodes[t]
                    .inputs
                    .get(2)
                    .filter(|b| !b.is_empty())
                    .is_none_or(|b| g.weight(b).is_some())
        };
        if let Some(p) = g.producer_of(&n.inputs[0]) {
            let foldable = matches!(g.nodes[p].op, Op::Conv(_) | Op::Gemm { .. })
                && g.shapes.get(&n.inputs[0]).is_some_and(|s| s.len() >= 2);
            if foldable
                && weight_const(p)
                && only_consumer(g, &n.inputs[0], i)
                && g.consumers_of(&g.nodes[p].inputs[1]).len() == 1
            {
                return Some((i, p, true));
            }
        }
        let consumers = g.consumers_of(&n.outputs[0]);
        if let [c] = consumers[..] {
            let ok = match &g.nodes[c].op {
                Op::Conv(a) => {
                    a.pads == [0; 4] && a.groups == 1 && g.nodes[c].inputs[0] == n.outputs[0]
                }
                _ => false,
            };
            if ok
                && weight_const(c)
                && !g.outputs.contains(&n.outputs[0])
                && g.consumers_of(&g.nodes[c].inputs[1]).len() == 1
            {
                return Some((i, c, false));
            }
        }
    }
    None
}
