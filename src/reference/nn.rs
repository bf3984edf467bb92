//! CPU references of the network kernels (conv, pooling, activations, broadcasting, row
//! reductions), f64 accumulation.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::graph::attrs::{Binary, Conv2d, Pool2d, Resize, Unary};
use crate::graph::shape::{
    broadcast_shape, conv_output_shape as conv_shape, conv_transpose_output_shape,
    pool_output_shape as pool_shape,
};

/// 2-D convolution, NCHW.
pub fn conv2d(
    x: &ArrayViewD<'_, f32>,
    w: &ArrayViewD<'_, f32>,
    b: Option<&ArrayViewD<'_, f32>>,
    a: &Conv2d,
) -> ArrayD<f32> {
    let [n, cout, oh, ow] = conv_shape(x.shape(), w.shape(), a).expect("valid conv");
    let (cin, h, wd) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let (kh, kw) = (w.shape()[2], w.shape()[3]);
    let cin_g = cin / a.groups;
    let cout_g = cout / a.groups;
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, cout, oh, ow]));
    for b_ in 0..n {
        for co in 0..cout {
            let g = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[[co]] as f64);
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            let iy = (oy * a.strides[0] + ky * a.dilations[0]) as isize
                                - a.pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * a.strides[1] + kx * a.dilations[1]) as isize
                                    - a.pads[1] as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                acc += x[[b_, g * cin_g + ci, iy as usize, ix as usize]] as f64
                                    * w[[co, ci, ky, kx]] as f64;
                            }
                        }
                    }
                    y[[b_, co, oy, ox]] = acc as f32;
                }
            }
        }
    }
    y
}

/// Max or average window pooling, NCHW.
pub fn pool2d(x: &ArrayViewD<'_, f32>, a: &Pool2d, max: bool) -> ArrayD<f32> {
    let [n, c, oh, ow] = pool_shape(x.shape(), a).expect("valid pool");
    let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, c, oh, ow]));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut m, mut s, mut cnt, mut cnt_pad) =
                        (f32::NEG_INFINITY, 0f64, 0usize, 0usize);
                    for ky in 0..a.kernel[0] {
                        let dil = a.dilations;
                        let iy = (oy * a.strides[0] + ky * dil[0]) as isize - a.pads[0] as isize;
                        for kx in 0..a.kernel[1] {
                            let ix =
                                (ox * a.strides[1] + kx * dil[1]) as isize - a.pads[1] as isize;
                            if iy < h + a.pads[2] as isize && ix < w + a.pads[3] as isize {
                                cnt_pad += 1;
                            }
                            if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                let v = x[[b, ch, iy as usize, ix as usize]];
                                m = if v.is_nan() || m.is_nan() {
                                    f32::NAN
                                } else {
                                    m.max(v)
                                };
                                s += v as f64;
                                cnt += 1;
                            }
                        }
                    }
                    let d = if a.count_include_pad { cnt_pad } else { cnt }.max(1);
                    y[[b, ch, oy, ox]] = if max { m } else { (s / d as f64) as f32 };
                }
            }
        }
    }
    y
}

pub(crate) fn erf(x: f64) -> f64 {
    // As the kernel: the Maclaurin series below |x| = 1/2, Abramowitz & Stegun 7.1.26 above
    // (|error| < 1.5e-7), in f64.
    if x.abs() < 0.5 {
        let x2 = x * x;
        let s = 1.0
            + x2 * (-1.0 / 3.0
                + x2 * (0.1 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0)))));
        return 2.0 / std::f64::consts::PI.sqrt() * x * s;
    }
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let poly = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    x.signum() * (1.0 - poly * (-x * x).exp())
}

/// ln(1 + e^x) without overflow.
pub(crate) fn softplus(v: f64) -> f64 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

