//! Backward kernels (`ops::grad`) against their f64 CPU references (`reference::grad`), and
//! the references against central finite differences of the forward references
//! (`reference::nn`): for a fixed random output gradient `r` the loss is
//! `L = sum(forward(x) * r)`, so `dL/dx` is the backward with `dy = r`.
//!
//! Every backward kernel adds into its output (`dx += ...`): outputs are pre-filled with
//! random values and checked as prefill + gradient. Some cases are long enough that the kernels
//! split their loops into several dispatches (`LOOP_BUDGET`), each adding its part.

use crate::common::*;
use ndarray::{Array2, ArrayD, ArrayView2, IxDyn};
use qforge::gpu::{Encoder, Gpu, GpuTensor};
use qforge::graph::attrs::{Binary, Conv2d, Pool2d, Unary};
use qforge::graph::shape::{broadcast_shape, conv_output_shape, pool_output_shape, strides};
use qforge::ops::conv::ConvKernel;
use qforge::ops::elementwise::StridedView;
use qforge::ops::grad::{self, Layout, Product, Side};
use qforge::reference::{grad as refg, nn};
use qforge::DType;
use rand::seq::SliceRandom;
use rand::Rng;

/// `values` (with exact zeros and ties) in an array of `shape`.
fn random(rng: &mut TestRng, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), values(rng, n, lo, hi)).unwrap()
}

/// Uniform values in [lo, hi) with no exact zeros or ties, for finite differences.
fn uniform(rng: &mut TestRng, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(lo..hi))
}

/// Uniform values with |v| in [lo, hi) and a random sign.
fn away_from_zero(rng: &mut TestRng, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        let v = rng.random_range(lo..hi);
        if rng.random_bool(0.5) {
            v
        } else {
            -v
        }
    })
}

fn up(gpu: &Gpu, a: &ArrayD<f32>) -> GpuTensor {
    gpu.upload(&a.view()).unwrap()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, &x| m.max(x.abs()))
}

/// Tolerance of an f32 sum of `terms` products against f64.
fn sum_tol(terms: usize) -> Tol {
    Tol {
        abs: 1e-5 + 2e-5 * (terms as f64).sqrt(),
        rel: 1e-4,
    }
}

/// Records `f`, which adds into a gradient buffer of `shape` pre-filled with random values,
/// and checks the buffer afterwards holds prefill + `want`.
fn check_adds(
    what: &str,
    gpu: &Gpu,
    rng: &mut TestRng,
    shape: &[usize],
    want: &[f64],
    tol: Tol,
    f: impl FnOnce(&mut Encoder, &GpuTensor),
) {
    let pre = random(rng, shape, -1.0, 1.0);
    let t = up(gpu, &pre);
    let mut enc = gpu.encoder();
    f(&mut enc, &t);
    gpu.submit(enc).unwrap();
    let got = gpu.download::<f32>(&t).unwrap();
    assert_eq!(got.shape(), shape, "{what}: shape");
    // The f32 sum prefill + gradient rounds by at most half an ulp of |prefill| + |gradient|.
    let (got, expect): (Vec<f64>, Vec<f64>) = got
        .iter()
        .zip(pre.iter())
        .zip(want)
        .map(|((&g, &p), &w)| (g as f64, p as f64 + w))
        .unzip();
    let round = 1.2e-7 * (1.0 + max_abs(want));
    assert_close(
        &format!("{what} (prefill + gradient)"),
        &got,
        &expect,
        Tol {
            abs: tol.abs + round,
            rel: tol.rel,
        },
    );
}

/// How a finite-difference check perturbs and what it tolerates: |fd - g| <= abs + rel * |g|
/// + of_max * max |g|.
#[derive(Clone, Copy, Debug)]
struct Fd {
    eps: f32,
    samples: usize,
    abs: f64,
    rel: f64,
    of_max: f64,
}

const FD: Fd = Fd {
    eps: 1e-2,
    samples: 8,
    abs: 1e-3,
    rel: 1e-3,
    of_max: 1e-2,
};

/// Central differences of `loss` at `fd.samples` random elements of `x` (all when fewer)
/// against `grad` (the reference gradient of `loss`, flat in `x`'s order).
fn check_fd(
    what: &str,
    rng: &mut TestRng,
    x: &ArrayD<f32>,
    grad: &[f64],
    fd: Fd,
    loss: impl Fn(&ArrayD<f32>) -> f64,
) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    let scale = max_abs(grad);
    let picks: Vec<usize> = if x.len() <= fd.samples {
        (0..x.len()).collect()
    } else {
        (0..fd.samples)
            .map(|_| rng.random_range(0..x.len()))
            .collect()
    };
    let mut xp = x.as_standard_layout().into_owned();
    for i in picks {
        let v = xp.as_slice().unwrap()[i];
        let (hi, lo) = (v + fd.eps, v - fd.eps);
        xp.as_slice_mut().unwrap()[i] = hi;
        let lp = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = lo;
        let lm = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = v;
        let got = (lp - lm) / (hi as f64 - lo as f64);
        let want = grad[i];
        let tol = fd.abs + fd.rel * want.abs() + fd.of_max * scale;
        assert!(
            (got - want).abs() <= tol,
            "{what}: dL/dx[{i}] at x = {v}: finite difference {got}, reference {want} \
             (tol {tol:.3e})"
        );
    }
}

