//! Cross-layer equalization (CLE) as AIMET's `equalize_model` does it, on a BN-folded graph:
//!
//! 1. Chains of convolutions joined directly or through one ReLU-like activation (Relu,
//!    PRelu, Clip with a zero lower bound), each link's value read by nothing else, are split
//!    into CLS sets with AIMET's rule: Conv→Conv and DepthwiseConv→Conv pairs, and
//!    Conv→DepthwiseConv→Conv triplets. Branches, residual joins and graph outputs end a chain.
//! 2. Each set is scaled per channel: pairs by s = r1 / sqrt(r1 r2), triplets by
//!    s12 = r1 / cbrt(r1 r2 r3) and s23 = cbrt(r1 r2 r3) / r3, where r are the per-channel
//!    max |w| (output channels of the first layer, input channels of the last). The first
//!    pass is AIMET's; further passes repeat it until every factor is within `tolerance` of 1
//!    (a layer shared by two sets moves again after its neighbour was scaled).
//! 3. Clip(0, x) inside a set cannot keep a fixed upper bound once its channels are scaled.
//!    AIMET replaces it by Relu, which changes FP32 outputs wherever the clip was active (on
//!    MobileNetV2 the logits move to 16 dB SQNR). qforge keeps the function by default: Relu
//!    followed by a per-channel Min at x / s ([`ClipMode`]). Either way it is reported.
//! 4. High-bias absorption: after a Relu, c = max(0, beta - 3|gamma|) of the first layer's
//!    (scaled) batch norm moves from its bias into the next layer's bias through the weights;
//!    with no activation between, all of beta moves (as AIMET). Unlike AIMET, not into a layer
//!    with zero padding: its border taps would read 0 where the shifted input holds -c (on
//!    MobileNetV2 absorbing into the padded depthwise convs moves the logits to 15 dB SQNR).
//!
//! Channels whose range is zero in any layer of a set keep a factor of 1 (reported).

use std::collections::HashMap;

use ndarray::{ArrayD, Axis};

use crate::error::{Error, Result};
use crate::graph::attrs::{Binary, Unary};
use crate::graph::ir::{Const, Graph, Node, Op};

/// Per conv node (by name): the folded batch norm's (gamma, beta) describing the conv's output
/// as N(beta, gamma^2) per channel. CLE keeps them in step with the weights it scales.
pub type BnStats = HashMap<String, (Vec<f32>, Vec<f32>)>;

/// How CLE runs.
#[derive(Clone, Copy, Debug)]
pub struct CleOptions {
    /// Scaling passes over all sets at most (1 = AIMET's single pass).
    pub max_iterations: usize,
    /// Stop once every factor of a pass is within this of 1.
    pub tolerance: f32,
    /// Move high biases into the next layer afterwards.
    pub high_bias_absorption: bool,
    /// What happens to Clip(0, x) inside a set.
    pub clip: ClipMode,
}

/// How CLE treats a Clip(0, x) between two layers it scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipMode {
    /// Keep the function exactly: the clip becomes Relu followed by a per-channel Min at x/s
    /// (the scaled bound), ONNX `Relu` + `Min` on export.
    PerChannel,
    /// Replace it by Relu, as AIMET does (changes outputs wherever the clip was active).
    Relu,
    /// A Clip ends the chain (what aimet-onnx 2.42 ends up doing when the Clip's bounds are
    /// initializers rather than Constant nodes).
    EndChain,
}

impl Default for CleOptions {
    fn default() -> Self {
        CleOptions {
            max_iterations: 20,
            tolerance: 1e-3,
            high_bias_absorption: true,
            clip: ClipMode::PerChannel,
        }
    }
}

/// What CLE did.
#[derive(Clone, Debug, Default)]
pub struct CleReport {
    /// The CLS sets (conv node names), in graph order.
    pub sets: Vec<Vec<String>>,
    /// Clip nodes replaced by Relu.
    pub relu6_replaced: Vec<String>,
    /// Passes run, and the largest |factor - 1| of the last one.
    pub iterations: usize,
    pub last_change: f32,
    /// (conv node, channels) whose range was zero somewhere in their set.
    pub zero_channels: Vec<(String, usize)>,
    /// (first layer, sum of absorbed bias) per pair where high-bias absorption applied.
    pub absorbed: Vec<(String, f32)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Conv,
    Depthwise,
    Unsupported,
}

