//! Bias correction: quantizing a layer's weights shifts the mean of its output by
//! E[(W_q - W) x]; folding the opposite shift into the bias removes it.
//!
//! * **Analytical** (data-free, from the DFQ paper as AIMET implemented it): E[x] per input
//!   channel from the preceding batch norms through the clipped-normal expectation
//!   ([`crate::quant::dfq`]); no data at all.
//! * **Empirical**: layer by layer in graph order, the per-channel mean of the layer's output
//!   in the FP32 model minus the same mean in the simulated model (quantized weights and
//!   activations, every earlier layer already corrected) on calibration data.
//!
//! Both read the simulation's prepared model, weights and encodings, and change only the
//! FP32 biases, through [`QuantSim::edit`].

use std::collections::BTreeMap;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::Result;
use crate::exec::{Runner, Samples};
use crate::graph::ir::{Const, Graph, Op};
use crate::graph::prepare::Edits;
use crate::ops::calib::channel_sum;
use crate::quant::dfq::{channel_stats, linear};
use crate::quant::sim::{Model, QuantSim};

/// What bias correction did.
#[derive(Clone, Debug, Default)]
pub struct BiasCorrection {
    /// (node, largest |shift| applied to one channel).
    pub corrected: Vec<(String, f32)>,
    /// (node, why it was left alone).
    pub skipped: Vec<(String, String)>,
}

/// The layers bias correction works on: Conv and Gemm nodes whose weight is quantized, with
/// (bias name if any, output-channel axis of the weight, groups).
fn targets(sim: &QuantSim, g: &Graph) -> Vec<(usize, Option<String>, usize, usize)> {
    let quantized: std::collections::HashSet<&str> = sim
        .param_encodings()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let (axis, groups) = match &n.op {
                Op::Conv(a) => (0, a.groups),
                Op::Gemm {
                    trans_a: false,
                    trans_b,
                    ..
                } => (if *trans_b { 0 } else { 1 }, 1),
                _ => return None,
            };
            quantized.contains(n.inputs[1].as_str()).then(|| {
                (
                    i,
                    n.inputs.get(2).filter(|b| !b.is_empty()).cloned(),
                    axis,
                    groups,
                )
            })
        })
        .collect()
}

fn shifted(g: &Graph, bias: &str, delta: &[f32]) -> Const {
    let b = g.weight(bias).expect("biases of targets are constants");
    Const::F32(
        ArrayD::from_shape_vec(
            IxDyn(&[delta.len()]),
            b.iter().zip(delta).map(|(v, d)| v + d).collect(),
        )
        .expect("1-D"),
    )
}

/// Analytical (data-free) bias correction of every quantized Conv/Gemm whose input's
/// statistics follow from batch norms.
pub fn analytical(sim: &mut QuantSim) -> Result<BiasCorrection> {
    let g = sim.prepared(1)?;
    let stats = channel_stats(&g, sim.bn_stats());
    let mut out = BiasCorrection::default();
    let mut consts = BTreeMap::new();
    for (i, bias, axis, groups) in targets(sim, &g) {
        let n = &g.nodes[i];
        let Some(bias) = bias else {
            out.skipped.push((n.name.clone(), "no bias".into()));
            continue;
        };
        let Some(x) = stats.get(&n.inputs[0]) else {
            out.skipped.push((
                n.name.clone(),
                "input statistics unknown (no batch norm upstream)".into(),
            ));
            continue;
        };
        let w = g
            .weight(&n.inputs[1])
            .expect("quantized weights are constants");
        let Some(Const::F32(wq)) = sim.quantized_weights().get(&n.inputs[1]) else {
            unreachable!("every quantized weight is in the map")
        };
        let err = wq - w;
        let Some(e) = linear(x, &err, axis, groups, None) else {
            out.skipped.push((
                n.name.clone(),
                "input channels do not match the weight".into(),
            ));
            continue;
        };
        let delta: Vec<f32> = e.mean.iter().map(|m| -m).collect();
        out.corrected.push((
            n.name.clone(),
            delta.iter().fold(0f32, |m, d| m.max(d.abs())),
        ));
        consts.insert(bias.clone(), shifted(&g, &bias, &delta));
    }
    sim.edit(Edits::consts(consts))?;
    Ok(out)
}

/// Per-channel (axis 1) means of `names` over `x`, from `runner` (tapping them).
fn channel_means(
    runner: &Runner,
    x: &[(&str, ArrayViewD<'_, f32>)],
    names: &[String],
) -> Result<Vec<Vec<f64>>> {
    let gpu = runner.gpu().clone();
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut count = vec![0usize; names.len()];
    runner.for_each_piece(x, |plan, part, rows| {
        // A piece filled up to the model's fixed batch holds copies: left out.
        if crate::exec::filled(part, rows) {
            return Ok(());
        }
        let tensors = plan.run_with(part, |enc, p| {
            names
                .iter()
                .map(|n| channel_sum(enc, &gpu, p.tensor(n).expect("tapped"), Some(1)))
                .collect::<Result<Vec<_>>>()
        })?;
        for (k, t) in tensors.iter().enumerate() {
            let s = gpu.download::<f32>(t)?;
            let shape = plan.tensor(&names[k]).expect("tapped").shape();
            count[k] += shape
                .iter()
                .enumerate()
                .filter(|(d, _)| *d != 1)
                .map(|(_, v)| v)
                .product::<usize>();
            sums[k].resize(s.len(), 0.0);
            for (a, b) in sums[k].iter_mut().zip(s.iter()) {
                *a += *b as f64;
            }
        }
        Ok(())
    })?;
    Ok(sums
        .into_iter()
        .zip(count)
        .map(|(s, c)| s.into_iter().map(|v| v / c.max(1) as f64).collect())
        .collect())
}

/// Empirical bias correction on samples `x` (in GPU batches of `piece`); the simulation must
/// be calibrated (activations are quantized while measuring).
pub fn empirical<'a>(
    sim: &mut QuantSim,
    x: impl Into<Samples<'a>>,
    piece: usize,
) -> Result<BiasCorrection> {
    let piece = piece.max(1);
    let x = x.into();
    let inputs = sim.inputs().to_vec();
    let x = x.feed(&inputs)?;
    let g = sim.prepared(1)?;
    let t = targets(sim, &g);
    let names: Vec<String> = t
        .iter()
        .map(|(i, ..)| g.nodes[*i].outputs[0].clone())
        .collect();
    let want = channel_means(
        &sim.runner(Model::Fp32)?.taps(&names).batch(piece),
        &x,
        &names,
    )?;
    let mut out = BiasCorrection::default();
    for ((i, bias, ..), (name, want)) in t.iter().zip(names.iter().zip(&want)) {
        let node = g.nodes[*i].name.clone();
        let Some(bias) = bias else {
            out.skipped.push((node, "no bias".into()));
            continue;
        };
        let one = std::slice::from_ref(name);
        let got = channel_means(
            &sim.runner(Model::Simulated)?.outputs(one).batch(piece),
            &x,
            one,
        )?
        .remove(0);
        let delta: Vec<f32> = want.iter().zip(&got).map(|(w, g)| (w - g) as f32).collect();
        out.corrected
            .push((node, delta.iter().fold(0f32, |m, d| m.max(d.abs()))));
        let cur = sim.prepared(1)?;
        sim.edit(Edits::consts(BTreeMap::from([(
            bias.clone(),
            shifted(&cur, bias, &delta),
        )])))?;
    }
    Ok(out)
}