/// sum(y * r) in f64.
fn dot(y: &ArrayD<f32>, r: &ArrayD<f32>) -> f64 {
    assert_eq!(y.shape(), r.shape());
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn flat(a: &ArrayD<f64>) -> &[f64] {
    a.as_slice().expect("references return standard layout")
}

// ---- convolution -------------------------------------------------------------------------

/// The GPU's dx, dw (conv kernels) and db (`binary_grad_into(Add, B)` of a `[1, C, 1, 1]`
/// bias) against the reference's.
#[allow(clippy::too_many_arguments)]
fn check_conv_gpu(
    gpu: &Gpu,
    rng: &mut TestRng,
    what: &str,
    x: &ArrayD<f32>,
    wt: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    a: &Conv2d,
    want: &(ArrayD<f64>, ArrayD<f64>, Vec<f64>),
) {
    let (tx, tw, tdy) = (up(gpu, x), up(gpu, wt), up(gpu, dy));
    let (cout, kh, kw) = (wt.shape()[0], wt.shape()[2], wt.shape()[3]);
    let s = dy.shape();
    let dx_terms = cout / a.groups * kh * kw;
    let dw_terms = s[0] * s[2] * s[3];
    check_adds(
        &format!("{what} dx"),
        gpu,
        rng,
        x.shape(),
        flat(&want.0),
        sum_tol(dx_terms),
        |e, t| grad::conv_grad_input_into(e, gpu, &tw, &tdy, a, t).unwrap(),
    );
    check_adds(
        &format!("{what} dw"),
        gpu,
        rng,
        wt.shape(),
        flat(&want.1),
        sum_tol(dw_terms),
        |e, t| grad::conv_grad_weight_into(e, gpu, &tx, &tdy, a, t).unwrap(),
    );
    if a.groups == 1 {
        // The GEMM form, through its scratch buffers, adds the same gradients.
        let [col, prod, part] = grad::ConvGrad::scratch(x.shape(), wt.shape(), a).unwrap();
        let col = (col != [0]).then(|| gpu.empty(&col, DType::F32).unwrap());
        let prod = gpu.empty(&prod, DType::F32).unwrap();
        let part = (part[0] > 0).then(|| gpu.empty(&part, DType::F32).unwrap());
        check_adds(
            &format!("{what} dx (gemm)"),
            gpu,
            rng,
            x.shape(),
            flat(&want.0),
            sum_tol(dx_terms),
            |e, t| grad::conv_grad_input_gemm_into(e, gpu, &tw, &tdy, a, col.as_ref(), t).unwrap(),
        );
        check_adds(
            &format!("{what} dw (gemm)"),
            gpu,
            rng,
            wt.shape(),
            flat(&want.1),
            sum_tol(dw_terms),
            |e, t| {
                grad::conv_grad_weight_gemm_into(
                    e,
                    gpu,
                    &tx,
                    &tdy,
                    a,
                    col.as_ref(),
                    &prod,
                    part.as_ref(),
                    t,
                )
                .unwrap()
            },
        );
        // The summed GEMM (the batch added inside the GEMM) adds the same weight gradient.
        check_adds(
            &format!("{what} dw (gemm, summed)"),
            gpu,
            rng,
            wt.shape(),
            flat(&want.1),
            sum_tol(dw_terms),
            |e, t| grad::conv_grad_weight_sum_into(e, gpu, &tx, &tdy, a, col.as_ref(), t).unwrap(),
        );
    }
    let flipped = grad::flipped_conv(x.shape(), wt.shape(), a)
        .filter(|(f, us)| ConvKernel::Depthwise3x3.supports(us, wt.shape(), f));
    if let Some((_, us)) = flipped {
        // The flipped forward (over dy upsampled by the strides) adds the same input gradient.
        let wf = gpu.empty(wt.shape(), DType::F32).unwrap();
        let u = (a.strides != [1, 1]).then(|| gpu.empty(&us, DType::F32).unwrap());
        check_adds(
            &format!("{what} dx (flipped)"),
            gpu,
            rng,
            x.shape(),
            flat(&want.0),
            sum_tol(dx_terms),
            |e, d| {
                grad::conv_grad_input_flipped_into(e, gpu, &tw, &tdy, a, &wf, u.as_ref(), d)
                    .unwrap()
            },
        );
        FLIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if ConvKernel::Depthwise3x3.supports(x.shape(), wt.shape(), a) {
        // The block sums add the same weight gradient.
        let [blocks, part] = grad::WeightGrad::depthwise_scratch(x.shape(), wt.shape(), a).unwrap();
        let blocks = gpu.empty(&blocks, DType::F32).unwrap();
        let part = (part[0] > 0).then(|| gpu.empty(&part, DType::F32).unwrap());
        check_adds(
            &format!("{what} dw (depthwise)"),
            gpu,
            rng,
            wt.shape(),
            flat(&want.1),
            sum_tol(dw_terms),
            |e, t| {
                grad::conv_grad_weight_depthwise_into(
                    e,
                    gpu,
                    &tx,
                    &tdy,
                    a,
                    &blocks,
                    part.as_ref(),
                    t,
                )
                .unwrap()
            },
        );
        DEPTHWISE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // The bias is added as a [1, C, 1, 1] operand; its values do not enter Add's gradient.
    let tb = gpu
        .upload_slice(&[1, cout, 1, 1], &vec![0.5f32; cout])
        .unwrap();
    check_adds(
        &format!("{what} db"),
        gpu,
        rng,
        &[cout],
        &want.2,
        sum_tol(dw_terms),
        |e, t| grad::binary_grad_into(e, gpu, Binary::Add, Side::B, &tdy, &tb, &tdy, t).unwrap(),
    );
}

/// Convolutions [`check_conv_gpu`] also checked in the flipped form.
static FLIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Convolutions [`check_conv_gpu`] also checked with the depthwise weight-gradient form.
static DEPTHWISE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Dense, grouped, depthwise and channel-multiplier convolutions with strides 1-3,
/// dilations 1-2 and asymmetric pads; and depthwise 3x3 stride-1 ones (the flipped form).
#[test]
fn conv_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(40);
    let mut tested = [0usize; 4];
    for case in 0..48 {
        let kind = case % 4;
        let (cin, cout, groups) = match kind {
            0 => (rng.random_range(1..5), rng.random_range(1..5), 1),
            1 => {
                let g = rng.random_range(2..4);
                (g * rng.random_range(1..3), g * rng.random_range(1..3), g)
            }
            2 => {
                let c = rng.random_range(1..7);
                (c, c, c)
            }
            _ => {
                let c = rng.random_range(1..4);
                (c, 2 * c, c)
            }
        };
        let (kh, kw) = (rng.random_range(1..4), rng.random_range(1..4));
        let a = Conv2d {
            strides: [rng.random_range(1..4), rng.random_range(1..4)],
            pads: [
                rng.random_range(0..3),
                rng.random_range(0..3),
                rng.random_range(0..3),
                rng.random_range(0..3),
            ],
            dilations: [rng.random_range(1..3), rng.random_range(1..3)],
            groups,
        };
        let n = rng.random_range(1..3);
        let xs = [n, cin, rng.random_range(3..13), rng.random_range(3..13)];
        let ws = [cout, cin / groups, kh, kw];
        let Ok(ys) = conv_output_shape(&xs, &ws, &a) else {
            continue;
        };
        if ys.contains(&0) {
            continue;
        }
        tested[kind] += 1;
        let x = random(&mut rng, &xs, -2.0, 2.0);
        let wt = random(&mut rng, &ws, -2.0, 2.0);
        let b = random(&mut rng, &[cout], -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::conv2d_grad(&x.view(), &wt.view(), &dy.view(), &a);
        let what = format!("conv case {case} {a:?} x {xs:?} w {ws:?}");
        check_conv_gpu(&gpu, &mut rng, &what, &x, &wt, &dy, &a, &want);

        let loss = |x: &ArrayD<f32>, w: &ArrayD<f32>, b: &ArrayD<f32>| {
            dot(&nn::conv2d(&x.view(), &w.view(), Some(&b.view()), &a), &dy)
        };
        check_fd(
            &format!("{what} dx"),
            &mut rng,
            &x,
            flat(&want.0),
            FD,
            |x| loss(x, &wt, &b),
        );
        check_fd(
            &format!("{what} dw"),
            &mut rng,
            &wt,
            flat(&want.1),
            FD,
            |w| loss(&x, w, &b),
        );
        check_fd(&format!("{what} db"), &mut rng, &b, &want.2, FD, |b| {
            loss(&x, &wt, b)
        });
    }
    assert!(tested.iter().all(|&t| t >= 6), "cases per kind {tested:?}");
    // Depthwise, stride 1: the form the flipped forward takes (3x3 runs the depthwise kernel).
    for case in 0..8 {
        let c = rng.random_range(1..9);
        let (kh, kw) = if case < 6 {
            (3, 3)
        } else {
            (rng.random_range(1..6), 3)
        };
        let a = Conv2d {
            strides: [1, 1],
            pads: [
                rng.random_range(0..kh),
                rng.random_range(0..kw),
                rng.random_range(0..kh),
                rng.random_range(0..kw),
            ],
            dilations: [1, 1],
            groups: c,
        };
        let xs = [
            rng.random_range(1..3),
            c,
            rng.random_range(3..14),
            rng.random_range(3..14),
        ];
        let ws = [c, 1, kh, kw];
        let ys = conv_output_shape(&xs, &ws, &a).unwrap();
        let x = random(&mut rng, &xs, -2.0, 2.0);
        let wt = random(&mut rng, &ws, -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::conv2d_grad(&x.view(), &wt.view(), &dy.view(), &a);
        let what = format!("depthwise case {case} {a:?} x {xs:?} w {ws:?}");
        check_conv_gpu(&gpu, &mut rng, &what, &x, &wt, &dy, &a, &want);
    }
    // Depthwise 3x3 at horizontal strides 1-2 and vertical 1-3, widths that are multiples of 4
    // (the vector forms) or not, heights that cut blocks of 4 rows short, and one batch with
    // more blocks than one pass of the sum takes: the depthwise weight-gradient form.
    let before = DEPTHWISE.load(std::sync::atomic::Ordering::Relaxed);
    for case in 0..10 {
        let c = rng.random_range(1..6);
        let stride_w = 1 + case % 2;
        let a = Conv2d {
            strides: [1 + case % 3, stride_w],
            pads: [
                rng.random_range(0..3),
                if case < 6 { 1 } else { case % 3 },
                rng.random_range(0..3),
                if case < 4 { 1 } else { rng.random_range(0..3) },
            ],
            dilations: [1, 1],
            groups: c,
        };
        let (h, w) = match case {
            0..=3 => (
                rng.random_range(3..15),
                8 * stride_w * rng.random_range(1..4),
            ),
            9 => (96, 96),
            _ => (rng.random_range(3..15), rng.random_range(3..30)),
        };
        let xs = [1 + case % 2, c, h, w];
        let ws = [c, 1, 3, 3];
        let ys = conv_output_shape(&xs, &ws, &a).unwrap();
        let x = random(&mut rng, &xs, -2.0, 2.0);
        let wt = random(&mut rng, &ws, -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::conv2d_grad(&x.view(), &wt.view(), &dy.view(), &a);
        let what = format!("depthwise 3x3 case {case} {a:?} x {xs:?}");
        check_conv_gpu(&gpu, &mut rng, &what, &x, &wt, &dy, &a, &want);
    }
    assert!(DEPTHWISE.load(std::sync::atomic::Ordering::Relaxed) - before >= 10);
    assert!(
        FLIPPED.load(std::sync::atomic::Ordering::Relaxed) >= 16,
        "flipped cases"
    );
    // MobileNetV2's first stride-2 depthwise conv: dy [56, 56] upsampled to rows of 111 values,
    // widened to 112 (the vector form) with the right pad one less.
    let s2 = Conv2d {
        strides: [2, 2],
        pads: [1; 4],
        dilations: [1, 1],
        groups: 96,
    };
    let (f, us) = grad::flipped_conv(&[1, 96, 112, 112], &[96, 1, 3, 3], &s2).unwrap();
    assert_eq!(
        (us, f.pads, f.strides),
        ([1, 96, 111, 112], [1, 1, 2, 1], [1, 1])
    );
    // Pointwise (1x1, stride 1, no pads): the GEMM form adds W^T dy straight into dx and
    // takes the input as its columns.
    for case in 0..6 {
        let (cin, cout) = (rng.random_range(1..40), rng.random_range(1..40));
        let a = Conv2d {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
        };
        let xs = [
            rng.random_range(1..4),
            cin,
            rng.random_range(1..17),
            rng.random_range(1..17),
        ];
        let ws = [cout, cin, 1, 1];
        let ys = conv_output_shape(&xs, &ws, &a).unwrap();
        let x = random(&mut rng, &xs, -2.0, 2.0);
        let wt = random(&mut rng, &ws, -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::conv2d_grad(&x.view(), &wt.view(), &dy.view(), &a);
        let what = format!("pointwise case {case} x {xs:?} w {ws:?}");
        check_conv_gpu(&gpu, &mut rng, &what, &x, &wt, &dy, &a, &want);
    }
}

/// Weight gradients over more than LOOP_BUDGET / 2 output positions and input gradients over
/// more than LOOP_BUDGET output channels x taps: the kernels split them into dispatches that
/// each add their part.
#[test]
fn long_conv_grad_reductions_are_split_and_complete() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(41);
    let pads = |p: [usize; 4]| p;
    let cases = [
        // 3 * 80 * 80 = 19,200 positions: three weight-gradient dispatches.
        (
            [3, 2, 80, 80],
            [3, 2, 3, 3],
            Conv2d {
                strides: [1, 1],
                pads: pads([1, 1, 1, 1]),
                dilations: [1, 1],
                groups: 1,
            },
        ),
        // 2 * 96 * 90 positions with a dilation and asymmetric pads.
        (
            [2, 1, 100, 88],
            [2, 1, 3, 2],
            Conv2d {
                strides: [1, 1],
                pads: pads([2, 1, 0, 3]),
                dilations: [2, 2],
                groups: 1,
            },
        ),
        // 2,000 output channels x 9 taps = 18,000 per input element: two input dispatches.
        (
            [1, 2, 5, 5],
            [2000, 2, 3, 3],
            Conv2d {
                strides: [1, 1],
                pads: pads([1, 0, 1, 2]),
                dilations: [1, 1],
                groups: 1,
            },
        ),
        // Grouped: 2,000 output channels per group.
        (
            [1, 4, 6, 5],
            [4000, 2, 3, 3],
            Conv2d {
                strides: [2, 1],
                pads: pads([1, 1, 0, 0]),
                dilations: [1, 1],
                groups: 2,
            },
        ),
    ];
    for (xs, ws, a) in cases {
        let ys = conv_output_shape(&xs, &ws, &a).unwrap();
        let x = random(&mut rng, &xs, -2.0, 2.0);
        let wt = random(&mut rng, &ws, -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::conv2d_grad(&x.view(), &wt.view(), &dy.view(), &a);
        let what = format!("long conv {a:?} x {xs:?} w {ws:?}");
        check_conv_gpu(&gpu, &mut rng, &what, &x, &wt, &dy, &a, &want);
    }
}

// ---- unary -------------------------------------------------------------------------------

/// Ops defined for positive inputs only (in these tests).
fn positive(f: Unary) -> bool {
    matches!(f, Unary::Sqrt | Unary::Log | Unary::Reciprocal)
}

/// Where an activation's derivative jumps.
fn kinks(f: Unary) -> Vec<f32> {
    match f {
        Unary::Relu | Unary::LeakyRelu(_) => vec![0.0],
        Unary::Clip(lo, hi) => vec![lo, hi],
        Unary::HardSigmoid(a, b) => vec![-b / a, (1.0 - b) / a],
        Unary::HardSwish => vec![-3.0, 3.0],
        // Softsign's derivative is continuous at 0 but has a cusp there.
        Unary::Abs
        | Unary::Sign
        | Unary::Softsign
        | Unary::Elu(_)
        | Unary::Selu(..)
        | Unary::Celu(_) => vec![0.0],
        Unary::Floor | Unary::Ceil => (-4..=4).map(|k| k as f32).collect(),
        Unary::Round => (-4..4).map(|k| k as f32 + 0.5).collect(),
        Unary::Shrink(_, l) => vec![-l, l],
        Unary::ThresholdedRelu(a) => vec![a],
        _ => vec![],
    }
}

/// Every activation's backward against the reference derivative (kinks included), and the
/// reference against finite differences of the forward away from the kinks.
#[test]
fn unary_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(42);
    for (i, f) in ALL_UNARY.into_iter().enumerate() {
        let (lo, hi) = if positive(f) {
            (0.05, 4.0)
        } else {
            (-4.0, 4.0)
        };
        let mut xv = kinks(f);
        xv.extend(values(&mut rng, 2001, lo, hi));
        if positive(f) {
            xv.iter_mut().filter(|v| **v == 0.0).for_each(|v| *v = 1.0);
        }
        // Lengths that are a multiple of 4 (the vector form) for half the activations.
        if i % 2 == 0 {
            xv.truncate(xv.len() / 4 * 4);
        } else if xv.len() % 4 == 0 {
            xv.pop();
        }
        let x = ArrayD::from_shape_vec(IxDyn(&[xv.len()]), xv).unwrap();
        let dy = random(&mut rng, x.shape(), -2.0, 2.0);
        let want = refg::unary_grad(f, &x.view(), &dy.view());
        let (tx, tdy) = (up(&gpu, &x), up(&gpu, &dy));
        let tol = Tol {
            abs: 1e-5,
            rel: 1e-4,
        };
        check_adds(
            &format!("{f:?} backward"),
            &gpu,
            &mut rng,
            x.shape(),
            flat(&want),
            tol,
            |e, t| grad::unary_grad_into(e, &gpu, f, &tx, &tdy, t).unwrap(),
        );
        // Relu and Clip take the forward's output as well (the same mask).
        if matches!(f, Unary::Relu | Unary::Clip(..)) {
            let ty = up(&gpu, &x.mapv(|v| nn::unary_value(f, v)));
            check_adds(
                &format!("{f:?} backward from the output"),
                &gpu,
                &mut rng,
                x.shape(),
                flat(&want),
                tol,
                |e, t| grad::unary_grad_into(e, &gpu, f, &ty, &tdy, t).unwrap(),
            );
        }
        // In place over dy: the values of adding into zeros (a zero's sign aside).
        let zeros = up(&gpu, &ArrayD::zeros(x.shape()));
        let in_place = up(&gpu, &dy);
        let mut enc = gpu.encoder();
        grad::unary_grad_into(&mut enc, &gpu, f, &tx, &tdy, &zeros).unwrap();
        grad::unary_grad_in_place(&mut enc, &gpu, f, &tx, &in_place).unwrap();
        gpu.submit(enc).unwrap();
        let (added, over) = (
            gpu.download::<f32>(&zeros).unwrap(),
            gpu.download::<f32>(&in_place).unwrap(),
        );
        let same = added
            .iter()
            .zip(&over)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same, "{f:?}: in place differs from adding into zeros");

        // Finite differences at points at least 3 eps from a kink.
        let eps = FD.eps;
        let ks = kinks(f);
        let xs: Vec<f32> =
            std::iter::repeat_with(|| rng.random_range(if positive(f) { 0.5 } else { lo }..hi))
                .filter(|v| ks.iter().all(|k| (v - k).abs() > 3.0 * eps))
                .take(300)
                .collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[xs.len()]), xs).unwrap();
        let r = uniform(&mut rng, x.shape(), -2.0, 2.0);
        let want = refg::unary_grad(f, &x.view(), &r.view());
        check_fd(
            &format!("{f:?}"),
            &mut rng,
            &x,
            flat(&want),
            Fd {
                samples: 300,
                abs: 2e-4,
                rel: 1e-3,
                of_max: 0.0,
                ..FD
            },
            |x| dot(&x.mapv(|v| nn::unary_value(f, v)), &r),
        );
    }
}

// ---- binary ------------------------------------------------------------------------------

const ALL_BINARY: [Binary; 8] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::PRelu,
    Binary::Max,
    Binary::Min,
    Binary::Pow,
];

const PAIRS: [(&[usize], &[usize]); 10] = [
    (&[2, 3, 4, 5], &[2, 3, 4, 5]),
    (&[2, 3, 4, 5], &[3, 1, 5]),
    (&[2, 3, 4, 5], &[1]),
    (&[2, 3, 4, 5], &[1, 3, 1, 1]),
    (&[3, 1, 5], &[2, 3, 4, 5]),
    (&[1, 3, 1, 5], &[2, 3, 4, 1]),
    (&[4, 1], &[1, 6]),
    (&[1], &[3, 7]),
    (&[7], &[1]),
    (&[2, 1, 3, 1, 2, 1, 2, 3], &[1, 4, 1, 2, 1, 3, 1, 1]),
];

/// Operands for `op` where its gradient is smooth: |b| >= 0.5 for Div, |a| >= 0.1 for PRelu,
/// |a - b| >= 0.05 for Max and Min (a on a grid offset from b's), positive bases for Pow
/// (`negative`: negative bases with integral exponents).
fn smooth_operands(
    rng: &mut TestRng,
    op: Binary,
    sa: &[usize],
    sb: &[usize],
    negative: bool,
) -> (ArrayD<f32>, ArrayD<f32>) {
    match op {
        Binary::Max | Binary::Min => {
            let mut grid = |s: &[usize], off: f32| {
                ArrayD::from_shape_fn(IxDyn(s), |_| (rng.random_range(-20..20) as f32 + off) * 0.1)
            };
            (grid(sa, 0.5), grid(sb, 0.0))
        }
        Binary::Div => (
            uniform(rng, sa, -2.0, 2.0),
            away_from_zero(rng, sb, 0.5, 2.0),
        ),
        Binary::Pow if negative => (
            uniform(rng, sa, -2.0, -0.5),
            ArrayD::from_shape_fn(IxDyn(sb), |_| rng.random_range(-1..4) as f32),
        ),
        Binary::Pow => (uniform(rng, sa, 0.5, 2.0), uniform(rng, sb, -1.0, 2.0)),
        _ => (
            away_from_zero(rng, sa, 0.1, 2.0),
            uniform(rng, sb, -2.0, 2.0),
        ),
    }
}

/// Operands for the GPU comparison: exact zeros and ties kept (Max/Min split ties), |b| kept
/// from 0 for Div, no zero bases for Pow.
fn gpu_operands(
    rng: &mut TestRng,
    op: Binary,
    sa: &[usize],
    sb: &[usize],
    negative: bool,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let a = random(rng, sa, -2.0, 2.0);
    let b = random(rng, sb, -2.0, 2.0);
    match op {
        Binary::Div => (a, b.mapv(|v| if v.abs() < 0.25 { 0.5 } else { v })),
        Binary::Pow if negative => (
            random(rng, sa, -2.0, -0.5).mapv(|v| if v == 0.0 { -1.0 } else { v }),
            ArrayD::from_shape_fn(IxDyn(sb), |_| rng.random_range(-1..4) as f32),
        ),
        Binary::Pow => (
            random(rng, sa, 0.5, 2.0).mapv(|v| if v == 0.0 { 1.0 } else { v }),
            random(rng, sb, -1.0, 2.0),
        ),
        _ => (a, b),
    }
}

/// Both sides of the GPU's binary backward (into prefilled buffers) against the reference.
fn check_binary_gpu(
    gpu: &Gpu,
    rng: &mut TestRng,
    what: &str,
    op: Binary,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    dy: &ArrayD<f32>,
) {
    let (da, db) = refg::binary_grad(op, &a.view(), &b.view(), &dy.view());
    let (ta, tb, tdy) = (up(gpu, a), up(gpu, b), up(gpu, dy));
    for (side, x, want) in [(Side::A, a, &da), (Side::B, b, &db)] {
        let terms = dy.len() / x.len();
        let tol = Tol {
            abs: sum_tol(terms).abs * 4.0,
            rel: 1e-4,
        };
        check_adds(
            &format!("{what} {side:?}"),
            gpu,
            rng,
            x.shape(),
            flat(want),
            tol,
            |e, t| grad::binary_grad_into(e, gpu, op, side, &ta, &tb, &tdy, t).unwrap(),
        );
    }
}

/// Every binary op, both sides, over broadcasting shapes; Pow with positive bases and with
/// negative bases and integral exponents.
#[test]
fn binary_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(43);
    for (sa, sb) in PAIRS {
        let out = broadcast_shape(sa, sb).unwrap();
        for op in ALL_BINARY {
            for negative in [false, true] {
                if negative && op != Binary::Pow {
                    continue;
                }
                let what = format!("{op:?} a {sa:?} b {sb:?} negative bases {negative}");
                let (a, b) = gpu_operands(&mut rng, op, sa, sb, negative);
                let dy = random(&mut rng, &out, -2.0, 2.0);
                check_binary_gpu(&gpu, &mut rng, &what, op, &a, &b, &dy);

                let (a, b) = smooth_operands(&mut rng, op, sa, sb, negative);
                let r = uniform(&mut rng, &out, -2.0, 2.0);
                let (da, db) = refg::binary_grad(op, &a.view(), &b.view(), &r.view());
                let loss = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
                    dot(&nn::binary(op, &a.view(), &b.view()), &r)
                };
                check_fd(&format!("{what} da"), &mut rng, &a, flat(&da), FD, |a| {
                    loss(a, &b)
                });
                // A negative base's exponent gradient is 0 by convention (a^b is not real
                // around it).
                if !negative {
                    check_fd(&format!("{what} db"), &mut rng, &b, flat(&db), FD, |b| {
                        loss(&a, b)
                    });
                }
            }
        }
    }
}

