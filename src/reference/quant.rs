//! CPU reference of fake quantization, its backward pass and quantize-to-codes.

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{Error, Result};
use crate::graph::attrs::QuantGrid;
use crate::reference::{channel_of, view};

fn per_channel(x: &ArrayViewD<'_, f32>, q: &QuantGrid, op: &'static str) -> Result<Vec<usize>> {
    q.validate(op)?;
    let v = view(x.shape(), q.axis, op)?;
    if v.channels != q.channels() {
        return Err(Error::ShapeMismatch {
            op,
            tensor: "x".into(),
            expected: format!("{} channels", q.channels()),
            got: x.shape().to_vec(),
        });
    }
    Ok((0..x.len()).map(|i| channel_of(&v, i)).collect())
}

/// One value through the fake-quant grid (the exact f32 operations of the kernel).
pub fn fake_quant_value(v: f32, scale: f32, inv_scale: f32, offset: f32, n: f32) -> f32 {
    if v.is_nan() {
        return v;
    }
    let q = ((v * inv_scale).round_ties_even() - offset).clamp(0.0, n);
    (q + offset) * scale
}

/// Fake-quant of `x` (standard layout order).
pub fn fake_quant(x: &ArrayViewD<'_, f32>, q: &QuantGrid) -> Result<ArrayD<f32>> {
    let ch = per_channel(x, q, "fake_quant")?;
    let t = q.table();
    let n = q.steps as f32;
    let data: Vec<f32> = x
        .as_standard_layout()
        .iter()
        .zip(&ch)
        .map(|(&v, &c)| fake_quant_value(v, t[c][0], t[c][1], t[c][2], n))
        .collect();
    Ok(ArrayD::from_shape_vec(x.shape(), data).expect("same shape"))
}

/// Integer codes of `x` (signed grid: `q + offset`, else `q`); NaN gets the code of 0.0.
pub fn quantize_codes(x: &ArrayViewD<'_, f32>, q: &QuantGrid) -> Result<ArrayD<i32>> {
    let ch = per_channel(x, q, "quantize_codes")?;
    let t = q.table();
    let n = q.steps as f32;
    let signed = q.signed_codes;
    let data: Vec<i32> = x
        .as_standard_layout()
        .iter()
        .zip(&ch)
        .map(|(&v, &c)| {
            let v = if v.is_nan() { 0.0 } else { v };
            let code = ((v * t[c][1]).round_ties_even() - t[c][2]).clamp(0.0, n) as i32;
            if signed {
                code + t[c][2] as i32
            } else {
                code
            }
        })
        .collect();
    Ok(ArrayD::from_shape_vec(x.shape(), data).expect("same shape"))
}

/// Gradients of fake-quant: (dL/dx, dL/dscale per channel, dL/doffset per channel), sums in f64.
pub fn fake_quant_backward(
    x: &ArrayViewD<'_, f32>,
    grad: &ArrayViewD<'_, f32>,
    q: &QuantGrid,
) -> Result<(ArrayD<f32>, Vec<f64>, Vec<f64>)> {
    let ch = per_channel(x, q, "fake_quant_backward")?;
    if grad.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op: "fake_quant_backward",
            tensor: "grad".into(),
            expected: format!("{:?}", x.shape()),
            got: grad.shape().to_vec(),
        });
    }
    let t = q.table();
    let n = q.steps as f32;
    let mut gs = vec![0f64; q.channels()];
    let mut go = vec![0f64; q.channels()];
    let gx: Vec<f32> = x
        .as_standard_layout()
        .iter()
        .zip(grad.as_standard_layout().iter())
        .zip(&ch)
        .map(|((&v, &g), &c)| {
            if v.is_nan() {
                return 0.0;
            }
            let (s, inv, o) = (t[c][0], t[c][1], t[c][2]);
            let tv = v * inv;
            let r = tv.round_ties_even();
            let qu = r - o;
            let inside = (0.0..=n).contains(&qu);
            gs[c] += (g * (r.clamp(o, o + n) - if inside { tv } else { 0.0 })) as f64;
            go[c] += if inside { 0.0 } else { (g * s) as f64 };
            if inside {
                g
            } else {
                0.0
            }
        })
        .collect();
    Ok((
        ArrayD::from_shape_vec(x.shape(), gx).expect("same shape"),
        gs,
        go,
    ))
}
