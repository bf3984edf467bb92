//! Post-training techniques on real models: cross-layer equalization against AIMET's own
//! `equalize_model` output (tests/golden/aimet/pt_cle), bias correction,
//! sequential MSE and the data-free pipeline, and their bad inputs.

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use qforge::graph::passes::cle::{CleOptions, ClipMode};
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::QuantConfig;
use serde_json::Value;

fn mobilenet() -> qforge::graph::ir::Graph {
    qforge::graph::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/mobilenet_v2.onnx"))
        .unwrap()
}

fn sqnr(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    qforge::eval::sqnr_db(a, b)
}

/// AIMET's per-tensor config in aimet-onnx's style (the AIMET parity checks use it).
fn per_tensor_sim(gpu: Arc<qforge::gpu::Gpu>) -> QuantSim {
    let cfg = QuantConfig::load(&common::repo("configs/aimet/default_config.json"))
        .unwrap()
        .with_placement(qforge::quant::PlacementStyle::AimetOnnx);
    QuantSim::new(
        gpu,
        mobilenet(),
        &cfg,
        QuantOptions::default(),
        HashMap::new(),
    )
    .unwrap()
}

#[test]
fn cle_matches_aimet_equalize_model_on_mobilenet_v2() {
    let Some(gpu) = common::gpu() else { return };
    let mut sim = per_tensor_sim(gpu);
    // aimet-onnx 2.42 recognises a ReLU6 only when its lower bound comes from a Constant node;
    // this model's Clip bounds are initializers, so every Clip ends AIMET's chains and only the
    // two Conv→Conv pairs without an activation are equalized (one pass, full-beta absorption).
    let report = sim
        .equalize(CleOptions {
            max_iterations: 1,
            clip: ClipMode::EndChain,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.iterations, 1);
    assert_eq!(
        report.sets,
        vec![
            vec!["Conv_6".to_string(), "Conv_8".into()],
            vec!["Conv_144".into(), "Conv_146".into()]
        ]
    );
    assert_eq!(report.absorbed.len(), 2);
    // Weight encodings after CLE equal AIMET's (per-tensor: they see every scaled weight's max).
    let want: Value = common::aimet_encodings("pt_cle", "model.encodings");
    let want: HashMap<String, f64> = want["param_encodings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["scale"][0].as_f64().unwrap(),
            )
        })
        .collect();
    let mut worst = (0f64, String::new());
    for (name, e) in sim.param_encodings() {
        let w = want[name];
        let rel = (e.scale[0] as f64 - w).abs() / w;
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    assert!(worst.0 < 1e-5, "worst weight scale vs AIMET: {worst:?}");
    // The equalized FP32 model computes what AIMET's equalized model computes.
    let eval = common::photo_crops(true);
    let x = eval.slice_axis(Axis(0), (0..4).into()).to_owned();
    let want = common::aimet_npy("pt_cle", "fp32_prepared_outputs.npy");
    let want = want.slice_axis(Axis(0), (0..4).into()).to_owned();
    let g = sim.prepared(4).unwrap();
    let plan = qforge::exec::Plan::compile(sim.gpu().clone(), &g, Default::default()).unwrap();
    let got = plan
        .run(&[("input", x.view())], plan.outputs())
        .unwrap()
        .remove(0);
    let s = sqnr(&want, &got);
    assert!(s > 70.0, "equalized FP32 vs AIMET's: {s:.1} dB");
}

fn fmnist() -> qforge::graph::ir::Graph {
    qforge::graph::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/fmnist_cnn.onnx"))
        .unwrap()
}

