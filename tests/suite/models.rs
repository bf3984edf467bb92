//! Real models end to end on the GPU against onnxruntime goldens (tools/make_goldens.py).

use std::path::PathBuf;

use crate::common::*;
use ndarray::{ArrayD, Axis};
use ndarray_npy::read_npy;
use qforge::exec::Runner;
use qforge::graph::{self, passes::bn_fold};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> ArrayD<f32> {
    read_npy(root().join("tests/golden").join(name)).unwrap()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn eval4() -> ArrayD<f32> {
    let all = photo_crops(true);
    all.slice_axis(Axis(0), (0..4).into()).to_owned()
}

#[test]
fn mobilenet_v2_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("models/mobilenet_v2.onnx")).unwrap();
    let exec = Runner::new(gpu, g);
    let x = eval4();
    let y = exec.run(&[("input", x.view())]).unwrap().remove(0);
    let want = golden("mobilenet_v2_eval4_logits.npy");
    let d = max_abs_diff(&y, &want);
    assert!(d < 2e-3, "max |diff| {d}");
    for i in 0..4 {
        let argmax = |a: &ArrayD<f32>| {
            a.index_axis(Axis(0), i)
                .iter()
                .enumerate()
                .max_by(|p, q| p.1.total_cmp(q.1))
                .unwrap()
                .0
        };
        assert_eq!(argmax(&y), argmax(&want), "top-1 of image {i}");
    }
}

/// The kernels picked for CPU adapters and those picked for GPUs give a whole model the same
/// bits (both run here on whatever adapter the tests have).
#[test]
fn kernel_choices_do_not_change_a_forward() {
    let Some(mut other) = own_gpu() else { return };
    let gpu = gpu().unwrap();
    other.set_cpu_kernels(!gpu.cpu_kernels());
    let g = graph::load(&root().join("models/mobilenet_v2.onnx")).unwrap();
    let x = eval4();
    let picked = Runner::new(gpu, g.clone())
        .run(&[("input", x.view())])
        .unwrap();
    let swapped = Runner::new(std::sync::Arc::new(other), g)
        .run(&[("input", x.view())])
        .unwrap();
    let same = picked[0]
        .iter()
        .zip(&swapped[0])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "max |diff| {}", max_abs_diff(&picked[0], &swapped[0]));
}

#[test]
fn fmnist_cnn_matches_onnxruntime_with_a_named_batch() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("models/fmnist_cnn.onnx")).unwrap();
    let exec = Runner::new(gpu, g);
    let x = golden("fmnist_input8.npy");
    let y = exec.run(&[("input", x.view())]).unwrap().remove(0);
    let d = max_abs_diff(&y, &golden("fmnist_logits8.npy"));
    assert!(d < 1e-4, "max |diff| {d}");
}

/// Inputs near the f32 limit overflow every Conv (to ±Inf, and NaN where Infs of both signs
/// meet); the Clips after them bring the values back. The logits must be onnxruntime's on the
/// model as written. (onnxruntime's default session folds BatchNorm into the Conv first, which
/// moves the overflow and gives other logits: that is a property of its rewrite, not of the model.)
#[test]
fn fmnist_cnn_matches_onnxruntime_on_inputs_that_overflow() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("models/fmnist_cnn.onnx")).unwrap();
    let exec = Runner::new(gpu, g);
    let x = golden("fmnist_extreme_input6.npy");
    let y = exec.run(&[("input", x.view())]).unwrap().remove(0);
    let want = golden("fmnist_extreme_logits6.npy");
    assert!(want.iter().all(|v| v.is_finite()));
    let d = max_abs_diff(&y, &want);
    assert!(d < 1e-4, "max |diff| {d}");
}

