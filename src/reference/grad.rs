//! CPU references of the backward kernels, the losses and the optimizer steps (f64). Written
//! straight from the forward definitions in `nn`, one loop per formula, sharing nothing with
//! the GPU code.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::graph::attrs::{Binary, Conv2d, Pool2d, Unary};
use crate::graph::shape::{broadcast_shape, conv_output_shape, pool_output_shape};

/// Gradients of a 2-D convolution: (dx, dw, db) for output gradient `dy`.
pub fn conv2d_grad(
    x: &ArrayViewD<'_, f32>,
    w: &ArrayViewD<'_, f32>,
    dy: &ArrayViewD<'_, f32>,
    a: &Conv2d,
) -> (ArrayD<f64>, ArrayD<f64>, Vec<f64>) {
    let [n, cout, oh, ow] = conv_output_shape(x.shape(), w.shape(), a).expect("valid conv");
    let (cin, h, wd) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let (kh, kw) = (w.shape()[2], w.shape()[3]);
    let (cin_g, cout_g) = (cin / a.groups, cout / a.groups);
    let mut dx = ArrayD::<f64>::zeros(IxDyn(x.shape()));
    let mut dw = ArrayD::<f64>::zeros(IxDyn(w.shape()));
    let mut db = vec![0f64; cout];
    for b in 0..n {
        for co in 0..cout {
            let g = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[[b, co, oy, ox]] as f64;
                    db[co] += d;
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
                                let xi = [b, g * cin_g + ci, iy as usize, ix as usize];
                                dx[xi] += d * w[[co, ci, ky, kx]] as f64;
                                dw[[co, ci, ky, kx]] += d * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// d activation / dx at `x` (the forward's definition; kinks as the GPU documents them).
pub fn unary_derivative(f: Unary, x: f32) -> f64 {
    let v = x as f64;
    match f {
        Unary::Relu => (v > 0.0) as u8 as f64,
        Unary::Clip(lo, hi) => (v > lo as f64 && v < hi as f64) as u8 as f64,
        Unary::LeakyRelu(a) => {
            if v < 0.0 {
                a as f64
            } else {
                1.0
            }
        }
        Unary::Sigmoid => {
            let s = 1.0 / (1.0 + (-v).exp());
            s * (1.0 - s)
        }
        Unary::HardSigmoid(a, b) => {
            let t = a as f64 * v + b as f64;
            if t > 0.0 && t < 1.0 {
                a as f64
            } else {
                0.0
            }
        }
        Unary::HardSwish => {
            if v < -3.0 {
                0.0
            } else if v > 3.0 {
                1.0
            } else {
                v / 3.0 + 0.5
            }
        }
        Unary::Tanh => 1.0 - v.tanh().powi(2),
        Unary::Erf => 2.0 / std::f64::consts::PI.sqrt() * (-v * v).exp(),
        Unary::Gelu => {
            let cdf = 0.5 * (1.0 + crate::reference::nn::erf(v / std::f64::consts::SQRT_2));
            cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        Unary::Exp => v.exp(),
        Unary::Sqrt => 0.5 / v.sqrt(),
        Unary::Neg => -1.0,
        Unary::Abs => {
            if v == 0.0 {
                0.0
            } else {
                v.signum()
            }
        }
        Unary::Sign | Unary::Floor | Unary::Ceil | Unary::Round => 0.0,
        Unary::Reciprocal => -1.0 / (v * v),
        Unary::Log => 1.0 / v,
        Unary::Softplus => 1.0 / (1.0 + (-v).exp()),
        Unary::Softsign => 1.0 / (1.0 + v.abs()).powi(2),
        Unary::Elu(a) => {
            if v < 0.0 {
                a as f64 * v.exp()
            } else {
                1.0
            }
        }
        Unary::Selu(a, g) => g as f64 * if v <= 0.0 { a as f64 * v.exp() } else { 1.0 },
        Unary::Celu(a) => {
            if v < 0.0 {
                (v / a as f64).exp()
            } else {
                1.0
            }
        }
        Unary::Mish => {
            let t = crate::reference::nn::softplus(v).tanh();
            t + v * (1.0 - t * t) / (1.0 + (-v).exp())
        }
        Unary::Shrink(_, l) => (v.abs() > l as f64) as u8 as f64,
        Unary::ThresholdedRelu(a) => (v > a as f64) as u8 as f64,
        Unary::Sin => v.cos(),
        Unary::GeluTanh => 0.0,
        Unary::Cos => -v.sin(),
        Unary::Not | Unary::IsNaN | Unary::IsInf { .. } => 0.0,
    }
}

/// `dy * f'(x)` elementwise.
pub fn unary_grad(f: Unary, x: &ArrayViewD<'_, f32>, dy: &ArrayViewD<'_, f32>) -> ArrayD<f64> {
    ndarray::Zip::from(x)
        .and(dy)
        .map_collect(|&x, &d| d as f64 * unary_derivative(f, x))
}

/// Sums `g` (of the broadcast shape) down to `shape` (right-aligned, size-1 dims summed).
fn reduce_to(g: &ArrayD<f64>, shape: &[usize]) -> ArrayD<f64> {
    let out = g.shape().to_vec();
    let lead = out.len() - shape.len();
    let mut r = ArrayD::<f64>::zeros(IxDyn(shape));
    for (idx, &v) in g.indexed_iter() {
        let at: Vec<usize> = (0..shape.len())
            .map(|d| if shape[d] == 1 { 0 } else { idx[d + lead] })
            .collect();
        r[IxDyn(&at)] += v;
    }
    r
}

fn real_pow(a: f64, b: f64) -> f64 {
    if a >= 0.0 || b.fract() != 0.0 {
        a.powf(b)
    } else {
        let m = (-a).powf(b);
        if b.abs() % 2.0 == 1.0 {
            -m
        } else {
            m
        }
    }
}

/// (da, db) of a broadcasting binary op for output gradient `dy`. Max/Min split ties evenly.
pub fn binary_grad(
    op: Binary,
    a: &ArrayViewD<'_, f32>,
    b: &ArrayViewD<'_, f32>,
    dy: &ArrayViewD<'_, f32>,
) -> (ArrayD<f64>, ArrayD<f64>) {
    let out = broadcast_shape(a.shape(), b.shape()).expect("broadcastable");
    let (ab, bb) = (
        a.broadcast(IxDyn(&out)).unwrap(),
        b.broadcast(IxDyn(&out)).unwrap(),
    );
    let mut ga = ArrayD::<f64>::zeros(IxDyn(&out));
    let mut gb = ArrayD::<f64>::zeros(IxDyn(&out));
    for (((ga, gb), (&p, &q)), &d) in ga
        .iter_mut()
        .zip(gb.iter_mut())
        .zip(ab.iter().zip(bb.iter()))
        .zip(dy.iter())
    {
        let (p, q, d) = (p as f64, q as f64, d as f64);
        let (x, y) = match op {
            Binary::Add => (d, d),
            Binary::Sub => (d, -d),
            Binary::Mul => (d * q, d * p),
            Binary::Div => (d / q, -d * p / (q * q)),
            Binary::PRelu => {
                if p < 0.0 {
                    (d * q, d * p)
                } else {
                    (d, 0.0)
                }
            }
            Binary::Max | Binary::Min => {
                let a_wins = if op == Binary::Max { p > q } else { p < q };
                if p == q {
                    (0.5 * d, 0.5 * d)
                } else if a_wins {
                    (d, 0.0)
                } else {
                    (0.0, d)
                }
            }
            Binary::Pow => (
                d * q * real_pow(p, q - 1.0),
                if p > 0.0 { d * p.powf(q) * p.ln() } else { 0.0 },
            ),
            // Piecewise constant in both operands (the executor refuses their backward).
            _ => (0.0, 0.0),
        };
        *ga = x;
        *gb = y;
    }
    (reduce_to(&ga, a.shape()), reduce_to(&gb, b.shape()))
}

/// Gradient of max or average pooling (max: to the first maximum of each window in scan
/// order; average: dy / the forward's count).
pub fn pool2d_grad(
    x: &ArrayViewD<'_, f32>,
    dy: &ArrayViewD<'_, f32>,
    a: &Pool2d,
    max: bool,
) -> ArrayD<f64> {
    let [n, c, oh, ow] = pool_output_shape(x.shape(), a).expect("valid pool");
    let (h, w) = (x.shape()[2] as isize, x.shape()[3] as isize);
    let dil = if max { a.dilations } else { [1, 1] };
    let mut dx = ArrayD::<f64>::zeros(IxDyn(x.shape()));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut inside = Vec::new();
                    let mut cnt_pad = 0usize;
                    for ky in 0..a.kernel[0] {
                        let iy = (oy * a.strides[0] + ky * dil[0]) as isize - a.pads[0] as isize;
                        for kx in 0..a.kernel[1] {
                            let ix =
                                (ox * a.strides[1] + kx * dil[1]) as isize - a.pads[1] as isize;
                            if iy < h + a.pads[2] as isize && ix < w + a.pads[3] as isize {
                                cnt_pad += 1;
                            }
                            if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                inside.push((iy as usize, ix as usize));
                            }
                        }
                    }
                    let d = dy[[b, ch, oy, ox]] as f64;
                    if max {
                        let mut best: Option<(usize, usize)> = None;
                        for &(iy, ix) in &inside {
                            let v = x[[b, ch, iy, ix]];
                            let better = match best {
                                None => true,
                                Some((by, bx)) => {
                                    let m = x[[b, ch, by, bx]];
                                    (v > m && !m.is_nan()) || (v.is_nan() && !m.is_nan())
                                }
                            };
                            if better {
                                best = Some((iy, ix));
                            }
                        }
                        if let Some((iy, ix)) = best {
                            dx[[b, ch, iy, ix]] += d;
                        }
                    } else {
                        let cnt = if a.count_include_pad {
                            cnt_pad
                        } else {
                            inside.len()
                        }
                        .max(1);
                        for &(iy, ix) in &inside {
                            dx[[b, ch, iy, ix]] += d / cnt as f64;
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Softmax gradient along an axis of `len` elements with stride `inner`, from the output `y`.
pub fn softmax_grad(y: &[f32], dy: &[f32], len: usize, inner: usize) -> Vec<f64> {
    let mut dx = vec![0f64; y.len()];
    for row in 0..y.len() / len {
        let base = (row / inner) * len * inner + row % inner;
        let at = |k: usize| base + k * inner;
        let dot: f64 = (0..len).map(|k| dy[at(k)] as f64 * y[at(k)] as f64).sum();
        for k in 0..len {
            dx[at(k)] = y[at(k)] as f64 * (dy[at(k)] as f64 - dot);
        }
    }
    dx
}

/// What a loss compares outputs with (mirrors `ops::train::LossKind`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    CrossEntropy,
    Distill { temperature: f64 },
    Mse,
}

/// Per-row losses and the gradient of their sum times `scale` for rows of `len` outputs `s`;
/// `t` holds class indices (cross-entropy) or teacher values.
pub fn loss(kind: Loss, s: &[f32], t: &[f32], len: usize, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let rows = s.len() / len;
    let mut losses = Vec::with_capacity(rows);
    let mut ds = vec![0f64; s.len()];
    let log_softmax = |v: &[f32], inv_t: f64| -> Vec<f64> {
        let m = v.iter().map(|&x| x as f64 * inv_t).fold(f64::MIN, f64::max);
        let z: f64 = v.iter().map(|&x| (x as f64 * inv_t - m).exp()).sum();
        v.iter().map(|&x| x as f64 * inv_t - m - z.ln()).collect()
    };
    for r in 0..rows {
        let row = &s[r * len..(r + 1) * len];
        let d = &mut ds[r * len..(r + 1) * len];
        match kind {
            Loss::CrossEntropy => {
                let label = t[r] as usize;
                let ls = log_softmax(row, 1.0);
                losses.push(-ls[label]);
                for k in 0..len {
                    d[k] = (ls[k].exp() - (k == label) as u8 as f64) * scale;
                }
            }
            Loss::Distill { temperature } => {
                let ls = log_softmax(row, 1.0 / temperature);
                let lt = log_softmax(&t[r * len..(r + 1) * len], 1.0 / temperature);
                let kl: f64 = (0..len).map(|k| lt[k].exp() * (lt[k] - ls[k])).sum();
                losses.push(temperature * temperature * kl);
                for k in 0..len {
                    d[k] = temperature * (ls[k].exp() - lt[k].exp()) * scale;
                }
            }
            Loss::Mse => {
                let tr = &t[r * len..(r + 1) * len];
                losses.push(
                    (0..len)
                        .map(|k| (row[k] as f64 - tr[k] as f64).powi(2))
                        .sum(),
                );
                for k in 0..len {
                    d[k] = 2.0 * (row[k] as f64 - tr[k] as f64) * scale;
                }
            }
        }
    }
    (losses, ds)
}

/// One SGD step (PyTorch's, dampening 0) on `p` with gradient `g` and momentum buffer `m`.
pub fn sgd_step(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
) {
    for i in 0..p.len() {
        let mut d = g[i] + weight_decay * p[i];
        if momentum != 0.0 {
            m[i] = momentum * m[i] + d;
            d = if nesterov { d + momentum * m[i] } else { m[i] };
        }
        p[i] -= lr * d;
    }
}

/// One Adam (or AdamW, `decoupled`) step number `t` (from 1).
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    t: u32,
    lr: f64,
    (beta1, beta2, eps): (f64, f64, f64),
    weight_decay: f64,
    decoupled: bool,
) {
    let (b1, b2) = (1.0 - beta1.powi(t as i32), 1.0 - beta2.powi(t as i32));
    for i in 0..p.len() {
        let mut gi = g[i];
        if decoupled {
            p[i] *= 1.0 - lr * weight_decay;
        } else {
            gi += weight_decay * p[i];
        }
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
        p[i] -= lr * (m[i] / b1) / ((v[i] / b2).sqrt() + eps);
    }
}

/// AdaRound's soft rounding of one weight: its rectified-sigmoid `h(a)` and the value
/// `(clamp(floor + h - offset, 0, levels) + offset) * scale`.
pub fn soft_round(a: f64, floor: f64, scale: f64, offset: f64, levels: f64) -> (f64, f64) {
    const ZETA: f64 = 1.1;
    const GAMMA: f64 = -0.1;
    let h = (1.0 / (1.0 + (-a).exp()) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0);
    let q = (floor + h - offset).clamp(0.0, levels);
    (h, (q + offset) * scale)
}

/// `dL/da` of one soft-rounded weight for `L = dw * w(a) + reg * (1 - |2h(a) - 1|^beta)`,
/// the derivative of every clamp taken as zero where it holds (written from the chain rule).
#[allow(clippy::too_many_arguments)]
pub fn soft_round_grad(
    a: f64,
    floor: f64,
    scale: f64,
    offset: f64,
    levels: f64,
    dw: f64,
    beta: f64,
    reg: f64,
) -> f64 {
    const ZETA: f64 = 1.1;
    const GAMMA: f64 = -0.1;
    let s = 1.0 / (1.0 + (-a).exp());
    let pre = s * (ZETA - GAMMA) + GAMMA;
    if !(0.0..=1.0).contains(&pre) {
        return 0.0;
    }
    let dh_da = s * (1.0 - s) * (ZETA - GAMMA);
    let u = floor + pre - offset;
    let dw_dh = if (0.0..=levels).contains(&u) {
        scale
    } else {
        0.0
    };
    let t = 2.0 * pre - 1.0;
    let dreg_dh = -reg * beta * t.abs().powf(beta - 1.0) * t.signum() * 2.0;
    (dw * dw_dh + dreg_dh) * dh_da
}

/// Gradient of [`crate::reference::nn::resize`] (`x` of `x_shape` to `dy`'s spatial size):
/// Resize is linear in its input, so `dx[k]` is the forward of the k-th unit input dotted with
/// `dy`, summed in f64.
pub fn resize_grad(
    x_shape: &[usize],
    dy: &ArrayViewD<'_, f32>,
    r: crate::graph::attrs::Resize,
    scales: [f32; 2],
) -> ArrayD<f64> {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let mut dx = ArrayD::<f64>::zeros(IxDyn(x_shape));
    // The taps of one plane are the same for every (n, c): find them on a 1 x 1 plane.
    for iy in 0..h {
        for ix in 0..w {
            let mut unit = ArrayD::<f32>::zeros(IxDyn(&[1, 1, h, w]));
            unit[[0, 0, iy, ix]] = 1.0;
            let y = crate::reference::nn::resize(&unit.view(), r, scales, [oh, ow]);
            for b in 0..x_shape[0] {
                for c in 0..x_shape[1] {
                    let mut acc = 0f64;
                    for oy in 0..oh {
                        for ox in 0..ow {
                            acc += y[[0, 0, oy, ox]] as f64 * dy[[b, c, oy, ox]] as f64;
                        }
                    }
                    dx[[b, c, iy, ix]] = acc;
                }
            }
        }
    }
    dx
}
