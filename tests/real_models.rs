//! Real public models taken from registry packages (models/real/SOURCES.md) run on the GPU as
//! shipped and compared with onnxruntime's outputs on seeded inputs (tools/make_real_goldens.py,
//! tests/golden/real/). Each test states its tolerance on max |qforge - onnxruntime| and prints
//! the measured figure and the time of the run (plan compile included).

mod common;

use std::time::Instant;

use common::*;
use ndarray::{ArrayD, Axis, IxDyn};
use ndarray_npy::read_npy;
use qforge::exec::Runner;
use qforge::graph;
use qforge::jobs::quantize::{quantize, QuantizeJob, Techniques};
use qforge::jobs::Silent;
use qforge::quant::analyzers::Scheme;
use qforge::quant::export::EncodingsVersion;
use qforge::quant::sim::Arithmetic;

fn golden(name: &str) -> ArrayD<f32> {
    read_npy(repo("tests/golden/real").join(name)).unwrap()
}

fn runner(gpu: std::sync::Arc<qforge::gpu::Gpu>, file: &str) -> Runner {
    let g = graph::load(&repo("models/real").join(file)).unwrap();
    Runner::new(gpu, g)
}

/// max |got - want| over same-shaped arrays (NaN counts as infinitely far).
fn max_diff(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    got.iter().zip(want).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

fn check(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) -> f32 {
    let d = max_diff(what, got, want);
    eprintln!("{what}: max |diff| {d:.3e} (tolerance {tol:.0e})");
    assert!(d <= tol, "{what}: max |diff| {d} > {tol}");
    d
}

/// Runs `f` once, printing its time (plan compile included); with `QFORGE_REAL_TIMING=N`
/// runs it N more times and prints the median warm time and samples per second (the
/// README's real-model table).
fn timed<T>(what: &str, samples: usize, f: impl Fn() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    eprintln!("{what}: {:.2} s (first run)", t0.elapsed().as_secs_f64());
    let n: usize = std::env::var("QFORGE_REAL_TIMING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if n > 0 {
        let mut t: Vec<f64> = (0..n)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        let median = t[n / 2];
        eprintln!(
            "{what}: {median:.3} s warm (median of {n}), {:.2} samples/s",
            samples as f64 / median
        );
    }
    r
}

/// Index of the largest value along the last axis, per row.
fn argmax_rows(a: &ArrayD<f32>) -> Vec<usize> {
    let n = *a.shape().last().unwrap();
    a.as_slice()
        .unwrap()
        .chunks(n)
        .map(|r| {
            r.iter()
                .enumerate()
                .max_by(|p, q| p.1.total_cmp(q.1))
                .unwrap()
                .0
        })
        .collect()
}

/// PP-OCRv4's text detector (DBNet with a PP-LCNetV3 backbone, ConvTranspose and Resize in its
/// FPN): a text/background probability per pixel, a segmentation map.
#[test]
fn ppocr_v4_text_detector_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu, "ch_PP-OCRv4_det_infer.onnx");
    let x = golden("ppocr_det_x.npy");
    let y = timed("PP-OCRv4 det 1x3x96x128", 1, || {
        r.run(&[("x", x.view())]).unwrap()
    })
    .remove(0);
    let want = golden("ppocr_det_y.npy");
    check("PP-OCRv4 det probabilities", &y, &want, 2e-4);
    // The text mask as DBNet's post-processing thresholds it (0.3) is the same.
    let flips = y
        .iter()
        .zip(&want)
        .filter(|(a, b)| (**a > 0.3) != (**b > 0.3) && (**b - 0.3).abs() > 1e-3)
        .count();
    assert_eq!(flips, 0, "pixels on the other side of the 0.3 threshold");
}

/// PP-OCRv4's text recogniser (SVTR-LCNet: a CNN, then a transformer encoder of multi-head
/// self-attention blocks with LayerNorms written as ReduceMean/Pow/Sqrt, then a CTC head over
/// 6,625 characters). The seeded line reads "QFORGE" under onnxruntime; it must under qforge.
#[test]
fn ppocr_v4_text_recognizer_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu, "ch_PP-OCRv4_rec_infer.onnx");
    let x = golden("ppocr_rec_x.npy");
    let y = timed("PP-OCRv4 rec 1x3x48x160", 1, || {
        r.run(&[("x", x.view())]).unwrap()
    })
    .remove(0);
    let want = golden("ppocr_rec_y.npy");
    check("PP-OCRv4 rec character probabilities", &y, &want, 1e-4);
    // Greedy CTC decoding: the same character per step, and the expected ones
    // (indices of Q, F, O, R, G, E in the model's own character list).
    let (got, exp) = (argmax_rows(&y), argmax_rows(&want));
    assert_eq!(got, exp);
    let mut text = exp.clone();
    text.dedup();
    text.retain(|&c| c != 0);
    assert_eq!(text, [4731, 1219, 4741, 5127, 5128, 4381]);
}

