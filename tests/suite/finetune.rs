//! `finetune` end to end: it trains, exports a model whose held-out score (run by qforge from
//! the written file) is the one it reports, resumes from its checkpoint to the same weights as
//! an uninterrupted run, distills an image model from itself on photos with augmentation,
//! `compress --finetune-epochs` fine-tunes what it compressed, and bad input is a typed error
//! (a diverging run keeps its last checkpoint intact).

use std::path::PathBuf;

use crate::common::*;
use qforge::compress::{CompressOptions, Method};
use qforge::exec::Runner;
use qforge::jobs::compress::{compress, CompressJob};
use qforge::jobs::finetune::{finetune, FinetuneJob, TrainSettings, CHECKPOINT};
use qforge::jobs::Silent;
use qforge::Error;

fn fmnist(file: &str) -> PathBuf {
    repo(&format!("data/fashion-mnist/{file}"))
}

/// 256 labelled training images, 200 held-out test images, batch 32.
fn job(out: &std::path::Path, epochs: usize) -> FinetuneJob {
    FinetuneJob {
        model: repo("models/fmnist_cnn.onnx"),
        data: fmnist("train-images-1024-idx3-ubyte.gz"),
        labels: Some(fmnist("train-labels-1024-idx1-ubyte.gz")),
        teacher: None,
        eval: Some(fmnist("t10k-images-1000-idx3-ubyte.gz")),
        eval_labels: Some(fmnist("t10k-labels-1000-idx1-ubyte.gz")),
        holdout: 0.25,
        data_count: Some(256),
        eval_count: Some(200),
        train: TrainSettings {
            epochs,
            lr: 1e-3,
            batch: 32,
            read_every: 3,
            ..TrainSettings::default()
        },
        resume: false,
        out: out.to_path_buf(),
    }
}

/// The exported model's accuracy on the job's evaluation images, run from the file.
fn exported_accuracy(j: &FinetuneJob) -> f64 {
    let g = qforge::graph::load(&j.out.join("fmnist_cnn_finetuned.onnx")).unwrap();
    // The job evaluates the first 200 images (split.json names them).
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(j.out.join("split.json")).unwrap()).unwrap();
    let eval: Vec<usize> = split["eval"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap()[1..].parse().unwrap())
        .collect();
    let x = qforge::data::load(j.eval.as_ref().unwrap(), None).unwrap();
    let x = qforge::data::split::take(&x, &eval);
    let labels = qforge::data::idx::read_labels(j.eval_labels.as_ref().unwrap(), None).unwrap();
    let input = g.inputs[0].clone();
    let y = Runner::new(gpu().unwrap(), g)
        .run(&[(&input, x.view())])
        .unwrap()
        .remove(0);
    let want: Vec<usize> = eval.iter().map(|&i| labels[i]).collect();
    qforge::eval::accuracy(&y, &want)
}

