//! Training kernels (`ops::train`) against their f64 CPU references
//! (`reference::grad::{loss, sgd_step, adam_step, soft_round, soft_round_grad}`): per-row losses and their gradients
//! (cross-entropy, distillation at several temperatures, MSE; the reference gradient also
//! against finite differences of the reference loss), the loss accumulator, the global
//! gradient norm and its clipping factor, and several SGD and Adam(W) steps with the `hyper`
//! buffer rewritten before each one (and the gradient buffer zeroed by each step), and
//! AdaRound's soft rounding with its gradient.

use crate::common::*;
use qforge::gpu::launch::{LOOP_BUDGET, WG};
use qforge::gpu::{Encoder, Gpu, GpuTensor};
use qforge::ops::elementwise::{self as ew, StridedView};
use qforge::ops::grad;
use qforge::ops::train::{self, hyper, LossKind, Optimizer, HYPER_LEN};
use qforge::reference::grad::{self as refg, Loss};
use qforge::DType;
use rand::Rng;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn download(gpu: &Gpu, t: &GpuTensor) -> Vec<f32> {
    gpu.download::<f32>(t).unwrap().into_raw_vec_and_offset().0
}

fn whole(n: usize) -> (StridedView, [usize; 1]) {
    (
        StridedView {
            offset: 0,
            strides: vec![1],
        },
        [n],
    )
}

/// Records the host's rewrite of `hyper` (a staging upload copied over the whole buffer).
fn write_hyper(gpu: &Gpu, enc: &mut Encoder, hyper: &GpuTensor, values: &[f32; HYPER_LEN]) {
    let staging = gpu.upload_slice(&[HYPER_LEN], values).unwrap();
    let (v, dims) = whole(HYPER_LEN);
    ew::strided_copy_into(enc, gpu, &staging, &v, hyper, &v, &dims).unwrap();
}

const KINDS: [(LossKind, Loss); 5] = [
    (LossKind::CrossEntropy, Loss::CrossEntropy),
    (
        LossKind::Distill { temperature: 1.0 },
        Loss::Distill { temperature: 1.0 },
    ),
    (
        LossKind::Distill { temperature: 2.0 },
        Loss::Distill { temperature: 2.0 },
    ),
    (
        LossKind::Distill { temperature: 4.0 },
        Loss::Distill { temperature: 4.0 },
    ),
    (LossKind::Mse, Loss::Mse),
];

/// Outputs and targets for `kind`: class indices for cross-entropy, teacher values otherwise.
fn loss_data(rng: &mut TestRng, kind: Loss, rows: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let s = values(rng, rows * len, -4.0, 4.0);
    let t = match kind {
        Loss::CrossEntropy => (0..rows).map(|_| rng.random_range(0..len) as f32).collect(),
        _ => values(rng, rows * len, -4.0, 4.0),
    };
    (s, t)
}

