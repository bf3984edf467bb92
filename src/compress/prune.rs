//! Channel pruning: drop input channels of a conv, remove the matching output channels of the
//! layer that produces them (through activations, batch norms, per-channel constants and
//! depthwise convs in between), and sample the patches the least-squares rebuild
//! (`compress::rebuild`) fits the pruned conv's weights on.
//!
//! A conv is prunable when its input is reached from a producing conv through a chain whose
//! every value is read by the next link only (no branch, join, or graph output): channels of a
//! residual stream are never removed.

use std::collections::HashMap;

use ndarray::{Array2, ArrayD, Axis};

use crate::compress::Cost;
use crate::error::{Error, Result};
use crate::graph::attrs::{Binary, Unary};
use crate::graph::ir::{Const, Graph, Op};

/// A conv whose input channels can be pruned, and the chain that feeds it.
#[derive(Clone, Debug)]
pub struct PruneLayer {
    pub node: String,
    /// The conv whose output channels go with the pruned inputs.
    pub producer: String,
    /// Nodes between producer and layer whose channels go too (depthwise convs, activations,
    /// batch norms, per-channel Min/Max/Mul/Add with constants).
    pub chain: Vec<String>,
    /// Input channels of the layer.
    pub channels: usize,
    /// Cost of producer + chain + layer as they are.
    pub original: Cost,
}

fn consumers(g: &Graph, v: &str) -> usize {
    g.consumers_of(v).len() + g.outputs.iter().filter(|o| *o == v).count()
}

/// Whether a chain node keeps channels one to one (so it can be sliced along them).
fn channelwise(g: &Graph, n: &crate::graph::Node) -> bool {
    match &n.op {
        Op::Unary(u) => matches!(
            u,
            Unary::Relu
                | Unary::Clip(..)
                | Unary::LeakyRelu(_)
                | Unary::Sigmoid
                | Unary::HardSigmoid(..)
                | Unary::HardSwish
                | Unary::Tanh
        ),
        Op::BatchNorm { .. } => n.inputs[1..].iter().all(|p| g.weight(p).is_some()),
        Op::Binary(
            Binary::Min | Binary::Max | Binary::Mul | Binary::Add | Binary::Sub | Binary::PRelu,
        ) => {
            n.inputs.len() == 2
                && g.producer_of(&n.inputs[0]).is_some()
                && g.weight(&n.inputs[1]).is_some_and(|c| {
                    c.len() == 1
                        || c.shape().first().is_some_and(|&d| d > 1)
                            && c.shape().iter().skip(1).all(|&d| d == 1)
                })
        }
        Op::Conv(c) => {
            let w = g.weight(&n.inputs[1]);
            w.is_some_and(|w| c.groups > 1 && c.groups == w.shape()[0] && w.shape()[1] == 1)
        }
        _ => false,
    }
}

/// The prunable conv `node`, or why it is not.
pub fn layer(g: &Graph, node: usize) -> std::result::Result<PruneLayer, String> {
    let n = &g.nodes[node];
    let Op::Conv(c) = &n.op else {
        return Err(format!("{} is not a conv", n.op.onnx_type()));
    };
    if c.groups != 1 {
        return Err(format!("grouped conv ({} groups)", c.groups));
    }
    let Some(w) = g.weight(&n.inputs[1]) else {
        return Err("conv weight is not a constant".into());
    };
    let channels = w.shape()[1];
    if channels < 2 {
        return Err("a single input channel".into());
    }
    let mut chain = Vec::new();
    let mut v = n.inputs[0].clone();
    loop {
        if consumers(g, &v) != 1 {
            return Err(format!(
                "'{v}' is read by more than this layer (a branch or join)"
            ));
        }
        let Some(p) = g.producer_of(&v) else {
            return Err(format!("'{v}' is a graph input"));
        };
        let pn = &g.nodes[p];
        match &pn.op {
            Op::Conv(pc) if pc.groups == 1 => {
                let pw = g
                    .weight(&pn.inputs[1])
                    .ok_or("producer weight is not a constant")?;
                if pw.shape()[0] != channels {
                    return Err("producer channels differ from the layer's inputs".into());
                }
                chain.reverse();
                let mut original = Cost::default();
                for name in std::iter::once(&pn.name)
                    .chain(&chain)
                    .chain(std::iter::once(&n.name))
                {
                    let i = g
                        .nodes
                        .iter()
                        .position(|x| &x.name == name)
                        .expect("in graph");
                    original.macs += g.macs(&g.nodes[i]);
                    original.params += g.nodes[i]
                        .inputs
                        .iter()
                        .skip(1)
                        .filter_map(|x| g.weight(x))
                        .map(|a| a.len() as u64)
                        .sum::<u64>();
                }
                return Ok(PruneLayer {
                    node: n.name.clone(),
                    producer: pn.name.clone(),
                    chain,
                    channels,
                    original,
                });
            }
            _ if channelwise(g, pn) => {
                chain.push(pn.name.clone());
                v = pn.inputs[0].clone();
            }
            op => {
                return Err(format!(
                    "reached {} '{}', which channels cannot be traced through",
                    op.onnx_type(),
                    pn.name
                ))
            }
        }
    }
}