/// Operands broadcast over more positions than one dispatch reduces (LOOP_BUDGET / (rank +
/// 1)): the reduction splits into dispatches that each add their part.
#[test]
fn long_binary_grad_reductions_are_split_and_complete() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(44);
    let pairs: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 40, 50], &[3, 1, 1]),
        (&[4, 3000], &[1]),
        (&[3, 1], &[3, 6000]),
        (&[1, 1, 90, 100], &[2, 5, 90, 1]),
    ];
    for (sa, sb) in pairs {
        let out = broadcast_shape(sa, sb).unwrap();
        for op in [Binary::Add, Binary::Mul, Binary::Div, Binary::Max] {
            let (a, b) = gpu_operands(&mut rng, op, sa, sb, false);
            let dy = random(&mut rng, &out, -2.0, 2.0);
            let what = format!("long {op:?} a {sa:?} b {sb:?}");
            check_binary_gpu(&gpu, &mut rng, &what, op, &a, &b, &dy);
        }
    }
}

// ---- matmul ------------------------------------------------------------------------------

/// `c[bt] = alpha * sum_r la[bt][r] * lb[bt][r]` over logical matrices, f64.
fn product(
    la: &[Vec<ArrayView2<'_, f32>>],
    lb: &[Vec<ArrayView2<'_, f32>>],
    alpha: f64,
) -> Vec<f64> {
    let mut c = Vec::new();
    for (pa, pb) in la.iter().zip(lb) {
        let (m, n) = (pa[0].nrows(), pb[0].ncols());
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for (ma, mb) in pa.iter().zip(pb) {
                    for k in 0..ma.ncols() {
                        s += ma[[i, k]] as f64 * mb[[k, j]] as f64;
                    }
                }
                c.push(alpha * s);
            }
        }
    }
    c
}

