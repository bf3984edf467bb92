//! QuantAnalyzer: partial simulations compute what the whole simulations compute, and the
//! per-layer scores (prefixes shared across layers) equal those of each layer's model run
//! whole, on the Fashion-MNIST CNN and on MobileNetV2 (residual Adds cross the cuts).

use crate::common;

use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use qforge::quant::analysis::{analyze, layers, AnalysisOptions, Score};
use qforge::quant::analyzers::Scheme;
use qforge::quant::sim::{Enabled, Model, QuantSim};
use qforge::quant::QuantConfig;

fn sim(gpu: Arc<qforge::gpu::Gpu>, model: &str, calib: &ArrayD<f32>) -> QuantSim {
    let g = qforge::graph::load(&common::repo(model)).unwrap();
    let mut sim = QuantSim::new(
        gpu,
        g,
        &QuantConfig::default_per_channel(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    sim.calibrate(Scheme::MinMax, calib.axis_chunks_iter(Axis(0), 4))
        .unwrap();
    sim
}

fn fmnist_x(n: usize) -> ArrayD<f32> {
    let x: ArrayD<f32> =
        ndarray_npy::read_npy(common::repo("tests/golden/fmnist_input8.npy")).unwrap();
    x.slice_axis(Axis(0), (0..n).into()).to_owned()
}

fn whole(sim: &QuantSim, e: &Enabled, x: &ArrayD<f32>) -> ArrayD<f32> {
    sim.partial_runner(e, None)
        .unwrap()
        .batch(4)
        .run(&[(sim.inputs()[0].as_str(), x.view())])
        .unwrap()
        .remove(0)
}

fn model_run(sim: &QuantSim, m: Model, x: &ArrayD<f32>) -> ArrayD<f32> {
    sim.runner(m)
        .unwrap()
        .batch(4)
        .run(&[(sim.inputs()[0].as_str(), x.view())])
        .unwrap()
        .remove(0)
}

#[test]
fn partial_simulations_with_all_some_or_no_quantizers_are_the_whole_ones() {
    let Some(gpu) = common::gpu() else { return };
    let x = fmnist_x(8);
    let sim = sim(gpu, "models/fmnist_cnn.onnx", &x);
    let all = Enabled::all(&sim);
    assert!(!all.activations.is_empty() && !all.params.is_empty());
    for (what, e, m) in [
        ("all", all.clone(), Model::Simulated),
        ("weights only", Enabled::weights_only(&sim), Model::Weights),
        ("none", Enabled::default(), Model::Fp32),
    ] {
        let (got, want) = (whole(&sim, &e, &x), model_run(&sim, m, &x));
        common::assert_bits_eq(what, got.as_slice().unwrap(), want.as_slice().unwrap());
    }
    // One layer's parameters alone: its weights quantized, the rest FP32.
    let some = Enabled {
        params: all.params.iter().take(1).cloned().collect(),
        ..Default::default()
    };
    let y = whole(&sim, &some, &x);
    let f = model_run(&sim, Model::Fp32, &x);
    assert!(y != f, "quantizing one weight changes the output");
    // A quantizer the simulation does not have is refused.
    let bad = Enabled {
        params: ["no such weight".to_string()].into(),
        ..Default::default()
    };
    let err = sim.partial_runner(&bad, None).err().expect("refused");
    assert!(err.to_string().contains("no such weight"), "{err}");
}

/// Every layer's scores recomputed with whole-model partial runs.
fn check_against_whole_runs(sim: &QuantSim, x: &ArrayD<f32>, every: usize) {
    let a = analyze(
        sim,
        x,
        None,
        x,
        AnalysisOptions { piece: 2, bins: 16 },
        &mut |_, _, _| {},
    )
    .unwrap();
    let reference = sim.fp32(x, 4).unwrap().remove(0);
    let score = |e: &Enabled| {
        let y = whole(sim, e, x);
        qforge::eval::sqnr_db(&reference, &y)
    };
    let close = |what: &str, got: &Score, want: f64| {
        let ok = (got.sqnr_db - want).abs() <= 1e-3 * want.abs().max(1.0) || got.sqnr_db == want;
        assert!(
            ok,
            "{what}: shared-prefix {} dB, whole run {want} dB",
            got.sqnr_db
        );
    };
    close(
        "weights only",
        &a.weights_only,
        score(&Enabled::weights_only(sim)),
    );
    close(
        "activations only",
        &a.activations_only,
        score(&Enabled::activations_only(sim)),
    );
    let all = Enabled::all(sim);
    close("all", &a.quantized, score(&all));
    assert_eq!(a.layers.len(), layers(sim).unwrap().len());
    let mut grouped = Enabled::default();
    for (k, s) in a.layers.iter().enumerate() {
        grouped = grouped.union(&s.layer.quantizers);
        if k % every != 0 {
            continue;
        }
        close(
            &format!("only {}", s.layer.name),
            &s.only,
            score(&s.layer.quantizers),
        );
        close(
            &format!("all but {}", s.layer.name),
            &s.all_but,
            score(&all.minus(&s.layer.quantizers)),
        );
    }
    assert_eq!(grouped, all, "every quantizer belongs to one layer");
    assert_eq!(a.errors.len(), all.activations.len());
    assert_eq!(
        a.histograms.len(),
        all.activations.len() + sim.param_encodings().len()
    );
    for h in &a.histograms {
        let n: u64 = h.counts.iter().sum();
        assert!(
            n > 0 && h.lo <= h.encoding.0 && h.encoding.1 <= h.hi,
            "{h:?}"
        );
    }
}

#[test]
fn per_layer_scores_with_shared_prefixes_equal_whole_runs_on_fmnist() {
    let Some(gpu) = common::gpu() else { return };
    let x = fmnist_x(5);
    let sim = sim(gpu, "models/fmnist_cnn.onnx", &x);
    check_against_whole_runs(&sim, &x, 1);
}

#[test]
fn per_layer_scores_with_shared_prefixes_equal_whole_runs_on_mobilenet_v2() {
    let Some(gpu) = common::gpu() else { return };
    let x = common::photo_crops(true);
    let x = x.slice_axis(Axis(0), (0..3).into()).to_owned();
    let sim = sim(gpu, "models/mobilenet_v2.onnx", &x);
    let adds = layers(&sim)
        .unwrap()
        .iter()
        .filter(|l| l.op == "Add")
        .count();
    assert!(adds >= 10, "MobileNetV2's residual Adds are layers: {adds}");
    check_against_whole_runs(&sim, &x, 12);
}
