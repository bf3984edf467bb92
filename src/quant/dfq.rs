//! Data-free quantization (DFQ): what batch-norm statistics say about every activation,
//! without data. A conv followed by a folded BN produces N(beta, gamma^2) per channel; ReLU
//! and Clip turn that into a clipped normal (exact mean and variance); sums, averages and
//! linear layers propagate means exactly and variances as if channels were independent.
//!
//! Used for AIMET's analytical bias correction (E[x] through the clipped-normal expectation)
//! and for activation ranges without calibration data (mean ± 3 std per channel, clipped to
//! the activation's bounds; 6 std past a linear layer without a batch norm). The model input is taken as standardized, N(0, 1) per channel.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis};

use crate::graph::attrs::{Binary, Unary};
use crate::graph::ir::{Graph, Node, Op};
use crate::graph::passes::cle::BnStats;

/// Per-channel statistics of one tensor (channels along axis 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Hard bounds of the values (from Relu/Clip), per channel.
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
    /// How many standard deviations the range spans: 3 where a batch norm measured the
    /// distribution, 6 where it was propagated through a linear layer assuming independent
    /// channels (which underestimates the tails: logits clipped at 3 std tie at the top).
    pub k: f32,
}

impl ChannelStats {
    fn normal(mean: Vec<f32>, std: Vec<f32>) -> ChannelStats {
        let n = mean.len();
        ChannelStats {
            mean,
            std,
            lo: vec![f32::NEG_INFINITY; n],
            hi: vec![f32::INFINITY; n],
            k: 3.0,
        }
    }

    /// The tensor's (min, max) estimate: mean ± `self.k` std per channel within the bounds.
    pub fn range(&self) -> (f32, f32) {
        let k = self.k;
        let mut r = (f32::INFINITY, f32::NEG_INFINITY);
        for c in 0..self.mean.len() {
            r.0 = r.0.min((self.mean[c] - k * self.std[c]).max(self.lo[c]));
            r.1 = r.1.max((self.mean[c] + k * self.std[c]).min(self.hi[c]));
        }
        r
    }
}

fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

