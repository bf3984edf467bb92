//! Quantizer placement as the targets fuse (the default) against onnxruntime's static
//! quantizer on MobileNetV2, BN-folded and after cross-layer equalization
//! (tests/golden/placement/ort_mobilenet_v2.json, made by tools/ort_placement.py), and what the
//! aimet-onnx style places differently.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use qforge::graph::ir::Graph;
use qforge::graph::passes::cle::{bn_stats, equalize};
use qforge::graph::Prepared;
use qforge::quant::placement::aimet_type;
use qforge::quant::{place, PlacementStyle, QuantConfig};
use serde_json::Value;

/// The runtime tensors onnxruntime quantizes in the model labelled `label`, named as qforge
/// names them: onnxruntime renames a graph output it quantizes (`X_QuantizeLinear_Input`).
fn onnxruntimes(label: &str) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(common::repo("tests/golden/placement/ort_mobilenet_v2.json"))
            .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[label]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .map(|t| t.trim_end_matches("_QuantizeLinear_Input").to_string())
        .collect()
}

fn activations(g: &Graph, style: PlacementStyle) -> BTreeSet<String> {
    place(g, &QuantConfig::default_per_channel().with_placement(style))
        .activations
        .into_iter()
        .map(|q| q.tensor)
        .collect()
}

fn folded() -> (Graph, qforge::graph::passes::cle::BnStats) {
    let g = qforge::graph::load(&common::repo("models/mobilenet_v2.onnx")).unwrap();
    let (p, folded) = Prepared::bn_folded(g, HashMap::new()).unwrap();
    (p.at(1).unwrap().as_ref().clone(), bn_stats(&folded))
}

fn depthwise_outputs(g: &Graph) -> BTreeSet<String> {
    g.nodes
        .iter()
        .filter(|n| aimet_type(n, g) == "DepthwiseConv2d")
        .map(|n| n.outputs[0].clone())
        .collect()
}

#[test]
fn default_placement_is_onnxruntimes_on_mobilenet_v2() {
    let (g, _) = folded();
    let targets = activations(&g, PlacementStyle::Targets);
    assert_eq!(targets, onnxruntimes("bn_folded"));
    // aimet-onnx 2.42 quantizes exactly the 17 depthwise convolutions' pre-ReLU6 outputs more.
    let aimet = activations(&g, PlacementStyle::AimetOnnx);
    let extra: BTreeSet<String> = aimet.difference(&targets).cloned().collect();
    let dw = depthwise_outputs(&g);
    assert_eq!(dw.len(), 17);
    assert_eq!(extra, dw);
    // The targets quantize Flatten's output again (its input's grid), so the classifier's
    // Gemm runs on integers; aimet-onnx lets it reuse its input's quantizer.
    let views: Vec<String> = targets.difference(&aimet).cloned().collect();
    let flatten: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| n.op.onnx_type() == "Flatten")
        .map(|n| n.outputs[0].clone())
        .collect();
    assert_eq!(views, flatten);
}

#[test]
fn default_placement_after_cle_is_onnxruntimes() {
    let (mut g, mut bn) = folded();
    let report = equalize(&mut g, &mut bn, Default::default()).unwrap();
    assert!(
        !report.relu6_replaced.is_empty(),
        "CLE made per-channel clips"
    );
    // Each per-channel clip is a Relu then a Min against per-channel bounds: targets fuse the
    // Relu into its Conv and run the Min as its own op, with both quantized.
    let targets = activations(&g, PlacementStyle::Targets);
    assert_eq!(targets, onnxruntimes("cle"));
    let relus: BTreeSet<String> = g
        .nodes
        .iter()
        .filter(|n| n.op.onnx_type() == "Relu")
        .filter(|n| {
            g.consumers_of(&n.outputs[0])
                .iter()
                .any(|&c| g.nodes[c].op.onnx_type() == "Min")
        })
        .map(|n| n.outputs[0].clone())
        .collect();
    assert_eq!(relus.len(), report.relu6_replaced.len());
    assert!(relus.is_subset(&targets));
    // aimet-onnx style: one quantizer per clip (after the Min), depthwise outputs quantized.
    let aimet = activations(&g, PlacementStyle::AimetOnnx);
    assert!(relus.is_disjoint(&aimet));
    assert!(depthwise_outputs(&g).is_subset(&aimet));
}