/// Per-row losses (written, not added) and `ds += scale * dL/ds` against the reference, and
/// the reference gradient against central differences of the reference loss.
#[test]
fn losses_match_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(60);
    let shapes = [(1, 1), (3, 2), (70, 10), (5, 100), (2, 1000), (1, 4096)];
    for (kind, rkind) in KINDS {
        for (rows, len) in shapes {
            let what = format!("{kind:?} rows {rows} x {len}");
            let (s, t) = loss_data(&mut rng, rkind, rows, len);
            let scale = 1.0 / rows as f32;
            let (losses, ds) = refg::loss(rkind, &s, &t, len, scale as f64);
            let ts = gpu.upload_slice(&[rows, len], &s).unwrap();
            let t_shape = if rkind == Loss::CrossEntropy {
                vec![rows]
            } else {
                vec![rows, len]
            };
            let tt = gpu.upload_slice(&t_shape, &t).unwrap();
            let pre = values(&mut rng, rows * len, -1.0, 1.0);
            let tds = gpu.upload_slice(&[rows, len], &pre).unwrap();
            let trow = gpu.upload_slice(&[rows], &vec![1e3f32; rows]).unwrap();
            let mut enc = gpu.encoder();
            train::loss_rows_into(&mut enc, &gpu, kind, &ts, &tt, len, scale, &tds, &trow).unwrap();
            gpu.submit(enc).unwrap();

            let temp2 = match rkind {
                Loss::Distill { temperature } => temperature * temperature,
                _ => 1.0,
            };
            let got = f64s(&download(&gpu, &trow));
            assert_close(
                &format!("{what}: row losses"),
                &got,
                &losses,
                Tol {
                    abs: 2e-6 * (len as f64).sqrt() * temp2,
                    rel: 1e-5,
                },
            );
            let got: Vec<f64> = download(&gpu, &tds)
                .iter()
                .zip(&pre)
                .map(|(&g, &p)| g as f64 - p as f64)
                .collect();
            assert_close(
                &format!("{what}: ds - prefill"),
                &got,
                &ds,
                Tol {
                    abs: 2e-6,
                    rel: 1e-4,
                },
            );

            // d(scale * sum of row losses)/ds by central differences of the reference.
            let total = |s: &[f32]| -> f64 {
                refg::loss(rkind, s, &t, len, 1.0).0.iter().sum::<f64>() * scale as f64
            };
            let mut sp = s.clone();
            let dmax = ds.iter().fold(0f64, |m, d| m.max(d.abs()));
            for _ in 0..12 {
                let i = rng.random_range(0..s.len());
                let eps = 1e-3f32;
                let (hi, lo) = (s[i] + eps, s[i] - eps);
                sp[i] = hi;
                let lp = total(&sp);
                sp[i] = lo;
                let lm = total(&sp);
                sp[i] = s[i];
                let fd = (lp - lm) / (hi as f64 - lo as f64);
                let tol = 1e-7 + 1e-4 * ds[i].abs() + 1e-5 * dmax;
                assert!(
                    (fd - ds[i]).abs() <= tol,
                    "{what}: dL/ds[{i}]: finite difference {fd}, reference {} (tol {tol:.2e})",
                    ds[i]
                );
            }
        }
    }
}

/// `acc[0..3] += (sum of the row losses, rows, 1)` per call, after the losses in the same
/// encoder; too many rows and a short accumulator are errors.
#[test]
fn loss_sum_accumulates() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(61);
    let (rows, len) = (1000, 12);
    let (s, t) = loss_data(&mut rng, Loss::CrossEntropy, rows, len);
    let (losses, _) = refg::loss(Loss::CrossEntropy, &s, &t, len, 1.0);
    let ts = gpu.upload_slice(&[rows, len], &s).unwrap();
    let tt = gpu.upload_slice(&[rows], &t).unwrap();
    let tds = gpu
        .upload_slice(&[rows, len], &vec![0f32; rows * len])
        .unwrap();
    let trow = gpu.empty(&[rows], DType::F32).unwrap();
    let pre = [1.5f32, 2.0, 3.0, -7.0];
    let acc = gpu.upload_slice(&[4], &pre).unwrap();
    let mut enc = gpu.encoder();
    for _ in 0..2 {
        train::loss_rows_into(
            &mut enc,
            &gpu,
            LossKind::CrossEntropy,
            &ts,
            &tt,
            len,
            1.0,
            &tds,
            &trow,
        )
        .unwrap();
        train::loss_sum_into(&mut enc, &gpu, &trow, &acc).unwrap();
    }
    gpu.submit(enc).unwrap();
    let sum: f64 = losses.iter().sum();
    let got = f64s(&download(&gpu, &acc));
    let want = [
        pre[0] as f64 + 2.0 * sum,
        pre[1] as f64 + 2.0 * rows as f64,
        pre[2] as f64 + 2.0,
        pre[3] as f64,
    ];
    assert_close("loss accumulator", &got, &want, Tol::SUM);

    let mut enc = gpu.encoder();
    let long = gpu.empty(&[LOOP_BUDGET as usize + 1], DType::F32).unwrap();
    assert!(train::loss_sum_into(&mut enc, &gpu, &long, &acc).is_err());
    let short = gpu.empty(&[2], DType::F32).unwrap();
    assert!(train::loss_sum_into(&mut enc, &gpu, &trow, &short).is_err());
}

