//! Quantization-aware training (`quant::qat`) on the Fashion-MNIST CNN: at 4-bit weights and
//! activations, a short distillation from the FP32 model lifts held-out accuracy far above
//! post-training quantization; learned ranges move and stay valid; the trained encodings are
//! what the simulation computes with and exports.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use qforge::data::augment::Augment;
use qforge::quant::analyzers::Scheme;
use qforge::quant::qat::{self, QatOptions};
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn sim(gpu: &Arc<qforge::gpu::Gpu>, w: u32, a: u32, calib: &ArrayD<f32>) -> QuantSim {
    let g = qforge::graph::load(&common::repo("models/fmnist_cnn.onnx")).unwrap();
    let opts = QuantOptions {
        param_bw: w,
        act_bw: a,
        ..Default::default()
    };
    let mut s = QuantSim::new(
        gpu.clone(),
        g,
        &QuantConfig::default_per_channel(),
        opts,
        HashMap::new(),
    )
    .unwrap();
    s.calibrate(Scheme::MinMax, calib.axis_chunks_iter(Axis(0), 128))
        .unwrap();
    s
}

#[test]
fn qat_recovers_4_bit_accuracy_on_fashion_mnist() {
    let Some(gpu) = common::gpu() else { return };
    let (train, _) = common::fashion_mnist(false, 1024);
    let (test, labels) = common::fashion_mnist(true, 300);
    for (w, a) in [(4, 8), (4, 4)] {
        let mut s = sim(&gpu, w, a, &train);
        let before = s.evaluate(&test, 150, Some(&labels)).unwrap();
        let opts = QatOptions {
            epochs: 2,
            ..Default::default()
        };
        let r = qat::apply(&mut s, &train, &opts, &mut |_, _, _, _| {}).unwrap();
        let after = s.evaluate(&test, 150, Some(&labels)).unwrap();
        let (fp32, b) = before.accuracy.unwrap();
        let a_ = after.accuracy.unwrap().1;
        eprintln!(
            "W{w}A{a}: FP32 {fp32:.3}, PTQ {b:.3} ({:.1} dB), QAT {a_:.3} ({:.1} dB), {} steps in {:.0} s, loss {:?} -> {:?}",
            before.sqnr_db, after.sqnr_db, r.steps, r.seconds, r.loss.first(), r.loss.last()
        );
        for c in r.ranges.iter().take(4) {
            eprintln!("  {}: scale {:.5} -> {:.5}", c.name, c.before, c.after);
        }
        assert!(a_ > b, "W{w}A{a}: QAT {a_} vs PTQ {b}");
    }
}

