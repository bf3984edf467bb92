//! AdaRound (`quant::adaround`) on the Fashion-MNIST CNN at 4-bit weights: every layer's
//! reconstruction loss falls below rounding to nearest, the encodings stay frozen, the learned
//! rounding is on their grid and is what the simulation, the exported model and the QDQ export
//! carry, and held-out test accuracy and SQNR beat rounding to nearest and seq-MSE's SQNR.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use qforge::graph::ir::Const;
use qforge::quant::adaround::{self, AdaroundOptions};
use qforge::quant::analyzers::Scheme;
use qforge::quant::params::stored_weight_codes;
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::{seq_mse, QuantConfig};

fn w4a8(gpu: &Arc<qforge::gpu::Gpu>) -> QuantSim {
    let g = qforge::graph::load(&common::repo("models/fmnist_cnn.onnx")).unwrap();
    let opts = QuantOptions {
        param_bw: 4,
        act_bw: 8,
        ..Default::default()
    };
    QuantSim::new(
        gpu.clone(),
        g,
        &QuantConfig::default_per_channel(),
        opts,
        HashMap::new(),
    )
    .unwrap()
}

/// (accuracy, SQNR dB) on the test images after calibrating.
fn score(
    s: &mut QuantSim,
    calib: &ArrayD<f32>,
    test: &ArrayD<f32>,
    labels: &[usize],
) -> (f64, f64) {
    s.calibrate(Scheme::MinMax, calib.axis_chunks_iter(Axis(0), 128))
        .unwrap();
    let e = s.evaluate(test, 150, Some(labels)).unwrap();
    (e.accuracy.unwrap().1, e.sqnr_db)
}

/// The signed 4-bit codes of a QDQ initializer (two per byte, low nibble first).
fn int4_codes(t: &qforge::graph::onnx::TensorProto) -> Vec<i32> {
    let raw = t.raw_data.as_deref().unwrap();
    raw.iter()
        .flat_map(|b| [b & 0x0f, b >> 4])
        .map(|n| if n >= 8 { n as i32 - 16 } else { n as i32 })
        .collect()
}

#[test]
fn adaround_beats_nearest_rounding_at_4_bits_on_fashion_mnist() {
    let Some(gpu) = common::gpu() else { return };
    let (calib, _) = common::fashion_mnist(false, 256);
    let (test, labels) = common::fashion_mnist(true, 300);
    let naive = score(&mut w4a8(&gpu), &calib, &test, &labels);
    let mut seq = w4a8(&gpu);
    seq_mse::apply(&mut seq, &calib, 128, 20).unwrap();
    let seq = score(&mut seq, &calib, &test, &labels);

    let mut s = w4a8(&gpu);
    let original = s.prepared(1).unwrap();
    let encodings = s.param_encodings().to_vec();
    let opts = AdaroundOptions {
        iterations: Some(300),
        ..Default::default()
    };
    let mut heard = 0;
    let r = adaround::apply(&mut s, &calib, 128, &opts, &mut |_, layers, it, its| {
        assert_eq!(layers, 9);
        assert!(it <= its);
        heard += 1;
    })
    .unwrap();
    assert!(heard >= 9, "progress every layer");
    assert_eq!(r.layers.len(), 9, "every conv and the classifier");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    for l in &r.layers {
        eprintln!(
            "{}: loss nearest {:.5} -> {:.5}, up {:.2}, changed {:.3}, {:.0} it/s",
            l.weight,
            l.loss_nearest,
            l.loss_adaround,
            l.rounded_up,
            l.changed,
            l.iterations_per_s()
        );
        assert!(
            l.loss_adaround < l.loss_nearest,
            "{}: AdaRound's loss {} not below nearest's {}",
            l.weight,
            l.loss_adaround,
            l.loss_nearest
        );
        assert!(
            l.changed > 0.0 && l.changed < 0.5,
            "{}: {}",
            l.weight,
            l.changed
        );
    }
    assert_eq!(s.param_encodings(), &encodings[..], "encodings frozen");
    let ada = score(&mut s, &calib, &test, &labels);
    // The rounded weights: on the grid, carried by the simulation, changed where it said.
    let rounded = s.prepared(1).unwrap();
    let dir = common::Scratch::new("adaround");
    s.export(
        dir.path(),
        "m",
        qforge::quant::export::EncodingsVersion::V1_0_0,
    )
    .unwrap();
    s.export_qdq(dir.path(), "m").unwrap();
    let exported = qforge::graph::load(&dir.path().join("m.onnx")).unwrap();
    let bytes = std::fs::read(dir.path().join("m_qdq.onnx")).unwrap();
    let qdq = <qforge::graph::onnx::ModelProto as prost::Message>::decode(&bytes[..])
        .unwrap()
        .graph
        .unwrap();
    for (l, (name, e)) in r.layers.iter().zip(&encodings) {
        assert_eq!(&l.weight, name, "graph order");
        let w = rounded.weight(name).unwrap();
        let codes = stored_weight_codes(w, e).unwrap();
        let Const::F32(q) = &s.quantized_weights()[name] else {
            panic!("f32 weights")
        };
        assert_eq!(
            q, w,
            "{name}: the simulated weight is the rounded one, bit for bit"
        );
        assert_eq!(exported.weight(name).unwrap(), w, "{name}: exported model");
        let before = stored_weight_codes(original.weight(name).unwrap(), e).unwrap();
        let changed = codes.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert_eq!(changed as f64 / codes.len() as f64, l.changed, "{name}");
        assert!(
            codes.iter().zip(&before).all(|(a, b)| (a - b).abs() <= 1),
            "{name}: a code moved by more than one step"
        );
        let init = qdq
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(&format!("{name}_quantized")))
            .unwrap();
        let stored = int4_codes(init);
        assert_eq!(
            &stored[..codes.len()],
            codes.as_slice().unwrap(),
            "{name}: the QDQ export's codes"
        );
    }
    eprintln!("fmnist W4A8 (accuracy, dB): nearest {naive:?}, seq-MSE {seq:?}, AdaRound {ada:?}");
    assert!(ada.0 > naive.0, "accuracy {} vs nearest {}", ada.0, naive.0);
    assert!(
        ada.1 > naive.1 + 3.0,
        "SQNR {} vs nearest {}",
        ada.1,
        naive.1
    );
    assert!(ada.1 > seq.1, "SQNR {} vs seq-MSE {}", ada.1, seq.1);
}