/// Wrong shapes and over-long rows are errors, not panics.
#[test]
fn bad_loss_shapes_are_errors() {
    let Some(gpu) = gpu() else { return };
    let t = |s: &[usize]| gpu.empty(s, DType::F32).unwrap();
    let mut enc = gpu.encoder();
    let (s, ds, rows) = (t(&[4, 10]), t(&[4, 10]), t(&[4]));
    let ce = LossKind::CrossEntropy;
    let mse = LossKind::Mse;
    let mut run = |kind, s: &GpuTensor, tg: &GpuTensor, len, ds: &GpuTensor, r: &GpuTensor| {
        train::loss_rows_into(&mut enc, &gpu, kind, s, tg, len, 1.0, ds, r)
    };
    let labels = gpu.upload_slice(&[4], &[0f32, 3.0, 9.0, 1.0]).unwrap();
    assert!(run(ce, &s, &labels, 10, &ds, &rows).is_ok());
    assert!(run(ce, &s, &t(&[4]), 0, &ds, &rows).is_err(), "len 0");
    assert!(run(ce, &s, &t(&[4]), 7, &ds, &rows).is_err(), "rows of 7");
    assert!(run(ce, &s, &t(&[4]), 10, &t(&[4, 9]), &rows).is_err(), "ds");
    assert!(run(ce, &s, &t(&[4, 10]), 10, &ds, &rows).is_err(), "labels");
    assert!(run(mse, &s, &t(&[4]), 10, &ds, &rows).is_err(), "teacher");
    assert!(
        run(mse, &s, &t(&[4, 10]), 10, &ds, &t(&[5])).is_err(),
        "row losses"
    );
    let long = t(&[1, 4097]);
    assert!(
        run(mse, &long, &long, 4097, &t(&[1, 4097]), &t(&[1])).is_err(),
        "long rows"
    );
}