fn mat(a: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    a.view().into_dimensionality().unwrap()
}

/// The matrix `idx` of a stack of matrices (any leading dims flattened).
fn stacked(a: &ArrayD<f32>, idx: usize) -> ArrayView2<'_, f32> {
    let s = a.shape();
    let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
    let flat = a.as_slice().unwrap();
    ArrayView2::from_shape((r, c), &flat[idx * r * c..(idx + 1) * r * c]).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn check_matmul(
    gpu: &Gpu,
    rng: &mut TestRng,
    what: &str,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    p: &Product,
    la: Vec<Vec<ArrayView2<'_, f32>>>,
    lb: Vec<Vec<ArrayView2<'_, f32>>>,
) {
    let want = product(&la, &lb, p.alpha as f64);
    assert_eq!(want.len(), p.batches * p.m * p.n, "{what}: test's product");
    let (ta, tb) = (up(gpu, a), up(gpu, b));
    let terms = p.k * p.reduce;
    let tol = Tol {
        abs: sum_tol(terms).abs * (p.alpha.abs() as f64).max(1.0) * 4.0,
        rel: 1e-4,
    };
    check_adds(
        what,
        gpu,
        rng,
        &[p.batches, p.m, p.n],
        &want,
        tol,
        |e, t| grad::matmul_acc_into(e, gpu, &ta, &tb, p, t).unwrap(),
    );
}