/// Every prunable conv, and the other convs with why not.
pub fn layers(g: &Graph) -> (Vec<PruneLayer>, Vec<(String, String)>) {
    let (mut ok, mut skipped) = (Vec::new(), Vec::new());
    for (i, n) in g.nodes.iter().enumerate() {
        if let Op::Conv(_) = n.op {
            match layer(g, i) {
                Ok(l) => ok.push(l),
                Err(why) => skipped.push((n.name.clone(), why)),
            }
        }
    }
    (ok, skipped)
}

/// Input channels to keep for a cost `ratio` of the layer (rounded to `multiplicity`); `None`
/// when that keeps every channel.
pub fn keep_for_ratio(layer: &PruneLayer, ratio: f64, multiplicity: usize) -> Option<usize> {
    let m = multiplicity.max(1);
    let raw = (ratio * layer.channels as f64).round() as usize;
    let k = (raw / m * m).max(m.min(layer.channels - 1)).max(1);
    (k < layer.channels).then_some(k)
}

/// AIMET's magnitude score: the L1 norm of each input channel's weights.
pub fn magnitude_scores(g: &Graph, layer: &PruneLayer) -> Vec<f32> {
    let n = &g.nodes[g
        .nodes
        .iter()
        .position(|x| x.name == layer.node)
        .expect("in graph")];
    let w = g.weight(&n.inputs[1]).expect("checked");
    w.axis_iter(Axis(1))
        .map(|c| c.iter().map(|v| v.abs()).sum())
        .collect()
}

/// How input channels are ranked for keeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// AIMET's: L1 norm of each input channel's weights.
    Magnitude,
    /// Energy each input channel contributes to the layer's output on the sampled inputs:
    /// `sum_o w_oc^T G_cc w_oc` with `G_cc` the channel's block of the patch Gram matrix
    /// (so a channel with large weights but near-silent inputs ranks low).
    Energy,
}

/// Output energy per input channel from the Gram matrix of full-input patches.
pub fn energy_scores(g: &Graph, layer: &PruneLayer, gram: &Array2<f32>) -> Vec<f32> {
    let n = &g.nodes[g
        .nodes
        .iter()
        .position(|x| x.name == layer.node)
        .expect("in graph")];
    let w = g.weight(&n.inputs[1]).expect("checked");
    let (co, ci, win) = (w.shape()[0], w.shape()[1], w.shape()[2] * w.shape()[3]);
    let flat = w.as_standard_layout();
    let flat = flat.as_slice().expect("standard layout");
    (0..ci)
        .map(|c| {
            let mut e = 0f64;
            for o in 0..co {
                let wo = &flat[(o * ci + c) * win..(o * ci + c + 1) * win];
                for a in 0..win {
                    for b in 0..win {
                        e += wo[a] as f64 * gram[[c * win + a, c * win + b]] as f64 * wo[b] as f64;
                    }
                }
            }
            e as f32
        })
        .collect()
}

/// Scores under `selection` (`gram`: the layer's full-input Gram matrix, for Energy).
pub fn scores(g: &Graph, layer: &PruneLayer, selection: Selection, gram: &Array2<f32>) -> Vec<f32> {
    match selection {
        Selection::Magnitude => magnitude_scores(g, layer),
        Selection::Energy => energy_scores(g, layer, gram),
    }
}

/// The `keep` channels with the highest scores, ascending.
pub fn select(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(order.len())].to_vec();
    kept.sort_unstable();
    kept
}

fn slice_const(g: &mut Graph, name: &str, axis: usize, keep: &[usize]) {
    if let Some(Const::F32(a)) = g.consts.get(name) {
        if a.ndim() > axis && a.shape()[axis] > 1 {
            let s = a.select(Axis(axis), keep);
            g.consts.insert(name.to_string(), Const::F32(s));
        }
    }
}

