//! Spatial SVD and weight SVD: one layer becomes two thinner ones through a rank-r
//! factorisation of its weight (as AIMET reshapes it), with the rank chosen from a target
//! cost ratio.
//!
//! * Spatial SVD: a KhxKw conv becomes (Kh x 1, C_in -> r) then (1 x Kw, r -> C_out). The
//!   weight is read as a `(C_in Kh) x (C_out Kw)` matrix; vertical stride, padding and dilation
//!   go to the first conv, horizontal ones to the second, the bias to the second.
//! * Weight SVD: a conv becomes (1 x 1, C_in -> r) then (Kh x Kw, r -> C_out) from the
//!   `(C_out Kh Kw) x C_in` matrix (the 1x1 conv runs before padding, which commutes with it
//!   as it has no bias); a Gemm becomes two Gemms from its `N x K` weight.
//!
//! Both factors share sqrt(sigma), so their ranges stay alike (good for quantization later).

use ndarray::{Array2, ArrayD, IxDyn};

use crate::compress::linalg::Svd;
use crate::compress::Cost;
use crate::error::{Error, Result};
use crate::graph::attrs::Conv2d;
use crate::graph::ir::{Const, Graph, Node, Op};

/// Which factorisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvdKind {
    Spatial,
    Weight,
}

/// A layer an SVD can split, with the sizes its cost depends on.
#[derive(Clone, Debug)]
pub struct SvdLayer {
    pub node: String,
    pub kind: SvdKind,
    /// The matrix that is factorised.
    pub rows: usize,
    pub cols: usize,
    /// Cost of the split layer per unit of rank (MACs, params).
    pub per_rank: Cost,
    /// Cost of the layer as it is.
    pub original: Cost,
}

impl SvdLayer {
    /// Largest useful rank.
    pub fn full_rank(&self) -> usize {
        self.rows.min(self.cols)
    }
}

/// A convolution's attributes with its weight, input and output shapes.
type ConvParts = (Conv2d, [usize; 4], [usize; 4], [usize; 4]);

fn conv_parts(g: &Graph, n: &Node) -> Option<ConvParts> {
    let Op::Conv(c) = &n.op else { return None };
    let w = g.weight(n.inputs.get(1)?)?;
    let (x, y) = (g.shapes.get(&n.inputs[0])?, g.shapes.get(&n.outputs[0])?);
    let four = |s: &[usize]| <[usize; 4]>::try_from(s).ok();
    Some((*c, four(w.shape())?, four(x)?, four(y)?))
}

/// Why a node cannot be split by `kind`, or its [`SvdLayer`].
pub fn layer(g: &Graph, node: usize, kind: SvdKind) -> std::result::Result<SvdLayer, String> {
    let n = &g.nodes[node];
    let name = n.name.clone();
    match (&n.op, kind) {
        (Op::Conv(_), _) => {
            let Some((c, [co, ci, kh, kw], [b, _, h, w], [_, _, oh, ow])) = conv_parts(g, n) else {
                return Err("conv without a constant 4-D weight or resolved shapes".into());
            };
            if c.groups != 1 {
                return Err(format!("grouped conv ({} groups)", c.groups));
            }
            let original = Cost {
                macs: (b * co * ci * kh * kw * oh * ow) as u64,
                params: (co * ci * kh * kw) as u64,
            };
            match kind {
                SvdKind::Spatial => {
                    if kh == 1 || kw == 1 {
                        return Err(format!(
                            "{kh}x{kw} kernel has no spatial dimension to split"
                        ));
                    }
                    let per_rank = Cost {
                        macs: (b * ci * kh * oh * w + b * co * kw * oh * ow) as u64,
                        params: (ci * kh + co * kw) as u64,
                    };
                    Ok(SvdLayer {
                        node: name,
                        kind,
                        rows: ci * kh,
                        cols: co * kw,
                        per_rank,
                        original,
                    })
                }
                SvdKind::Weight => {
                    let per_rank = Cost {
                        macs: (b * ci * h * w + b * co * kh * kw * oh * ow) as u64,
                        params: (ci + co * kh * kw) as u64,
                    };
                    Ok(SvdLayer {
                        node: name,
                        kind,
                        rows: co * kh * kw,
                        cols: ci,
                        per_rank,
                        original,
                    })
                }
            }
        }
        (Op::Gemm { trans_a: false, .. }, SvdKind::Weight) => {
            let Some(wt) = n.inputs.get(1).and_then(|i| g.weight(i)) else {
                return Err("Gemm without a constant weight".into());
            };
            let (Some(y), [r0, r1]) = (g.shapes.get(&n.outputs[0]), wt.shape()) else {
                return Err("Gemm without a 2-D weight".into());
            };
            let Op::Gemm { trans_b, .. } = n.op else {
                unreachable!()
            };
            let (nn, k) = if trans_b { (*r0, *r1) } else { (*r1, *r0) };
            let m = y[0];
            Ok(SvdLayer {
                node: name,
                kind,
                rows: nn,
                cols: k,
                per_rank: Cost {
                    macs: (m * (k + nn)) as u64,
                    params: (k + nn) as u64,
                },
                original: Cost {
                    macs: (m * nn * k) as u64,
                    params: (nn * k) as u64,
                },
            })
        }
        (Op::Gemm { .. }, SvdKind::Weight) => Err("Gemm with transposed input".into()),
        _ => Err(format!("{} is not a {kind:?}-SVD layer", n.op.onnx_type())),
    }
}