/// Plain, transposed and batched products, a shared weight whose gradient is reduced over the
/// batch, and products longer than one dispatch (k * reduce > LOOP_BUDGET), against a plain
/// f64 loop over the logical operands (ndarray views, not the strides under test).
#[test]
fn matmul_acc_matches_plain_loops() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(45);
    let lay = |batch, reduce, rows, cols| Layout {
        batch,
        reduce,
        rows,
        cols,
    };
    for case in 0..6 {
        let (m, n, k) = (
            rng.random_range(1..20),
            rng.random_range(1..20),
            rng.random_range(1..30),
        );
        let bs = rng.random_range(2..5);
        let alpha = [1.0f32, 0.5, -1.5][case % 3];
        let g = |rng: &mut TestRng, s: &[usize]| random(rng, s, -2.0, 2.0);

        // c = a b
        let (a, b) = (g(&mut rng, &[m, k]), g(&mut rng, &[k, n]));
        let p = Product {
            batches: 1,
            reduce: 1,
            m,
            n,
            k,
            alpha,
            a: lay(0, 0, k, 1),
            b: lay(0, 0, n, 1),
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: A B {p:?}"),
            &a,
            &b,
            &p,
            vec![vec![mat(&a)]],
            vec![vec![mat(&b)]],
        );

        // c = a^T b (Gemm's transA; the weight gradient of a linear layer x^T dy)
        let (a, b) = (g(&mut rng, &[k, m]), g(&mut rng, &[k, n]));
        let p = Product {
            a: lay(0, 0, 1, m),
            b: lay(0, 0, n, 1),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: A^T B {p:?}"),
            &a,
            &b,
            &p,
            vec![vec![mat(&a).reversed_axes()]],
            vec![vec![mat(&b)]],
        );

        // c = a b^T (dx = dy w^T)
        let (a, b) = (g(&mut rng, &[m, k]), g(&mut rng, &[n, k]));
        let p = Product {
            a: lay(0, 0, k, 1),
            b: lay(0, 0, 1, k),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: A B^T {p:?}"),
            &a,
            &b,
            &p,
            vec![vec![mat(&a)]],
            vec![vec![mat(&b).reversed_axes()]],
        );

        // c = a^T b^T
        let (a, b) = (g(&mut rng, &[k, m]), g(&mut rng, &[n, k]));
        let p = Product {
            a: lay(0, 0, 1, m),
            b: lay(0, 0, 1, k),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: A^T B^T {p:?}"),
            &a,
            &b,
            &p,
            vec![vec![mat(&a).reversed_axes()]],
            vec![vec![mat(&b).reversed_axes()]],
        );

        // MatMul x [bs, k, m] by a shared w: dw [m, n] = sum over the batch of x[r]^T dy[r]
        // (the broadcast batch is reduced into one output).
        let (x, dy) = (g(&mut rng, &[bs, k, m]), g(&mut rng, &[bs, k, n]));
        let p = Product {
            batches: 1,
            reduce: bs,
            a: lay(0, k * m, 1, m),
            b: lay(0, k * n, n, 1),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: sum_r X[r]^T dY[r] {p:?}"),
            &x,
            &dy,
            &p,
            vec![(0..bs).map(|r| stacked(&x, r).reversed_axes()).collect()],
            vec![(0..bs).map(|r| stacked(&dy, r)).collect()],
        );

        // dx [bs, m, n] = dy[bt] w^T with w [n, k] shared by every batch (batch stride 0).
        let (dy, w) = (g(&mut rng, &[bs, m, k]), g(&mut rng, &[n, k]));
        let p = Product {
            batches: bs,
            reduce: 1,
            a: lay(m * k, 0, k, 1),
            b: lay(0, 0, 1, k),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: dY[bt] W^T {p:?}"),
            &dy,
            &w,
            &p,
            (0..bs).map(|bt| vec![stacked(&dy, bt)]).collect(),
            (0..bs).map(|_| vec![mat(&w).reversed_axes()]).collect(),
        );

        // Output batches and reduced batches together: c[bt] = sum_r a[bt, r] b[r].
        let (a, b) = (g(&mut rng, &[3, bs, m, k]), g(&mut rng, &[bs, k, n]));
        let p = Product {
            batches: 3,
            reduce: bs,
            a: lay(bs * m * k, m * k, k, 1),
            b: lay(0, k * n, n, 1),
            ..p
        };
        check_matmul(
            &gpu,
            &mut rng,
            &format!("{case}: sum_r A[bt, r] B[r] {p:?}"),
            &a,
            &b,
            &p,
            (0..3)
                .map(|bt| (0..bs).map(|r| stacked(&a, bt * bs + r)).collect())
                .collect(),
            (0..3)
                .map(|_| (0..bs).map(|r| stacked(&b, r)).collect())
                .collect(),
        );
    }

    // Longer than one dispatch's loop budget: split along k, along k with reduced batches,
    // and along the reduced batches.
    let g = |rng: &mut TestRng, s: &[usize]| random(rng, s, -2.0, 2.0);
    let (a, b) = (g(&mut rng, &[2, 20000]), g(&mut rng, &[20000, 3]));
    let p = Product {
        batches: 1,
        reduce: 1,
        m: 2,
        n: 3,
        k: 20000,
        alpha: 1.0,
        a: lay(0, 0, 20000, 1),
        b: lay(0, 0, 3, 1),
    };
    check_matmul(
        &gpu,
        &mut rng,
        "k = 20,000",
        &a,
        &b,
        &p,
        vec![vec![mat(&a)]],
        vec![vec![mat(&b)]],
    );
    let (x, dy) = (g(&mut rng, &[5, 4000, 2]), g(&mut rng, &[5, 4000, 3]));
    let p = Product {
        batches: 1,
        reduce: 5,
        m: 2,
        n: 3,
        k: 4000,
        alpha: 0.5,
        a: lay(0, 8000, 1, 2),
        b: lay(0, 12000, 3, 1),
    };
    check_matmul(
        &gpu,
        &mut rng,
        "5 reduced batches x k = 4,000",
        &x,
        &dy,
        &p,
        vec![(0..5).map(|r| stacked(&x, r).reversed_axes()).collect()],
        vec![(0..5).map(|r| stacked(&dy, r)).collect()],
    );
    let (x, dy) = (g(&mut rng, &[20000, 2, 2]), g(&mut rng, &[20000, 2, 3]));
    let p = Product {
        batches: 1,
        reduce: 20000,
        m: 2,
        n: 3,
        k: 2,
        alpha: 1.0,
        a: lay(0, 4, 1, 2),
        b: lay(0, 6, 3, 1),
    };
    check_matmul(
        &gpu,
        &mut rng,
        "20,000 reduced batches",
        &x,
        &dy,
        &p,
        vec![(0..20000).map(|r| stacked(&x, r).reversed_axes()).collect()],
        vec![(0..20000).map(|r| stacked(&dy, r)).collect()],
    );
}