#[test]
fn bn_folding_keeps_outputs() {
    let Some(gpu) = gpu() else { return };
    for (model, input) in [
        ("models/mobilenet_v2.onnx", eval4()),
        ("models/fmnist_cnn.onnx", golden("fmnist_input8.npy")),
    ] {
        let g = graph::load(&root().join(model)).unwrap();
        let exec = Runner::new(gpu.clone(), g.clone());
        let batch = input.shape()[0];
        let mut folded = exec.graph(batch, &[]).unwrap().as_ref().clone();
        let report = bn_fold::fold_batch_norms(&mut folded).unwrap();
        assert!(!report.is_empty());
        assert!(
            !folded
                .nodes
                .iter()
                .any(|n| matches!(n.op, graph::Op::BatchNorm { .. })),
            "{model}: every BN folded"
        );
        let plan = qforge::exec::Plan::compile(gpu.clone(), &folded, Default::default()).unwrap();
        let a = exec.run(&[("input", input.view())]).unwrap().remove(0);
        let b = plan
            .run(&[("input", input.view())], plan.outputs())
            .unwrap()
            .remove(0);
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-3, "{model}: folded vs unfolded max |diff| {d}");
    }
}

#[test]
fn export_round_trips_and_never_overwrites_the_input() {
    let Some(gpu) = gpu() else { return };
    let src = root().join("models/mobilenet_v2.onnx");
    let g = graph::load(&src).unwrap();
    let exec = Runner::new(gpu.clone(), g.clone());
    let mut folded = exec.graph(1, &[]).unwrap().as_ref().clone();
    bn_fold::fold_batch_norms(&mut folded).unwrap();
    let dir = std::env::temp_dir().join(format!("qforge-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("mnv2_folded.onnx");
    graph::export::save(&folded, &out, Some(&src)).unwrap();
    assert!(
        graph::export::save(&folded, &src, Some(&src)).is_err(),
        "the input model is never overwritten"
    );
    let back = graph::load(&out).unwrap();
    assert_eq!(back.nodes.len(), folded.nodes.len());
    let x = eval4();
    let a = exec.run(&[("input", x.view())]).unwrap().remove(0);
    let b = Runner::new(gpu, back)
        .run(&[("input", x.view())])
        .unwrap()
        .remove(0);
    assert!(max_abs_diff(&a, &b) < 1e-3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn op_zoo_matches_onnxruntime_and_the_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("tests/golden/op_zoo.onnx")).unwrap();
    let exec = Runner::new(gpu, g);
    let x = golden("op_zoo_x.npy");
    let ys = exec.run(&[("x", x.view())]).unwrap();
    let resolved = exec.graph(x.shape()[0], &[]).unwrap();
    assert!(
        !resolved
            .nodes
            .iter()
            .any(|n| matches!(n.op, graph::Op::Shape { .. } | graph::Op::Gather { .. })),
        "shape chain folded away"
    );
    let cpu = qforge::reference::graph::run(&resolved, &[("x", x.clone())]).unwrap();
    for (i, name) in ["op_zoo_y.npy", "op_zoo_y2.npy", "op_zoo_y3.npy"]
        .iter()
        .enumerate()
    {
        let want = golden(name);
        let d = max_abs_diff(&ys[i], &want);
        assert!(d < 1e-4, "output {i}: GPU vs onnxruntime max |diff| {d}");
        let d = max_abs_diff(&cpu[i], &want);
        assert!(
            d < 1e-4,
            "output {i}: CPU reference vs onnxruntime max |diff| {d}"
        );
    }
}

/// Every elementwise unary op over its domain (negatives, zeros, tiny and huge values) as
/// onnxruntime computes it (tools/make_unary_zoo.py), on the GPU and in the CPU reference.
#[test]
fn unary_zoo_matches_onnxruntime_over_the_whole_domain() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("tests/golden/unary_zoo.onnx")).unwrap();
    let names: Vec<String> = g.outputs.clone();
    let exec = Runner::new(gpu, g);
    let x = golden("unary_zoo_x.npy");
    let want = golden("unary_zoo_y.npy");
    let ys = exec.run(&[("x", x.view())]).unwrap();
    let resolved = exec.graph(x.shape()[0], &[]).unwrap();
    let cpu = qforge::reference::graph::run(&resolved, &[("x", x.clone())]).unwrap();
    for (k, name) in names.iter().enumerate() {
        let w = want.index_axis(Axis(0), k);
        for (who, y) in [("GPU", &ys[k]), ("CPU", &cpu[k])] {
            for ((&g, &e), &xi) in y.iter().zip(w.iter()).zip(x.iter()) {
                // A GPU may flush the 1e-30 inputs (subnormal results) to zero.
                let ok = (g.is_nan() && e.is_nan())
                    || g == e
                    || (g - e).abs() <= 2e-6 * e.abs() + 1e-6
                    || (xi.abs() < 1e-20 && (g - e).abs() <= 1e-6);
                assert!(ok, "{name} {who}: f({xi}) = {g}, onnxruntime {e}");
            }
        }
    }
}