/// Sums of squares per chunk (one slot per `LOOP_BUDGET * WG` elements, overwritten), the
/// global norm and the clipping factor in `hyper` (other slots untouched).
#[test]
fn gradient_norm_and_clip_factor_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(62);
    let chunk = (LOOP_BUDGET * WG) as usize;
    assert_eq!(train::norm_slots(chunk), 1);
    assert_eq!(train::norm_slots(chunk + 1), 2);
    assert_eq!(train::norm_slots(0), 1);
    let sizes = [1, 1000, 300_001, chunk + 777];
    let grads: Vec<Vec<f32>> = sizes
        .iter()
        .map(|&n| values(&mut rng, n, -1.0, 1.0))
        .collect();
    let tg: Vec<GpuTensor> = grads
        .iter()
        .map(|g| gpu.upload_slice(&[g.len()], g).unwrap())
        .collect();
    // The reference sum of squares of every slot.
    let mut want_sums = Vec::new();
    for g in &grads {
        for c in g.chunks(chunk) {
            want_sums.push(c.iter().map(|&v| v as f64 * v as f64).sum::<f64>());
        }
    }
    let total: f64 = want_sums.iter().sum();
    let norm = total.sqrt();
    for max_norm in [0.0, norm / 4.0, norm * 2.0] {
        let sums = gpu
            .upload_slice(&[want_sums.len()], &vec![-5f32; want_sums.len()])
            .unwrap();
        let hyper_t = gpu.empty(&[HYPER_LEN], DType::F32).unwrap();
        let h = [0.1, 0.2, 0.3, 7.0, max_norm as f32, -1.0, 11.0, 12.0];
        let mut enc = gpu.encoder();
        write_hyper(&gpu, &mut enc, &hyper_t, &h);
        let mut slot = 0;
        for g in &tg {
            train::sq_sum_into(&mut enc, &gpu, g, &sums, slot).unwrap();
            slot += train::norm_slots(g.len());
        }
        train::clip_scale_into(&mut enc, &gpu, &sums, &hyper_t).unwrap();
        gpu.submit(enc).unwrap();
        let got = f64s(&download(&gpu, &sums));
        let tol = Tol {
            abs: 1e-6,
            rel: 2e-4,
        };
        assert_close("sums of squares", &got, &want_sums, tol);
        let got = download(&gpu, &hyper_t);
        let clip = if max_norm > 0.0 {
            (max_norm as f32 as f64 / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        assert_close(
            &format!("norm and clip factor (max norm {max_norm})"),
            &[got[hyper::NORM] as f64, got[hyper::CLIP] as f64],
            &[norm, clip],
            tol,
        );
        for slot in [hyper::LR, hyper::BIAS1, hyper::BIAS2, hyper::MAX_NORM, 6, 7] {
            assert_eq!(got[slot], h[slot], "hyper[{slot}] changed");
        }
    }

    let mut enc = gpu.encoder();
    let sums = gpu.empty(&[2], DType::F32).unwrap();
    assert!(train::sq_sum_into(&mut enc, &gpu, &tg[3], &sums, 1).is_err());
    assert!(train::sq_sum_into(&mut enc, &gpu, &tg[0], &sums, 2).is_err());
    let short = gpu.empty(&[HYPER_LEN - 1], DType::F32).unwrap();
    assert!(train::clip_scale_into(&mut enc, &gpu, &sums, &short).is_err());
}

/// What a test step clips by.
#[derive(Clone, Copy, Debug)]
enum Clip {
    /// hyper[CLIP] written by the host.
    Fixed(f32),
    /// hyper[MAX_NORM] = this fraction of the step's gradient norm; the factor from
    /// sq_sum + clip_scale.
    ToNorm(f64),
}

/// Several SGD and Adam(W) steps against the reference: the learning rate and bias corrections
/// change every step through `hyper`, the gradient is accumulated into the buffer the previous
/// step zeroed, and parameters and state stay on the GPU.
#[test]
fn optimizer_steps_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(63);
    let sgd = |momentum, nesterov, weight_decay| Optimizer::Sgd {
        momentum,
        nesterov,
        weight_decay,
    };
    let adam = |beta1, beta2, eps, weight_decay, decoupled| Optimizer::Adam {
        beta1,
        beta2,
        eps,
        weight_decay,
        decoupled,
    };
    let cases = [
        (sgd(0.0, false, 0.0), Clip::Fixed(1.0)),
        (sgd(0.0, false, 1e-2), Clip::Fixed(0.5)),
        (sgd(0.9, false, 0.0), Clip::Fixed(1.0)),
        (sgd(0.9, false, 5e-3), Clip::ToNorm(0.5)),
        (sgd(0.9, true, 0.0), Clip::Fixed(1.0)),
        (sgd(0.9, true, 1e-2), Clip::ToNorm(2.0)),
        (adam(0.9, 0.999, 1e-8, 0.0, false), Clip::Fixed(1.0)),
        (adam(0.9, 0.999, 1e-8, 1e-2, false), Clip::ToNorm(0.3)),
        (adam(0.8, 0.99, 1e-6, 1e-2, true), Clip::Fixed(1.0)),
        (adam(0.9, 0.999, 1e-8, 0.1, true), Clip::ToNorm(0.5)),
    ];
    let n = 20_003;
    for (step, clip) in cases {
        let what = format!("{step:?} clip {clip:?}");
        let p0 = values(&mut rng, n, -1.0, 1.0);
        let is_adam = matches!(step, Optimizer::Adam { .. });
        // SGD without momentum leaves its buffer alone: start it with junk.
        let m0 = match step {
            Optimizer::Sgd { momentum: 0.0, .. } => values(&mut rng, n, -3.0, 3.0),
            _ => vec![0.0; n],
        };
        let (tp, tm) = (
            gpu.upload_slice(&[n], &p0).unwrap(),
            gpu.upload_slice(&[n], &m0).unwrap(),
        );
        let tv = gpu.upload_slice(&[n], &vec![0f32; n]).unwrap();
        let tg = gpu.upload_slice(&[n], &vec![0f32; n]).unwrap();
        let hyper_t = gpu.empty(&[HYPER_LEN], DType::F32).unwrap();
        let (mut p, mut m, mut v) = (f64s(&p0), f64s(&m0), vec![0f64; n]);
        for t in 1..=5u32 {
            let g = values(&mut rng, n, -1.0, 1.0);
            let gnorm = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            let (lr, b1, b2) = match step {
                Optimizer::Adam { beta1, beta2, .. } => (
                    1e-2 * 0.9f32.powi(t as i32),
                    1.0 - (beta1 as f64).powi(t as i32),
                    1.0 - (beta2 as f64).powi(t as i32),
                ),
                Optimizer::Sgd { .. } => (0.1 * 0.8f32.powi(t as i32), 1.0, 1.0),
            };
            let (clip_slot, max_norm, factor) = match clip {
                Clip::Fixed(c) => (c, 0.0, c as f64),
                Clip::ToNorm(frac) => {
                    let max = (frac * gnorm) as f32;
                    (-9.0, max, (max as f64 / (gnorm + 1e-6)).min(1.0))
                }
            };
            let h = [lr, b1 as f32, b2 as f32, clip_slot, max_norm, 0.0, 0.0, 0.0];
            let mut enc = gpu.encoder();
            write_hyper(&gpu, &mut enc, &hyper_t, &h);
            let tstep = gpu.upload_slice(&[n], &g).unwrap();
            grad::broadcast_acc_into(&mut enc, &gpu, &tstep, &[n], 1.0, &tg).unwrap();
            if let Clip::ToNorm(_) = clip {
                let sums = gpu.empty(&[train::norm_slots(n)], DType::F32).unwrap();
                train::sq_sum_into(&mut enc, &gpu, &tg, &sums, 0).unwrap();
                train::clip_scale_into(&mut enc, &gpu, &sums, &hyper_t).unwrap();
            }
            let state_v = is_adam.then_some(&tv);
            // A parameter's own rate multiplies the schedule's.
            let lr_scale = [1.0, 0.5, 3.0][t as usize % 3];
            train::optimizer_step_into(
                &mut enc, &gpu, &step, &hyper_t, lr_scale, &tp, &tg, &tm, state_v,
            )
            .unwrap();
            let lr = lr * lr_scale;
            gpu.submit(enc).unwrap();

            let ge: Vec<f64> = g.iter().map(|&x| x as f64 * factor).collect();
            match step {
                Optimizer::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => refg::sgd_step(
                    &mut p,
                    &ge,
                    &mut m,
                    lr as f64,
                    momentum as f64,
                    nesterov,
                    weight_decay as f64,
                ),
                Optimizer::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled,
                } => refg::adam_step(
                    &mut p,
                    &ge,
                    &mut m,
                    &mut v,
                    t,
                    lr as f64,
                    (beta1 as f64, beta2 as f64, eps as f64),
                    weight_decay as f64,
                    decoupled,
                ),
            }
            let at = format!("{what} step {t}");
            let tol = Tol {
                abs: 2e-6,
                rel: 1e-5,
            };
            assert_close(&format!("{at}: p"), &f64s(&download(&gpu, &tp)), &p, tol);
            assert_close(&format!("{at}: m"), &f64s(&download(&gpu, &tm)), &m, tol);
            if is_adam {
                let tol = Tol {
                    abs: 1e-10,
                    rel: 1e-5,
                };
                assert_close(&format!("{at}: v"), &f64s(&download(&gpu, &tv)), &v, tol);
            }
            let left = download(&gpu, &tg);
            assert!(
                left.iter().all(|&x| x == 0.0),
                "{at}: the gradient buffer is not zeroed"
            );
        }
    }
}

