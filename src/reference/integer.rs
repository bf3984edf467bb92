//! CPU references of the integer simulation's kernels (`qconv`, `requant`, `qadd` and the
//! exact-division fake quantization), in plain integer and IEEE f32 arithmetic (`mul_add` is
//! a fused multiply-add).

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::graph::attrs::{AddGrids, Conv2d, IntGrid};
use crate::graph::shape::conv_output_shape;

/// `acc = sum(round(x * x_inv) * w)` in i64 (the kernel's i32 never overflows in its tests).
pub fn qconv(
    x: &ArrayViewD<'_, f32>,
    x_inv: f32,
    w: &ArrayViewD<'_, i32>,
    a: &Conv2d,
) -> ArrayD<i32> {
    let [n, cout, oh, ow] = conv_output_shape(x.shape(), w.shape(), a).expect("valid conv");
    let (cin, h, wd) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cin_g, kh, kw) = (w.shape()[1], w.shape()[2], w.shape()[3]);
    let cout_g = cout / a.groups;
    let mut y = ArrayD::zeros(IxDyn(&[n, cout, oh, ow]));
    for b in 0..n {
        for co in 0..cout {
            let g = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i64;
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * a.strides[0] + ky * a.dilations[0]) as isize
                                    - a.pads[0] as isize;
                                let ix = (ox * a.strides[1] + kx * a.dilations[1]) as isize
                                    - a.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let r = (x[[b, g * cin_g + ci, iy as usize, ix as usize]] * x_inv)
                                    .round_ties_even()
                                    as i64;
                                acc += r * w[[co, ci, ky, kx]] as i64;
                            }
                        }
                    }
                    debug_assert!(cin > 0);
                    y[[b, co, oy, ox]] = acc as i32;
                }
            }
        }
    }
    y
}

/// `clamp(round(f32(acc + bias[c]) * multiplier[c]), lo, hi) * scale`, channel `(i / inner) % c`.
pub fn requant(
    acc: &[i32],
    bias: &[i32],
    multiplier: &[f32],
    inner: usize,
    g: IntGrid,
) -> Vec<f32> {
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = (i / inner) % multiplier.len();
            // Through an integer, as a runtime's codes are (no negative zero).
            ((a + bias[c]) as f32 * multiplier[c])
                .round_ties_even()
                .clamp(g.lo, g.hi) as i32 as f32
                * g.scale
        })
        .collect()
}

/// onnxruntime's x86 QLinearAdd on dequantized inputs (see `shaders/quant.wgsl`).
pub fn qadd(a: &[f32], b: &[f32], g: AddGrids) -> Vec<f32> {
    let (ra, rb, k) = g.constants();
    let (ia, ib) = (1.0 / g.a.0, 1.0 / g.b.0);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let ca = (x * ia).round_ties_even() + g.a.1;
            let cb = (y * ib).round_ties_even() + g.b.1;
            let v = ca.mul_add(ra, cb.mul_add(rb, k));
            (v.round_ties_even().clamp(g.qmin, g.qmax) as i32 - g.c.1 as i32) as f32 * g.c.0
        })
        .collect()
}

/// Fake quantization rounding the IEEE quotient `x / scale` (per tensor).
pub fn fake_quant_divided(x: &[f32], scale: f32, offset: f32, n: f32) -> Vec<f32> {
    x.iter().map(|&v| if v.is_nan() { v } else { ((v / scale).round_ties_even() - offset).clamp(0.0, n) + offset } * scale).collect()
}