/// Sum, Mean, Max and Min of one to four broadcasting inputs as onnxruntime computes them
/// (tools/make_variadic.py).
#[test]
fn variadic_sum_mean_max_min_match_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("tests/golden/variadic.onnx")).unwrap();
    let exec = Runner::new(gpu, g);
    let x = golden("variadic_x.npy");
    let want = golden("variadic_y.npy");
    let ys = exec.run(&[("x", x.view())]).unwrap();
    assert_eq!(ys.len(), want.shape()[0]);
    for (k, y) in ys.iter().enumerate() {
        let w = want.index_axis(Axis(0), k).to_owned();
        let d = max_abs_diff(y, &w);
        assert!(d < 1e-6, "output y{k}: max |diff| {d} against onnxruntime");
    }
}

/// LRN (AlexNet's size 5, sizes 3 and 1, a window wider than the channels) as onnxruntime
/// computes it (tools/make_lrn.py), on the GPU and in the CPU reference; the model exports and
/// loads again with the same attributes.
#[test]
fn lrn_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("tests/golden/lrn.onnx")).unwrap();
    let again = graph::import(
        &prost::Message::encode_to_vec(&graph::export::to_model(&g)),
        "lrn",
        None,
    )
    .unwrap();
    assert_eq!(
        again.nodes.iter().map(|n| &n.op).collect::<Vec<_>>(),
        g.nodes.iter().map(|n| &n.op).collect::<Vec<_>>()
    );
    let exec = Runner::new(gpu, g);
    let x = golden("lrn_x.npy");
    let want = golden("lrn_y.npy");
    let ys = exec.run(&[("x", x.view())]).unwrap();
    let resolved = exec.graph(x.shape()[0], &[]).unwrap();
    let cpu = qforge::reference::graph::run(&resolved, &[("x", x.clone())]).unwrap();
    for k in 0..want.shape()[0] {
        let w = want.index_axis(Axis(0), k).to_owned();
        for (who, y) in [("GPU", &ys[k]), ("CPU", &cpu[k])] {
            let d = max_abs_diff(y, &w);
            assert!(
                d < 2e-5,
                "LRN case {k} {who}: max |diff| {d} against onnxruntime"
            );
        }
    }
}

/// Conv, MaxPool and AveragePool with auto_pad SAME_UPPER, SAME_LOWER and VALID (strides 1
/// and 2, odd and even kernels) as onnxruntime computes them (tools/make_auto_pad.py); the
/// unresolved model exports its auto_pad and the resolved one explicit pads.
#[test]
fn auto_pad_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let g = graph::load(&root().join("tests/golden/auto_pad.onnx")).unwrap();
    assert_eq!(g.auto_pads.len(), 36);
    let again = graph::import(
        &prost::Message::encode_to_vec(&graph::export::to_model(&g)),
        "auto_pad",
        None,
    )
    .unwrap();
    assert_eq!(again.auto_pads, g.auto_pads);
    let exec = Runner::new(gpu, g);
    let x = golden("auto_pad_x.npy");
    let want = golden("auto_pad_y.npy");
    let ys = exec.run(&[("x", x.view())]).unwrap();
    let got: Vec<f32> = ys.iter().flat_map(|y| y.iter().copied()).collect();
    assert_eq!(got.len(), want.len(), "output sizes as onnxruntime's");
    let d = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-4, "max |diff| {d} against onnxruntime");
    let resolved = exec.graph(2, &[]).unwrap();
    let m = graph::export::to_model(&resolved);
    assert!(m.graph.unwrap().node.iter().all(|n| n
        .attribute
        .iter()
        .all(|a| a.name.as_deref() != Some("auto_pad"))));
}
