//! Quantization-aware training (`quant::qat`) on the Fashion-MNIST CNN: at 4-bit weights and
//! activations, a short distillation from the FP32 model lifts held-out accuracy far above
//! post-training quantization; learned ranges move and stay valid; the trained encodings are
//! what the simulation computes with and exports.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
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
}
