//! Held-out evaluation: `quantize` and `compress` split their data by image (seeded), fit on
//! one part, report on the other and say so; `--holdout 0` reports in-sample and says that;
//! an explicit evaluation set is used whole; the split file and the evaluation inputs they
//! write are the images the figures rest on.

use crate::common;

use crate::common::Scratch;

use std::path::{Path, PathBuf};

use qforge::compress::{CompressOptions, Method};
use qforge::jobs::compress::{compress, CompressJob};
use qforge::jobs::quantize::{quantize, QuantizeJob};
use qforge::jobs::Silent;
use qforge::quant::analyzers::Scheme;
use qforge::quant::export::EncodingsVersion;
use qforge::quant::sim::Arithmetic;

fn fmnist(file: &str) -> PathBuf {
    common::repo("data/fashion-mnist").join(file)
}

const TRAIN: &str = "train-images-1024-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "train-labels-1024-idx1-ubyte.gz";

fn quantize_job(out: &Path, holdout: f64, eval: Option<PathBuf>, labels: PathBuf) -> QuantizeJob {
    QuantizeJob {
        model: common::repo("models/fmnist_cnn.onnx"),
        calib: Some(fmnist(TRAIN)),
        calib_count: None,
        eval,
        eval_count: None,
        holdout,
        labels: Some(labels),
        calib_labels: None,
        eval_inputs: Some(out.with_extension("eval.npy")),
        config: None,
        per_tensor: false,
        placement: Default::default(),
        scheme: Scheme::MinMax,
        param_bw: 8,
        act_bw: 8,
        arithmetic: Arithmetic::Float,
        techniques: qforge::jobs::quantize::Techniques {
            samples: 8,
            ..Default::default()
        },
        per_layer_samples: 0,
        batch: 256,
        out: out.to_path_buf(),
        encodings_version: EncodingsVersion::V1_0_0,
        sim_outputs: None,
        amp: None,
    }
}

fn split_file(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap()
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn row(name: &str) -> usize {
    name.trim_start_matches('#').parse().unwrap()
}

#[test]
fn quantize_reports_on_a_held_out_quarter_split_by_image() {
    let Some(_) = common::gpu() else { return };
    let tmp = Scratch::new("heldout");
    let out = tmp.path().join("out");
    let r = quantize(
        &quantize_job(&out, 0.25, None, fmnist(TRAIN_LABELS)),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(r.label, "held-out");
    assert_eq!((r.calib_samples, r.evaluation.samples), (768, 256));
    assert!(r.held_out.contains("256 images"), "{}", r.held_out);
    let (f, q) = r.evaluation.accuracy.expect("labels of the split data");
    assert!(
        f > 0.8 && q > 0.8,
        "held-out accuracy FP32 {f}, simulated {q}"
    );
    let s = split_file(&out);
    assert_eq!(s["evaluation"], "held-out");
    let (fit, eval) = (names(&s, "fit"), names(&s, "eval"));
    assert_eq!((fit.len(), eval.len()), (768, 256));
    assert!(eval.iter().all(|e| !fit.contains(e)), "disjoint by image");
    // The evaluation inputs written are exactly the held-out rows.
    let x = common::fashion_mnist(false, 1024).0;
    let ev = qforge::data::npy::read(&out.with_extension("eval.npy")).unwrap();
    let rows: Vec<usize> = eval.iter().map(|n| row(n)).collect();
    assert_eq!(ev, x.select(ndarray::Axis(0), &rows));
    assert!(r
        .summary
        .iter()
        .any(|(k, _)| k.contains("top-1 agreement") && k.contains("held-out")));
}

#[test]
fn quantize_with_holdout_zero_says_its_figures_are_in_sample() {
    let Some(_) = common::gpu() else { return };
    let tmp = Scratch::new("heldout");
    let out = tmp.path().join("out");
    let r = quantize(
        &quantize_job(&out, 0.0, None, fmnist(TRAIN_LABELS)),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(r.label, "in-sample");
    assert_eq!((r.calib_samples, r.evaluation.samples), (1024, 1024));
    assert!(r.held_out.contains("in-sample"), "{}", r.held_out);
    assert!(r.summary.iter().all(|(k, _)| !k.contains("held-out")));
    assert_eq!(split_file(&out)["evaluation"], "in-sample");
}

#[test]
fn an_explicit_evaluation_set_is_used_whole_and_calibration_keeps_every_image() {
    let Some(_) = common::gpu() else { return };
    let tmp = Scratch::new("heldout");
    let out = tmp.path().join("out");
    let r = quantize(
        &quantize_job(
            &out,
            0.25,
            Some(fmnist("t10k-images-1000-idx3-ubyte.gz")),
            fmnist("t10k-labels-1000-idx1-ubyte.gz"),
        ),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(r.label, "held-out");
    assert_eq!((r.calib_samples, r.evaluation.samples), (1024, 1000));
    assert!(r.held_out.contains("t10k-images"), "{}", r.held_out);
}

#[test]
fn compress_scores_rebuilds_and_reports_on_three_disjoint_parts() {
    let Some(_) = common::gpu() else { return };
    let tmp = Scratch::new("heldout");
    let out = tmp.path().join("out");
    let job = CompressJob {
        model: common::repo("models/fmnist_cnn.onnx"),
        methods: vec![Method::ChannelPruning],
        options: CompressOptions {
            target: 0.7,
            candidates: vec![0.5, 0.75],
            ..Default::default()
        },
        data: fmnist(TRAIN),
        eval: None,
        holdout: 0.25,
        data_count: Some(96),
        eval_count: Some(64),
        labels: Some(fmnist(TRAIN_LABELS)),
        score_count: 32,
        rebuild_count: 64,
        rescore: true,
        finetune: None,
        out: out.clone(),
        eval_inputs: Some(tmp.path().join("held.npy")),
    };
    let r = compress(&job, &mut Silent).unwrap();
    let line = |key: &str| {
        r.summary
            .iter()
            .find(|(k, _)| k.contains(key))
            .unwrap_or_else(|| panic!("no '{key}' in {:?}", r.summary))
            .clone()
    };
    assert!(line("accuracy (held-out, 64 images)").1.contains("->"));
    assert!(line("logits SQNR vs FP32 (held-out)").1.ends_with("dB"));
    assert!(line("fitting images").1.starts_with("32 score layers"));
    assert!(line("fitting images").1.contains("64 rebuild"));
    assert!(line("in-sample to the selection")
        .0
        .contains("32 scoring images"));
    let rebuilds: Vec<_> = r.outcome.stages.iter().flat_map(|s| &s.rebuilds).collect();
    assert!(!rebuilds.is_empty());
    for b in &rebuilds {
        assert_eq!((b.fit_images, b.check_images), (64, 32), "{b:?}");
        assert!(
            b.ridge.is_none() || b.rebuilt_error < b.sliced_error,
            "{b:?}"
        );
    }
    let s = split_file(&out);
    let (fit, eval) = (names(&s, "fit"), names(&s, "eval"));
    assert_eq!((fit.len(), eval.len()), (96, 64));
    assert!(eval.iter().all(|e| !fit.contains(e)));
    let held = qforge::data::npy::read(&tmp.path().join("held.npy")).unwrap();
    assert_eq!(held.shape()[0], 64);
}
