//! Bad models and bad inputs give typed errors naming what and where; a seeded mutation test
//! feeds thousands of corrupted models to the importer, which must never panic or hang.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use qforge::exec::Runner;
use qforge::graph::{self, onnx};
use qforge::Error;
use rand::Rng;

fn model_bytes(rel: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn fmnist() -> Vec<u8> {
    model_bytes("models/fmnist_cnn.onnx")
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn tiny_model(nodes: Vec<onnx::NodeProto>) -> Vec<u8> {
    let mut m = onnx::ModelProto::decode(&fmnist()[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node = nodes;
    g.initializer.clear();
    g.output[0].name = Some("y".into());
    m.encode_to_vec()
}

#[test]
fn truncated_and_non_onnx_files_are_model_errors() {
    let bytes = fmnist();
    for cut in [0, 1, 10, bytes.len() / 3, bytes.len() - 1] {
        let e = graph::import(&bytes[..cut], "cut.onnx", None).unwrap_err();
        assert!(
            matches!(e, Error::Model { .. } | Error::Graph { .. }),
            "cut at {cut}: {e}"
        );
    }
    let e = graph::import(b"this is not a model at all", "text.onnx", None).unwrap_err();
    assert!(e.to_string().contains("text.onnx"), "{e}");
    let e = graph::load(std::path::Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn unsupported_ops_are_listed_all_at_once() {
    let bytes = tiny_model(vec![
        node("Relu", "r", &["input"], &["a"]),
        node("NonMaxSuppression", "nms", &["a"], &["b"]),
        node("Unique", "", &["b"], &["y"]),
    ]);
    match graph::import(&bytes, "m.onnx", None).unwrap_err() {
        Error::Unsupported { opset, ops, .. } => {
            assert_eq!(opset, 13);
            assert_eq!(ops.len(), 2, "{ops:?}");
            assert!(ops[0].contains("NonMaxSuppression") && ops[0].contains("'nms'"));
            assert!(
                ops[1].contains("Unique_2"),
                "unnamed nodes get unique names: {ops:?}"
            );
        }
        e => panic!("{e}"),
    }
}

#[test]
fn dangling_names_cycles_and_duplicates_are_graph_errors() {
    let dangling = tiny_model(vec![node("Relu", "r", &["nowhere"], &["y"])]);
    let e = graph::import(&dangling, "m", None).unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
    let cycle = tiny_model(vec![
        node("Add", "a", &["input", "c"], &["b"]),
        node("Relu", "r", &["b"], &["c"]),
        node("Relu", "o", &["c"], &["y"]),
    ]);
    let e = graph::import(&cycle, "m", None).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
    let dup = tiny_model(vec![
        node("Relu", "a", &["input"], &["y"]),
        node("Relu", "b", &["input"], &["y"]),
    ]);
    assert!(graph::import(&dup, "m", None)
        .unwrap_err()
        .to_string()
        .contains("more than once"));
}

#[test]
fn bad_run_inputs_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let g = graph::import(&fmnist(), "fmnist", None).unwrap();
    let mut unresolved = g.clone();
    let e = unresolved.resolve(&Default::default()).unwrap_err();
    assert!(e.to_string().contains("dynamic dims"), "{e}");
    let exec = Runner::new(gpu, g);
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 1, 28, 28]));
    assert!(exec
        .run(&[("wrong", x.view())])
        .unwrap_err()
        .to_string()
        .contains("missing input"));
    let bad = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 28, 28]));
    assert!(matches!(
        exec.run(&[("input", bad.view())]).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    let bad = ArrayD::<f32>::zeros(IxDyn(&[2, 28, 28]));
    assert!(matches!(
        exec.run(&[("input", bad.view())]).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    let mut nan = x.clone();
    nan[[1, 0, 3, 3]] = f32::NAN;
    assert!(matches!(
        exec.run(&[("input", nan.view())]).unwrap_err(),
        Error::NonFinite { count: 1, .. }
    ));
}

/// Imports and resolves; any error is fine, a panic is not.
fn try_model(bytes: &[u8]) {
    if let Ok(mut g) = graph::import(bytes, "mutant", None) {
        let _ = g.resolve_with_batch(&[("N".to_string(), 2)].into_iter().collect(), Some(2));
    }
}

fn mutate_fields(rng: &mut crate::common::TestRng, m: &mut onnx::ModelProto) {
    let g = m.graph.as_mut().unwrap();
    match rng.random_range(0..9) {
        0 => {
            let n = rng.random_range(0..g.node.len());
            g.node[n].op_type = Some(
                [
                    "Conv",
                    "Gemm",
                    "Reshape",
                    "Concat",
                    "Split",
                    "Slice",
                    "Pad",
                    "MaxPool",
                    "Transpose",
                    "Softmax",
                    "Gather",
                ][rng.random_range(0..11)]
                .into(),
            );
        }
        1 => {
            let n = rng.random_range(0..g.node.len());
            if let Some(a) = g.node[n].attribute.first_mut() {
                a.ints = (0..rng.random_range(0..6))
                    .map(|_| rng.random_range(-5..70000))
                    .collect();
                a.i = Some(rng.random_range(-3..1 << 20));
            }
        }
        2 => {
            let t = rng.random_range(0..g.initializer.len());
            let dims = &mut g.initializer[t].dims;
            if !dims.is_empty() {
                let d = rng.random_range(0..dims.len());
                dims[d] = [0, -1, 1, 3, 1 << 33, rng.random_range(0..100)][rng.random_range(0..6)];
            }
        }
        3 => {
            let t = rng.random_range(0..g.initializer.len());
            g.initializer[t].data_type = Some(rng.random_range(0..20));
        }
        4 => {
            let t = rng.random_range(0..g.initializer.len());
            if let Some(raw) = g.initializer[t].raw_data.as_mut() {
                raw.truncate(rng.random_range(0..raw.len().max(1)));
            }
        }
        5 => {
            let n = rng.random_range(0..g.node.len());
            if !g.node[n].input.is_empty() {
                let i = rng.random_range(0..g.node[n].input.len());
                let other = rng.random_range(0..g.node.len());
                g.node[n].input[i] = g.node[other].output.first().cloned().unwrap_or_default();
            }
        }
        6 => {
            m.opset_import[0].version = Some(rng.random_range(-1..30));
        }
        7 => {
            let n = rng.random_range(0..g.node.len());
            g.node.remove(n);
        }
        _ => {
            let n = rng.random_range(0..g.node.len());
            let extra = g.node[n].input.first().cloned().unwrap_or_default();
            g.node[n].input.push(extra);
        }
    }
}

#[test]
fn mutated_models_never_panic_the_importer() {
    let base = fmnist();
    let model = onnx::ModelProto::decode(&base[..]).unwrap();
    let mut rng = rng(99);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut bytes_done, mut fields_done) = (0, 0);
    let iters: usize = std::env::var("QFORGE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    for i in 0..iters {
        if Instant::now() > deadline {
            break;
        }
        if i % 2 == 0 {
            let mut b = base.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..b.len());
                match rng.random_range(0..3) {
                    0 => b[at] = rng.random(),
                    1 => b[at] ^= 1 << rng.random_range(0..8),
                    _ => b.truncate(at),
                }
            }
            try_model(&b);
            bytes_done += 1;
        } else {
            let mut m = model.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate_fields(&mut rng, &mut m);
            }
            try_model(&m.encode_to_vec());
            fields_done += 1;
        }
    }
    eprintln!("{bytes_done} byte-level and {fields_done} protobuf-field mutations imported without a panic");
    assert!(
        bytes_done + fields_done >= 1000,
        "too few mutations ran in the time bound"
    );
}