/// PicoDet (PP-LCNet backbone) trained for document layout on CDLA: per anchor point, scores
/// of 10 classes and box-side distributions, on four strides. Input fixed at 1x3x800x608.
#[test]
fn picodet_layout_detector_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu, "layout_cdla.onnx");
    let small = golden("layout_x_small.npy");
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 3, 800, 608]), |i| {
        small[[0, i[1], i[2] / 16, i[3] / 16]]
    });
    let ys = timed("PicoDet layout 1x3x800x608", 1, || {
        r.run(&[("image", x.view())]).unwrap()
    });
    assert_eq!(ys.len(), 8);
    let cat = |part: &[ArrayD<f32>]| {
        let views: Vec<_> = part.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(1), &views).unwrap()
    };
    let scores = cat(&ys[..4]);
    let want = golden("layout_scores.npy");
    check("PicoDet class scores", &scores, &want, 1e-5);
    check(
        "PicoDet box distributions",
        &cat(&ys[4..]),
        &golden("layout_boxes.npy"),
        1e-4,
    );
    // Every anchor's best class is the same where onnxruntime's is not a near tie.
    let (got, exp) = (argmax_rows(&scores), argmax_rows(&want));
    let w = want.as_slice().unwrap();
    for (i, (a, b)) in got.iter().zip(&exp).enumerate() {
        if a != b {
            let gap = (w[i * 10 + b] - w[i * 10 + a]).abs();
            assert!(gap < 1e-4, "anchor {i}: class {a} vs {b}, gap {gap}");
        }
    }
}

/// CenterFace (face detection with five landmarks per face): heatmap, box scales, centre
/// offsets and landmark offsets. The shipped model fixes its input at 10x3x32x32.
#[test]
fn centerface_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu, "centerface.onnx");
    let x = golden("centerface_x.npy");
    let ys = timed("CenterFace 10x3x32x32", 10, || {
        r.run(&[("input.1", x.view())]).unwrap()
    });
    let names = ["heatmap", "scales", "offsets", "landmarks"];
    assert_eq!(ys.len(), names.len());
    for (i, (y, name)) in ys.iter().zip(names).enumerate() {
        let want = golden(&format!("centerface_y{i}.npy"));
        check(&format!("CenterFace {name}"), y, &want, 1e-4);
    }
}

/// Silero VAD v5 as faster-whisper ships it: the encoder (an STFT as a strided Conv1d, then
/// four Conv1d + ReLU) on 4 windows of 512 samples with 64 of context, then the decoder (an
/// LSTM cell unrolled into Gemm, Sigmoid and Tanh, and a Conv1d head) stepped over the windows,
/// its state fed back each step: the speech probability per window and the final state.
#[test]
fn silero_vad_v5_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let enc = runner(gpu.clone(), "silero_encoder_v5.onnx");
    let dec = runner(gpu, "silero_decoder_v5.onnx");
    let audio = golden("silero_audio.npy");
    let e = timed("Silero encoder 4x576", 4, || {
        enc.run(&[("input", audio.view())]).unwrap()
    })
    .remove(0);
    check(
        "Silero encoder features",
        &e,
        &golden("silero_encoded.npy"),
        1e-4,
    );
    let mut state = ArrayD::<f32>::zeros(IxDyn(&[2, 1, 128]));
    let mut probs = Vec::new();
    for i in 0..4 {
        let x = e
            .index_axis(Axis(0), i)
            .to_owned()
            .into_shape_with_order(IxDyn(&[1, 128]))
            .unwrap();
        let mut ys = dec
            .run(&[("input", x.view()), ("state", state.view())])
            .unwrap();
        assert_eq!(ys[0].len(), 1);
        probs.push(ys[0].iter().copied().next().unwrap());
        state = ys.remove(1);
    }
    let probs = ArrayD::from_shape_vec(IxDyn(&[4]), probs).unwrap();
    check(
        "Silero speech probabilities",
        &probs,
        &golden("silero_probs.npy"),
        1e-4,
    );
    check(
        "Silero final state",
        &state,
        &golden("silero_state.npy"),
        1e-4,
    );
}