/// One link of a chain: the activation (node index) between two convs, if any.
#[derive(Clone, Debug)]
struct Layer {
    node: usize,
    kind: Kind,
    /// The activation after this layer, on the link to the next layer of its chain.
    act: Option<usize>,
}

fn kind(g: &Graph, i: usize) -> Kind {
    let n = &g.nodes[i];
    let Op::Conv(a) = &n.op else {
        return Kind::Unsupported;
    };
    let Some(w) = g.weight(&n.inputs[1]) else {
        return Kind::Unsupported;
    };
    if w.ndim() != 4
        || g.consumers_of(&n.inputs[1]).len() != 1
        || n.inputs.get(2).is_some_and(|b| {
            !b.is_empty() && (g.weight(b).is_none() || g.consumers_of(b).len() != 1)
        })
    {
        return Kind::Unsupported;
    }
    if a.groups == 1 {
        Kind::Conv
    } else if a.groups == w.shape()[0] && w.shape()[1] == 1 {
        Kind::Depthwise
    } else {
        Kind::Unsupported
    }
}

/// The value's single reader, if it has exactly one and is not a graph output.
fn single_reader(g: &Graph, value: &str) -> Option<usize> {
    match g.consumers_of(value)[..] {
        [c] if !g.outputs.iter().any(|o| o == value) => Some(c),
        _ => None,
    }
}

fn relu_like(g: &Graph, i: usize, clip: bool) -> bool {
    match &g.nodes[i].op {
        Op::Unary(Unary::Relu) => true,
        Op::Unary(Unary::Clip(lo, hi)) => clip && *lo == 0.0 && *hi > 0.0,
        Op::Binary(Binary::PRelu) => g.weight(&g.nodes[i].inputs[1]).is_some(),
        _ => false,
    }
}

/// The conv after conv `i` (directly or through one ReLU-like activation), with the activation.
fn next_conv(g: &Graph, i: usize, clip: bool) -> Option<(usize, Option<usize>)> {
    let out = &g.nodes[i].outputs[0];
    let c = single_reader(g, out)?;
    if matches!(g.nodes[c].op, Op::Conv(_)) && g.nodes[c].inputs[0] == *out {
        return Some((c, None));
    }
    if !relu_like(g, c, clip) || g.nodes[c].inputs[0] != *out {
        return None;
    }
    let d = single_reader(g, &g.nodes[c].outputs[0])?;
    (matches!(g.nodes[d].op, Op::Conv(_)) && g.nodes[d].inputs[0] == g.nodes[c].outputs[0])
        .then_some((d, Some(c)))
}

/// Chains of linked convs in graph order.
fn chains(g: &Graph, clip: bool) -> Vec<Vec<Layer>> {
    let links: HashMap<usize, (usize, Option<usize>)> = (0..g.nodes.len())
        .filter(|&i| matches!(g.nodes[i].op, Op::Conv(_)))
        .filter_map(|i| next_conv(g, i, clip).map(|l| (i, l)))
        .collect();
    let targets: std::collections::HashSet<usize> = links.values().map(|l| l.0).collect();
    let mut out = Vec::new();
    for start in (0..g.nodes.len()).filter(|i| links.contains_key(i) && !targets.contains(i)) {
        let mut chain = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            let link = links.get(&i).copied();
            chain.push(Layer {
                node: i,
                kind: kind(g, i),
                act: link.and_then(|l| l.1),
            });
            at = link.map(|l| l.0);
        }
        out.push(chain);
    }
    out
}

