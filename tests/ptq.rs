//! Post-training techniques on real models: cross-layer equalization against AIMET's own
//! `equalize_model` output (../shared/reference/mobilenet_v2/aimet_pt_cle), bias correction,
//! sequential MSE and the data-free pipeline, and their bad inputs.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use qforge::graph::passes::cle::CleOptions;
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::QuantConfig;
use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join(rel)
}

fn mobilenet() -> qforge::graph::ir::Graph {
    qforge::graph::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/mobilenet_v2.onnx")).unwrap()
}

fn sqnr(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    qforge::eval::sqnr_db(a, b)
}

fn per_tensor_sim(gpu: Arc<qforge::gpu::Gpu>) -> QuantSim {
    let cfg = QuantConfig::load(&shared("reference/aimet_configs/default_config.json")).unwrap();
    QuantSim::new(gpu, mobilenet(), &cfg, QuantOptions::default(), HashMap::new()).unwrap()
}

#[test]
fn cle_matches_aimet_equalize_model_on_mobilenet_v2() {
    let Some(gpu) = common::gpu() else { return };
    let mut sim = per_tensor_sim(gpu);
    // aimet-onnx 2.42 recognises a ReLU6 only when its lower bound comes from a Constant node;
    // this model's Clip bounds are initializers, so every Clip ends AIMET's chains and only the
    // two Conv→Conv pairs without an activation are equalized (one pass, full-beta absorption).
    let report = sim.equalize(CleOptions { max_iterations: 1, relu6_to_relu: false, ..Default::default() }).unwrap();
    assert_eq!(report.iterations, 1);
    assert_eq!(report.sets, vec![vec!["Conv_6".to_string(), "Conv_8".into()], vec!["Conv_144".into(), "Conv_146".into()]]);
    assert_eq!(report.absorbed.len(), 2);
    // Weight encodings after CLE equal AIMET's (per-tensor: they see every scaled weight's max).
    let want: Value = serde_json::from_str(&std::fs::read_to_string(shared("reference/mobilenet_v2/aimet_pt_cle/model.encodings")).unwrap()).unwrap();
    let want: HashMap<String, f64> = want["param_encodings"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["scale"][0].as_f64().unwrap())).collect();
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
    let eval: ArrayD<f32> = read_npy(shared("reference/mobilenet_v2/eval.npy")).unwrap();
    let x = eval.slice_axis(Axis(0), (0..4).into()).to_owned();
    let want: ArrayD<f32> = read_npy(shared("reference/mobilenet_v2/aimet_pt_cle/fp32_prepared_outputs.npy")).unwrap();
    let want = want.slice_axis(Axis(0), (0..4).into()).to_owned();
    let g = sim.prepared(4).unwrap();
    let plan = qforge::exec::Plan::compile(sim.gpu().clone(), &g, &[]).unwrap();
    let got = plan.run(&[("input", x.view())], plan.outputs()).unwrap().remove(0);
    let s = sqnr(&want, &got);
    assert!(s > 70.0, "equalized FP32 vs AIMET's: {s:.1} dB");
}