/// `quantize` binds a model's named dims after the batch from its calibration data (the OCR
/// detector declares `[N, 3, H, W]`): calibrated and evaluated at the data's 32x64.
#[test]
fn quantize_takes_the_named_dims_of_its_data() {
    let Some(_gpu) = gpu() else { return };
    let dir = Scratch::new("real-quantize-dims");
    let data = dir.path().join("calib.npy");
    let mut r = rng(185);
    let x = ArrayD::from_shape_vec(
        IxDyn(&[8, 3, 32, 64]),
        values(&mut r, 8 * 3 * 32 * 64, -2.0, 2.0),
    )
    .unwrap();
    ndarray_npy::write_npy(&data, &x).unwrap();
    let mut job = quantize_job("ch_PP-OCRv4_det_infer.onnx", &data, dir.path());
    job.batch = 4;
    let out = quantize(&job, &mut Silent).unwrap();
    assert_eq!(out.calib_samples, 6);
    assert_eq!(out.evaluation.samples, 2);
    assert!(out.evaluation.sqnr_db.is_finite());
    // Data of another rank, or at odds with a fixed dim, is refused naming the input.
    let g = graph::load(&repo("models/real/ch_PP-OCRv4_det_infer.onnx")).unwrap();
    let dims = g.dims_from_data("x", &[8, 3, 32, 64]).unwrap();
    let mut bound: Vec<usize> = dims.values().copied().collect();
    bound.sort();
    assert_eq!(bound, [32, 64]);
    let e = g.dims_from_data("x", &[8, 32, 64]).unwrap_err().to_string();
    assert!(e.contains("rank 3"), "{e}");
    let e = g
        .dims_from_data("x", &[8, 1, 32, 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("fixes it at 3"), "{e}");
}

/// A model of 1-D convolutions (run as 2-D of height 1) exports valid ONNX: each conv's
/// weight is written 4-D with the unit axis, in the FP32 model and behind the QDQ export's
/// DequantizeLinear, and the FP32 export runs back to onnxruntime's features.
#[test]
fn one_dimensional_convolutions_export_four_dimensional_weights() {
    let Some(gpu) = gpu() else { return };
    let dir = Scratch::new("real-export-1d");
    let audio = golden("silero_audio.npy");
    let calib = dir.path().join("calib.npy");
    let x = ndarray::concatenate(Axis(0), &[audio.view(), audio.view()]).unwrap();
    ndarray_npy::write_npy(&calib, &x).unwrap();
    let mut job = quantize_job("silero_encoder_v5.onnx", &calib, dir.path());
    job.holdout = 0.0;
    quantize(&job, &mut Silent).unwrap();
    use prost::Message;
    for file in ["silero_encoder_v5.onnx", "silero_encoder_v5_qdq.onnx"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        let m = qforge::graph::onnx::ModelProto::decode(bytes.as_slice()).unwrap();
        let g = m.graph.unwrap();
        let dq: std::collections::HashMap<&str, &str> = g
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("DequantizeLinear"))
            .map(|n| (n.output[0].as_str(), n.input[0].as_str()))
            .collect();
        let mut convs = 0;
        for n in g
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Conv"))
        {
            let w = n.input[1].as_str();
            let w = dq.get(w).copied().unwrap_or(w);
            let t = g
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(w))
                .unwrap();
            assert_eq!(t.dims.len(), 4, "{file}: weight {w} dims {:?}", t.dims);
            assert_eq!(t.dims[2], 1, "{file}: weight {w} dims {:?}", t.dims);
            convs += 1;
        }
        assert_eq!(convs, 5, "{file}");
    }
    let back = Runner::new(
        gpu,
        graph::load(&dir.path().join("silero_encoder_v5.onnx")).unwrap(),
    );
    let e = back.run(&[("input", audio.view())]).unwrap().remove(0);
    check(
        "Silero encoder exported and reloaded",
        &e,
        &golden("silero_encoded.npy"),
        1e-4,
    );
}

fn quantize_job(model: &str, calib: &std::path::Path, out: &std::path::Path) -> QuantizeJob {
    QuantizeJob {
        model: repo("models/real").join(model),
        calib: Some(calib.to_path_buf()),
        calib_count: None,
        eval: None,
        eval_count: None,
        holdout: 0.25,
        labels: None,
        calib_labels: None,
        eval_inputs: None,
        config: None,
        per_tensor: false,
        placement: Default::default(),
        scheme: Scheme::MinMax,
        param_bw: 8,
        act_bw: 8,
        arithmetic: Arithmetic::Float,
        techniques: Techniques {
            samples: 8,
            ..Default::default()
        },
        per_layer_samples: 0,
        batch: 8,
        out: out.to_path_buf(),
        encodings_version: EncodingsVersion::V1_0_0,
        sim_outputs: None,
        amp: None,
    }
}
