//! `qforge finetune`: train a model on the GPU, with labels or by distillation from a teacher.

use std::path::PathBuf;

use qforge::jobs::finetune::{finetune, FinetuneJob, TrainSettings};

/// Arguments of `qforge finetune`.
#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// The ONNX model (batch norms are folded; every Conv/Gemm/MatMul weight and bias trains).
    model: PathBuf,
    /// Training images: a folder of images, an .npy batch or IDX images. Without --eval,
    /// --holdout of them is held out for the figures.
    #[arg(long)]
    data: PathBuf,
    /// Labels (IDX) of --data: train with cross-entropy (default without them: distillation).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The model to distill from (default: the model itself, as it was before training).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// An explicit held-out evaluation set (then all of --data trains).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Labels (IDX) of --eval: score by accuracy instead of agreement with the teacher.
    #[arg(long)]
    eval_labels: Option<PathBuf>,
    /// Share of --data held out for the figures, split by image with a fixed seed (0: the
    /// figures are in-sample and say so).
    #[arg(long, default_value_t = 0.25, conflicts_with = "eval")]
    holdout: f64,
    /// Use at most this many training images (after the split).
    #[arg(long)]
    data_count: Option<usize>,
    /// Use at most this many held-out images.
    #[arg(long)]
    eval_count: Option<usize>,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    /// Images per micro-batch (the last partial batch of an epoch is dropped).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value = "adam", value_parser = ["sgd", "adam", "adamw"])]
    optimizer: String,
    /// Learning-rate schedule: constant, step (x0.1 at 1/3 and 2/3 of the steps) or cosine
    /// (5% linear warm-up).
    #[arg(long, default_value = "cosine", value_parser = ["constant", "step", "cosine"])]
    schedule: String,
    /// Weight decay (default: the optimizer's: 0, AdamW 0.01).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// SGD's momentum (default 0.9).
    #[arg(long)]
    momentum: Option<f32>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// ce (needs --labels), kd (KL divergence of temperature-softened outputs, times T^2) or
    /// mse (to the teacher's outputs).
    #[arg(long, value_parser = ["ce", "kd", "mse"])]
    loss: Option<String>,
    /// Distillation temperature.
    #[arg(long, default_value_t = 2.0)]
    temperature: f32,
    /// Clip the global gradient norm to this.
    #[arg(long)]
    max_grad_norm: Option<f32>,
    /// Micro-batches whose gradients add up before each optimizer step.
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Parameters to keep fixed: names of parameters or of the nodes they feed, `*` a
    /// wildcard; comma separated or repeated.
    #[arg(long, value_delimiter = ',')]
    freeze: Vec<String>,
    /// none, or a comma list of flip, crop (default: crop,flip for image folders, none else).
    #[arg(long)]
    augment: Option<String>,
    /// Smallest share of the image area a random crop keeps.
    #[arg(long, default_value_t = 0.35)]
    crop_scale: f64,
    /// Seeds shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Read the loss back every this many micro-batches.
    #[arg(long, default_value_t = 10)]
    read_every: usize,
    /// Keep the activations after pointwise expansions (1x1 convolutions from at most 64
    /// channels to twice as many or more, then Relu/Clip) for the backward instead of
    /// recomputing them there: more GPU memory (MobileNetV2 at batch 16: 767 instead of 536
    /// MiB), at most a tenth less time per step.
    #[arg(long)]
    no_recompute: bool,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// Output folder.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

/// Runs `qforge finetune`.
pub fn main(a: FinetuneArgs) -> qforge::Result<()> {
    let job = FinetuneJob {
        model: a.model,
        data: a.data,
        labels: a.labels,
        teacher: a.teacher,
        eval: a.eval,
        eval_labels: a.eval_labels,
        holdout: a.holdout,
        data_count: a.data_count,
        eval_count: a.eval_count,
        train: TrainSettings {
            epochs: a.epochs,
            lr: a.lr,
            batch: a.batch,
            optimizer: a.optimizer,
            schedule: a.schedule,
            weight_decay: a.weight_decay,
            momentum: a.momentum,
            nesterov: a.nesterov,
            loss: a.loss,
            temperature: a.temperature,
            max_grad_norm: a.max_grad_norm,
            accumulate: a.accumulate,
            freeze: a.freeze,
            augment: a.augment,
            crop_scale: a.crop_scale,
            seed: a.seed,
            read_every: a.read_every,
            recompute: !a.no_recompute,
        },
        resume: a.resume,
        out: a.out,
    };
    let r = finetune(&job, &mut super::Bar::new())?;
    eprintln!("adapter: {}", r.adapter);
    for (k, v) in &r.summary {
        println!("{k:<44} {v}");
    }
    let names: Vec<String> = r.written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}
