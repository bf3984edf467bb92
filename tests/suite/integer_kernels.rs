//! The integer simulation's kernels (conv.wgsl's qconv, quant.wgsl's requant, qadd and the
//! exact-division fake quantization) against their CPU references, bit for bit.

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use qforge::graph::attrs::Conv2d;
use qforge::graph::attrs::{AddGrids, IntGrid};
use qforge::ops::conv;
use qforge::ops::quant;
use qforge::quant::{Encoding, QuantKind};
use qforge::reference::integer as reference;
use qforge::DType;
use rand::Rng;

/// Bit-equal, except that a zero may carry either sign (a GPU may give -0.0 for a zero code).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|&x| if x == 0.0 { 0.0 } else { x })
            .collect::<Vec<f32>>()
    };
    assert_bits_eq(what, &norm(got), &norm(want));
}

/// Dequantized values `r * scale` for random integer codes `r` in `[lo, hi]`.
fn on_grid(rng: &mut crate::common::TestRng, n: usize, scale: f32, lo: i32, hi: i32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(lo..=hi) as f32 * scale)
        .collect()
}

#[test]
fn qconv_and_requant_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(71);
    for case in 0..40 {
        let groups = [1, 1, 2, 0][case % 4];
        let cin_g = rng.random_range(1..6);
        let cin = if groups == 0 {
            rng.random_range(1..9)
        } else {
            cin_g * groups
        };
        let groups = if groups == 0 { cin } else { groups };
        let cout = groups * rng.random_range(1..6);
        let (kh, kw) = (rng.random_range(1..4), rng.random_range(1..4));
        let a = Conv2d {
            strides: [rng.random_range(1..3), rng.random_range(1..3)],
            pads: [
                rng.random_range(0..2),
                rng.random_range(0..2),
                rng.random_range(0..2),
                rng.random_range(0..2),
            ],
            dilations: [1, rng.random_range(1..3)],
            groups,
        };
        let (h, w) = (rng.random_range(kh * 2..12), rng.random_range(kw * 2..12));
        let n = rng.random_range(1..3);
        let sx = 10f32.powf(rng.random_range(-3.0..0.0));
        let zp = rng.random_range(0..256);
        let x = ArrayD::from_shape_vec(
            IxDyn(&[n, cin, h, w]),
            on_grid(&mut rng, n * cin * h * w, sx, -zp, 255 - zp),
        )
        .unwrap();
        let wt = ArrayD::from_shape_fn(IxDyn(&[cout, cin / groups, kh, kw]), |_| {
            rng.random_range(-128..=127i32)
        });
        let shape = qforge::graph::shape::conv_output_shape(x.shape(), wt.shape(), &a).unwrap();
        let want_acc = reference::qconv(&x.view(), 1.0 / sx, &wt.view(), &a);

        let bias: Vec<i32> = (0..cout).map(|_| rng.random_range(-5000..5000)).collect();
        let mult: Vec<f32> = (0..cout)
            .map(|_| 10f32.powf(rng.random_range(-4.0..-1.0)))
            .collect();
        let grid = IntGrid {
            scale: 0.02,
            lo: -(rng.random_range(0..256) as f32),
            hi: 0.0,
        };
        let grid = IntGrid {
            hi: grid.lo + 255.0,
            ..grid
        };
        let want_y = reference::requant(
            want_acc.as_slice().unwrap(),
            &bias,
            &mult,
            shape[2] * shape[3],
            grid,
        );

        let (xt, wt_t) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&wt.view()).unwrap(),
        );
        let acc = gpu.empty(&shape, DType::I32).unwrap();
        let (bt, mt) = (
            gpu.upload_slice(&[cout], &bias).unwrap(),
            gpu.upload_slice(&[cout], &mult).unwrap(),
        );
        let y = gpu.empty(&shape, DType::F32).unwrap();
        let mut enc = gpu.encoder();
        conv::qconv2d_into(&mut enc, &gpu, &xt, 1.0 / sx, &wt_t, &a, &acc).unwrap();
        quant::requant_into(
            &mut enc,
            &gpu,
            &acc,
            &quant::Requant {
                bias: &bt,
                multiplier: &mt,
                inner: shape[2] * shape[3],
                grid,
            },
            &y,
        )
        .unwrap();
        let out = gpu.submit_and_read(enc, &[&acc, &y]).unwrap();
        let got_acc: Vec<i32> = bytemuck::pod_collect_to_vec(&out[0]);
        let got_y: Vec<f32> = bytemuck::pod_collect_to_vec(&out[1]);
        assert_eq!(
            got_acc,
            want_acc.as_slice().unwrap(),
            "qconv case {case}: {:?} {a:?}",
            x.shape()
        );
        assert_same(&format!("requant case {case}"), &got_y, &want_y);
    }
}