fn cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn pdf(x: f64) -> f64 {
    if x.is_infinite() {
        0.0
    } else {
        (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }
}

/// Mean and standard deviation of clip(X, a, b) for X ~ N(mu, sigma^2).
pub fn clipped_normal(mu: f64, sigma: f64, a: f64, b: f64) -> (f64, f64) {
    if sigma <= 0.0 {
        return (mu.clamp(a, b), 0.0);
    }
    let (al, be) = ((a - mu) / sigma, (b - mu) / sigma);
    let (fa, fb) = (cdf(al), if b.is_infinite() { 1.0 } else { cdf(be) });
    let (pa, pb) = (pdf(al), pdf(be));
    let term = |v: f64, w: f64| if w == 0.0 { 0.0 } else { v * w };
    let mean = term(a, fa) + mu * (fb - fa) + sigma * (pa - pb) + term(b, 1.0 - fb);
    let ab = |x: f64, p: f64| if x.is_infinite() { 0.0 } else { x * p };
    let second = term(a * a, fa)
        + term(b * b, 1.0 - fb)
        + (mu * mu + sigma * sigma) * (fb - fa)
        + 2.0 * mu * sigma * (pa - pb)
        + sigma * sigma * (ab(al, pa) - ab(be, pb));
    (mean, (second - mean * mean).max(0.0).sqrt())
}

fn clip(s: &ChannelStats, a: f32, b: f32) -> ChannelStats {
    let mut out = s.clone();
    for c in 0..s.mean.len() {
        let (m, d) = clipped_normal(s.mean[c] as f64, s.std[c] as f64, a as f64, b as f64);
        out.mean[c] = m as f32;
        out.std[c] = d as f32;
        out.lo[c] = s.lo[c].max(a);
        out.hi[c] = s.hi[c].min(b);
    }
    out
}

/// y = W x + b per output channel, channels independent: (weight, out-channel axis, groups).
pub(crate) fn linear(
    s: &ChannelStats,
    w: &ArrayD<f32>,
    out_axis: usize,
    groups: usize,
    bias: Option<&ArrayD<f32>>,
) -> Option<ChannelStats> {
    let cout = w.shape()[out_axis];
    let per_group = cout / groups.max(1);
    let mut mean = vec![0f32; cout];
    let mut var = vec![0f32; cout];
    for (o, lane) in w.axis_iter(Axis(out_axis)).enumerate() {
        let base = (o / per_group.max(1)) * lane.shape()[0];
        for (i, k) in lane.axis_iter(Axis(0)).enumerate() {
            let ci = if groups > 1 { base + i } else { i };
            let (m, d) = (*s.mean.get(ci)?, *s.std.get(ci)?);
            mean[o] += k.sum() * m;
            var[o] += k.iter().map(|v| v * v).sum::<f32>() * d * d;
        }
        if let Some(b) = bias {
            mean[o] += b[o];
        }
    }
    Some(ChannelStats {
        k: 6.0,
        ..ChannelStats::normal(mean, var.into_iter().map(f32::sqrt).collect())
    })
}

fn node_stats(
    g: &Graph,
    n: &Node,
    bn: &BnStats,
    known: &HashMap<String, ChannelStats>,
) -> Option<ChannelStats> {
    if let Some((gamma, beta)) = bn.get(&n.name) {
        return Some(ChannelStats::normal(
            beta.clone(),
            gamma.iter().map(|v| v.abs()).collect(),
        ));
    }
    let x = known.get(&n.inputs[0]);
    let bias = n
        .inputs
        .get(2)
        .filter(|b| !b.is_empty())
        .and_then(|b| g.weight(b));
    match &n.op {
        Op::Unary(Unary::Relu) => Some(clip(x?, 0.0, f32::INFINITY)),
        Op::Unary(Unary::Clip(a, b)) => Some(clip(x?, *a, *b)),
        Op::Binary(Binary::Add) => {
            let (a, b) = (x?, known.get(&n.inputs[1])?);
            (a.mean.len() == b.mean.len()).then(|| {
                let mean = a.mean.iter().zip(&b.mean).map(|(u, v)| u + v).collect();
                let std = a
                    .std
                    .iter()
                    .zip(&b.std)
                    .map(|(u, v)| (u * u + v * v).sqrt())
                    .collect();
                ChannelStats {
                    k: a.k.max(b.k),
                    ..ChannelStats::normal(mean, std)
                }
            })
        }
        Op::Binary(Binary::Min) => {
            // CLE's per-channel clip: Relu then Min(bound); clip the Relu's input exactly.
            let hi = g.weight(&n.inputs[1])?;
            let (pre, lo) = match g.producer_of(&n.inputs[0]).map(|p| &g.nodes[p]) {
                Some(p) if matches!(p.op, Op::Unary(Unary::Relu)) => {
                    (known.get(&p.inputs[0])?, 0.0)
                }
                _ => (x?, f32::NEG_INFINITY),
            };
            if hi.len() != pre.mean.len() {
                return None;
            }
            let mut out = pre.clone();
            for (c, &h) in hi.iter().enumerate() {
                let (m, d) =
                    clipped_normal(pre.mean[c] as f64, pre.std[c] as f64, lo as f64, h as f64);
                out.mean[c] = m as f32;
                out.std[c] = d as f32;
                out.lo[c] = pre.lo[c].max(lo);
                out.hi[c] = pre.hi[c].min(h);
            }
            Some(out)
        }
        Op::GlobalAveragePool | Op::AveragePool(_) | Op::Identity | Op::Dropout => x.cloned(),
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } => {
            let (si, so) = (g.shapes.get(&n.inputs[0])?, g.shapes.get(&n.outputs[0])?);
            let keeps_channels = si.len() >= 2
                && so.len() >= 2
                && si[1] == so[1]
                && si[2..].iter().product::<usize>() == so[2..].iter().product::<usize>()
                && si[2..].iter().product::<usize>() == 1;
            keeps_channels.then(|| x.cloned()).flatten()
        }
        Op::Conv(a) => linear(x?, g.weight(&n.inputs[1])?, 0, a.groups, bias),
        Op::Gemm {
            trans_a: false,
            trans_b,
            ..
        } => linear(
            x?,
            g.weight(&n.inputs[1])?,
            if *trans_b { 0 } else { 1 },
            1,
            bias,
        ),
        _ => None,
    }
}

/// Statistics of every value they can be derived for (model input: N(0, 1) per channel).
pub fn channel_stats(g: &Graph, bn: &BnStats) -> HashMap<String, ChannelStats> {
    let mut known = HashMap::new();
    for i in &g.inputs {
        if let Some(&c) = g.shapes.get(i).and_then(|s| s.get(1)) {
            known.insert(i.clone(), ChannelStats::normal(vec![0.0; c], vec![1.0; c]));
        }
    }
    for n in &g.nodes {
        if let Some(s) = node_stats(g, n, bn, &known) {
            known.insert(n.outputs[0].clone(), s);
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_normal_matches_sampling() {
        // Closed forms against a fine numerical integration.
        for &(mu, sigma, a, b) in &[
            (0.0, 1.0, 0.0, f64::INFINITY),
            (1.5, 0.7, 0.0, 6.0),
            (-2.0, 1.0, 0.0, 6.0),
            (5.0, 2.0, 0.0, 6.0),
            (3.0, 0.0, 0.0, 6.0),
        ] {
            let (m, d) = clipped_normal(mu, sigma, a, b);
            if sigma == 0.0 {
                assert_eq!((m, d), (3.0, 0.0));
                continue;
            }
            let (mut s1, mut s2, mut w) = (0.0, 0.0, 0.0);
            let n = 200_000;
            for i in 0..n {
                let x = mu - 10.0 * sigma + 20.0 * sigma * (i as f64 + 0.5) / n as f64;
                let p = pdf((x - mu) / sigma);
                let y = x.clamp(a, b);
                s1 += p * y;
                s2 += p * y * y;
                w += p;
            }
            let (em, ev) = (s1 / w, s2 / w - (s1 / w).powi(2));
            assert!(
                (m - em).abs() < 1e-5 && (d - ev.sqrt()).abs() < 1e-5,
                "{mu} {sigma}: {m} {d} vs {em} {}",
                ev.sqrt()
            );
        }
    }
}
