//! `run`: a model on an .npy batch or a folder of images; the outputs returned and, when
//! asked, written as .npy files (never over an input, each written whole).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;

use crate::data::{images, npy};
use crate::error::{Error, Result};
use crate::exec::Runner;
use crate::gpu::Gpu;
use crate::jobs::output::Outputs;

/// What to run the model on.
#[derive(Clone, Debug)]
pub enum RunInput {
    /// An f32 .npy batch; its shape gives the batch and other named dims.
    Npy(PathBuf),
    /// A folder of images, preprocessed.
    Images(PathBuf, images::Preprocess),
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunJob {
    pub model: PathBuf,
    pub input: RunInput,
    /// Write the first output here (.npy).
    pub output: Option<PathBuf>,
    /// Write every output as `<dir>/<output name>.npy`.
    pub outputs: Option<PathBuf>,
}

/// What `run` computed.
pub struct RunOutcome {
    pub adapter: String,
    /// A label per sample (file names for images, else the input's path).
    pub samples: Vec<String>,
    pub input_shape: Vec<usize>,
    /// (output name, value) in model order.
    pub outputs: Vec<(String, ArrayD<f32>)>,
    pub seconds: f64,
    pub written: Vec<PathBuf>,
}

/// File name for an output: characters other than letters, digits, '-', '_' and '.' become '_'.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "output".into()
    } else {
        s
    }
}

/// Runs `run`.
pub fn run(job: &RunJob) -> Result<RunOutcome> {
    let input_path = match &job.input {
        RunInput::Npy(p) | RunInput::Images(p, _) => p.as_path(),
    };
    let inputs: Vec<&Path> = vec![job.model.as_path(), input_path];
    if let Some(p) = &job.output {
        crate::files::check_output(p, &inputs)?;
    }
    let g = crate::graph::load(&job.model)?;
    if g.inputs.len() != 1 {
        return Err(Error::Graph {
            model: job.model.display().to_string(),
            message: format!("`run` feeds one input; this model has {:?}", g.inputs),
        });
    }
    let (samples, x): (Vec<String>, ArrayD<f32>) = match &job.input {
        RunInput::Npy(p) => (vec![p.display().to_string()], npy::read(p)?),
        RunInput::Images(d, pre) => {
            let (files, x) = images::load_dir(d, pre)?;
            (images::file_names(&files), x)
        }
    };
    let gpu = Arc::new(Gpu::new()?);
    let name = g.inputs[0].clone();
    let outputs = g.outputs.clone();
    let runner = Runner::new(gpu.clone(), g);
    let t0 = std::time::Instant::now();
    let ys = runner.run(&[(&name, x.view())])?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut written = Vec::new();
    if let Some(dir) = &job.outputs {
        let mut out = Outputs::new(dir, &inputs)?;
        for (n, y) in outputs.iter().zip(&ys) {
            let p = out.path(&format!("{}.npy", sanitize(n)))?;
            npy::write(&p, y)?;
        }
        written.extend(out.commit()?);
    }
    if let Some(p) = &job.output {
        npy::write(p, &ys[0])?;
        written.push(p.clone());
    }
    Ok(RunOutcome {
        adapter: gpu.describe(),
        samples,
        input_shape: x.shape().to_vec(),
        outputs: outputs.into_iter().zip(ys).collect(),
        seconds,
        written,
    })
}
