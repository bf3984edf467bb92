//! The `qforge` command line: one clap `Args` struct per subcommand, each calling one library
//! function (`qforge::jobs`) and printing what it returns.

pub mod analyze;
pub mod compress;
pub mod devices;
pub mod finetune;
pub mod inspect;
pub mod quantize;
pub mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(
    name = "qforge",
    version,
    about = "Quantize and compress neural networks on any GPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// List every GPU adapter (name, backend, type, driver, key limits) and the one qforge picks.
    Devices(devices::DevicesArgs),
    /// Show a model's inputs, outputs, op counts, parameters and MACs per layer.
    Inspect(inspect::InspectArgs),
    /// Quantize a model (AIMET's QuantSim: BN fold, quantizers from a config, calibration,
    /// fake-quant simulation); writes the prepared model, AIMET encodings, a QDQ model, a report.
    Quantize(quantize::QuantizeArgs),
    /// Analyze a model's quantization (AIMET's QuantAnalyzer): weight-only and activation-only
    /// scores, per-layer sensitivity, encoding ranges, histograms; writes analysis.html/.json.
    Analyze(analyze::AnalyzeArgs),
    /// Compress a model: spatial/weight SVD and channel pruning (least-squares rebuilt), with
    /// per-layer ratios chosen greedily to meet a target MAC or memory ratio.
    Compress(compress::CompressArgs),
    /// Fine-tune a model on the GPU: cross-entropy on labels or distillation from a teacher
    /// (by default the model as it was); held-out scores per epoch, checkpoints, a report.
    Finetune(finetune::FinetuneArgs),
    /// Run a model on the GPU: on a .npy input, or on a folder of images (prints top-5).
    Run(run::RunArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> qforge::Result<()> {
        match self {
            Command::Devices(a) => devices::main(a),
            Command::Inspect(a) => inspect::main(a),
            Command::Quantize(a) => quantize::main(a),
            Command::Analyze(a) => analyze::main(a),
            Command::Compress(a) => compress::main(a),
            Command::Finetune(a) => finetune::main(a),
            Command::Run(a) => run::main(a),
        }
    }
}

/// The names of the files a job wrote, comma-separated.
pub fn file_names(written: &[PathBuf]) -> String {
    written
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file bundled with the repository (default models and data).
pub fn bundled(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Progress on the terminal: a bar for counted steps, a spinner for phases.
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// Nothing shown yet.
    pub fn new() -> Bar {
        Bar(None)
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}

impl qforge::jobs::Progress for Bar {
    fn phase(&mut self, what: &str) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
        let s = indicatif::ProgressBar::new_spinner().with_message(what.to_string());
        s.enable_steady_tick(std::time::Duration::from_millis(200));
        self.0 = Some(s);
    }

    fn step(&mut self, what: &str, done: usize, total: usize) {
        let b = match self.0.take() {
            Some(b) if b.length() == Some(total as u64) => b,
            other => {
                if let Some(o) = other {
                    o.finish_and_clear();
                }
                indicatif::ProgressBar::new(total as u64).with_style(
                    indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {elapsed}")
                        .expect("valid template"),
                )
            }
        };
        b.set_message(what.to_string());
        b.set_position(done as u64);
        self.0 = Some(b);
    }
}

/// `NAME=SIZE` for named dims.
pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    Ok((
        k.to_string(),
        v.parse().map_err(|_| format!("'{v}' is not a size"))?,
    ))
}