/// Every layer `kind` can split, and the others (conv/Gemm nodes) with why not.
pub fn layers(g: &Graph, kind: SvdKind) -> (Vec<SvdLayer>, Vec<(String, String)>) {
    let (mut ok, mut skipped) = (Vec::new(), Vec::new());
    for (i, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Conv(_) | Op::Gemm { .. }) {
            continue;
        }
        match layer(g, i, kind) {
            Ok(l) => ok.push(l),
            Err(why) => skipped.push((n.name.clone(), why)),
        }
    }
    (ok, skipped)
}

/// The matrix `kind` factorises for `layer`.
pub fn matrix(g: &Graph, layer: &SvdLayer) -> Result<Array2<f32>> {
    let i = g.node_index(&layer.node)?;
    let n = &g.nodes[i];
    let w = g.weight(&n.inputs[1]).expect("checked by layer()");
    Ok(match (&n.op, layer.kind) {
        (Op::Conv(_), SvdKind::Spatial) => {
            let [co, ci, kh, kw] = <[usize; 4]>::try_from(w.shape()).expect("4-D");
            Array2::from_shape_fn((ci * kh, co * kw), |(r, c)| {
                w[[c / kw, r / kh, r % kh, c % kw]]
            })
        }
        (Op::Conv(_), SvdKind::Weight) => {
            let [_, ci, kh, kw] = <[usize; 4]>::try_from(w.shape()).expect("4-D");
            Array2::from_shape_fn((layer.rows, ci), |(r, c)| {
                w[[r / (kh * kw), c, (r / kw) % kh, r % kw]]
            })
        }
        (Op::Gemm { trans_b, .. }, _) => {
            let w2 = w.view().into_dimensionality::<ndarray::Ix2>().expect("2-D");
            if *trans_b {
                w2.to_owned()
            } else {
                w2.t().to_owned()
            }
        }
        _ => unreachable!("layer() admits only these"),
    })
}

/// The rank that brings the layer's cost (MACs or params, per `by`) to `ratio` of the
/// original, rounded to a multiple of `multiplicity`; `None` when that rank would not make
/// the layer cheaper (or is 0).
pub fn rank_for_ratio(
    layer: &SvdLayer,
    ratio: f64,
    by: crate::compress::CostMetric,
    multiplicity: usize,
) -> Option<usize> {
    let (orig, per) = (
        by.of(&layer.original) as f64,
        by.of(&layer.per_rank).max(1) as f64,
    );
    let m = multiplicity.max(1);
    let raw = (ratio * orig / per).floor() as usize;
    let r = (raw / m * m).max(m.min(raw.max(1)));
    (r >= 1 && r < layer.full_rank() && (r as f64) * per < orig).then_some(r)
}