// ---- pooling -----------------------------------------------------------------------------

/// Distinct values 0.05 apart (no ties, and no ±eps perturbation changes a window's maximum).
fn distinct(rng: &mut TestRng, shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.05).collect();
    v.shuffle(rng);
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Max pooling (distinct values, dilations) and average pooling (count_include_pad on and
/// off) with pads, strides and ceil mode.
#[test]
fn pool_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(46);
    let mut tested = 0;
    for case in 0..40 {
        let max = case % 2 == 0;
        let kernel = [rng.random_range(1..4), rng.random_range(1..4)];
        let a = Pool2d {
            kernel,
            strides: [rng.random_range(1..4), rng.random_range(1..4)],
            pads: [
                rng.random_range(0..kernel[0]),
                rng.random_range(0..kernel[1]),
                rng.random_range(0..kernel[0]),
                rng.random_range(0..kernel[1]),
            ],
            dilations: if max && case % 3 == 0 {
                [rng.random_range(1..3), rng.random_range(1..3)]
            } else {
                [1, 1]
            },
            ceil_mode: case % 3 == 1,
            count_include_pad: case % 4 == 1,
        };
        let xs = [
            rng.random_range(1..3),
            rng.random_range(1..4),
            rng.random_range(3..14),
            rng.random_range(3..14),
        ];
        let Ok(ys) = pool_output_shape(&xs, &a) else {
            continue;
        };
        if ys.contains(&0) {
            continue;
        }
        tested += 1;
        let x = distinct(&mut rng, &xs);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::pool2d_grad(&x.view(), &dy.view(), &a, max);
        let what = format!("pool case {case} max={max} {a:?} x {xs:?}");
        let (tx, tdy) = (up(&gpu, &x), up(&gpu, &dy));
        check_adds(
            &what,
            &gpu,
            &mut rng,
            &xs,
            flat(&want),
            sum_tol(9),
            |e, t| grad::pool_grad_into(e, &gpu, &tx, &tdy, &a, max, t).unwrap(),
        );
        let r = uniform(&mut rng, &ys, -2.0, 2.0);
        let want = refg::pool2d_grad(&x.view(), &r.view(), &a, max);
        check_fd(
            &what,
            &mut rng,
            &x,
            flat(&want),
            Fd { samples: 16, ..FD },
            |x| dot(&nn::pool2d(&x.view(), &a, max), &r),
        );
    }
    assert!(tested >= 30, "{tested} pool cases");
}

/// Equal maxima: each window's gradient goes to its first maximum in scan order.
#[test]
fn max_pool_grad_goes_to_the_first_maximum() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(47);
    let x = ArrayD::from_shape_vec(
        IxDyn(&[1, 1, 3, 3]),
        vec![1.0, 7.0, 7.0, 7.0, 2.0, 0.0, 3.0, 7.0, 1.0],
    )
    .unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let a = Pool2d {
        kernel: [2, 2],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
    };
    // Windows: (0,0) {1,7,7,2} -> (0,1); (0,1) {7,7,2,0} -> (0,1); (1,0) {7,2,3,7} -> (1,0);
    // (1,1) {2,0,7,1} -> (2,1).
    let want = [0.0, 3.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0, 0.0];
    let reference = refg::pool2d_grad(&x.view(), &dy.view(), &a, true);
    assert_eq!(flat(&reference), &want, "reference");
    let (tx, tdy) = (up(&gpu, &x), up(&gpu, &dy));
    check_adds(
        "tied max pool",
        &gpu,
        &mut rng,
        x.shape(),
        &want,
        sum_tol(1),
        |e, t| grad::pool_grad_into(e, &gpu, &tx, &tdy, &a, true, t).unwrap(),
    );
}

// ---- softmax -----------------------------------------------------------------------------

/// Softmax along the middle axis of `[outer, len, inner]` through the row reference.
fn softmax_axis(x: &[f32], len: usize, inner: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for row in 0..x.len() / len {
        let base = (row / inner) * len * inner + row % inner;
        let lane: Vec<f32> = (0..len).map(|k| x[base + k * inner]).collect();
        for (k, v) in nn::softmax_rows(&lane, len).into_iter().enumerate() {
            y[base + k * inner] = v;
        }
    }
    y
}

/// Softmax along the last axis (inner = 1) and a middle axis (inner > 1).
#[test]
fn softmax_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(48);
    let cases = [
        (5, 1, 1),
        (4, 7, 1),
        (70, 10, 1),
        (3, 33, 1),
        (2, 500, 1),
        (2, 8192, 1),
        (3, 5, 7),
        (2, 4, 18),
        (1, 300, 3),
        (3, 1, 4),
    ];
    for (outer, len, inner) in cases {
        let shape = [outer, len, inner];
        let what = format!("softmax [{outer}, {len}, {inner}] along axis 1");
        let x = uniform(&mut rng, &shape, -3.0, 3.0);
        let y = softmax_axis(x.as_slice().unwrap(), len, inner);
        let dy = random(&mut rng, &shape, -2.0, 2.0);
        let want = refg::softmax_grad(&y, dy.as_slice().unwrap(), len, inner);
        let ty = gpu.upload_slice(&shape, &y).unwrap();
        let tdy = up(&gpu, &dy);
        let tol = Tol {
            abs: 1e-6,
            rel: 1e-4,
        };
        check_adds(&what, &gpu, &mut rng, &shape, &want, tol, |e, t| {
            grad::softmax_grad_into(e, &gpu, &ty, &tdy, len, inner, t).unwrap()
        });
        let r = uniform(&mut rng, &shape, -2.0, 2.0);
        let want = refg::softmax_grad(&y, r.as_slice().unwrap(), len, inner);
        let fd = Fd {
            samples: 12,
            abs: 1e-6,
            ..FD
        };
        check_fd(&what, &mut rng, &x, &want, fd, |x| {
            let y = softmax_axis(x.as_slice().unwrap(), len, inner);
            dot(&ArrayD::from_shape_vec(IxDyn(&shape), y).unwrap(), &r)
        });
    }
}

// ---- strided and broadcast accumulation --------------------------------------------------

fn view(offset: usize, strides: &[usize]) -> StridedView {
    StridedView {
        offset,
        strides: strides.to_vec(),
    }
}