#[test]
fn qat_checks_its_input_and_frozen_ranges_stay() {
    let Some(gpu) = common::gpu() else { return };
    let (train, _) = common::fashion_mnist(false, 64);
    let g = qforge::graph::load(&common::repo("models/fmnist_cnn.onnx")).unwrap();
    let mut raw = QuantSim::new(
        gpu.clone(),
        g,
        &QuantConfig::default_per_channel(),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let e = qat::apply(
        &mut raw,
        &train,
        &QatOptions::default(),
        &mut |_, _, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("calibrate first"), "{e}");
    let mut s = sim(&gpu, 4, 8, &train);
    for bad in [
        QatOptions {
            epochs: 0,
            ..Default::default()
        },
        QatOptions {
            batch: 65,
            ..Default::default()
        },
        QatOptions {
            labels: Some(vec![0; 3]),
            ..Default::default()
        },
        QatOptions {
            schedule: "linear".into(),
            ..Default::default()
        },
        QatOptions {
            range_lr: -1e-3,
            ..Default::default()
        },
        QatOptions {
            range_lr: f32::NAN,
            ..Default::default()
        },
        QatOptions {
            temperature: 0.0,
            ..Default::default()
        },
    ] {
        assert!(qat::apply(&mut s, &train, &bad, &mut |_, _, _, _| {}).is_err());
    }
    let (params, acts) = (
        s.param_encodings().to_vec(),
        s.activation_encodings().to_vec(),
    );
    let w0 = s.prepared(1).unwrap();
    let opts = QatOptions {
        learn_ranges: false,
        batch: 16,
        ..Default::default()
    };
    let mut heard = 0;
    let r = qat::apply(&mut s, &train, &opts, &mut |_, _, _, _| heard += 1).unwrap();
    assert_eq!(heard, 4);
    assert_eq!(r.steps, 4);
    assert!(r.range_curve.is_empty() && r.ranges.is_empty());
    assert_eq!(s.param_encodings(), &params[..], "frozen weight encodings");
    assert_eq!(
        s.activation_encodings(),
        &acts[..],
        "frozen activation encodings"
    );
    let w1 = s.prepared(1).unwrap();
    let name = &params[0].0;
    assert_ne!(w0.weight(name), w1.weight(name), "the weights trained");
    // Labels: cross-entropy.
    let (x, y) = common::fashion_mnist(false, 32);
    let opts = QatOptions {
        labels: Some(y),
        batch: 16,
        ..Default::default()
    };
    let r = qat::apply(&mut s, &x, &opts, &mut |_, _, _, _| {}).unwrap();
    assert!(r.loss.iter().all(|l| l.1.is_finite() && l.1 > 0.0));
    // Augmentation: seeded (the same run twice gives the same weights) and seen by training
    // (flips give other weights than none); refused on inputs that are not images.
    let flip = Augment::named("flip", 0.35).unwrap();
    let trained = |augment: Augment| {
        let mut t = sim(&gpu, 4, 8, &train);
        let opts = QatOptions {
            batch: 16,
            augment,
            ..Default::default()
        };
        qat::apply(&mut t, &x, &opts, &mut |_, _, _, _| {}).unwrap();
        t.prepared(1).unwrap().weight(name).cloned()
    };
    let flipped = trained(flip);
    assert_eq!(flipped, trained(flip), "seeded augmentation");
    assert_ne!(
        flipped,
        trained(Augment::NONE),
        "augmented images trained on"
    );
    let flat = x
        .clone()
        .into_shape_with_order((32, 784))
        .unwrap()
        .into_dyn();
    let opts = QatOptions {
        batch: 16,
        augment: flip,
        ..Default::default()
    };
    let e = qat::apply(&mut s, &flat, &opts, &mut |_, _, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("[N, C, H, W]"), "{e}");
    // LSQ's gradient scale and a cosine schedule: ranges learn and stay valid encodings.
    let opts = QatOptions {
        batch: 16,
        lsq: true,
        schedule: "cosine".into(),
        lr: 1e-3,
        ..Default::default()
    };
    let r = qat::apply(&mut s, &x, &opts, &mut |_, _, _, _| {}).unwrap();
    assert!(r.loss.iter().all(|l| l.1.is_finite()));
    assert!(r.ranges.iter().any(|c| c.after != c.before), "ranges moved");
    for (name, e) in s.activation_encodings().iter().chain(s.param_encodings()) {
        e.validate("qat")
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
}

/// The FakeQuant node's backward through `exec::Backward`: the straight-through input gradient
/// (seen through a trainable per-channel bias before it) and the scale and offset gradients in
/// columns 0 and 2 of its table's gradient, against the f64 reference of the fake-quant
/// backward.
#[test]
fn fake_quant_node_gradients_match_the_reference() {
    use qforge::exec::{Backward, Compile, Params, Plan};
    use qforge::graph::attrs::Binary;
    use qforge::graph::ir::{Const, Dim, Graph, Node, Op};
    use qforge::quant::encoding::{Encoding, QuantKind};
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(70);
    let shape = [2usize, 3, 5, 5];
    let n: usize = shape.iter().product();
    let x = ArrayD::from_shape_vec(shape.to_vec(), common::values(&mut rng, n, -2.0, 2.0)).unwrap();
    let dy =
        ArrayD::from_shape_vec(shape.to_vec(), common::values(&mut rng, n, -1.0, 1.0)).unwrap();
    let e = Encoding::from_ranges(
        &[-1.0, -0.5, 0.0],
        &[1.0, 1.5, 0.7],
        4,
        QuantKind::Asymmetric,
        Some(1),
    )
    .unwrap();
    let table: Vec<f32> = e.grid().unwrap().table().into_iter().flatten().collect();
    let mut g = Graph {
        name: "fq".into(),
        opset: 17,
        ..Default::default()
    };
    g.inputs = vec!["x".into()];
    g.input_dims
        .insert("x".into(), shape.iter().map(|&d| Dim::Fixed(d)).collect());
    g.consts
        .insert("b".into(), Const::F32(ArrayD::zeros(vec![1, 3, 1, 1])));
    g.consts.insert(
        "t".into(),
        Const::F32(ArrayD::from_shape_vec(vec![3, 4], table).unwrap()),
    );
    g.nodes = vec![
        Node {
            name: "add".into(),
            op: Op::Binary(Binary::Add),
            inputs: vec!["x".into(), "b".into()],
            outputs: vec!["xb".into()],
        },
        Node {
            name: "fq".into(),
            op: Op::FakeQuant {
                axis: Some(1),
                steps: e.steps(),
            },
            inputs: vec!["xb".into(), "t".into()],
            outputs: vec!["y".into()],
        },
    ];
    g.outputs = vec!["y".into()];
    let g = qforge::graph::Prepared::new(g).at(2).unwrap();
    let trainable: std::collections::HashSet<String> = ["b".to_string(), "t".to_string()].into();
    let taps = Backward::taps(&gpu, &g, &trainable, false).unwrap();
    let params = Arc::new(Params::new(gpu.clone()));
    let plan = Plan::compile(
        gpu.clone(),
        &g,
        Compile {
            taps: &taps,
            params: Some(params),
            simulation: None,
        },
    )
    .unwrap();
    let backward = Backward::build(gpu.clone(), &g, &plan, &trainable, false).unwrap();
    plan.write_inputs(&[("x", x.view())]).unwrap();
    let tdy = gpu.upload(&dy.view()).unwrap();
    let mut enc = gpu.encoder();
    plan.record(&mut enc);
    backward.record_zero(&mut enc);
    let out = backward.output_grad("y").unwrap();
    enc.copy(&tdy, 0, out, 0, tdy.bytes());
    backward.record(&mut enc);
    gpu.finish(enc).unwrap();
    let grads: HashMap<&str, Vec<f32>> = backward
        .param_grads()
        .iter()
        .map(|(n, t)| {
            (
                n.as_str(),
                gpu.download::<f32>(t).unwrap().into_raw_vec_and_offset().0,
            )
        })
        .collect();
    let (gx, gs, go) =
        qforge::reference::quant::fake_quant_backward(&x.view(), &dy.view(), &e.grid().unwrap())
            .unwrap();
    let db: Vec<f64> = (0..3)
        .map(|c| gx.index_axis(Axis(1), c).iter().map(|&v| v as f64).sum())
        .collect();
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    common::assert_close(
        "straight-through (bias gradient)",
        &f64s(&grads["b"]),
        &db,
        common::Tol::SUM,
    );
    let t = &grads["t"];
    let col = |k: usize| (0..3).map(|c| t[4 * c + k] as f64).collect::<Vec<_>>();
    common::assert_close("scale gradient", &col(0), &gs, common::Tol::SUM);
    common::assert_close("offset gradient", &col(2), &go, common::Tol::SUM);
    assert!(
        col(1).iter().chain(&col(3)).all(|&v| v == 0.0),
        "columns 1 and 3 carry nothing"
    );
}

#[test]
fn range_table_gradient_is_scaled_as_lsq_asks() {
    let Some(gpu) = common::gpu() else { return };
    // Gradients of a 3-channel table: (scale, 1 / scale, offset, unused) per channel.
    let dtable: Vec<f32> = (0..12).map(|i| 0.5 + i as f32 * 0.25).collect();
    // The range is (ln scale, offset): the scale's gradient is carried to its logarithm.
    let scales = [0.5f32, 2.0, 0.0125];
    let range: Vec<f32> = scales.iter().flat_map(|s| [s.ln(), -3.0]).collect();
    for (learn_offset, grad_scale) in [(true, 1.0f32), (true, 0.125), (false, 0.3)] {
        let dt = gpu.upload_slice(&[3, 4], &dtable).unwrap();
        let dr = gpu.upload_slice(&[3, 2], &[1.0f32; 6]).unwrap();
        let r = gpu.upload_slice(&[3, 2], &range).unwrap();
        let mut enc = gpu.encoder();
        qforge::ops::train::range_table_grad_into(
            &mut enc,
            &gpu,
            &r,
            &dt,
            &dr,
            learn_offset,
            grad_scale,
        )
        .unwrap();
        gpu.finish(enc).unwrap();
        let got = gpu
            .download::<f32>(&dr)
            .unwrap()
            .into_raw_vec_and_offset()
            .0;
        let cleared = gpu
            .download::<f32>(&dt)
            .unwrap()
            .into_raw_vec_and_offset()
            .0;
        for c in 0..3 {
            let want = 1.0 + grad_scale as f64 * scales[c] as f64 * dtable[4 * c] as f64;
            assert!(
                (got[2 * c] as f64 - want).abs() <= 1e-6 * want.abs(),
                "ln scale {c}: {} against {want}",
                got[2 * c]
            );
            let offset = match learn_offset {
                true => 1.0 + grad_scale * dtable[4 * c + 2],
                false => 1.0,
            };
            assert_eq!(got[2 * c + 1], offset, "offset {c}");
        }
        assert!(
            cleared.iter().all(|&v| v == 0.0),
            "the table gradient is cleared"
        );
    }
}

#[test]
fn learned_offsets_are_used_on_the_grid_as_exported() {
    let Some(gpu) = common::gpu() else { return };
    // (ln scale, offset) per channel: offsets at halves both ways and past both ends of a
    // 4-bit grid; the last scale below AIMET's minimum.
    let want_scale = [0.5f32, 0.25, 1.0, 2.0, f32::EPSILON];
    let offsets = [-2.5f32, 0.4, -20.0, 3.0, -7.5];
    let mut range: Vec<f32> = want_scale
        .iter()
        .zip(offsets)
        .flat_map(|(s, o)| [s.ln(), o])
        .collect();
    range[8] = -40.0;
    for (learned, want_offset) in [
        (Some(15), [-3.0f32, 0.0, -15.0, 0.0, -8.0]),
        (None, [-2.5, 0.4, -20.0, 3.0, -7.5]),
    ] {
        let r = gpu.upload_slice(&[5, 2], &range).unwrap();
        let t = gpu.upload_slice(&[5, 4], &[9f32; 20]).unwrap();
        let mut enc = gpu.encoder();
        qforge::ops::train::range_table_into(&mut enc, &gpu, &r, &t, learned).unwrap();
        gpu.finish(enc).unwrap();
        let table = gpu.download::<f32>(&t).unwrap().into_raw_vec_and_offset().0;
        for c in 0..5 {
            let row = &table[4 * c..4 * c + 4];
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs();
            assert!(close(row[0], want_scale[c]), "scale {c}: {}", row[0]);
            assert!(
                close(row[1], 1.0 / want_scale[c]),
                "1 / scale {c}: {}",
                row[1]
            );
            assert_eq!(row[2], want_offset[c], "offset {c} ({learned:?})");
            assert_eq!(row[3], 0.0, "unused column {c}");
        }
    }
}