/// Replaces `layer` by its rank-`rank` factorisation from `svd` (of [`matrix`]).
pub fn split(g: &mut Graph, layer: &SvdLayer, svd: &Svd, rank: usize) -> Result<()> {
    if rank == 0 || rank > svd.s.len() {
        return Err(Error::invalid(
            "svd split",
            "rank",
            rank,
            format!("must be in 1..={} for '{}'", svd.s.len(), layer.node),
        ));
    }
    let i = g.node_index(&layer.node)?;
    let n = g.nodes[i].clone();
    let root: Vec<f32> = svd.s[..rank].iter().map(|s| s.sqrt()).collect();
    let u = |r: usize, j: usize| svd.u[[r, j]] * root[j];
    let v = |c: usize, j: usize| svd.v[[c, j]] * root[j];
    let w = g.weight(&n.inputs[1]).expect("checked").clone();
    let stem = match layer.kind {
        SvdKind::Spatial => "ssvd",
        SvdKind::Weight => "wsvd",
    };
    let mid = g.unique_name(&format!("{}/{stem}", n.outputs[0]));
    let (w1n, w2n) = (
        g.unique_name(&format!("{}.{stem}0", n.inputs[1])),
        g.unique_name(&format!("{}.{stem}1", n.inputs[1])),
    );
    let (first, second, w1, w2, mid_shape) = match (&n.op, layer.kind) {
        (Op::Conv(c), SvdKind::Spatial) => {
            let (_, [co, ci, kh, kw], [b, _, _, width], [_, _, oh, _]) =
                conv_parts(g, &n).expect("checked");
            let w1 =
                ArrayD::from_shape_fn(IxDyn(&[rank, ci, kh, 1]), |d| u(d[1] * kh + d[2], d[0]));
            let w2 =
                ArrayD::from_shape_fn(IxDyn(&[co, rank, 1, kw]), |d| v(d[0] * kw + d[3], d[1]));
            let c1 = Conv2d {
                strides: [c.strides[0], 1],
                pads: [c.pads[0], 0, c.pads[2], 0],
                dilations: [c.dilations[0], 1],
                groups: 1,
            };
            let c2 = Conv2d {
                strides: [1, c.strides[1]],
                pads: [0, c.pads[1], 0, c.pads[3]],
                dilations: [1, c.dilations[1]],
                groups: 1,
            };
            (Op::Conv(c1), Op::Conv(c2), w1, w2, vec![b, rank, oh, width])
        }
        (Op::Conv(c), SvdKind::Weight) => {
            let (_, [co, ci, kh, kw], [b, _, h, width], _) = conv_parts(g, &n).expect("checked");
            let w1 = ArrayD::from_shape_fn(IxDyn(&[rank, ci, 1, 1]), |d| v(d[1], d[0]));
            let w2 = ArrayD::from_shape_fn(IxDyn(&[co, rank, kh, kw]), |d| {
                u((d[0] * kh + d[2]) * kw + d[3], d[1])
            });
            (
                Op::Conv(Conv2d::default()),
                Op::Conv(*c),
                w1,
                w2,
                vec![b, rank, h, width],
            )
        }
        (Op::Gemm { alpha, beta, .. }, SvdKind::Weight) => {
            let m = g.shapes[&n.outputs[0]][0];
            let w1 = ArrayD::from_shape_fn(IxDyn(&[rank, layer.cols]), |d| v(d[1], d[0]));
            let w2 = ArrayD::from_shape_fn(IxDyn(&[layer.rows, rank]), |d| u(d[0], d[1]));
            (
                Op::Gemm {
                    alpha: *alpha,
                    beta: 0.0,
                    trans_a: false,
                    trans_b: true,
                },
                Op::Gemm {
                    alpha: 1.0,
                    beta: *beta,
                    trans_a: false,
                    trans_b: true,
                },
                w1,
                w2,
                vec![m, rank],
            )
        }
        _ => unreachable!("layer() admits only these"),
    };
    drop(w);
    g.consts.insert(w1n.clone(), Const::F32(w1));
    g.consts.insert(w2n.clone(), Const::F32(w2));
    g.shapes.insert(mid.clone(), mid_shape);
    let mut inputs2 = vec![mid.clone(), w2n];
    inputs2.extend(n.inputs.iter().skip(2).cloned());
    let n1 = Node {
        name: g.unique_name(&format!("{}/{stem}0", n.name)),
        op: first,
        inputs: vec![n.inputs[0].clone(), w1n],
        outputs: vec![mid],
    };
    let n2 = Node {
        name: n.name.clone(),
        op: second,
        inputs: inputs2,
        outputs: n.outputs.clone(),
    };
    let old_weight = n.inputs[1].clone();
    g.nodes.splice(i..=i, [n1, n2]);
    if g.nodes.iter().all(|n| !n.inputs.contains(&old_weight)) {
        g.consts.remove(&old_weight);
    }
    Ok(())
}