/// One activation value.
pub fn unary_value(f: Unary, x: f32) -> f32 {
    let bool01 = |b: bool| if b { 1.0 } else { 0.0 };
    match f {
        Unary::IsNaN => return bool01(x.is_nan()),
        Unary::Not => return bool01(x == 0.0),
        Unary::IsInf { positive, negative } => {
            return bool01(x.is_infinite() && if x > 0.0 { positive } else { negative })
        }
        _ => {}
    }
    if x.is_nan() {
        return x;
    }
    let v = x as f64;
    (match f {
        Unary::Relu => v.max(0.0),
        Unary::Clip(lo, hi) => v.max(lo as f64).min(hi as f64),
        Unary::LeakyRelu(a) => {
            if v < 0.0 {
                v * a as f64
            } else {
                v
            }
        }
        Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Unary::HardSigmoid(a, b) => (a as f64 * v + b as f64).clamp(0.0, 1.0),
        Unary::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        Unary::Tanh => v.tanh(),
        Unary::Erf => erf(v),
        Unary::Gelu => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
        Unary::GeluTanh => {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        }
        Unary::Exp => v.exp(),
        Unary::Sqrt => v.sqrt(),
        Unary::Neg => -v,
        Unary::Abs => v.abs(),
        Unary::Sign => {
            if v == 0.0 {
                0.0
            } else {
                v.signum()
            }
        }
        Unary::Floor => v.floor(),
        Unary::Ceil => v.ceil(),
        Unary::Round => v.round_ties_even(),
        Unary::Reciprocal => 1.0 / v,
        Unary::Log => v.ln(),
        Unary::Softplus => softplus(v),
        Unary::Softsign => v / (1.0 + v.abs()),
        Unary::Elu(a) => {
            if v < 0.0 {
                a as f64 * v.exp_m1()
            } else {
                v
            }
        }
        Unary::Selu(a, g) => g as f64 * if v <= 0.0 { a as f64 * v.exp_m1() } else { v },
        Unary::Celu(a) => v.max(0.0) + (a as f64 * (v / a as f64).exp_m1()).min(0.0),
        Unary::Mish => v * softplus(v).tanh(),
        Unary::Shrink(b, l) => {
            if v < -(l as f64) {
                v + b as f64
            } else if v > l as f64 {
                v - b as f64
            } else {
                0.0
            }
        }
        Unary::ThresholdedRelu(a) => {
            if v > a as f64 {
                v
            } else {
                0.0
            }
        }
        Unary::Sin => return x.sin(),
        Unary::Cos => return x.cos(),
        Unary::Not | Unary::IsNaN | Unary::IsInf { .. } => unreachable!("answered above"),
    }) as f32
}

/// Cast's conversion of one value carried as f32 (`ops::elementwise::Convert`): toward zero
/// for integer types, 0/1 (NaN is true) for bool, unchanged for float.
pub fn convert_value(to: crate::graph::ElemType, x: f32) -> f32 {
    use crate::graph::ElemType;
    match to {
        ElemType::F32 => x,
        ElemType::Bool => {
            if x != 0.0 || x.is_nan() {
                1.0
            } else {
                0.0
            }
        }
        _ => x.trunc(),
    }
}