fn fmnist_input(n: usize) -> ArrayD<f32> {
    let x: ArrayD<f32> =
        read_npy(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fmnist_input8.npy"))
            .unwrap();
    let reps: Vec<_> = (0..n.div_ceil(8)).map(|_| x.view()).collect();
    let all = ndarray::concatenate(Axis(0), &reps).unwrap();
    all.slice_axis(Axis(0), (0..n).into()).to_owned()
}

fn run(gpu: &Arc<qforge::gpu::Gpu>, g: &qforge::graph::ir::Graph, x: &ArrayD<f32>) -> ArrayD<f32> {
    let plan = qforge::exec::Plan::compile(gpu.clone(), g, Default::default()).unwrap();
    plan.run(&[("input", x.view())], plan.outputs())
        .unwrap()
        .remove(0)
}

fn with_relus(g: &mut qforge::graph::ir::Graph) {
    use qforge::graph::attrs::Unary;
    use qforge::graph::ir::Op;
    for n in g.nodes.iter_mut() {
        if let Op::Unary(Unary::Clip(lo, _)) = n.op {
            if lo == 0.0 {
                n.op = Op::Unary(Unary::Relu);
            }
        }
    }
}

#[test]
fn cle_keeps_the_fp32_function_and_equalizes_ranges() {
    use qforge::graph::passes::{bn_fold, cle};
    let Some(gpu) = common::gpu() else { return };
    let mut g = fmnist();
    g.resolve_with_batch(&HashMap::new(), Some(8)).unwrap();
    let folded = bn_fold::fold_batch_norms(&mut g).unwrap();
    with_relus(&mut g);
    let before = g.clone();
    let mut bn = cle::bn_stats(&folded);
    let report = cle::equalize(
        &mut g,
        &mut bn,
        CleOptions {
            high_bias_absorption: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        !report.sets.is_empty() && report.relu6_replaced.is_empty(),
        "{report:?}"
    );
    let x = fmnist_input(8);
    let (a, b) = (run(&gpu, &before, &x), run(&gpu, &g, &x));
    assert!(
        sqnr(&a, &b) > 90.0,
        "scaling alone changed the function: {:.1} dB",
        sqnr(&a, &b)
    );
    // After convergence, the layers of a pair span equal ranges channel by channel.
    assert!(
        report.last_change <= 1e-3 && report.iterations > 1,
        "{report:?}"
    );
    // High-bias absorption keeps the function too (c <= beta - 3|gamma| stays in ReLU's
    // linear region for the statistics the BN describes; these inputs follow them closely).
    let mut h = before.clone();
    let mut bn = cle::bn_stats(&folded);
    let r = cle::equalize(&mut h, &mut bn, CleOptions::default()).unwrap();
    assert!(!r.absorbed.is_empty());
    let c = run(&gpu, &h, &x);
    assert!(
        sqnr(&a, &c) > 40.0,
        "with absorption: {:.1} dB",
        sqnr(&a, &c)
    );
}

#[test]
fn cle_reports_zero_channels_and_models_without_pairs() {
    use qforge::graph::ir::Const;
    use qforge::graph::passes::{bn_fold, cle};
    let mut g = fmnist();
    g.resolve_with_batch(&HashMap::new(), Some(1)).unwrap();
    let folded = bn_fold::fold_batch_norms(&mut g).unwrap();
    // Zero out one output channel of the stem conv: no division by zero, channel left alone.
    let stem = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, qforge::graph::ir::Op::Conv(_)))
        .unwrap()
        .clone();
    if let Some(Const::F32(w)) = g.consts.get_mut(&stem.inputs[1]) {
        w.index_axis_mut(Axis(0), 3).fill(0.0);
    }
    let mut bn = cle::bn_stats(&folded);
    let r = cle::equalize(&mut g, &mut bn, CleOptions::default()).unwrap();
    assert!(
        r.zero_channels
            .iter()
            .any(|(n, c)| *n == stem.name && *c >= 1),
        "{:?}",
        r.zero_channels
    );
    for c in g.consts.values() {
        if let Const::F32(a) = c {
            assert!(
                a.iter().all(|v| v.is_finite()),
                "CLE wrote a non-finite weight"
            );
        }
    }
    // A model with no conv pair: nothing to do, said so, nothing changed.
    let mut lone = fmnist();
    lone.resolve_with_batch(&HashMap::new(), Some(1)).unwrap();
    lone.nodes
        .retain(|n| !matches!(n.op, qforge::graph::ir::Op::Conv(_)) || n.name == stem.name);
    let lone = lone.truncated(&[stem.outputs[0].clone()]);
    let mut h = lone.clone();
    let r = cle::equalize(&mut h, &mut cle::BnStats::new(), CleOptions::default()).unwrap();
    assert!(r.sets.is_empty() && r.absorbed.is_empty());
    assert_eq!(h.consts, lone.consts);
    // Bad options are typed errors.
    assert!(cle::equalize(
        &mut h,
        &mut cle::BnStats::new(),
        CleOptions {
            max_iterations: 0,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn batch_norm_with_zero_variance_is_handled() {
    use qforge::graph::ir::Const;
    use qforge::graph::passes::bn_fold;
    let mut g = fmnist();
    g.resolve_with_batch(&HashMap::new(), Some(1)).unwrap();
    let bn = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, qforge::graph::ir::Op::BatchNorm { .. }))
        .unwrap()
        .clone();
    if let Some(Const::F32(v)) = g.consts.get_mut(&bn.inputs[4]) {
        v[[0]] = 0.0;
    }
    // epsilon > 0: folds to finite weights.
    let mut a = g.clone();
    bn_fold::fold_batch_norms(&mut a).unwrap();
    assert!(a
        .consts
        .values()
        .all(|c| !matches!(c, Const::F32(x) if x.iter().any(|v| !v.is_finite()))));
    // epsilon = 0 too: a typed error naming the node, never inf weights.
    for n in g.nodes.iter_mut().filter(|n| n.name == bn.name) {
        n.op = qforge::graph::ir::Op::BatchNorm { epsilon: 0.0 };
    }
    let e = bn_fold::fold_batch_norms(&mut g).unwrap_err().to_string();
    assert!(e.contains(&bn.name) && e.contains("variance"), "{e}");
}

/// SQNR of the simulation vs FP32 on `eval` after calibrating on `calib`.
fn fidelity(sim: &mut QuantSim, calib: &ArrayD<f32>, eval: &ArrayD<f32>) -> f64 {
    sim.calibrate(
        qforge::quant::analyzers::Scheme::MinMax,
        calib.axis_chunks_iter(Axis(0), 8),
    )
    .unwrap();
    sim.evaluate(eval, 8, None).unwrap().sqnr_db
}

#[test]
fn dfq_techniques_order_on_mobilenet_v2() {
    use qforge::quant::bias_correction;
    let Some(gpu) = common::gpu() else { return };
    let calib = common::photo_crops(false);
    let eval = common::photo_crops(true);
    let (calib, eval) = (
        calib.slice_axis(Axis(0), (0..8).into()).to_owned(),
        eval.slice_axis(Axis(0), (0..8).into()).to_owned(),
    );
    let naive = fidelity(&mut per_tensor_sim(gpu.clone()), &calib, &eval);
    let mut s = per_tensor_sim(gpu.clone());
    s.equalize(CleOptions::default()).unwrap();
    let cle = fidelity(&mut s, &calib, &eval);
    let bc = bias_correction::analytical(&mut s).unwrap();
    assert!(bc.skipped.is_empty(), "{:?}", bc.skipped);
    let cle_bc = fidelity(&mut s, &calib, &eval);
    // Data-free: no calibration data at all for the activation ranges either.
    s.calibrate_data_free().unwrap();
    let data_free = s.evaluate(&eval, 8, None).unwrap().sqnr_db;
    let cfg = QuantConfig::default_per_channel();
    let mut pc = QuantSim::new(
        gpu,
        mobilenet(),
        &cfg,
        QuantOptions::default(),
        HashMap::new(),
    )
    .unwrap();
    let per_channel = fidelity(&mut pc, &calib, &eval);
    eprintln!("MobileNetV2 W8A8 SQNR on 8 eval images: per-tensor {naive:.2}, +CLE {cle:.2}, +CLE+BC {cle_bc:.2}, data-free {data_free:.2}, per-channel {per_channel:.2} dB");
    assert!(
        naive < cle && cle < cle_bc,
        "per-tensor {naive:.2} < +CLE {cle:.2} < +CLE+BC {cle_bc:.2}"
    );
    assert!(
        per_channel > naive,
        "per-channel {per_channel:.2} vs per-tensor {naive:.2}"
    );
    assert!(
        data_free > naive,
        "data-free DFQ {data_free:.2} vs calibrated naive per-tensor {naive:.2}"
    );
}

/// Fashion-MNIST (train 256 for calibration, test 300 for evaluation), the bundled subset.
fn fashion() -> Option<(ArrayD<f32>, ArrayD<f32>, Vec<usize>)> {
    let (calib, _) = common::fashion_mnist(false, 256);
    let (test, labels) = common::fashion_mnist(true, 300);
    Some((calib, test, labels))
}

#[test]
fn bias_correction_and_seq_mse_help_4_bit_weights_on_fashion_mnist() {
    use qforge::quant::{analyzers::Scheme, bias_correction, seq_mse};
    let Some(gpu) = common::gpu() else { return };
    let Some((calib, test, labels)) = fashion() else {
        return;
    };
    let opts = QuantOptions {
        param_bw: 4,
        act_bw: 8,
        ..Default::default()
    };
    let new = |cfg: &QuantConfig| {
        QuantSim::new(gpu.clone(), fmnist(), cfg, opts, HashMap::new()).unwrap()
    };
    let score = |s: &mut QuantSim| {
        s.calibrate(Scheme::MinMax, calib.axis_chunks_iter(Axis(0), 128))
            .unwrap();
        s.evaluate(&test, 150, Some(&labels)).unwrap()
    };
    let pc = QuantConfig::default_per_channel();
    let naive = score(&mut new(&pc));
    let mut s = new(&pc);
    let r = seq_mse::apply(&mut s, calib.slice_axis(Axis(0), (0..32).into()), 24, 20).unwrap();
    assert_eq!(r.layers.len(), 9, "every conv and the classifier");
    assert!(
        r.layers.iter().all(|l| l.3 <= l.2 * (1.0 + 1e-9)),
        "the chosen range never loses to the full range: {:?}",
        r.layers
    );
    assert!(
        r.layers.iter().any(|l| l.1 < 0.999),
        "4-bit weights clip some channels"
    );
    let seq = score(&mut s);
    let mut s = new(&pc);
    let mut s2 = new(&pc);
    let naive_s = score(&mut s);
    let bc =
        bias_correction::empirical(&mut s, calib.slice_axis(Axis(0), (0..64).into()), 48).unwrap();
    assert_eq!(bc.corrected.len(), 9);
    let emp = s.evaluate(&test, 150, Some(&labels)).unwrap();
    let ana = bias_correction::analytical(&mut s2).unwrap();
    assert!(!ana.corrected.is_empty());
    let ana_e = score(&mut s2);
    let acc = |e: &qforge::quant::sim::Evaluation| e.accuracy.unwrap().1;
    eprintln!(
        "fmnist W4A8 per-channel: naive {:.3} ({:.1} dB), seq-MSE {:.3} ({:.1} dB), empirical BC {:.3} ({:.1} dB), analytical BC {:.3} ({:.1} dB)",
        acc(&naive), naive.sqnr_db, acc(&seq), seq.sqnr_db, acc(&emp), emp.sqnr_db, acc(&ana_e), ana_e.sqnr_db
    );
    assert_eq!(naive.sqnr_db, naive_s.sqnr_db, "deterministic");
    assert!(
        seq.sqnr_db > naive.sqnr_db,
        "seq-MSE {:.2} vs naive {:.2} dB",
        seq.sqnr_db,
        naive.sqnr_db
    );
    assert!(
        emp.sqnr_db > naive.sqnr_db,
        "empirical BC {:.2} vs naive {:.2} dB",
        emp.sqnr_db,
        naive.sqnr_db
    );
}
