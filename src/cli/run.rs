//! `qforge run`: a model on .npy files (one per input) or a folder of images.

use std::path::PathBuf;

use ndarray::Axis;
use qforge::data::images::Preprocess;
use qforge::jobs::run::{run, RunInput, RunJob};

/// Arguments of `qforge run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Input tensors: `FILE.npy` for a model with one input, or `NAME=FILE.npy` once per
    /// input (in the type the model declares: float32, int64, int32, int8, uint8 or bool);
    /// shapes give the batch and every named dim.
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    input: Vec<String>,
    /// A folder of .jpg/.png images, resized, centre-cropped and normalised.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Crop size for --images.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Shorter side before cropping (default: size * 256 / 224).
    #[arg(long)]
    resize: Option<u32>,
    /// Per-channel mean for --images, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0.485,0.456,0.406")]
    mean: Vec<f32>,
    /// Per-channel std for --images, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0.229,0.224,0.225")]
    std: Vec<f32>,
    /// Write the first output here (.npy).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write every output as DIR/<output name>.npy.
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Also time each kernel of the forward alone and print where the time goes.
    #[arg(long)]
    profile: bool,
}

/// `--input NAME=FILE` as (name, file); `FILE` alone (or a path that exists as written, '='
/// and all) as (None, file).
fn input_arg(s: &str) -> (Option<String>, PathBuf) {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !std::path::Path::new(s).exists() => {
            (Some(name.to_string()), PathBuf::from(file))
        }
        _ => (None, PathBuf::from(s)),
    }
}

/// Runs `qforge run`.
pub fn main(a: RunArgs) -> qforge::Result<()> {
    let input = match (a.input.is_empty(), a.images) {
        (false, _) => RunInput::Npy(a.input.iter().map(|s| input_arg(s)).collect()),
        (true, Some(d)) => {
            let channels = a.mean.len();
            let resize = a
                .resize
                .unwrap_or((a.size as u64 * 256 / 224).min(u32::MAX as u64) as u32);
            RunInput::Images(
                d,
                Preprocess {
                    size: a.size,
                    resize,
                    mean: a.mean,
                    std: a.std,
                    channels,
                },
            )
        }
        (true, None) => {
            return Err(qforge::Error::invalid(
                "run",
                "--input",
                "none",
                "give --input FILE.npy or --images DIR",
            ))
        }
    };
    let r = run(&RunJob {
        model: a.model.clone(),
        input,
        output: a.output,
        outputs: a.outputs,
        profile: a.profile,
    })?;
    eprintln!("adapter: {}", r.adapter);
    eprintln!(
        "ran {} on {:?} in {:.3} s",
        a.model.display(),
        r.input_shape,
        r.seconds
    );
    let y = &r.outputs[0].1;
    if r.outputs.len() == 1 && y.ndim() == 2 && y.shape()[1] > 1 {
        for (i, row) in y.axis_iter(Axis(0)).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let label = if r.samples.len() == y.shape()[0] {
                r.samples[i].clone()
            } else {
                format!("{} [{i}]", r.samples[0])
            };
            let top: Vec<String> = idx
                .iter()
                .take(5)
                .map(|&k| format!("{k} ({:.3})", row[k]))
                .collect();
            println!("{label}: top-5 {}", top.join(", "));
        }
    } else {
        for ((name, y), t) in r.outputs.iter().zip(&r.output_types) {
            println!("output {name:?}: {t} {:?}", y.shape());
        }
    }
    if !r.profile.is_empty() {
        let total: f64 = r.profile.iter().map(|(_, s)| s).sum();
        eprintln!("kernel time, each dispatch alone ({total:.3} s in all):");
        for (k, s) in &r.profile {
            eprintln!("  {k:<28} {s:>8.3} s {:>5.1}%", 100.0 * s / total);
        }
    }
    for p in &r.written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