#[test]
fn finetune_trains_exports_what_it_reports_and_resumes_exactly() {
    if gpu().is_none() {
        return;
    }
    let (a, b) = (Scratch::new("ft-a"), Scratch::new("ft-b"));
    let once = job(a.path(), 1);
    let r1 = finetune(&once, &mut Silent).unwrap();
    let f = &r1.tuned.fitted;
    assert_eq!(f.steps, 8, "256 images in batches of 32");
    assert_eq!(f.scores.len(), 2, "before and after the epoch");
    assert!(f.loss.len() >= 3 && f.loss.iter().all(|l| l.1.is_finite()));
    for name in [
        "fmnist_cnn_finetuned.onnx",
        "report.html",
        "split.json",
        CHECKPOINT,
    ] {
        assert!(a.path().join(name).exists(), "{name} written");
    }
    let report = std::fs::read_to_string(a.path().join("report.html")).unwrap();
    assert!(report.contains("<svg") && report.contains("accuracy"));
    assert_eq!(
        exported_accuracy(&once),
        f.scores[1].1,
        "the exported file scores what the job reported"
    );
    assert!(
        (f.scores[1].1 - f.scores[0].1).abs() < 0.05,
        "a short run at lr 1e-3 from trained weights stays near the original: {:?}",
        f.scores
    );

    // Resuming after epoch 1 to epoch 2 gives the weights of 2 epochs straight. (The cosine
    // schedule above spans the run's own epochs; a constant one is the same for 1 and 2.)
    let constant = |out: &std::path::Path, epochs: usize| {
        let mut j = job(out, epochs);
        j.train.schedule = "constant".into();
        j
    };
    finetune(&constant(a.path(), 1), &mut Silent).unwrap();
    let mut resumed = constant(a.path(), 2);
    resumed.resume = true;
    let r2 = finetune(&resumed, &mut Silent).unwrap();
    assert_eq!(r2.tuned.fitted.resumed_from, 1);
    assert_eq!(r2.tuned.fitted.steps, 16);
    let straight = finetune(&constant(b.path(), 2), &mut Silent).unwrap();
    for (name, v) in &straight.tuned.fitted.values {
        assert_eq!(
            &r2.tuned.fitted.values[name], v,
            "{name}: resumed and straight runs agree exactly"
        );
    }
    // A checkpoint that has trained every epoch asked for leaves nothing to resume.
    let mut again = constant(a.path(), 2);
    again.resume = true;
    let Err(e) = finetune(&again, &mut Silent) else {
        panic!("a resume past --epochs was accepted")
    };
    let e = e.to_string();
    assert!(
        e.contains("--epochs") && e.contains("already trained"),
        "{e}"
    );
}

#[test]
fn an_image_model_distills_from_itself_on_augmented_photos() {
    if gpu().is_none() {
        return;
    }
    let out = Scratch::new("ft-kd");
    let j = FinetuneJob {
        model: repo("models/mobilenet_v2.onnx"),
        data: repo("data/photos"),
        labels: None,
        teacher: None,
        eval: None,
        eval_labels: None,
        holdout: 0.5,
        data_count: None,
        eval_count: None,
        train: TrainSettings {
            epochs: 1,
            lr: 1e-6,
            batch: 2,
            read_every: 1,
            freeze: vec!["*classifier*".into()],
            ..TrainSettings::default()
        },
        resume: false,
        out: out.path().to_path_buf(),
    };
    let r = finetune(&j, &mut Silent).unwrap();
    let t = &r.tuned;
    assert!(
        matches!(t.loss, qforge::train::LossKind::Distill { .. }),
        "no labels: distillation"
    );
    assert!(
        t.augment.flip && t.augment.crop_scale.is_some(),
        "a folder is augmented"
    );
    assert!(t.trained < t.trainable, "the classifier is frozen");
    assert_eq!(t.metric, "top-1 agreement with the teacher");
    assert_eq!(
        t.fitted.scores[0].1, 1.0,
        "the untrained model agrees with itself"
    );
    // Student and teacher start equal: the KL divergence is 0 up to f32 rounding.
    let l0 = t.fitted.loss[0].1;
    assert!(l0.is_finite() && l0.abs() < 1e-3, "first loss {l0}");
}

#[test]
fn compress_then_finetune_distills_the_compressed_model() {
    if gpu().is_none() {
        return;
    }
    let out = Scratch::new("ft-compress");
    let opts = CompressOptions {
        target: 0.6,
        candidates: vec![0.25, 0.5, 0.75],
        ..CompressOptions::default()
    };
    let j = CompressJob {
        model: repo("models/fmnist_cnn.onnx"),
        methods: vec![Method::SpatialSvd],
        options: opts,
        data: fmnist("train-images-1024-idx3-ubyte.gz"),
        eval: Some(fmnist("t10k-images-1000-idx3-ubyte.gz")),
        holdout: 0.25,
        data_count: Some(256),
        eval_count: Some(200),
        labels: Some(fmnist("t10k-labels-1000-idx1-ubyte.gz")),
        score_count: 64,
        rebuild_count: 64,
        eval_inputs: None,
        rescore: false,
        finetune: Some(TrainSettings {
            epochs: 2,
            lr: 1e-3,
            batch: 32,
            ..TrainSettings::default()
        }),
        out: out.path().to_path_buf(),
    };
    let r = compress(&j, &mut Silent).unwrap();
    let t = r.tuned.as_ref().expect("fine-tuned");
    assert!(matches!(t.loss, qforge::train::LossKind::Distill { .. }));
    assert_eq!(t.fitted.steps, 16);
    let (before, after) = (t.fitted.scores[0].1, t.fitted.scores[2].1);
    assert!(
        after >= before - 0.02,
        "distillation from the original does not lose accuracy: {before} -> {after}"
    );
    assert!(r
        .summary
        .iter()
        .any(|(k, _)| k.starts_with("fine-tuning: accuracy")));
}