/// Removes every input channel of `layer` not in `keep` (ascending), and the matching
/// channels of its producer and chain. Constants read by other nodes are copied first.
/// The graph's shapes are updated.
pub fn prune(g: &mut Graph, layer: &PruneLayer, keep: &[usize]) -> Result<()> {
    if keep.is_empty()
        || keep.iter().any(|&c| c >= layer.channels)
        || keep.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(Error::invalid(
            "prune",
            "kept channels",
            format!("{} of {}", keep.len(), layer.channels),
            format!(
                "must be ascending, distinct, below {} and not empty ('{}')",
                layer.channels, layer.node
            ),
        ));
    }
    // Own copies of constants that something outside this chain also reads.
    let members: Vec<String> = std::iter::once(layer.producer.clone())
        .chain(layer.chain.iter().cloned())
        .chain(std::iter::once(layer.node.clone()))
        .collect();
    let mut renames: HashMap<(usize, usize), String> = HashMap::new();
    for name in &members {
        let i = g.node_index(name)?;
        for (k, input) in g.nodes[i].inputs.iter().enumerate().skip(1) {
            if g.consts.contains_key(input) && g.consumers_of(input).len() > 1 {
                renames.insert((i, k), input.clone());
            }
        }
    }
    for ((i, k), old) in renames {
        let new = g.unique_name(&format!("{old}.pruned"));
        let c = g.consts[&old].clone();
        g.consts.insert(new.clone(), c);
        g.nodes[i].inputs[k] = new;
    }
    let p = g.node_index(&layer.producer)?;
    let pn = g.nodes[p].clone();
    slice_const(g, &pn.inputs[1], 0, keep);
    if let Some(b) = pn.inputs.get(2) {
        slice_const(g, b, 0, keep);
    }
    let mut values = vec![pn.outputs[0].clone()];
    for name in &layer.chain {
        let i = g.node_index(name)?;
        let n = g.nodes[i].clone();
        match &n.op {
            Op::Conv(_) => {
                // A depthwise conv: one group per channel.
                slice_const(g, &n.inputs[1], 0, keep);
                if let Some(b) = n.inputs.get(2) {
                    slice_const(g, b, 0, keep);
                }
                if let Op::Conv(c) = &mut g.nodes[i].op {
                    c.groups = keep.len();
                }
            }
            Op::BatchNorm { .. } => {
                for input in &n.inputs[1..] {
                    slice_const(g, input, 0, keep);
                }
            }
            Op::Binary(_) => slice_const(g, &n.inputs[1], 0, keep),
            _ => {}
        }
        values.push(n.outputs[0].clone());
    }
    let l = g.node_index(&layer.node)?;
    let ln = g.nodes[l].clone();
    slice_const(g, &ln.inputs[1], 1, keep);
    for v in values {
        if let Some(s) = g.shapes.get_mut(&v) {
            s[1] = keep.len();
        }
    }
    Ok(())
}

/// Samples for the least-squares rebuild of a conv: `per_image` output positions per image,
/// each an input patch (all input channels x kernel window, zero outside the image) and the
/// original layer's output there without its bias.
#[derive(Clone, Debug)]
pub struct Samples {
    /// `[samples, channels * kh * kw]`, channel-major like the weight.
    pub patches: Array2<f32>,
    /// `[samples, out channels]`.
    pub targets: Array2<f32>,
}

/// Draws samples from `x` (the layer's input, `[n, c, h, w]`) and `y` (the original layer's
/// output with bias, `[n, co, oh, ow]`) at positions from a seeded generator.
pub fn sample(
    g: &Graph,
    node: &str,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
    per_image: usize,
    seed: u64,
) -> Result<Samples> {
    let n = &g.nodes[g.node_index(node)?];
    let Op::Conv(c) = &n.op else {
        return Err(Error::invalid("sample", "node", node, "not a conv"));
    };
    let w = g.weight(&n.inputs[1]).expect("conv weight");
    let (kh, kw) = (w.shape()[2], w.shape()[3]);
    let bias: Vec<f32> = n
        .inputs
        .get(2)
        .and_then(|b| g.weight(b))
        .map(|b| b.iter().copied().collect())
        .unwrap_or_else(|| vec![0.0; y.shape()[1]]);
    let (nb, ci, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (co, oh, ow) = (y.shape()[1], y.shape()[2], y.shape()[3]);
    let total = nb * per_image;
    let mut patches = Array2::<f32>::zeros((total, ci * kh * kw));
    let mut targets = Array2::<f32>::zeros((total, co));
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % m as u64) as usize
    };
    for s in 0..total {
        let (b, oy, ox) = (s / per_image, next(oh), next(ow));
        for cc in 0..ci {
            for dy in 0..kh {
                for dx in 0..kw {
                    let iy =
                        (oy * c.strides[0] + dy * c.dilations[0]) as isize - c.pads[0] as isize;
                    let ix =
                        (ox * c.strides[1] + dx * c.dilations[1]) as isize - c.pads[1] as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        patches[[s, (cc * kh + dy) * kw + dx]] =
                            x[[b, cc, iy as usize, ix as usize]];
                    }
                }
            }
        }
        for o in 0..co {
            targets[[s, o]] = y[[b, o, oy, ox]] - bias[o];
        }
    }
    Ok(Samples { patches, targets })
}

/// Feature columns of the kept input channels in a patch (channel-major, `window` per channel).
pub fn kept_features(keep: &[usize], window: usize) -> Vec<usize> {
    keep.iter()
        .flat_map(|&c| (c * window)..(c * window + window))
        .collect()
}