/// One binary op on two values (`trunc_div`: Div of integers, toward zero).
pub fn binary_value(op: Binary, p: f32, q: f32, trunc_div: bool) -> f32 {
    let bool01 = |b: bool| if b { 1.0 } else { 0.0 };
    match op {
        Binary::Add => p + q,
        Binary::Sub => p - q,
        Binary::Mul => p * q,
        Binary::Div if trunc_div => (p / q).trunc(),
        Binary::Div => p / q,
        Binary::PRelu => {
            if p < 0.0 {
                p * q
            } else {
                p
            }
        }
        Binary::Max if p.is_nan() || q.is_nan() => f32::NAN,
        Binary::Min if p.is_nan() || q.is_nan() => f32::NAN,
        Binary::Max => p.max(q),
        Binary::Min => p.min(q),
        Binary::Pow => p.powf(q),
        Binary::Equal => bool01(p == q),
        Binary::Less => bool01(p < q),
        Binary::Greater => bool01(p > q),
        Binary::LessOrEqual => bool01(p <= q),
        Binary::GreaterOrEqual => bool01(p >= q),
        Binary::And => bool01(p != 0.0 && q != 0.0),
        Binary::Or => bool01(p != 0.0 || q != 0.0),
        Binary::Xor => bool01((p != 0.0) != (q != 0.0)),
        Binary::Mod { fmod } => {
            let r = p as f64 % q as f64;
            if fmod {
                return r as f32;
            }
            // NumPy's mod: the sign of the divisor, -0 for a zero remainder of a negative one.
            // The remainder is exact in f32; the adjustment rounds as f32 does.
            let r = r as f32;
            let r = if r != 0.0 && (r < 0.0) != (q < 0.0) {
                r + q
            } else {
                r
            };
            if r == 0.0 {
                0.0f32.copysign(q)
            } else {
                r
            }
        }
    }
}

/// Local response normalization across channels (axis 1) of `[n, c, ...]`, in f64:
/// `x / (bias + alpha / size * sum x^2)^beta` over channels `c - (size - 1) / 2 ..= c +
/// ceil((size - 1) / 2)`.
pub fn lrn(x: &ArrayViewD<'_, f32>, size: usize, alpha: f32, beta: f32, bias: f32) -> ArrayD<f32> {
    let x = x.as_standard_layout();
    let s = x.shape().to_vec();
    let (c, inner) = (s[1], s[2..].iter().product::<usize>());
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let v = x.as_slice().expect("standard layout");
    let out: Vec<f32> = (0..v.len())
        .map(|i| {
            let ch = (i / inner) % c;
            let base = i - ch * inner;
            let sum: f64 = (ch.saturating_sub(lo)..=(ch + hi).min(c - 1))
                .map(|k| (v[base + k * inner] as f64).powi(2))
                .sum();
            (v[i] as f64 / (bias as f64 + alpha as f64 / size as f64 * sum).powf(beta as f64))
                as f32
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&s), out).expect("same shape")
}

/// Broadcasting binary op (Div of floats; `binary_trunc` divides integers).
pub fn binary(op: Binary, a: &ArrayViewD<'_, f32>, b: &ArrayViewD<'_, f32>) -> ArrayD<f32> {
    let out = broadcast_shape(a.shape(), b.shape()).expect("broadcastable");
    let (a, b) = (
        a.broadcast(IxDyn(&out)).unwrap(),
        b.broadcast(IxDyn(&out)).unwrap(),
    );
    let data: Vec<f32> = a
        .iter()
        .zip(b.iter())
        .map(|(&p, &q)| binary_value(op, p, q, false))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&out), data).expect("shape")
}

/// Broadcasting Div of integers carried as f32: the quotient toward zero.
pub fn div_trunc(a: &ArrayViewD<'_, f32>, b: &ArrayViewD<'_, f32>) -> ArrayD<f32> {
    let out = broadcast_shape(a.shape(), b.shape()).expect("broadcastable");
    let (a, b) = (
        a.broadcast(IxDyn(&out)).unwrap(),
        b.broadcast(IxDyn(&out)).unwrap(),
    );
    let data: Vec<f32> = a
        .iter()
        .zip(b.iter())
        .map(|(&p, &q)| binary_value(Binary::Div, p, q, true))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&out), data).expect("shape")
}

/// Softmax over consecutive rows of `len` elements.
pub fn softmax_rows(x: &[f32], len: usize) -> Vec<f32> {
    x.chunks(len)
        .flat_map(|row| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / s) as f32)
        })
        .collect()
}

/// Mean of consecutive rows of `len` elements.
pub fn mean_rows(x: &[f32], len: usize) -> Vec<f32> {
    x.chunks(len)
        .map(|r| (r.iter().map(|&v| v as f64).sum::<f64>() / len as f64) as f32)
        .collect()
}

