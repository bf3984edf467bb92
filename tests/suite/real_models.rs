//! Real public models taken from registry packages (models/real/SOURCES.md) run on the GPU as
//! shipped and compared with onnxruntime's outputs on seeded inputs (tools/make_real_goldens.py,
//! tests/golden/real/). Each test states its tolerance on max |qforge - onnxruntime| and prints
//! the measured figure and the time of the run (plan compile included).

use std::time::Instant;

use crate::common::*;
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

/// trueocr's reading-order model: a transformer encoder (4 pre-norm blocks of 4-head
/// self-attention with a -inf key mask, Erf GELU feed-forwards, LayerNormalization) over the
/// text lines of a page, from their box and text features and a bool mask of the real lines,
/// then pairwise order, same-block and table heads and a block class per line. One seeded page
/// of 24 lines, 4 of them padding.
#[test]
fn trueocr_reading_order_transformer_matches_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu.clone(), "trueocr_order.onnx");
    let feats = golden("trueocr_feats.npy");
    let mask = match qforge::data::npy::read_any(&repo("tests/golden/real/trueocr_mask.npy")) {
        Ok(qforge::data::npy::Npy::Bool(m)) => m.mapv(|v| f32::from(u8::from(v))),
        other => panic!("{other:?}"),
    };
    let ys = timed("trueocr order, 24 lines", 1, || {
        r.run(&[("feats", feats.view()), ("mask", mask.view())])
            .unwrap()
    });
    for (y, name) in ys.iter().zip(["a", "cls", "same", "tab"]) {
        check(
            &format!("trueocr order output {name}"),
            y,
            &golden(&format!("trueocr_{name}.npy")),
            1e-4,
        );
    }
    // Quantized, the bool mask and the values carrying the mask's -inf get no quantizer (a
    // grid would saturate -inf and unmask).
    let g = graph::load(&repo("models/real/trueocr_order.onnx")).unwrap();
    let sim = qforge::quant::sim::QuantSim::new(
        gpu,
        g,
        &qforge::quant::QuantConfig::default_per_channel(),
        Default::default(),
        std::collections::HashMap::from([("N".to_string(), 24)]),
    )
    .unwrap();
    let placed: Vec<&str> = sim
        .placement()
        .activations
        .iter()
        .map(|q| q.tensor.as_str())
        .collect();
    assert!(placed.contains(&"feats") && !placed.contains(&"mask"));
    assert!(!placed.contains(&"/Where_output_0"), "the -inf mask");
    assert!(
        !placed.contains(&"/layers.0/Add_output_0"),
        "scores plus the mask"
    );
    assert!(placed.contains(&"/layers.0/Softmax_output_0"));
    assert!(placed.contains(&"/layers.0/Add_1_output_0"), "the residual");
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