#[test]
fn bad_finetune_input_is_a_typed_error() {
    if gpu().is_none() {
        return;
    }
    let out = Scratch::new("ft-bad");
    let run = |f: &dyn Fn(&mut FinetuneJob)| {
        let mut j = job(out.path(), 1);
        f(&mut j);
        finetune(&j, &mut Silent).err().expect("an error")
    };
    let e = run(&|j| j.train.lr = 0.0);
    assert!(
        matches!(&e, Error::InvalidArgument { what, .. } if what.contains("learning rate")),
        "{e}"
    );
    let e = run(&|j| j.train.epochs = 0);
    assert!(e.to_string().contains("--epochs"), "{e}");
    let e = run(&|j| j.labels = Some(fmnist("t10k-labels-1000-idx1-ubyte.gz")));
    assert!(
        e.to_string().contains("label"),
        "1000 labels for 1024 images: {e}"
    );
    let e = run(&|j| {
        j.labels = None;
        j.train.loss = Some("ce".into());
    });
    assert!(e.to_string().contains("cross-entropy needs"), "{e}");
    let e = run(&|j| {
        j.teacher = Some(repo("models/mobilenet_v2.onnx"));
        j.train.loss = Some("kd".into());
    });
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = run(&|j| j.train.freeze = vec!["no_such_layer*".into()]);
    assert!(e.to_string().contains("--freeze"), "{e}");
    let e = run(&|j| j.train.batch = 1000);
    assert!(
        e.to_string().contains("--batch"),
        "more than the 256 images: {e}"
    );
    let e = run(&|j| j.train.optimizer = "lbfgs".into());
    assert!(e.to_string().contains("lbfgs"), "{e}");
    let e = run(&|j| j.resume = true);
    assert!(matches!(e, Error::Io { .. }), "nothing to resume from: {e}");
    let e = run(&|j| j.model = j.data.clone());
    assert!(!matches!(e, Error::Diverged { .. }), "not a model: {e}");
    assert!(
        !out.path().join("fmnist_cnn_finetuned.onnx").exists(),
        "no output from a failed run"
    );

    // One good epoch, then a diverging one: the error names the step and the checkpoint of
    // epoch 1 stays as it was. (64 images in batches of 8: 8 steps an epoch.)
    let small = |epochs| FinetuneJob {
        data_count: Some(64),
        eval_count: Some(32),
        train: TrainSettings {
            batch: 8,
            ..job(out.path(), epochs).train
        },
        ..job(out.path(), epochs)
    };
    finetune(&small(1), &mut Silent).unwrap();
    let ckpt = out.path().join(CHECKPOINT);
    let before = std::fs::read(&ckpt).unwrap();
    let mut j = small(2);
    j.resume = true;
    j.train.lr = 1e30;
    j.train.optimizer = "sgd".into();
    j.train.schedule = "constant".into();
    let e = finetune(&j, &mut Silent).err().expect("diverges");
    match &e {
        Error::Diverged { step, kept, .. } => {
            assert!(*step > 8 && *step <= 16, "in epoch 2: step {step}");
            assert!(kept.contains("after epoch 1"), "{kept}");
        }
        other => panic!("expected Diverged, got {other}"),
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "checkpoint intact");
}
