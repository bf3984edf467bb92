//! A plain CPU interpreter of a resolved [`Graph`]: the oracle for executor tests and the
//! baseline of the model benchmark.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use crate::error::{Error, Result};
use crate::graph::attrs::Reduce;
use crate::graph::attrs::{Binary, Resize};
use crate::graph::ir::{Const, Graph, Op};
use crate::graph::shape::{norm_axis, resize_scales, slice_spec};
use crate::reference::{gemm, index, nn, rows};

/// A 1-D convolution's weight `[out, in, k]` as `[out, in, 1, k]`.
fn weight_4d(w: ArrayD<f32>) -> ArrayD<f32> {
    if w.ndim() == 3 {
        w.insert_axis(Axis(2))
    } else {
        w
    }
}

/// `axes` normalized and sorted (every axis when empty).
fn sorted_axes(axes: &[i64], rank: usize) -> std::result::Result<Vec<usize>, String> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let mut v: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank).ok_or(format!("axis {a} out of range")))
        .collect::<std::result::Result<_, _>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Runs a resolved graph on the CPU; returns the outputs in model order.
pub fn run(g: &Graph, inputs: &[(&str, ArrayD<f32>)]) -> Result<Vec<ArrayD<f32>>> {
    let mut vals: HashMap<String, ArrayD<f32>> = inputs
        .iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect();
    let err = |m: String| Error::Graph {
        model: g.name.clone(),
        message: m,
    };
    for node in &g.nodes {
        let get = |i: usize| -> Result<ArrayD<f32>> {
            let name = &node.inputs[i];
            vals.get(name)
                .cloned()
                .or_else(|| g.consts.get(name).map(Const::to_f32))
                .ok_or_else(|| err(format!("no value '{name}'")))
        };
        let ints = |i: usize| {
            node.inputs
                .get(i)
                .filter(|n| !n.is_empty())
                .and_then(|n| g.consts.get(n))
                .map(Const::to_i64)
        };
        let out_shape = |i: usize| g.shapes[&node.outputs[i]].clone();
        let mut outs: Vec<ArrayD<f32>> = Vec::new();
        match &node.op {
            op if op.is_view() => outs.push(
                get(0)?
                    .into_shape_with_order(IxDyn(&out_shape(0)))
                    .map_err(|e| err(e.to_string()))?,
            ),
            Op::Conv(a) => {
                let b = node
                    .inputs
                    .get(2)
                    .filter(|b| !b.is_empty())
                    .map(|_| get(2))
                    .transpose()?;
                outs.push(nn::conv2d(
                    &get(0)?.view(),
                    &weight_4d(get(1)?).view(),
                    b.as_ref().map(|b| b.view()).as_ref(),
                    a,
                ));
            }
            Op::ConvTranspose {
                conv,
                output_padding,
                ..
            } => {
                let b = node
                    .inputs
                    .get(2)
                    .filter(|b| !b.is_empty())
                    .map(|_| get(2))
                    .transpose()?;
                outs.push(nn::conv_transpose2d(
                    &get(0)?.view(),
                    &weight_4d(get(1)?).view(),
                    b.as_ref().map(|b| b.view()).as_ref(),
                    conv,
                    *output_padding,
                ));
            }
            Op::Resize { .. } => {
                let x = get(0)?;
                let r = Resize {
                    roi: crate::graph::shape::resize_spatial_roi(g, node),
                    ..node
                        .op
                        .resize_settings()
                        .ok_or_else(|| err("unsupported Resize mode".into()))?
                };
                let o = out_shape(0);
                let scales = resize_scales(g, node, x.shape(), &o);
                outs.push(nn::resize(&x.view(), r, scales, [o[2], o[3]]));
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let (a, b) = (get(0)?, get(1)?);
                let a3 = a
                    .view()
                    .into_shape_with_order((1, a.shape()[0], a.shape()[1]))
                    .unwrap();
                let b3 = b
                    .view()
                    .into_shape_with_order((1, b.shape()[0], b.shape()[1]))
                    .unwrap();
                let mut y = gemm::matmul(&a3, &b3, *trans_a, *trans_b)
                    .index_axis_move(Axis(0), 0)
                    .into_dyn()
                    .mapv(|v| v * alpha);
                if node.inputs.get(2).is_some_and(|c| !c.is_empty()) {
                    y = nn::binary(Binary::Add, &y.view(), &get(2)?.mapv(|v| v * beta).view());
                }
                outs.push(y);
            }
            Op::MatMul => {
                let (a, b) = (get(0)?, get(1)?);
                // 1-D operands promoted; batch dims broadcast to one batch.
                let a = if a.ndim() == 1 {
                    a.insert_axis(Axis(0))
                } else {
                    a
                };
                let b = if b.ndim() == 1 {
                    b.insert_axis(Axis(1))
                } else {
                    b
                };
                let (ra, rb) = (a.ndim(), b.ndim());
                let batch = crate::graph::shape::broadcast_shape(
                    &a.shape()[..ra - 2],
                    &b.shape()[..rb - 2],
                )
                .ok_or_else(|| err("MatMul batch dims do not broadcast".into()))?;
                let full = |t: &ArrayD<f32>| -> Result<ArrayD<f32>> {
                    let mut s = batch.clone();
                    s.extend(&t.shape()[t.ndim() - 2..]);
                    Ok(t.broadcast(IxDyn(&s))
                        .ok_or_else(|| err("MatMul broadcast".into()))?
                        .to_owned())
                };
                let (a, b) = (full(&a)?, full(&b)?);
                let (m, k, n) = (
                    a.shape()[a.ndim() - 2],
                    a.shape()[a.ndim() - 1],
                    b.shape()[b.ndim() - 1],
                );
                let (ba, bb) = (a.len() / (m * k), b.len() / (k * n));
                let a3 = a.view().into_shape_with_order((ba, m, k)).unwrap();
                let b3 = b.view().into_shape_with_order((bb, k, n)).unwrap();
                outs.push(
                    gemm::matmul(&a3, &b3, false, false)
                        .into_shape_with_order(IxDyn(&out_shape(0)))
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            Op::BatchNorm { epsilon } => {
                let x = get(0)?;
                let p: Vec<ArrayD<f32>> = (1..5).map(get).collect::<Result<_>>()?;
                let mut y = x.clone();
                for (c, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
                    let s = p[0].as_slice().unwrap()[c] as f64
                        / (p[3].as_slice().unwrap()[c] as f64 + *epsilon as f64).sqrt();
                    let t =
                        p[1].as_slice().unwrap()[c] as f64 - p[2].as_slice().unwrap()[c] as f64 * s;
                    lane.mapv_inplace(|v| (v as f64 * s + t) as f32);
                }
                outs.push(y);
            }
            Op::Unary(f) => outs.push(get(0)?.mapv(|v| nn::unary_value(*f, v))),
            Op::Binary(Binary::Div) if g.elem_type(&node.outputs[0]).is_integer() => {
                outs.push(nn::div_trunc(&get(0)?.view(), &get(1)?.view()))
            }
            Op::Binary(b) => outs.push(nn::binary(*b, &get(0)?.view(), &get(1)?.view())),
            Op::Cast { to } => {
                let to = crate::graph::ElemType::from_onnx(*to).unwrap_or_default();
                outs.push(get(0)?.mapv(|v| nn::convert_value(to, v)))
            }
            Op::Where => outs.push(index::where_(
                &get(0)?.view(),
                &get(1)?.view(),
                &get(2)?.view(),
            )),
            Op::Gather { axis } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                outs.push(index::gather(&x.view(), &get(1)?.view(), a));
            }
            Op::GatherElements { axis } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                outs.push(index::gather_elements(&x.view(), &get(1)?.view(), a));
            }
            Op::Reduce {
                op,
                axes,
                noop_empty,
                ..
            } => {
                let x = get(0)?;
                if axes.is_empty() && *noop_empty {
                    outs.push(x);
                } else {
                    let a = sorted_axes(axes, x.ndim()).map_err(err)?;
                    outs.push(rows::reduce(&x.view(), *op, &a, &out_shape(0)));
                }
            }
            Op::GlobalMaxPool => {
                let x = get(0)?;
                let a: Vec<usize> = (2..x.ndim()).collect();
                outs.push(rows::reduce(&x.view(), Reduce::Max, &a, &out_shape(0)));
            }
            Op::Arg {
                min, axis, last, ..
            } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                outs.push(rows::arg(&x.view(), a, *min, *last, &out_shape(0)));
            }
            Op::LogSoftmax { axis, legacy } | Op::Hardmax { axis, legacy } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                let log = matches!(node.op, Op::LogSoftmax { .. });
                outs.push(rows::softmax_like(&x.view(), a, *legacy, log));
            }
            Op::TopK { axis, largest } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                let k = out_shape(0)[a];
                let (v, i) = rows::topk(&x.view(), a, k, *largest);
                outs.extend([v, i]);
            }
            Op::CumSum { exclusive, reverse } => {
                let x = get(0)?;
                let axis = ints(1).and_then(|v| v.first().copied()).unwrap_or(0);
                let a = norm_axis(axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                outs.push(rows::cumsum(&x.view(), a, *exclusive, *reverse));
            }
            Op::MeanVarianceNorm { axes } => {
                let x = get(0)?;
                let a = sorted_axes(axes, x.ndim()).map_err(err)?;
                outs.push(rows::normalize(&x.view(), &a, 1e-9, true).0);
            }
            Op::LayerNorm { axis, epsilon } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).ok_or_else(|| err("axis".into()))?;
                let axes: Vec<usize> = (a..x.ndim()).collect();
                let (t, stats) = rows::normalize(&x.view(), &axes, *epsilon, false);
                let mut y = nn::binary(Binary::Mul, &t.view(), &get(1)?.view());
                if node.inputs.get(2).is_some_and(|b| !b.is_empty()) {
                    y = nn::binary(Binary::Add, &y.view(), &get(2)?.view());
                }
                outs.push(y);
                for k in 0..2 {
                    let v: Vec<f32> = stats
                        .iter()
                        .map(|s| if k == 0 { s.0 } else { s.1 } as f32)
                        .collect();
                    outs.push(ArrayD::from_shape_vec(IxDyn(&out_shape(1 + k)), v).expect("stats"));
                }
            }
            Op::InstanceNorm { epsilon } | Op::GroupNorm { epsilon, .. } => {
                let x = get(0)?;
                let s = x.shape().to_vec();
                let c = s[1];
                let groups = match node.op {
                    Op::GroupNorm { groups, .. } => groups,
                    _ => c,
                };
                // Normalize each (sample, group) as a row of the grouped view.
                let mut gs = vec![s[0], groups, c / groups];
                gs.extend(&s[2..]);
                let xg = x
                    .view()
                    .into_shape_with_order(IxDyn(&gs))
                    .map_err(|e| err(e.to_string()))?;
                let axes: Vec<usize> = (2..gs.len()).collect();
                let (t, _) = rows::normalize(&xg, &axes, *epsilon, false);
                let t = t
                    .into_shape_with_order(IxDyn(&s))
                    .map_err(|e| err(e.to_string()))?;
                let (scale, bias) = (get(1)?, get(2)?);
                let per = |p: &ArrayD<f32>, ch: usize| -> f32 {
                    let v = p.as_standard_layout();
                    let v = v.as_slice().expect("standard");
                    if v.len() == c {
                        v[ch]
                    } else {
                        v[ch / (c / groups)]
                    }
                };
                let inner: usize = s[2..].iter().product();
                let mut y = t.as_standard_layout().to_owned();
                for (i, v) in y.iter_mut().enumerate() {
                    let ch = (i / inner.max(1)) % c;
                    *v = *v * per(&scale, ch) + per(&bias, ch);
                }
                outs.push(y);
            }
            Op::DepthToSpace { blocksize: b, crd } => {
                let x = get(0)?;
                let s = x.shape().to_vec();
                let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
                let c2 = c / (b * b);
                let (shape6, perm) = if *crd {
                    ([n, c2, *b, *b, h, w], [0, 1, 4, 2, 5, 3])
                } else {
                    ([n, *b, *b, c2, h, w], [0, 3, 4, 1, 5, 2])
                };
                let v = x
                    .into_shape_with_order(IxDyn(&shape6))
                    .map_err(|e| err(e.to_string()))?
                    .permuted_axes(IxDyn(&perm))
                    .as_standard_layout()
                    .into_owned();
                outs.push(
                    v.into_shape_with_order(IxDyn(&out_shape(0)))
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            Op::SpaceToDepth { blocksize: b } => {
                let x = get(0)?;
                let s = x.shape().to_vec();
                let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
                let v = x
                    .into_shape_with_order(IxDyn(&[n, c, h / b, *b, w / b, *b]))
                    .map_err(|e| err(e.to_string()))?
                    .permuted_axes(IxDyn(&[0, 3, 5, 1, 2, 4]))
                    .as_standard_layout()
                    .into_owned();
                outs.push(
                    v.into_shape_with_order(IxDyn(&out_shape(0)))
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            Op::Trilu { upper } => {
                let mut y = get(0)?;
                let k = ints(1).and_then(|v| v.first().copied()).unwrap_or(0);
                let r = y.ndim();
                for (c, v) in y.indexed_iter_mut() {
                    let (i, j) = (c[r - 2] as i64, c[r - 1] as i64);
                    let keep = if *upper { j - i >= k } else { j - i <= k };
                    if !keep {
                        *v = 0.0;
                    }
                }
                outs.push(y);
            }
            Op::ScatterNd { reduction } => {
                let mut y = get(0)?;
                let (idx, upd) = (get(1)?, get(2)?);
                outs.push({
                    index::scatter_nd(&mut y, &idx.view(), &upd.view(), reduction);
                    y
                });
            }
            Op::Expand => outs.push(
                get(0)?
                    .broadcast(IxDyn(&out_shape(0)))
                    .ok_or_else(|| err("Expand does not broadcast".into()))?
                    .to_owned(),
            ),
            Op::Tile => {
                let reps = ints(1).unwrap_or_default();
                outs.push(crate::graph::fold::tile(&get(0)?, &reps).map_err(err)?);
            }
            Op::MaxPool(a) => outs.push(nn::pool2d(&get(0)?.view(), a, true)),
            Op::AveragePool(a) => outs.push(nn::pool2d(&get(0)?.view(), a, false)),
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => outs.push(nn::lrn(&get(0)?.view(), *size, *alpha, *beta, *bias)),
            Op::GlobalAveragePool => {
                let x = get(0)?;
                let hw: usize = x.shape()[2..].iter().product();
                let v = nn::mean_rows(x.as_standard_layout().as_slice().unwrap(), hw);
                outs.push(ArrayD::from_shape_vec(IxDyn(&out_shape(0)), v).unwrap());
            }
            Op::Transpose { perm } => {
                let x = get(0)?;
                let perm: Vec<usize> = if perm.is_empty() {
                    (0..x.ndim()).rev().collect()
                } else {
                    perm.clone()
                };
                outs.push(
                    x.permuted_axes(IxDyn(&perm))
                        .as_standard_layout()
                        .to_owned(),
                );
            }
            Op::Concat { axis } => {
                let parts: Vec<ArrayD<f32>> =
                    (0..node.inputs.len()).map(get).collect::<Result<_>>()?;
                let a = norm_axis(*axis, parts[0].ndim()).unwrap();
                outs.push(
                    ndarray::concatenate(
                        Axis(a),
                        &parts.iter().map(|p| p.view()).collect::<Vec<_>>(),
                    )
                    .map_err(|e| err(e.to_string()))?,
                );
            }
            Op::Split { axis, .. } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).unwrap();
                let mut at = 0;
                for i in 0..node.outputs.len() {
                    let k = out_shape(i)[a];
                    outs.push(x.slice_axis(Axis(a), Slice::from(at..at + k)).to_owned());
                    at += k;
                }
            }
            Op::Slice => {
                let x = get(0)?;
                let spec = slice_spec(
                    x.shape(),
                    &ints(1).unwrap_or_default(),
                    &ints(2).unwrap_or_default(),
                    ints(3).as_deref(),
                    ints(4).as_deref(),
                )
                .map_err(err)?;
                let mut v = x.view();
                for (d, s) in spec.iter().enumerate() {
                    let end = s.start as isize
                        + (s.len as isize - 1) * s.step as isize
                        + s.step.signum() as isize;
                    v.slice_axis_inplace(
                        Axis(d),
                        Slice::new(
                            s.start as isize,
                            if s.len == 0 {
                                Some(s.start as isize)
                            } else if end < 0 {
                                None
                            } else {
                                Some(end)
                            },
                            s.step as isize,
                        ),
                    );
                }
                outs.push(v.to_owned());
            }
            Op::Pad { value, mode } => {
                let x = get(0)?;
                let pads = ints(1).unwrap_or_default();
                outs.push(index::pad(
                    &x.view(),
                    &pads[..x.ndim()],
                    mode,
                    *value,
                    &out_shape(0),
                ));
            }
            Op::Softmax { axis, legacy } => {
                let x = get(0)?;
                let a = norm_axis(*axis, x.ndim()).unwrap();
                if *legacy || a == x.ndim() - 1 {
                    let len: usize = x.shape()[a..].iter().product();
                    outs.push(
                        ArrayD::from_shape_vec(
                            x.raw_dim(),
                            nn::softmax_rows(x.as_standard_layout().as_slice().unwrap(), len),
                        )
                        .unwrap(),
                    );
                } else {
                    let mut y = x.clone();
                    for mut lane in y.lanes_mut(Axis(a)) {
                        let v = nn::softmax_rows(&lane.to_vec(), lane.len());
                        lane.iter_mut().zip(v).for_each(|(o, n)| *o = n);
                    }
                    outs.push(y);
                }
            }
            Op::ReduceMean { axes, .. } => {
                let mut x = get(0)?;
                let mut axes: Vec<usize> = if axes.is_empty() {
                    (0..x.ndim()).collect()
                } else {
                    axes.iter()
                        .map(|&a| norm_axis(a, x.ndim()).unwrap())
                        .collect()
                };
                axes.sort_unstable();
                for &a in axes.iter().rev() {
                    x = x.mean_axis(Axis(a)).expect("non-empty axis");
                }
                outs.push(
                    x.into_shape_with_order(IxDyn(&out_shape(0)))
                        .map_err(|e| err(e.to_string()))?,
                );
            }
            op => {
                return Err(err(format!(
                    "the CPU reference does not run {}",
                    op.onnx_type()
                )))
            }
        }
        for (name, v) in node.outputs.iter().zip(outs) {
            vals.insert(name.clone(), v);
        }
    }
    g.outputs
        .iter()
        .map(|o| {
            vals.remove(o)
                .ok_or_else(|| err(format!("output '{o}' not computed")))
        })
        .collect()
}