/// A model that fixes its batch (CenterFace's 10) runs any number of samples: in pieces of
/// 10, the last filled up with copies and its extra rows dropped. `quantize` runs it at its
/// default `--batch` (batches of 10 instead), calibrating on whole batches only.
#[test]
fn a_model_with_a_fixed_batch_runs_and_quantizes_any_count() {
    let Some(gpu) = gpu() else { return };
    let r = runner(gpu, "centerface.onnx");
    let x = golden("centerface_x.npy");
    let x13 =
        ndarray::concatenate(Axis(0), &[x.view(), x.slice_axis(Axis(0), (0..3).into())]).unwrap();
    let ys = r.run(&[("input.1", x13.view())]).unwrap();
    for (i, y) in ys.iter().enumerate() {
        let want = golden(&format!("centerface_y{i}.npy"));
        assert_eq!(y.shape()[0], 13);
        let again = ndarray::concatenate(
            Axis(0),
            &[want.view(), want.slice_axis(Axis(0), (0..3).into())],
        )
        .unwrap();
        check(
            &format!("CenterFace output {i}, 13 samples"),
            y,
            &again,
            1e-4,
        );
    }
    let dir = Scratch::new("real-quantize-fixed-batch");
    let calib = dir.path().join("calib.npy");
    let mut rr = rng(186);
    let noise =
        ArrayD::from_shape_vec(x13.raw_dim(), values(&mut rr, x13.len(), -4.0, 4.0)).unwrap();
    let noisy = &x13 + &noise;
    let data = ndarray::concatenate(Axis(0), &[x13.view(), noisy.view()]).unwrap();
    ndarray_npy::write_npy(&calib, &data).unwrap();
    let mut job = quantize_job("centerface.onnx", &calib, dir.path());
    job.per_layer_samples = 3;
    let q = quantize(&job, &mut Silent).unwrap();
    // 26 samples: 7 held out and evaluated in a filled batch (per-layer SQNR on 3 of them);
    // of the 19 others, one whole batch of 10 calibrates and the report says 10.
    assert_eq!(q.calib_samples, 10);
    assert_eq!(q.evaluation.samples, 7);
    assert!(q.evaluation.sqnr_db > 5.0, "{}", q.evaluation.sqnr_db);
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
    let dims = g.dims_from_data(&[("x", &[8, 3, 32, 64])]).unwrap();
    let mut bound: Vec<usize> = dims.values().copied().collect();
    bound.sort();
    assert_eq!(bound, [32, 64]);
    let e = g
        .dims_from_data(&[("x", &[8, 32, 64])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 3"), "{e}");
    let e = g
        .dims_from_data(&[("x", &[8, 1, 32, 64])])
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

/// `quantize` takes a model with several inputs from an .npz (one array per input) or a
/// folder holding NAME.npy for each: the Silero decoder's features and its recurrent state,
/// whose samples lie along axis 1 (`[2, batch, 128]`). Each of the encoder's 4 windows is
/// paired with each of the 4 states the decoder passes through (16 samples). Both forms give
/// the same figures; the evaluation inputs come back as an .npz, and the exported model runs on
/// them (tools/check_qdq.py runs the QDQ export on them in onnxruntime: README).
#[test]
fn quantize_takes_several_inputs_from_an_npz_or_a_folder() {
    let Some(gpu) = gpu() else { return };
    let dir = Scratch::new("real-quantize-inputs");
    let enc = runner(gpu.clone(), "silero_encoder_v5.onnx");
    let dec = runner(gpu.clone(), "silero_decoder_v5.onnx");
    let e = enc
        .run(&[("input", golden("silero_audio.npy").view())])
        .unwrap()
        .remove(0);
    let windows: Vec<ArrayD<f32>> = (0..4)
        .map(|i| {
            e.index_axis(Axis(0), i)
                .to_shape((1, 128))
                .unwrap()
                .into_owned()
                .into_dyn()
        })
        .collect();
    let mut states = vec![ArrayD::<f32>::zeros(IxDyn(&[2, 1, 128]))];
    for w in &windows[..3] {
        let s = states.last().unwrap().clone();
        states.push(
            dec.run(&[("input", w.view()), ("state", s.view())])
                .unwrap()
                .remove(1),
        );
    }
    let (mut xs, mut ss) = (Vec::new(), Vec::new());
    for w in &windows {
        for s in &states {
            xs.push(w.view());
            ss.push(s.view());
        }
    }
    let x = ndarray::concatenate(Axis(0), &xs).unwrap();
    let state = ndarray::concatenate(Axis(1), &ss).unwrap();
    use qforge::data::npy::Npy;
    let npz = dir.path().join("calib.npz");
    qforge::data::npz::write(
        &npz,
        &[
            ("state".into(), Npy::F32(state.clone())),
            ("input".into(), Npy::F32(x.clone())),
        ],
    )
    .unwrap();
    let folder = dir.path().join("calib");
    std::fs::create_dir_all(&folder).unwrap();
    ndarray_npy::write_npy(folder.join("input.npy"), &x).unwrap();
    ndarray_npy::write_npy(folder.join("state.npy"), &state).unwrap();
    let mut runs = Vec::new();
    for (k, data) in [npz, folder].iter().enumerate() {
        let out = dir.path().join(format!("out{k}"));
        let mut job = quantize_job("silero_decoder_v5.onnx", data, &out);
        job.batch = 4;
        job.per_layer_samples = 4;
        job.eval_inputs = Some(dir.path().join(format!("eval{k}.npz")));
        job.sim_outputs = Some(dir.path().join(format!("sim{k}.npy")));
        let q = quantize(&job, &mut Silent).unwrap();
        assert_eq!(q.calib_samples, 12);
        assert_eq!(q.evaluation.samples, 4);
        println!(
            "Silero decoder W8A8, 4 held-out samples: {:.2} dB",
            q.evaluation.sqnr_db
        );
        assert!(q.evaluation.sqnr_db > 10.0, "{}", q.evaluation.sqnr_db);
        runs.push(q.evaluation.sqnr_db);
        let eval = qforge::data::npz::read(job.eval_inputs.as_ref().unwrap()).unwrap();
        let get = |name: &str| match eval.iter().find(|(n, _)| n == name) {
            Some((_, Npy::F32(a))) => a.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let (ex, es) = (get("input"), get("state"));
        assert_eq!(ex.shape(), [4, 128]);
        assert_eq!(es.shape(), [2, 4, 128]);
        // The exported FP32 model keeps both inputs: run on them, it gives the original's
        // outputs; the simulation's outputs are near them.
        let feed = [("input", ex.view()), ("state", es.view())];
        let want = dec.run(&feed).unwrap().remove(0);
        let back = Runner::new(
            gpu.clone(),
            graph::load(&out.join("silero_decoder_v5.onnx")).unwrap(),
        )
        .run(&feed)
        .unwrap()
        .remove(0);
        check("Silero decoder exported and reloaded", &back, &want, 1e-5);
        let sim: ArrayD<f32> = read_npy(job.sim_outputs.as_ref().unwrap()).unwrap();
        check("Silero decoder simulated vs FP32", &sim, &want, 0.05);
    }
    assert_eq!(runs[0], runs[1]);
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