/// AIMET's split of a chain into CLS sets (pairs and depthwise triplets).
fn cls_sets(chain: Vec<Layer>) -> Vec<Vec<Layer>> {
    let mut sets = Vec::new();
    let mut rest = chain.into_iter().peekable();
    let mut first: Option<Layer> = None;
    loop {
        while first.as_ref().is_none_or(|l| l.kind == Kind::Unsupported) {
            match rest.next() {
                Some(l) => first = Some(l),
                None => return sets,
            }
        }
        let Some(second) = rest.next() else {
            return sets;
        };
        let f = first.take().expect("set above");
        match (f.kind, second.kind) {
            (Kind::Conv, Kind::Conv) | (Kind::Depthwise, Kind::Conv) => {
                sets.push(vec![f, second.clone()]);
                first = Some(second);
            }
            (Kind::Conv, Kind::Depthwise) => match rest.peek() {
                Some(third) if third.kind == Kind::Conv => {
                    sets.push(vec![f, second, third.clone()]);
                    first = rest.next();
                }
                _ => first = Some(second),
            },
            (Kind::Depthwise, _) => first = Some(second),
            _ => first = None,
        }
    }
}

fn weight_mut<'a>(
    consts: &'a mut std::collections::BTreeMap<String, Const>,
    name: &str,
) -> &'a mut ArrayD<f32> {
    match consts.get_mut(name) {
        Some(Const::F32(a)) => a,
        _ => unreachable!("CLS layers have constant f32 weights (checked by kind)"),
    }
}

/// max |w| per slice along `axis`.
fn ranges(w: &ArrayD<f32>, axis: usize) -> Vec<f32> {
    w.axis_iter(Axis(axis))
        .map(|s| s.iter().fold(0f32, |m, &v| m.max(v.abs())))
        .collect()
}

fn scale_along(w: &mut ArrayD<f32>, axis: usize, f: &[f32]) {
    for (c, mut s) in w.axis_iter_mut(Axis(axis)).enumerate() {
        s.mapv_inplace(|v| v * f[c]);
    }
}

/// Scales the output channels of layer `node` by `1/s` (weights, bias, the per-channel clip
/// bound after it and its BN statistics).
fn scale_outputs(
    g: &mut Graph,
    bn: &mut BnStats,
    bounds: &HashMap<usize, String>,
    node: usize,
    s: &[f32],
) {
    let n = g.nodes[node].clone();
    let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
    if let Some(b) = bounds.get(&node) {
        scale_along(weight_mut(&mut g.consts, b), 0, &inv);
    }
    scale_along(weight_mut(&mut g.consts, &n.inputs[1]), 0, &inv);
    if let Some(b) = n.inputs.get(2).filter(|b| !b.is_empty()) {
        scale_along(weight_mut(&mut g.consts, b), 0, &inv);
    }
    if let Some((gamma, beta)) = bn.get_mut(&n.name) {
        for c in 0..s.len().min(gamma.len()) {
            gamma[c] /= s[c];
            beta[c] /= s[c];
        }
    }
}

/// Scales one set; returns the factors on each link (one per pair) and zero-range channels.
fn scale_set(
    g: &mut Graph,
    bn: &mut BnStats,
    bounds: &HashMap<usize, String>,
    set: &[Layer],
) -> (Vec<Vec<f32>>, usize) {
    let w = |g: &Graph, l: &Layer| {
        g.weight(&g.nodes[l.node].inputs[1])
            .expect("checked")
            .clone()
    };
    let last = set.len() - 1;
    let r_first = ranges(&w(g, &set[0]), 0);
    let r_last = ranges(&w(g, &set[last]), 1);
    let mut zero = 0;
    let factors = if set.len() == 2 {
        let s: Vec<f32> = r_first
            .iter()
            .zip(&r_last)
            .map(|(&a, &b)| {
                let d = (a * b).sqrt();
                if d != 0.0 {
                    a * (1.0 / d)
                } else {
                    zero += 1;
                    1.0
                }
            })
            .collect();
        vec![s]
    } else {
        let r_mid = ranges(&w(g, &set[1]), 0);
        let mut s12 = vec![1f32; r_first.len()];
        let mut s23 = vec![1f32; r_first.len()];
        for c in 0..r_first.len() {
            let (a, b, d) = (r_first[c], r_mid[c], r_last[c]);
            if a != 0.0 && b != 0.0 && d != 0.0 {
                let cube = (a * b * d).powf(1.0 / 3.0);
                s12[c] = a * (1.0 / cube);
                s23[c] = cube * (1.0 / d);
            } else {
                zero += 1;
            }
        }
        vec![s12, s23]
    };
    for (k, s) in factors.iter().enumerate() {
        scale_outputs(g, bn, bounds, set[k].node, s);
        let next = &g.nodes[set[k + 1].node];
        let (wn, axis) = (
            next.inputs[1].clone(),
            if set[k + 1].kind == Kind::Depthwise {
                0
            } else {
                1
            },
        );
        scale_along(weight_mut(&mut g.consts, &wn), axis, s);
    }
    (factors, zero)
}

