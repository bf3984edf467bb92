//! `qforge compress`: spatial/weight SVD and channel pruning with automatic per-layer ratios.

use std::path::PathBuf;

use qforge::compress::prune::Selection;
use qforge::compress::{CompressOptions, Method};
use qforge::jobs::compress::{compress, target, CompressJob};
use qforge::jobs::finetune::TrainSettings;

/// Arguments of `qforge compress`.
#[derive(clap::Args, Debug)]
pub struct CompressArgs {
    /// The ONNX model (default: the bundled MobileNetV2).
    model: Option<PathBuf>,
    /// Target MAC ratio of the compressed model, in (0, 1].
    #[arg(long, conflicts_with = "target_memory")]
    target_macs: Option<f64>,
    /// Target parameter-memory ratio instead, in (0, 1].
    #[arg(long)]
    target_memory: Option<f64>,
    /// Methods in order: ssvd, wsvd, cp, or a comma list such as ssvd,cp.
    #[arg(long, default_value = "ssvd,cp")]
    method: String,
    /// The images compression fits and scores on: a folder of images, an .npy batch or IDX
    /// images (default: the bundled photos). Without --eval, --holdout of them is held out.
    #[arg(long)]
    data: Option<PathBuf>,
    /// An explicit held-out evaluation set (then all of --data fits).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Share of --data held out for the headline figures, split by image with a fixed seed; 0
    /// reports on the fitting images themselves (figures labelled in-sample).
    #[arg(long, default_value_t = 0.25, conflicts_with = "eval")]
    holdout: f64,
    /// Labels (IDX) of the images the held-out figures come from (of --eval, or of --data):
    /// score by accuracy instead of agreement with FP32.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Use at most this many fitting images of --data (after the held-out split).
    #[arg(long)]
    data_count: Option<usize>,
    /// Use at most this many held-out images.
    #[arg(long)]
    eval_count: Option<usize>,
    /// Fitting images each layer is scored on at each candidate ratio (they also pick each
    /// rebuild's ridge); the other fitting images rebuild pruned layers.
    #[arg(long, default_value_t = 16)]
    score_count: usize,
    /// At most this many images rebuild pruned layers.
    #[arg(long, default_value_t = 64)]
    rebuild_count: usize,
    /// Also write the held-out inputs (.npy), e.g. to run the exported model on them.
    #[arg(long)]
    eval_inputs: Option<PathBuf>,
    /// Candidate per-layer ratios, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    candidates: Vec<f64>,
    /// Layers (node names) to leave alone, comma separated.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Round ranks and kept channels to a multiple of this.
    #[arg(long, default_value_t = 1)]
    multiplicity: usize,
    /// Output positions sampled per image for the least-squares rebuild of pruned layers.
    #[arg(long, default_value_t = 10)]
    samples_per_image: usize,
    /// How pruning ranks input channels: magnitude (AIMET's L1 norm of the weights) or energy
    /// (each channel's output energy on the sampled inputs).
    #[arg(long, default_value = "magnitude", value_parser = ["magnitude", "energy"])]
    selection: String,
    /// What the greedy selection ranks layers by: agreement (top-1 agreement with the
    /// original, accuracy with --labels; AIMET's) or sqnr (the outputs' SQNR against the
    /// original, which still ranks layers where few scoring images tie in agreement).
    #[arg(long, default_value = "agreement", value_parser = ["agreement", "sqnr"])]
    score: String,
    /// Prune without rebuilding the weights by least squares.
    #[arg(long)]
    no_reconstruct: bool,
    /// Evaluate every layer again even if a matching score table is saved in --out.
    #[arg(long)]
    rescore: bool,
    /// Then fine-tune the compressed model for this many epochs on the fitting images, by
    /// distillation from the original (0: no fine-tuning).
    #[arg(long, default_value_t = 0)]
    finetune_epochs: usize,
    /// Fine-tuning learning rate (Adam, cosine schedule).
    #[arg(long, default_value_t = 1e-4)]
    finetune_lr: f32,
    /// Fine-tuning batch.
    #[arg(long, default_value_t = 32)]
    finetune_batch: usize,
    /// Output folder.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

/// Runs `qforge compress`.
pub fn main(a: CompressArgs) -> qforge::Result<()> {
    let (target, metric) = target(a.target_macs, a.target_memory);
    let methods = a
        .method
        .split(',')
        .map(Method::parse)
        .collect::<qforge::Result<Vec<_>>>()?;
    let selection = if a.selection == "energy" {
        Selection::Energy
    } else {
        Selection::Magnitude
    };
    let options = CompressOptions {
        selection,
        target,
        metric,
        candidates: a.candidates,
        ignore: a.ignore,
        multiplicity: a.multiplicity,
        samples_per_image: a.samples_per_image,
        reconstruct: !a.no_reconstruct,
        score: qforge::eval::ScoreKind::named(&a.score)
            .unwrap_or(qforge::eval::ScoreKind::Agreement),
    };
    let job = CompressJob {
        model: a
            .model
            .unwrap_or_else(|| super::bundled("models/mobilenet_v2.onnx")),
        methods,
        options,
        data: a.data.unwrap_or_else(|| super::bundled("data/images")),
        eval: a.eval,
        holdout: a.holdout,
        data_count: a.data_count,
        eval_count: a.eval_count,
        labels: a.labels,
        score_count: a.score_count,
        rebuild_count: a.rebuild_count,
        eval_inputs: a.eval_inputs,
        rescore: a.rescore,
        finetune: (a.finetune_epochs > 0).then(|| TrainSettings {
            epochs: a.finetune_epochs,
            lr: a.finetune_lr,
            batch: a.finetune_batch,
            ..TrainSettings::default()
        }),
        out: a.out,
    };
    let r = compress(&job, &mut super::Bar::new())?;
    eprintln!("adapter: {}", r.adapter);
    for (k, v) in &r.summary {
        println!("{k:<36} {v}");
    }
    let names: Vec<String> = r.written.iter().map(|p| p.display().to_string()).collect();
    println!(
        "wrote {}, score tables in {}",
        names.join(", "),
        r.tables.display()
    );
    Ok(())
}