/// The backward of transpose, slice and concat: dy added into the region of dx the forward
/// read.
#[test]
fn strided_acc_is_the_backward_of_transpose_slice_and_concat() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(49);
    let tol = Tol { abs: 0.0, rel: 0.0 };

    // y = transpose(x, perm): dx = transpose(dy, perm^-1).
    for (xs, perm) in [
        (vec![2, 3, 4, 5], vec![0, 2, 3, 1]),
        (vec![7, 300], vec![1, 0]),
        (vec![2, 3, 1, 4, 2], vec![4, 2, 0, 3, 1]),
    ] {
        let ys: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let want: Vec<f64> = dy
            .view()
            .permuted_axes(IxDyn(&inv))
            .iter()
            .map(|&v| v as f64)
            .collect();
        let xst = strides(&xs);
        let dst: Vec<usize> = perm.iter().map(|&p| xst[p]).collect();
        let tdy = up(&gpu, &dy);
        check_adds(
            &format!("transpose {xs:?} {perm:?}"),
            &gpu,
            &mut rng,
            &xs,
            &want,
            tol,
            |e, t| {
                grad::strided_acc_into(
                    e,
                    &gpu,
                    &tdy,
                    &view(0, &strides(&ys)),
                    t,
                    &view(0, &dst),
                    &ys,
                )
                .unwrap()
            },
        );
    }

    // y = x[1..5, 2..9 step 2] of x [6, 10]: dx[1 + i, 2 + 2 j] += dy[i, j], zero elsewhere.
    let dy = random(&mut rng, &[4, 4], -2.0, 2.0);
    let mut want = vec![0f64; 60];
    for i in 0..4 {
        for j in 0..4 {
            want[(1 + i) * 10 + 2 + 2 * j] = dy[[i, j]] as f64;
        }
    }
    let tdy = up(&gpu, &dy);
    check_adds("slice", &gpu, &mut rng, &[6, 10], &want, tol, |e, t| {
        grad::strided_acc_into(
            e,
            &gpu,
            &tdy,
            &view(0, &[4, 1]),
            t,
            &view(12, &[10, 2]),
            &[4, 4],
        )
        .unwrap()
    });

    // y = concat([x1 [3, 4], x2 [3, 3]], axis 1): dx2 = dy[:, 4..7].
    let dy = random(&mut rng, &[3, 7], -2.0, 2.0);
    let want: Vec<f64> = (0..3)
        .flat_map(|i| (4..7).map(move |j| (i, j)))
        .map(|(i, j)| dy[[i, j]] as f64)
        .collect();
    let tdy = up(&gpu, &dy);
    check_adds("concat", &gpu, &mut rng, &[3, 3], &want, tol, |e, t| {
        grad::strided_acc_into(
            e,
            &gpu,
            &tdy,
            &view(4, &[7, 1]),
            t,
            &view(0, &[3, 1]),
            &[3, 3],
        )
        .unwrap()
    });
}

/// The backward of global average pooling and ReduceMean: dy spread over the reduced dims
/// with factor 1 / count (also checked against finite differences of `nn::mean_rows`).
#[test]
fn broadcast_acc_is_the_backward_of_global_average_pooling() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(50);
    // Rows of up to 4,096 values take one invocation each; 40 x 120 = 4,800 the general form.
    for (n, c, h, w) in [(2, 3, 5, 7), (1, 1, 1, 1), (3, 17, 9, 9), (1, 4, 40, 120)] {
        let dy = random(&mut rng, &[n, c, 1, 1], -2.0, 2.0);
        let hw = h * w;
        let want: Vec<f64> = dy
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d as f64 / hw as f64, hw))
            .collect();
        let tdy = up(&gpu, &dy);
        check_adds(
            &format!("global average pool [{n}, {c}, {h}, {w}]"),
            &gpu,
            &mut rng,
            &[n, c, h, w],
            &want,
            Tol {
                abs: 1e-7,
                rel: 1e-6,
            },
            |e, t| {
                grad::broadcast_acc_into(e, &gpu, &tdy, &[n, c, 1, 1], 1.0 / hw as f32, t).unwrap()
            },
        );
        let x = uniform(&mut rng, &[n, c, h, w], -2.0, 2.0);
        check_fd(
            "global average pool",
            &mut rng,
            &x,
            &want,
            Fd { abs: 1e-5, ..FD },
            |x| {
                let m = nn::mean_rows(x.as_slice().unwrap(), hw);
                m.iter()
                    .zip(dy.iter())
                    .map(|(&m, &d)| m as f64 * d as f64)
                    .sum()
            },
        );
    }
    // ReduceMean over dims 0 and 2 of [4, 5, 6] with keepdims: dy [1, 5, 1], and without the
    // leading dim (right-aligned broadcasting); both take the general form.
    let dy = random(&mut rng, &[5], -2.0, 2.0);
    let want: Vec<f64> = (0..4 * 5 * 6)
        .map(|i| dy[(i / 6) % 5] as f64 * 0.5 / 24.0)
        .collect();
    let tdy = up(&gpu, &dy);
    for dy_shape in [&[1usize, 5, 1][..], &[5, 1]] {
        check_adds(
            &format!("ReduceMean backward {dy_shape:?}"),
            &gpu,
            &mut rng,
            &[4, 5, 6],
            &want,
            Tol {
                abs: 1e-7,
                rel: 1e-6,
            },
            |e, t| grad::broadcast_acc_into(e, &gpu, &tdy, dy_shape, 0.5 / 24.0, t).unwrap(),
        );
    }
}

// ---- bad input ---------------------------------------------------------------------------