#[test]
fn qconv_splits_long_reductions_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(72);
    // 3x3 over 4,000 input channels: past the loop budget of one dispatch.
    let (cin, cout) = (4000, 4);
    let x = ArrayD::from_shape_vec(
        IxDyn(&[1, cin, 3, 3]),
        on_grid(&mut rng, cin * 9, 0.05, -100, 155),
    )
    .unwrap();
    let wt = ArrayD::from_shape_fn(IxDyn(&[cout, cin, 3, 3]), |_| {
        rng.random_range(-127..=127i32)
    });
    let a = Conv2d {
        pads: [1; 4],
        ..Default::default()
    };
    let want = reference::qconv(&x.view(), 20.0, &wt.view(), &a);
    let (xt, wt_t) = (
        gpu.upload(&x.view()).unwrap(),
        gpu.upload(&wt.view()).unwrap(),
    );
    let acc = gpu.empty(want.shape(), DType::I32).unwrap();
    let mut enc = gpu.encoder();
    conv::qconv2d_into(&mut enc, &gpu, &xt, 20.0, &wt_t, &a, &acc).unwrap();
    gpu.submit(enc).unwrap();
    assert_eq!(gpu.download::<i32>(&acc).unwrap(), want);
}

#[test]
fn qadd_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(73);
    for case in 0..30 {
        let n = rng.random_range(1..50_000);
        let signed = case % 3 == 2;
        let (qmin, qmax) = if signed {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        let zp = |rng: &mut crate::common::TestRng| {
            if signed {
                0.0
            } else {
                rng.random_range(0..256) as f32
            }
        };
        let sc = |rng: &mut crate::common::TestRng| 10f32.powf(rng.random_range(-3.0..0.0));
        let g = AddGrids {
            a: (sc(&mut rng), zp(&mut rng)),
            b: (sc(&mut rng), zp(&mut rng)),
            c: (sc(&mut rng), zp(&mut rng)),
            qmin,
            qmax,
        };
        let a = on_grid(
            &mut rng,
            n,
            g.a.0,
            (qmin - g.a.1) as i32,
            (qmax - g.a.1) as i32,
        );
        let b = on_grid(
            &mut rng,
            n,
            g.b.0,
            (qmin - g.b.1) as i32,
            (qmax - g.b.1) as i32,
        );
        let want = reference::qadd(&a, &b, g);
        let (at, bt) = (
            gpu.upload_slice(&[n], &a).unwrap(),
            gpu.upload_slice(&[n], &b).unwrap(),
        );
        let y = gpu.empty(&[n], DType::F32).unwrap();
        let mut enc = gpu.encoder();
        quant::qadd_into(&mut enc, &gpu, &at, &bt, g, &y).unwrap();
        gpu.submit(enc).unwrap();
        assert_same(
            &format!("qadd case {case} {g:?}"),
            gpu.download::<f32>(&y).unwrap().as_slice().unwrap(),
            &want,
        );
    }
}

/// onnxruntime 1.32's QLinearAdd on an exact tie (MobileNetV2's add_51 on a held-out photo):
/// its constant part is computed with a contracted multiply-add, which puts the sum just
/// below 112.5 where the plain f32 form puts it just above.
#[test]
fn qadd_ties_round_as_onnxruntime_does() {
    let g = AddGrids {
        a: (0.040_826_42, 133.0),
        b: (0.026_664_017, 131.0),
        c: (0.049_212_74, 134.0),
        qmin: 0.0,
        qmax: 255.0,
    };
    let (a, b) = ((79.0 - 133.0) * g.a.0, (174.0 - 131.0) * g.b.0);
    let y = reference::qadd(&[a], &[b], g)[0];
    assert_eq!(y / g.c.0 + 134.0, 112.0, "onnxruntime's code");
    let t = g.table();
    let at = 79 * 256 + 174;
    assert_eq!((t[at / 4] >> (8 * (at % 4))) & 255, 112);
}

#[test]
fn exact_fake_quant_rounds_the_ieee_quotient() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(74);
    for case in 0..20 {
        let scale = 10f32.powf(rng.random_range(-4.0..1.0));
        let e = Encoding::from_ranges(
            &[-100.0 * scale],
            &[155.0 * scale],
            8,
            QuantKind::Asymmetric,
            None,
        )
        .unwrap();
        // Values near the grid's rounding edges (k + 1/2) * scale, where x * (1 / scale) and
        // x / scale round differently most often, and dequantized values of other grids.
        let n = 100_000;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let k = rng.random_range(-120..170) as f32;
                let edge = (k + 0.5) * e.scale[0];
                if i % 2 == 0 {
                    f32::from_bits((edge.to_bits() as i64 + rng.random_range(-3..=3)) as u32)
                } else {
                    rng.random_range(-400..400) as f32 * e.scale[0] * rng.random_range(0.3..1.7f32)
                }
            })
            .collect();
        let want = reference::fake_quant_divided(&x, e.scale[0], e.offset[0], e.steps() as f32);
        let (xt, table) = (
            gpu.upload_slice(&[n], &x).unwrap(),
            quant::upload_table(&gpu, &e.grid().unwrap()).unwrap(),
        );
        let y = gpu.empty(&[n], DType::F32).unwrap();
        let mut enc = gpu.encoder();
        quant::fake_quant_table_into(&mut enc, &gpu, &xt, &table, e.steps(), None, true, &y)
            .unwrap();
        gpu.submit(enc).unwrap();
        assert_bits_eq(
            &format!("exact fake-quant case {case} scale {scale}"),
            gpu.download::<f32>(&y).unwrap().as_slice().unwrap(),
            &want,
        );
    }
}
