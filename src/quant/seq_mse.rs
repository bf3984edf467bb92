//! Sequential MSE (AIMET's `apply_seq_mse`): layer by layer in graph order, each quantized
//! Conv/Gemm weight gets the per-channel range, out of `candidates` fractions of its max |w|
//! (1/n, 2/n, ... 1), that minimizes the MSE of the layer's output against the FP32 layer on
//! the same inputs. The inputs come from the model with every earlier layer's weights already
//! quantized with their chosen ranges and activations in FP32 (AIMET's default "symqt").
//!
//! Every candidate of a layer runs in one plan on the GPU: the FP32 layer, the candidate
//! layers, and per-channel mean squared differences, with one readback of the losses.
//!
//! Reads the simulation's prepared model and parameter encodings; changes only the parameter
//! encodings ([`QuantSim::set_param_encodings`]).

use ndarray::{ArrayD, Axis};

use crate::error::{Error, Result};
use crate::exec::{Runner, Samples};
use crate::graph::attrs::Binary;
use crate::graph::ir::{Const, Dim, Graph, Node, Op};
use crate::quant::encoding::Encoding;
use crate::quant::params::quantize_weights;
use crate::quant::sim::{Model, QuantSim};

/// What sequential MSE chose.
#[derive(Clone, Debug, Default)]
pub struct SeqMse {
    /// (weight, mean chosen fraction of max |w| over channels, output MSE at full range, chosen).
    pub layers: Vec<(String, f32, f64, f64)>,
}

/// The loss graph of one layer: input `x` of `shape` (any batch), the FP32 layer and every
/// candidate.
fn loss_graph(
    layer: &Node,
    g: &Graph,
    shape: &[usize],
    candidates: &[ArrayD<f32>],
) -> Result<Graph> {
    let mut lg = Graph {
        name: format!("seq-mse:{}", layer.name),
        opset: g.opset,
        ..Default::default()
    };
    lg.inputs = vec!["x".into()];
    let dims = shape.iter().enumerate().map(|(i, &d)| {
        if i == 0 {
            Dim::Named("batch".into())
        } else {
            Dim::Fixed(d)
        }
    });
    lg.input_dims.insert("x".into(), dims.collect());
    let w = g.weight(&layer.inputs[1]).ok_or_else(|| Error::Graph {
        model: g.name.clone(),
        message: format!("weight of '{}' is not a constant", layer.name),
    })?;
    let out_rank = g.shapes.get(&layer.outputs[0]).map_or(4, Vec::len) as i64;
    let axes: Vec<i64> = (0..out_rank).filter(|&a| a != 1).collect();
    let mut add = |op: Op, inputs: Vec<String>, out: String| {
        lg.nodes.push(Node {
            name: out.clone(),
            op,
            inputs,
            outputs: vec![out],
        })
    };
    lg.consts.insert("w".into(), Const::F32(w.clone()));
    add(layer.op.clone(), vec!["x".into(), "w".into()], "y".into());
    for (k, c) in candidates.iter().enumerate() {
        lg.consts.insert(format!("w{k}"), Const::F32(c.clone()));
        add(
            layer.op.clone(),
            vec!["x".into(), format!("w{k}")],
            format!("y{k}"),
        );
        add(
            Op::Binary(Binary::Sub),
            vec![format!("y{k}"), "y".into()],
            format!("d{k}"),
        );
        add(
            Op::Binary(Binary::Mul),
            vec![format!("d{k}"), format!("d{k}")],
            format!("s{k}"),
        );
        add(
            Op::ReduceMean {
                axes: axes.clone(),
                keepdims: false,
            },
            vec![format!("s{k}")],
            format!("l{k}"),
        );
    }
    lg.outputs = (0..candidates.len()).map(|k| format!("l{k}")).collect();
    Ok(lg)
}

