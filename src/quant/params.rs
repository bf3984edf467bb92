//! Parameter quantization: encodings of every weight quantizer (exact per-channel ranges or
//! tf-enhanced), and the weights' codes and quantize-dequantized values, computed once.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis};

use crate::error::{Error, Result};
use crate::graph::ir::{Const, Graph};
use crate::quant::analyzers::{tf_enhanced, Pdf};
use crate::quant::encoding::{Encoding, QuantKind};
use crate::quant::placement::Placement;

/// How a parameter quantizer picks its range.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ParamRange {
    /// The exact min/max of each channel (AIMET "tf").
    #[default]
    MinMax,
    /// AIMET's tf-enhanced search over each channel's density (AIMET applies the calibration
    /// scheme to parameters too).
    TfEnhanced { gamma: f32 },
}

/// How parameters are quantized.
#[derive(Clone, Copy, Debug)]
pub struct ParamScheme {
    pub bitwidth: u32,
    /// Symmetric grids use the strict form (no most-negative code).
    pub strict: bool,
    /// Symmetric grids of tensors without negative values are unsigned (offset 0).
    pub unsigned: bool,
    pub range: ParamRange,
}

/// The grid of one quantizer from the config's `is_symmetric`, `strict_symmetric` and
/// `unsigned_symmetric` (an unsigned grid falls back to signed where values go negative).
pub fn kind_for(symmetric: bool, strict: bool, unsigned: bool) -> QuantKind {
    match (symmetric, strict, unsigned) {
        (false, _, _) => QuantKind::Asymmetric,
        (true, _, true) => QuantKind::UnsignedSymmetric,
        (true, false, false) => QuantKind::SignedSymmetric,
        (true, true, false) => QuantKind::StrictSymmetric,
    }
}

/// A weight's per-output-channel (min, max), with its name.
pub type WeightRanges = (String, Vec<(f32, f32)>);

/// (min, max) of each slice along `axis` (one pair for the whole tensor when `None`).
pub fn channel_ranges(w: &ndarray::ArrayD<f32>, axis: Option<usize>) -> Vec<(f32, f32)> {
    let range = |it: &mut dyn Iterator<Item = &f32>| {
        it.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    };
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
            let (lo, hi) = c
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            [lo, hi, mean as f32, var.sqrt() as f32]
        })
        .collect()
}

/// Encodings for every parameter quantizer, per channel along the quantizer's axis: from the
/// weights' exact min/max, or tf-enhanced's search over each channel's values. Non-finite
/// weights are an error naming the tensor.
pub fn param_encodings(
    g: &Graph,
    placement: &Placement,
    scheme: ParamScheme,
) -> Result<Vec<(String, Encoding)>> {
    let mut out = Vec::with_capacity(placement.params.len());
    for q in &placement.params {
        let w = g.weight(&q.tensor).ok_or_else(|| Error::Graph {
            model: g.name.clone(),
            message: format!("parameter '{}' is not a constant", q.tensor),
        })?;
        let bad = w.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::NonFinite {
                op: "param_encodings",
                tensor: q.tensor.clone(),
                count: bad as u64,
            });
        }
        let kind = kind_for(q.symmetric, scheme.strict, scheme.unsigned);
        let e = match scheme.range {
            ParamRange::MinMax => {
                let (mins, maxs): (Vec<f32>, Vec<f32>) =
                    channel_ranges(w, q.axis).into_iter().unzip();
                Encoding::from_ranges(&mins, &maxs, scheme.bitwidth, kind, q.axis)?
            }
            ParamRange::TfEnhanced { gamma } => {
                let slices: Vec<Vec<f32>> = match q.axis {
                    Some(a) => w
                        .axis_iter(Axis(a))
                        .map(|c| c.iter().copied().collect())
                        .collect(),
                    None => vec![w.iter().copied().collect()],
                };
                let (scale, offset) = slices
                    .iter()
                    .map(|c| tf_enhanced(Pdf::of(c).as_ref(), scheme.bitwidth, kind, gamma))
                    .unzip();
                let e = Encoding {
                    bitwidth: scheme.bitwidth,
                    kind,
                    axis: q.axis,
                    scale,
                    offset,
                };
                e.validate("param_encodings")?;
                e
            }
        };
        out.push((q.tensor.clone(), e));
    }
    Ok(out)
}

/// Applies `f(value, channel)` to every value of `x`, channels along `axis` (one for `None`).
fn map_channels(x: &mut ArrayD<f32>, axis: Option<usize>, f: impl Fn(f32, usize) -> f32) {
    match axis {
        Some(a) => {
            for (c, mut lane) in x.axis_iter_mut(Axis(a)).enumerate() {
                lane.mapv_inplace(|v| f(v, c));
            }
        }
        None => x.mapv_inplace(|v| f(v, 0)),
    }
}

/// AIMET's grid codes `q` in [0, N] of a weight under its encoding (per channel along the
/// encoding's axis): `q = clamp(floor(w / scale - offset + 0.5), 0, N)` in f32 with a true
/// division, ties up. Weights are quantized once, on the host, so the simulated and exported
/// weights are AIMET's bit for bit (a GPU's division may be off by an ULP, and one weight on
/// the other side of a rounding edge moves a layer's outputs measurably).
pub fn weight_codes(w: &ArrayD<f32>, e: &Encoding) -> Result<ArrayD<f32>> {
    e.validate("weight_codes")?;
    if let Some(a) = e.axis {
        if a >= w.ndim() || w.shape()[a] != e.channels() {
            return Err(Error::ShapeMismatch {
                op: "weight_codes",
                tensor: "weight".into(),
                expected: format!("{} channels on axis {a}", e.channels()),
                got: w.shape().to_vec(),
            });
        }
    }
    let n = e.steps() as f32;
    let mut q = w.clone();
    map_channels(&mut q, e.axis, |v, c| {
        (v / e.scale[c] - e.offset[c] + 0.5).floor().clamp(0.0, n)
    });
    Ok(q)
}

/// The integer weights an export stores: codes on the signed grid (`q + offset`) for signed
/// symmetric encodings, else `q`.
pub fn stored_weight_codes(w: &ArrayD<f32>, e: &Encoding) -> Result<ArrayD<i32>> {
    let mut q = weight_codes(w, e)?;
    if e.signed_codes() {
        map_channels(&mut q, e.axis, |v, c| v + e.offset[c]);
    }
    Ok(q.mapv(|v| v as i32))
}

/// The quantize-dequantized weights `(q + offset) * scale` under `encodings` (AIMET's codes).
pub fn quantize_weights(
    g: &Graph,
    encodings: &[(String, Encoding)],
) -> Result<BTreeMap<String, Const>> {
    let mut out = BTreeMap::new();
    for (name, e) in encodings {
        let w = g.weight(name).ok_or_else(|| Error::Graph {
            model: g.name.clone(),
            message: format!("parameter '{name}' is not a constant"),
        })?;
        let mut q = weight_codes(w, e)?;
        map_channels(&mut q, e.axis, |v, c| (v + e.offset[c]) * e.scale[c]);
        out.insert(name.clone(), Const::F32(q));
    }
    Ok(out)
}