/// Mismatched state lengths and Adam without its second moment are errors.
#[test]
fn bad_optimizer_state_is_an_error() {
    let Some(gpu) = gpu() else { return };
    let t = |n: usize| gpu.empty(&[n], DType::F32).unwrap();
    let mut enc = gpu.encoder();
    let h = t(HYPER_LEN);
    let (p, g, m, v) = (t(10), t(10), t(10), t(10));
    let sgd = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    };
    let adam = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
    };
    let step = train::optimizer_step_into;
    assert!(step(&mut enc, &gpu, &sgd, &h, 1.0, &p, &g, &m, None).is_ok());
    assert!(step(&mut enc, &gpu, &adam, &h, 1.0, &p, &g, &m, Some(&v)).is_ok());
    assert!(step(&mut enc, &gpu, &sgd, &h, 1.0, &p, &t(9), &m, None).is_err());
    assert!(step(&mut enc, &gpu, &sgd, &h, 1.0, &p, &g, &t(11), None).is_err());
    assert!(step(&mut enc, &gpu, &adam, &h, 1.0, &p, &g, &m, None).is_err());
    assert!(step(&mut enc, &gpu, &adam, &h, 1.0, &p, &g, &m, Some(&t(3))).is_err());
    assert!(step(&mut enc, &gpu, &sgd, &h, -1.0, &p, &g, &m, None).is_err());
    assert!(step(&mut enc, &gpu, &adam, &h, f32::NAN, &p, &g, &m, Some(&v)).is_err());
    gpu.submit(enc).unwrap();
}