#[test]
fn adaround_settings_and_data_are_checked() {
    let Some(gpu) = common::gpu() else { return };
    let (calib, _) = common::fashion_mnist(false, 8);
    let bad = [
        AdaroundOptions {
            iterations: Some(0),
            ..Default::default()
        },
        AdaroundOptions {
            batch: 0,
            ..Default::default()
        },
        AdaroundOptions {
            warm_start: 1.0,
            ..Default::default()
        },
        AdaroundOptions {
            beta: (2.0, 20.0),
            ..Default::default()
        },
        AdaroundOptions {
            lr: f32::NAN,
            ..Default::default()
        },
        AdaroundOptions {
            reg: -1.0,
            ..Default::default()
        },
    ];
    for o in bad {
        let mut s = w4a8(&gpu);
        let e = adaround::apply(&mut s, &calib, 8, &o, &mut |_, _, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("adaround"), "{e}");
    }
    let mut s = w4a8(&gpu);
    let none = calib.slice_axis(Axis(0), (0..0).into()).to_owned();
    let e =
        adaround::apply(&mut s, &none, 8, &Default::default(), &mut |_, _, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("samples"), "{e}");
    // More samples per batch than cached ones: batches of all of them.
    let tiny = AdaroundOptions {
        iterations: Some(3),
        batch: 64,
        gpu_cache_bytes: 0,
        ..Default::default()
    };
    let r = adaround::apply(&mut s, &calib, 8, &tiny, &mut |_, _, _, _| {}).unwrap();
    assert!(r
        .layers
        .iter()
        .all(|l| l.cache == adaround::CacheOn::Host && l.samples == 8));
}

/// AIMET's beta schedule: held at the start during the warm start (regularizer off), then a
/// cosine from 20 down to 2.
#[test]
fn beta_anneals_as_aimet_does() {
    let o = AdaroundOptions::default();
    assert_eq!(o.beta_at(0, 100), (20.0, false));
    assert_eq!(o.beta_at(19, 100), (20.0, false));
    assert_eq!(o.beta_at(20, 100), (20.0, true));
    let (mid, on) = o.beta_at(60, 100);
    assert!(on && (mid - 11.0).abs() < 1e-5, "{mid}");
    assert!((o.beta_at(99, 100).0 - 2.0).abs() < 0.01);
    assert_eq!(o.iterations_for(4), 15_000);
    assert_eq!(o.iterations_for(8), 10_000);
}