/// Wrong gradient shapes and regions are errors, not panics or silent garbage.
#[test]
fn bad_gradient_shapes_are_errors() {
    let Some(gpu) = gpu() else { return };
    let t = |s: &[usize]| gpu.empty(s, DType::F32).unwrap();
    let mut enc = gpu.encoder();
    let a = Conv2d {
        strides: [1, 1],
        pads: [1; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let (x, w) = (t(&[1, 2, 5, 5]), t(&[3, 2, 3, 3]));
    let (dy, bad) = (t(&[1, 3, 5, 5]), t(&[1, 3, 4, 5]));
    assert!(grad::conv_grad_input_into(&mut enc, &gpu, &w, &dy, &a, &x).is_ok());
    assert!(grad::conv_grad_input_into(&mut enc, &gpu, &w, &bad, &a, &x).is_err());
    assert!(grad::conv_grad_weight_into(&mut enc, &gpu, &x, &bad, &a, &w).is_err());
    assert!(grad::conv_grad_weight_into(&mut enc, &gpu, &x, &dy, &a, &t(&[3, 1, 3, 3])).is_err());
    assert!(grad::conv_grad_input_into(&mut enc, &gpu, &w, &dy, &a, &t(&[2, 5, 5])).is_err());

    let p = Pool2d {
        kernel: [2, 2],
        strides: [2, 2],
        pads: [0; 4],
        dilations: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
    };
    let px = t(&[1, 2, 6, 6]);
    for max in [true, false] {
        let dx = t(&[1, 2, 6, 6]);
        let ok = grad::pool_grad_into(&mut enc, &gpu, &px, &t(&[1, 2, 3, 3]), &p, max, &dx);
        assert!(ok.is_ok());
        assert!(
            grad::pool_grad_into(&mut enc, &gpu, &px, &t(&[1, 2, 3, 2]), &p, max, &dx).is_err()
        );
        assert!(
            grad::pool_grad_into(&mut enc, &gpu, &px, &t(&[1, 2, 3, 3]), &p, max, &t(&[5]))
                .is_err()
        );
    }

    let v = t(&[4, 5]);
    assert!(
        grad::unary_grad_into(&mut enc, &gpu, Unary::Tanh, &v, &t(&[4, 4]), &t(&[4, 5])).is_err()
    );
    assert!(
        grad::unary_grad_into(&mut enc, &gpu, Unary::Tanh, &v, &t(&[4, 5]), &t(&[21])).is_err()
    );

    let (ba, bb) = (t(&[2, 3, 4]), t(&[4]));
    for side in [Side::A, Side::B] {
        let dx = if side == Side::A {
            t(&[2, 3, 4])
        } else {
            t(&[4])
        };
        let ok = grad::binary_grad_into(
            &mut enc,
            &gpu,
            Binary::Mul,
            side,
            &ba,
            &bb,
            &t(&[2, 3, 4]),
            &dx,
        );
        assert!(ok.is_ok(), "{side:?}");
        for dy in [t(&[3, 4]), t(&[2, 3, 5]), t(&[2, 2, 3, 4]), t(&[24])] {
            let r = grad::binary_grad_into(&mut enc, &gpu, Binary::Mul, side, &ba, &bb, &dy, &dx);
            assert!(r.is_err(), "{side:?}: dy {:?} accepted", dy.shape());
        }
        let r = grad::binary_grad_into(
            &mut enc,
            &gpu,
            Binary::Mul,
            side,
            &ba,
            &bb,
            &t(&[2, 3, 4]),
            &t(&[3]),
        );
        assert!(r.is_err(), "{side:?}: dx of the wrong length");
    }

    let y = t(&[3, 10]);
    assert!(grad::softmax_grad_into(&mut enc, &gpu, &y, &t(&[3, 9]), 10, 1, &t(&[3, 10])).is_err());
    assert!(
        grad::softmax_grad_into(&mut enc, &gpu, &y, &t(&[3, 10]), 10, 1, &t(&[30, 2])).is_err()
    );
    assert!(grad::softmax_grad_into(&mut enc, &gpu, &y, &t(&[3, 10]), 7, 1, &t(&[3, 10])).is_err());
    let long = t(&[2, 8193]);
    assert!(
        grad::softmax_grad_into(&mut enc, &gpu, &long, &long, 8193, 1, &t(&[2, 8193])).is_err()
    );

    let p = Product {
        batches: 1,
        reduce: 1,
        m: 3,
        n: 4,
        k: 5,
        alpha: 1.0,
        a: Layout {
            batch: 0,
            reduce: 0,
            rows: 5,
            cols: 1,
        },
        b: Layout {
            batch: 0,
            reduce: 0,
            rows: 4,
            cols: 1,
        },
    };
    let (ma, mb) = (t(&[3, 5]), t(&[5, 4]));
    assert!(grad::matmul_acc_into(&mut enc, &gpu, &ma, &mb, &p, &t(&[3, 4])).is_ok());
    assert!(grad::matmul_acc_into(&mut enc, &gpu, &ma, &mb, &p, &t(&[4, 4])).is_err());
    assert!(grad::matmul_acc_into(&mut enc, &gpu, &ma, &t(&[4, 4]), &p, &t(&[3, 4])).is_err());

    let src = t(&[4, 4]);
    let r = grad::strided_acc_into(
        &mut enc,
        &gpu,
        &src,
        &view(0, &[4, 1]),
        &t(&[4, 4]),
        &view(1, &[4, 1]),
        &[4, 4],
    );
    assert!(r.is_err(), "a region past the end");
    let r = grad::broadcast_acc_into(&mut enc, &gpu, &t(&[3]), &[3], 1.0, &t(&[2, 4]));
    assert!(r.is_err(), "not broadcastable");
    let r = grad::broadcast_acc_into(&mut enc, &gpu, &t(&[3]), &[4], 1.0, &t(&[2, 4]));
    assert!(r.is_err(), "dy_shape is not dy's");
    gpu.submit(enc).unwrap();
}

#[test]
fn sanity_of_test_helpers() {
    // The logical-operand product the matmul test compares with.
    let a = Array2::from_shape_vec((2, 2), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let b = Array2::from_shape_vec((2, 1), vec![1.0f32, -1.0]).unwrap();
    assert_eq!(
        product(&[vec![a.view()]], &[vec![b.view()]], 2.0),
        vec![-2.0, -2.0]
    );
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 2.0, 3.0, 1.0, 1.0, 1.0]).unwrap();
    let s = softmax_axis(x.as_slice().unwrap(), 2, 3);
    assert!((s[0] + s[3] - 1.0).abs() < 1e-6 && s[0] == s[3]);
}

// ---- sums --------------------------------------------------------------------------------

/// `sum_acc_into` over `[outer, e, inner]` views, short (one pass) and long (partial sums,
/// past one chunk and past one workgroup of chunks), against f64 loops.
#[test]
fn sum_acc_matches_plain_loops() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(44);
    let cases = [
        (1, 1, 1),
        (3, 5, 7),
        (1, 17, 1),
        (64, 10, 1),
        (2, 3, 300),
        (300, 1, 5),
        (8, 24, 12544),
        (70_000, 2, 1),
        // Runs a multiple of 4 (the vector form): one chunk, chunks ending mid-run.
        (5, 3, 8),
        (40, 3, 12),
        (2, 2, 1000),
    ];
    for (outer, e, inner) in cases {
        let s = grad::Sum { outer, e, inner };
        let src = random(&mut rng, &[outer, e, inner], -1.0, 1.0);
        let alpha = rng.random_range(0.5..2.0f32);
        let mut want = vec![0.0f64; e];
        for ((_, j, _), &v) in src.indexed_iter().map(|(i, v)| ((i[0], i[1], i[2]), v)) {
            want[j] += alpha as f64 * v as f64;
        }
        let ts = up(&gpu, &src);
        let part = (s.partials() > 0).then(|| gpu.empty(&[s.partials()], DType::F32).unwrap());
        check_adds(
            &format!("sum {s:?}"),
            &gpu,
            &mut rng,
            &[e],
            &want,
            sum_tol(outer * inner),
            |enc, t| grad::sum_acc_into(enc, &gpu, &ts, s, alpha, part.as_ref(), t).unwrap(),
        );
    }
    assert_eq!(
        grad::Sum::of(&[24, 1, 1], &[8, 24, 7, 7]),
        Some(grad::Sum {
            outer: 8,
            e: 24,
            inner: 49
        })
    );
    assert_eq!(
        grad::Sum::of(&[5], &[2, 3, 5]),
        Some(grad::Sum {
            outer: 6,
            e: 5,
            inner: 1
        })
    );
    assert_eq!(
        grad::Sum::of(&[2, 1, 5], &[2, 3, 5]),
        None,
        "own dims not contiguous"
    );
    assert_eq!(
        grad::Sum::of(&[1], &[4, 4]),
        Some(grad::Sum {
            outer: 1,
            e: 1,
            inner: 16
        })
    );
}

// ---- resize --------------------------------------------------------------------------------

/// Nearest (every rounding) and linear resizes, with every coordinate transform, up and down
/// by integer and fractional factors, against the reference (the forward's adjoint) and the
/// reference against central differences (exact up to rounding: Resize is linear in x).
#[test]
fn resize_grads_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(46);
    let coords = [
        "half_pixel",
        "asymmetric",
        "align_corners",
        "pytorch_half_pixel",
    ];
    let nearests = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
    for case in 0..32 {
        let mode = if case % 2 == 0 { "nearest" } else { "linear" };
        let r = qforge::graph::attrs::Resize::from_onnx(
            mode,
            coords[(case / 2) % 4],
            nearests[(case / 8) % 4],
        )
        .unwrap();
        let xs = [
            rng.random_range(1..3),
            rng.random_range(1..3),
            rng.random_range(1..9),
            rng.random_range(1..9),
        ];
        let pick = |rng: &mut TestRng| [0.5f32, 0.75, 1.0, 1.5, 2.0, 3.0][rng.random_range(0..6)];
        let scales = [pick(&mut rng), pick(&mut rng)];
        let out = [
            ((xs[2] as f32 * scales[0]).floor() as usize).max(1),
            ((xs[3] as f32 * scales[1]).floor() as usize).max(1),
        ];
        let ys = [xs[0], xs[1], out[0], out[1]];
        let x = uniform(&mut rng, &xs, -2.0, 2.0);
        let dy = random(&mut rng, &ys, -2.0, 2.0);
        let want = refg::resize_grad(&xs, &dy.view(), r, scales);
        let what = format!("resize case {case} {r:?} x {xs:?} scales {scales:?} -> {out:?}");
        let tdy = up(&gpu, &dy);
        let terms = (out[0] * out[1]).div_ceil(xs[2] * xs[3]) * 4 + 4;
        check_adds(
            &what,
            &gpu,
            &mut rng,
            &xs,
            flat(&want),
            sum_tol(terms),
            |e, t| qforge::ops::pool::resize_grad_into(e, &gpu, &tdy, r, scales, t).unwrap(),
        );
        check_fd(&what, &mut rng, &x, flat(&want), FD, |x| {
            dot(&nn::resize(&x.view(), r, scales, out), &dy)
        });
    }
    // Cubic and antialiased resizes have no backward: a typed error, not a wrong gradient.
    let cubic = qforge::graph::attrs::Resize::from_onnx("cubic", "half_pixel", "floor").unwrap();
    let (dx, dy) = (
        gpu.empty(&[1, 1, 4, 4], DType::F32).unwrap(),
        gpu.empty(&[1, 1, 8, 8], DType::F32).unwrap(),
    );
    let mut enc = gpu.encoder();
    let err = qforge::ops::pool::resize_grad_into(&mut enc, &gpu, &dy, cubic, [2.0, 2.0], &dx);
    assert!(err.is_err(), "cubic resize backward must be refused");
}