/// AdaRound's soft rounding and its gradient (recon part times the grid step, plus the
/// annealed regularizer) against the f64 references over per-tensor and per-channel grids of
/// 4 and 8 bits, codes pushed past both ends of the grid, variables far into both saturated
/// tails, and the reference gradient against central differences of the reference loss.
#[test]
fn soft_rounding_matches_reference_and_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(64);
    // (shape, channel axis, levels)
    let cases: [(&[usize], Option<usize>, u32); 4] = [
        (&[7, 3, 3, 3], Some(0), 15),
        (&[300, 17], None, 255),
        (&[16, 1, 3, 3], Some(0), 14),
        (&[65, 33], Some(1), 255),
    ];
    // The kink of the rectified sigmoid's clamp: h leaves [0, 1] at a = +-ln(11).
    let kink = 11f64.ln();
    for (shape, axis, levels) in cases {
        let n: usize = shape.iter().product();
        let (channels, inner) = match axis {
            Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
            None => (1, n),
        };
        let scale = values(&mut rng, channels, 0.01, 0.2);
        let offset: Vec<f32> = (0..channels)
            .map(|c| match (levels, c % 2) {
                (255, 0) => 0.0,
                (255, _) => -128.0,
                (l, _) => -((l / 2) as f32) - (c % 3) as f32,
            })
            .collect();
        let mut a = values(&mut rng, n, -6.0, 6.0);
        for (i, v) in a.iter_mut().enumerate() {
            match i % 50 {
                0 => *v = 40.0,
                1 => *v = -40.0,
                2 => *v = 0.0,
                _ if ((*v as f64).abs() - kink).abs() < 1e-3 => *v += 0.01,
                _ => {}
            }
        }
        let chan = |i: usize| (i / inner) % channels;
        let floor: Vec<f32> = (0..n)
            .map(|i| {
                let c = chan(i);
                let code = rng.random_range(-2..=levels as i32 + 1) as f32;
                code + offset[c]
            })
            .collect();
        let dw = values(&mut rng, n, -1.0, 1.0);
        let mut grid_host = scale.clone();
        grid_host.extend_from_slice(&offset);
        let grid_t = gpu.upload_slice(&[2 * channels], &grid_host).unwrap();
        let grid = train::SoftGrid {
            grid: &grid_t,
            channels,
            inner,
            levels,
        };
        let ta = gpu.upload_slice(&[n], &a).unwrap();
        let tf = gpu.upload_slice(&[n], &floor).unwrap();
        let tw = gpu.empty(&[n], DType::F32).unwrap();
        let mut enc = gpu.encoder();
        train::soft_round_into(&mut enc, &gpu, &ta, &tf, grid, &tw).unwrap();
        gpu.finish(enc).unwrap();
        let lv = levels as f64;
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let c = chan(i);
                refg::soft_round(
                    a[i] as f64,
                    floor[i] as f64,
                    scale[c] as f64,
                    offset[c] as f64,
                    lv,
                )
                .1
            })
            .collect();
        let what = format!("soft rounding {shape:?} axis {axis:?} levels {levels}");
        assert_close(&what, &f64s(&download(&gpu, &tw)), &want, Tol::GEMM);
        for (beta, reg) in [(20.0f32, 0.0f32), (20.0, 0.01), (7.5, 0.3), (2.0, 1.0)] {
            let tdw = gpu.upload_slice(&[n], &dw).unwrap();
            let hyper_t = gpu.upload_slice(&[2], &[beta, reg]).unwrap();
            let start = values(&mut rng, n, -1.0, 1.0);
            let tda = gpu.upload_slice(&[n], &start).unwrap();
            let mut enc = gpu.encoder();
            train::soft_round_grad_into(&mut enc, &gpu, &ta, &tf, grid, &tdw, &hyper_t, &tda)
                .unwrap();
            gpu.finish(enc).unwrap();
            let grad = |i: usize, ai: f64| {
                let c = chan(i);
                refg::soft_round_grad(
                    ai,
                    floor[i] as f64,
                    scale[c] as f64,
                    offset[c] as f64,
                    lv,
                    dw[i] as f64,
                    beta as f64,
                    reg as f64,
                )
            };
            let want: Vec<f64> = (0..n)
                .map(|i| start[i] as f64 + grad(i, a[i] as f64))
                .collect();
            let what = format!("{what}, beta {beta} reg {reg}");
            assert_close(
                &format!("{what}: da"),
                &f64s(&download(&gpu, &tda)),
                &want,
                Tol {
                    abs: 1e-5,
                    rel: 1e-4,
                },
            );
            assert!(
                download(&gpu, &tdw).iter().all(|&v| v == 0.0),
                "{what}: dw zeroed"
            );
            // The reference against central differences of its loss.
            let loss = |i: usize, ai: f64| {
                let c = chan(i);
                let (h, w) =
                    refg::soft_round(ai, floor[i] as f64, scale[c] as f64, offset[c] as f64, lv);
                dw[i] as f64 * w + reg as f64 * (1.0 - (2.0 * h - 1.0).abs().powf(beta as f64))
            };
            let eps = 1e-6;
            for i in (0..n).step_by(7) {
                let ai = a[i] as f64;
                let c = chan(i);
                let u0 = floor[i] as f64 - offset[c] as f64;
                let near_kink = ((ai.abs() - kink).abs()) < 1e-3;
                let near_edge = [0.0, lv, -1.0, lv - 1.0]
                    .iter()
                    .any(|e| (u0 - e).abs() < 0.5);
                if near_kink || (near_edge && ai.abs() < kink) {
                    continue;
                }
                let fd = (loss(i, ai + eps) - loss(i, ai - eps)) / (2.0 * eps);
                let g = grad(i, ai);
                assert!(
                    (fd - g).abs() <= 1e-5 + 1e-4 * g.abs(),
                    "{what}: element {i} (a {ai}): central difference {fd}, reference {g}"
                );
            }
        }
    }
}