/// High-bias absorption over one link: first layer `a`, next layer `b`.
fn absorb(
    g: &mut Graph,
    bn: &mut BnStats,
    bound: Option<&String>,
    a: &Layer,
    b: &Layer,
    relu: bool,
) -> Option<f32> {
    let (na, nb) = (g.nodes[a.node].clone(), g.nodes[b.node].clone());
    // Zero padding in the next layer would see 0 where the shifted input holds -c: the bias
    // shift is exact only without padding.
    if matches!(&nb.op, Op::Conv(p) if p.pads != [0; 4]) {
        return None;
    }
    let ba = na.inputs.get(2).filter(|x| !x.is_empty())?;
    let bb = nb.inputs.get(2).filter(|x| !x.is_empty())?;
    let (gamma, beta) = bn.get_mut(&na.name)?;
    let mut c: Vec<f32> = gamma
        .iter()
        .zip(beta.iter())
        .map(|(&gm, &bt)| {
            if relu {
                (bt - 3.0 * gm.abs()).max(0.0)
            } else {
                bt
            }
        })
        .collect();
    if let Some(bound) = bound {
        // clamp(x - c, 0, hi - c) + c = clamp(x, c, hi): the bound moves down with the bias.
        let hi = weight_mut(&mut g.consts, bound);
        for (h, cc) in hi.iter_mut().zip(c.iter_mut()) {
            *cc = cc.min(*h);
            *h -= *cc;
        }
    }
    for (bt, &cc) in beta.iter_mut().zip(&c) {
        *bt -= cc;
    }
    for (v, &cc) in weight_mut(&mut g.consts, ba).iter_mut().zip(&c) {
        *v -= cc;
    }
    let wb = g.weight(&nb.inputs[1]).expect("checked").clone();
    let shift: Vec<f32> = if b.kind == Kind::Depthwise {
        wb.axis_iter(Axis(0))
            .zip(&c)
            .map(|(k, &cc)| k.sum() * cc)
            .collect()
    } else {
        wb.axis_iter(Axis(0))
            .map(|o| {
                o.axis_iter(Axis(0))
                    .zip(&c)
                    .map(|(k, &cc)| k.sum() * cc)
                    .sum()
            })
            .collect()
    };
    for (v, s) in weight_mut(&mut g.consts, bb).iter_mut().zip(shift) {
        *v += s;
    }
    Some(c.iter().sum())
}

