//! Parameter quantization: encodings of every weight quantizer from its exact per-channel
//! range, and the weights' quantize-dequantized values computed once on the GPU.

use std::collections::BTreeMap;

use ndarray::Axis;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::{Const, Graph};
use crate::ops::quant::fake_quant;
use crate::quant::encoding::{Encoding, QuantKind};
use crate::quant::placement::Placement;

/// How parameters are quantized.
#[derive(Clone, Copy, Debug)]
pub struct ParamScheme {
    pub bitwidth: u32,
    /// Symmetric grids use the strict form (no most-negative code).
    pub strict: bool,
}

/// The grid of one quantizer.
pub fn kind_for(symmetric: bool, strict: bool) -> QuantKind {
    match (symmetric, strict) {
        (false, _) => QuantKind::Asymmetric,
        (true, false) => QuantKind::SignedSymmetric,
        (true, true) => QuantKind::StrictSymmetric,
    }
}

/// (min, max) of each slice along `axis` (one pair for the whole tensor when `None`).
pub fn channel_ranges(w: &ndarray::ArrayD<f32>, axis: Option<usize>) -> Vec<(f32, f32)> {
    let range = |it: &mut dyn Iterator<Item = &f32>| it.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    match axis {
        Some(a) => w.axis_iter(Axis(a)).map(|c| range(&mut c.iter())).collect(),
        None => vec![range(&mut w.iter())],
    }
}

/// (min, max, mean, std) of each slice along `axis`: what the report's weight-range plots show.
pub fn channel_summary(w: &ndarray::ArrayD<f32>, axis: usize) -> Vec<[f32; 4]> {
    w.axis_iter(Axis(axis))
        .map(|c| {
            let n = c.len().max(1) as f64;
            let mean = c.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = c.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let (lo, hi) = c.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            [lo, hi, mean as f32, var.sqrt() as f32]
        })
        .collect()
}

/// Encodings for every parameter quantizer, from the weights' exact min/max (per channel along
/// the quantizer's axis). Non-finite weights are an error naming the tensor.
pub fn param_encodings(g: &Graph, placement: &Placement, scheme: ParamScheme) -> Result<Vec<(String, Encoding)>> {
    let mut out = Vec::with_capacity(placement.params.len());
    for q in &placement.params {
        let w = g.weight(&q.tensor).ok_or_else(|| Error::Graph { model: g.name.clone(), message: format!("parameter '{}' is not a constant", q.tensor) })?;
        let bad = w.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::NonFinite { op: "param_encodings", tensor: q.tensor.clone(), count: bad as u64 });
        }
        let (mins, maxs): (Vec<f32>, Vec<f32>) = channel_ranges(w, q.axis).into_iter().unzip();
        out.push((q.tensor.clone(), Encoding::from_ranges(&mins, &maxs, scheme.bitwidth, kind_for(q.symmetric, scheme.strict), q.axis)?));
    }
    Ok(out)
}

/// The quantize-dequantized weights under `encodings`, computed in one GPU submission.
pub fn quantize_weights(gpu: &Gpu, g: &Graph, encodings: &[(String, Encoding)]) -> Result<BTreeMap<String, Const>> {
    let mut enc = gpu.encoder();
    let mut outs: Vec<(String, GpuTensor)> = Vec::with_capacity(encodings.len());
    for (name, e) in encodings {
        let w = g.weight(name).ok_or_else(|| Error::Graph { model: g.name.clone(), message: format!("parameter '{name}' is not a constant") })?;
        let t = gpu.upload(&w.view())?;
        outs.push((name.clone(), fake_quant(&mut enc, gpu, &t, e)?));
    }
    let refs: Vec<&GpuTensor> = outs.iter().map(|(_, t)| t).collect();
    let bytes = gpu.submit_and_read(enc, &refs)?;
    outs.iter().zip(bytes).map(|((name, t), b)| Ok((name.clone(), Const::F32(crate::gpu::to_array::<f32>(t, &b)?)))).collect()
}