/// Runs sequential MSE over `x` (in GPU batches of `piece`) with `candidates` ranges per layer.
pub fn apply<'a>(
    sim: &mut QuantSim,
    x: impl Into<Samples<'a>>,
    piece: usize,
    candidates: usize,
) -> Result<SeqMse> {
    let x = x.into();
    if candidates == 0 {
        return Err(Error::invalid(
            "seq_mse",
            "candidates",
            0,
            "at least one candidate range",
        ));
    }
    let piece = piece.max(1);
    let gpu = sim.gpu().clone();
    let inputs = sim.inputs().to_vec();
    let g = sim.prepared(1)?;
    let mut params = sim.param_encodings().to_vec();
    let mut report = SeqMse::default();
    for pi in 0..params.len() {
        let (wname, enc) = params[pi].clone();
        let Some(li) = g.nodes.iter().position(|n| {
            matches!(n.op, Op::Conv(_) | Op::Gemm { trans_a: false, .. })
                && n.inputs.get(1) == Some(&wname)
        }) else {
            continue;
        };
        let layer = g.nodes[li].clone();
        let w = g
            .weight(&wname)
            .expect("quantized weights are constants")
            .clone();
        let axis = enc.axis.unwrap_or(0);
        let maxes: Vec<f32> = w
            .axis_iter(Axis(axis))
            .map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        let per_channel = enc.axis.is_some();
        let cands: Vec<Encoding> = (1..=candidates)
            .map(|i| {
                let f = i as f32 / candidates as f32;
                let hi: Vec<f32> = if per_channel {
                    maxes.iter().map(|m| m * f).collect()
                } else {
                    vec![maxes.iter().fold(0f32, |a, &m| a.max(m)) * f]
                };
                let lo: Vec<f32> = hi.iter().map(|v| -v).collect();
                Encoding::from_ranges(&lo, &hi, enc.bitwidth, enc.kind, enc.axis)
            })
            .collect::<Result<_>>()?;
        // Candidate weights, quantized on the GPU in one submission.
        let mut one = Graph {
            name: g.name.clone(),
            ..Default::default()
        };
        let named: Vec<(String, Encoding)> = cands
            .iter()
            .enumerate()
            .map(|(k, e)| (format!("{wname}#{k}"), e.clone()))
            .collect();
        for (n, _) in &named {
            one.consts.insert(n.clone(), Const::F32(w.clone()));
        }
        let qw = quantize_weights(&one, &named)?;
        let qw: Vec<ArrayD<f32>> = named
            .iter()
            .map(|(n, _)| match &qw[n] {
                Const::F32(a) => a.clone(),
                Const::I64(_) => unreachable!("f32 weights"),
            })
            .collect();
        // The layer's inputs in the model quantized so far (weights only).
        let xname = std::slice::from_ref(&layer.inputs[0]);
        let prefix = (!g.inputs.contains(&layer.inputs[0]))
            .then(|| sim.runner(Model::Weights))
            .transpose()?
            .map(|r| r.outputs(xname).batch(piece));
        let mut loss = vec![vec![0f64; maxes.len()]; candidates];
        let mut losses: Option<Runner> = None;
        for chunk in x.chunks(piece) {
            let feed = chunk.feed(&inputs)?;
            let xin = match &prefix {
                Some(r) => r.run(&feed)?.remove(0),
                None => feed
                    .iter()
                    .find(|(n, _)| *n == layer.inputs[0])
                    .expect("the layer reads a model input")
                    .1
                    .to_owned(),
            };
            let n = xin.shape()[0];
            if losses.is_none() {
                losses = Some(Runner::new(
                    gpu.clone(),
                    loss_graph(&layer, &g, xin.shape(), &qw)?,
                ));
            }
            let outs = losses
                .as_ref()
                .expect("made above")
                .run(&[("x", xin.view())])?;
            for (k, l) in outs.iter().enumerate() {
                for (c, v) in l.iter().enumerate() {
                    loss[k][c] += *v as f64 * n as f64;
                }
            }
        }
        let channels = maxes.len();
        let total = |k: usize| loss[k].iter().sum::<f64>();
        let choice: Vec<usize> = if per_channel {
            (0..channels)
                .map(|c| {
                    (0..candidates)
                        .min_by(|&a, &b| loss[a][c].total_cmp(&loss[b][c]))
                        .expect("candidates > 0")
                })
                .collect()
        } else {
            vec![(0..candidates)
                .min_by(|&a, &b| total(a).total_cmp(&total(b)))
                .expect("candidates > 0")]
        };
        let hi: Vec<f32> = if per_channel {
            choice
                .iter()
                .enumerate()
                .map(|(c, &k)| maxes[c] * (k + 1) as f32 / candidates as f32)
                .collect()
        } else {
            vec![
                maxes.iter().fold(0f32, |a, &m| a.max(m)) * (choice[0] + 1) as f32
                    / candidates as f32,
            ]
        };
        let lo: Vec<f32> = hi.iter().map(|v| -v).collect();
        params[pi].1 = Encoding::from_ranges(&lo, &hi, enc.bitwidth, enc.kind, enc.axis)?;
        let chosen: f64 = if per_channel {
            (0..channels).map(|c| loss[choice[c]][c]).sum()
        } else {
            total(choice[0])
        };
        let frac = choice
            .iter()
            .map(|&k| (k + 1) as f32 / candidates as f32)
            .sum::<f32>()
            / choice.len() as f32;
        report.layers.push((
            wname.clone(),
            frac,
            total(candidates - 1) / channels as f64,
            chosen / channels as f64,
        ));
        sim.set_param_encodings(params.clone())?;
    }
    Ok(report)
}