/// Equalizes `g` in place (BN already folded; `bn` holds the folded statistics per conv).
pub fn equalize(g: &mut Graph, bn: &mut BnStats, opts: CleOptions) -> Result<CleReport> {
    if opts.max_iterations == 0 || opts.tolerance.is_nan() || opts.tolerance < 0.0 {
        return Err(Error::invalid(
            "equalize",
            "options",
            format!("{opts:?}"),
            "at least one iteration and a non-negative tolerance",
        ));
    }
    let sets: Vec<Vec<Layer>> = chains(g, opts.clip != ClipMode::EndChain)
        .into_iter()
        .flat_map(cls_sets)
        .collect();
    let mut report = CleReport {
        sets: sets
            .iter()
            .map(|s| s.iter().map(|l| g.nodes[l.node].name.clone()).collect())
            .collect(),
        ..Default::default()
    };
    // Clips inside sets: their output's channels get scaled, so the bound becomes per channel.
    let mut channel_clips: Vec<(usize, usize, String)> = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        for (k, l) in set[..set.len() - 1].iter().enumerate() {
            let Some(a) = l.act else { continue };
            let Op::Unary(Unary::Clip(_, hi)) = g.nodes[a].op else {
                continue;
            };
            g.nodes[a].op = Op::Unary(Unary::Relu);
            report.relu6_replaced.push(g.nodes[a].name.clone());
            if opts.clip == ClipMode::PerChannel {
                let bound = g.unique_name(&format!("{}.channel_max", g.nodes[a].name));
                let c = g
                    .weight(&g.nodes[l.node].inputs[1])
                    .expect("checked")
                    .shape()[0];
                g.consts.insert(
                    bound.clone(),
                    Const::F32(ArrayD::from_elem(ndarray::IxDyn(&[c, 1, 1]), hi)),
                );
                channel_clips.push((si, k, bound));
            }
        }
    }
    // Split each such clip into Relu -> Min(bound) (in reverse so indices stay valid); the Min
    // keeps the clip's output name, so encodings and readers are unchanged.
    let mut splits: Vec<(usize, String)> = channel_clips
        .iter()
        .map(|(si, k, b)| (sets[*si][*k].act.expect("clip"), b.clone()))
        .collect();
    splits.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (a, bound) in &splits {
        let out = g.nodes[*a].outputs[0].clone();
        let mid = g.unique_name(&format!("{out}/relu"));
        let shape = g.shapes.get(&out).cloned().unwrap_or_default();
        g.shapes.insert(mid.clone(), shape);
        g.nodes[*a].outputs[0] = mid.clone();
        let name = g.unique_name(&format!("{}/channel_max", g.nodes[*a].name));
        g.nodes.insert(
            *a + 1,
            Node {
                name,
                op: Op::Binary(Binary::Min),
                inputs: vec![mid, bound.clone()],
                outputs: vec![out],
            },
        );
    }
    // Node indices after the inserts.
    let shift = |i: usize| i + splits.iter().filter(|(a, _)| *a < i).count();
    let sets: Vec<Vec<Layer>> = sets
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|l| Layer {
                    node: shift(l.node),
                    kind: l.kind,
                    act: l.act.map(shift),
                })
                .collect()
        })
        .collect();
    let bounds: HashMap<usize, String> = channel_clips
        .iter()
        .map(|(si, k, b)| (sets[*si][*k].node, b.clone()))
        .collect();
    let mut zero: HashMap<String, usize> = HashMap::new();
    for it in 0..opts.max_iterations {
        let mut change = 0f32;
        for set in &sets {
            let (factors, z) = scale_set(g, bn, &bounds, set);
            change = factors
                .iter()
                .flatten()
                .fold(change, |m, &s| m.max((s - 1.0).abs()));
            if it == 0 && z > 0 {
                *zero.entry(g.nodes[set[0].node].name.clone()).or_default() += z;
            }
        }
        report.iterations = it + 1;
        report.last_change = change;
        if change <= opts.tolerance {
            break;
        }
    }
    report.zero_channels = zero.into_iter().collect();
    report.zero_channels.sort();
    if opts.high_bias_absorption {
        for set in &sets {
            for k in 0..set.len() - 1 {
                let relu = set[k].act.is_some();
                if let Some(total) =
                    absorb(g, bn, bounds.get(&set[k].node), &set[k], &set[k + 1], relu)
                {
                    report
                        .absorbed
                        .push((g.nodes[set[k].node].name.clone(), total));
                }
            }
        }
    }
    Ok(report)
}

/// The folded batch norms of a BN-fold report as CLE's statistics (Conv/Gemm → BN folds only:
/// a BN before a conv does not describe the conv's output).
pub fn bn_stats(folded: &[crate::graph::passes::bn_fold::FoldedBn]) -> BnStats {
    folded
        .iter()
        .filter(|f| f.forward)
        .map(|f| (f.into.clone(), (f.gamma.clone(), f.beta.clone())))
        .collect()
}