/// Transposed convolution, NCHW, weight `[cin, cout / groups, kh, kw]` (scatter form).
pub fn conv_transpose2d(
    x: &ArrayViewD<'_, f32>,
    w: &ArrayViewD<'_, f32>,
    b: Option<&ArrayViewD<'_, f32>>,
    a: &Conv2d,
    output_padding: [usize; 2],
) -> ArrayD<f32> {
    let [n, cout, oh, ow] =
        conv_transpose_output_shape(x.shape(), w.shape(), a, output_padding).expect("valid");
    let (cin, h, wd) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let (cout_g, kh, kw) = (w.shape()[1], w.shape()[2], w.shape()[3]);
    let cin_g = cin / a.groups;
    let mut acc = vec![0f64; n * cout * oh * ow];
    for b_ in 0..n {
        for ci in 0..cin {
            let g = ci / cin_g;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[[b_, ci, iy, ix]] as f64;
                    for c in 0..cout_g {
                        let co = g * cout_g + c;
                        for ky in 0..kh {
                            let oy = (iy * a.strides[0] + ky * a.dilations[0]) as isize
                                - a.pads[0] as isize;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ox = (ix * a.strides[1] + kx * a.dilations[1]) as isize
                                    - a.pads[1] as isize;
                                if ox < 0 || ox >= ow as isize {
                                    continue;
                                }
                                acc[((b_ * cout + co) * oh + oy as usize) * ow + ox as usize] +=
                                    xv * w[[ci, c, ky, kx]] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let mut y = ArrayD::from_shape_vec(
        IxDyn(&[n, cout, oh, ow]),
        acc.into_iter().map(|v| v as f32).collect(),
    )
    .expect("shape");
    if let Some(b) = b {
        for (co, mut lane) in y.axis_iter_mut(ndarray::Axis(1)).enumerate() {
            lane.mapv_inplace(|v| v + b[[co]]);
        }
    }
    y
}

/// The taps of one axis of a filtered Resize ([`Resize::filtered`]) at source coordinate `c`:
/// (input index, weight), as ONNX's reference computes them (f64): taps at c0 + i for i in
/// [i0, 2 - i0) with c = c0 + r, r in (0, 1], weights f((i - r) s) of the cubic convolution
/// kernel or the triangle, s the scale of an antialiased downscale (else 1); indices outside
/// the input read the edge, or weigh 0 with exclude_outside; weights normalised with antialias
/// or exclude_outside.
fn filter_taps(r: Resize, c: f32, scale: f32, len: usize) -> Vec<(usize, f64)> {
    let a = r.cubic_a as f64;
    let f = |t: f64| {
        let t = t.abs();
        if r.mode == 2 {
            if t <= 1.0 {
                ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
            } else if t < 2.0 {
                ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
            } else {
                0.0
            }
        } else {
            (1.0 - t).max(0.0)
        }
    };
    let s = if r.antialias && scale < 1.0 {
        scale as f64
    } else {
        1.0
    };
    let support = if r.mode == 2 { 2.0 } else { 1.0 };
    let c = c as f64;
    let (mut c0, mut ratio) = (c.floor(), c - c.floor());
    if ratio == 0.0 {
        c0 -= 1.0;
        ratio = 1.0;
    }
    let i0 = (-support / s).floor() as i64 + 1;
    let mut taps: Vec<(usize, f64)> = (i0..2 - i0)
        .map(|i| {
            let at = c0 as i64 + i;
            let outside = at < 0 || at >= len as i64;
            let wt = if r.exclude_outside && outside {
                0.0
            } else {
                f((i as f64 - ratio) * s)
            };
            (at.clamp(0, len as i64 - 1) as usize, wt)
        })
        .collect();
    if r.antialias || r.exclude_outside {
        let sum: f64 = taps.iter().map(|t| t.1).sum();
        taps.iter_mut().for_each(|t| t.1 /= sum);
    }
    taps
}

/// ONNX Resize of the spatial dims (nearest, linear or cubic), as the kernel.
pub fn resize(
    x: &ArrayViewD<'_, f32>,
    r: Resize,
    scales: [f32; 2],
    out: [usize; 2],
) -> ArrayD<f32> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let src = |o: usize, out_len: usize, in_len: usize, axis: usize| -> f32 {
        let of = o as f32;
        let scale = scales[axis];
        match r.coordinates {
            1 => of / scale,
            5 => {
                let (r0, r1) = (r.roi[2 * axis], r.roi[2 * axis + 1]);
                if out_len <= 1 {
                    0.5 * (r0 + r1) * (in_len - 1) as f32
                } else {
                    r0 * (in_len - 1) as f32
                        + of * (r1 - r0) * (in_len - 1) as f32 / (out_len - 1) as f32
                }
            }
            2 => {
                if out_len <= 1 {
                    0.0
                } else {
                    // ONNX's length_resized is in_len * scale, unrounded (out_len when the
                    // model gives sizes).
                    of * (in_len - 1) as f32 / (in_len as f32 * scale - 1.0)
                }
            }
            3 => {
                if out_len <= 1 {
                    0.0
                } else {
                    (of + 0.5) / scale - 0.5
                }
            }
            4 => {
                let adj = out_len as f32 / (in_len as f32 * scale);
                in_len as f32 * 0.5 * (1.0 - adj) + (of + 0.5) / scale - 0.5
            }
            _ => (of + 0.5) / scale - 0.5,
        }
    };
    let nearest = |v: f32, len: usize| -> usize {
        let half = v.fract() == 0.5;
        let r = match r.nearest {
            1 => {
                if half {
                    v.ceil()
                } else {
                    v.round_ties_even()
                }
            }
            2 => v.floor(),
            3 => v.ceil(),
            _ => {
                if half {
                    v.floor()
                } else {
                    v.round_ties_even()
                }
            }
        };
        r.clamp(0.0, (len - 1) as f32) as usize
    };
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[n, c, out[0], out[1]]));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..out[0] {
                for ox in 0..out[1] {
                    let (sy, sx) = (src(oy, out[0], h, 0), src(ox, out[1], w, 1));
                    let outside =
                        sy < 0.0 || sy > (h - 1) as f32 || sx < 0.0 || sx > (w - 1) as f32;
                    y[[b, ch, oy, ox]] = if r.coordinates == 5 && outside {
                        r.extrapolation
                    } else if r.mode == 0 {
                        x[[b, ch, nearest(sy, h), nearest(sx, w)]]
                    } else if r.filtered() {
                        let (ty, tx) = (
                            filter_taps(r, sy, scales[0], h),
                            filter_taps(r, sx, scales[1], w),
                        );
                        let mut acc = 0.0f64;
                        for &(iy, wy) in &ty {
                            for &(ix, wx) in &tx {
                                acc += wy * wx * x[[b, ch, iy, ix]] as f64;
                            }
                        }
                        acc as f32
                    } else {
                        let (cy, cx) =
                            (sy.clamp(0.0, (h - 1) as f32), sx.clamp(0.0, (w - 1) as f32));
                        let (y0, x0) = (cy.floor() as usize, cx.floor() as usize);
                        let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                        let (fy, fx) = (cy - y0 as f32, cx - x0 as f32);
                        let lerp = |a: f32, b: f32, t: f32| a * (1.0 - t) + b * t;
                        lerp(
                            lerp(x[[b, ch, y0, x0]], x[[b, ch, y0, x1]], fx),
                            lerp(x[[b, ch, y1, x0]], x[[b, ch, y1, x1]], fx),
                            fy,
                        )
                    };
                }
            }
        }
    }
    y
}
