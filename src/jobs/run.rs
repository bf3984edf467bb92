//! `run`: a model on .npy files (one per input, in the types the model declares) or a folder
//! of images; the outputs returned and, when asked, written as .npy files in their types
//! (never over an input, each written whole).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;

use crate::data::images;
use crate::data::npy::{self, Npy};
use crate::error::{Error, Result};
use crate::exec::Runner;
use crate::gpu::Gpu;
use crate::graph::ir::{ElemType, Graph};
use crate::jobs::output::Outputs;

/// What to run the model on.
#[derive(Clone, Debug)]
pub enum RunInput {
    /// One .npy per input: `(Some(name), file)`, or `(None, file)` alone for a model with one
    /// input. Shapes give the batch and every named dim.
    Npy(Vec<(Option<String>, PathBuf)>),
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
    /// After the run, time each kernel of the forward alone ([`RunOutcome::profile`]).
    pub profile: bool,
}

/// What `run` computed.
pub struct RunOutcome {
    pub adapter: String,
    /// A label per sample (file names for images, else the input's path).
    pub samples: Vec<String>,
    /// The first input's shape.
    pub input_shape: Vec<usize>,
    /// (output name, value) in model order, every value as f32 (integer and bool outputs
    /// hold their exact values; `output_types` says which).
    pub outputs: Vec<(String, ArrayD<f32>)>,
    /// The element type of each output.
    pub output_types: Vec<ElemType>,
    pub seconds: f64,
    pub written: Vec<PathBuf>,
    /// Seconds per kernel, slowest first, each dispatch timed in a submission of its own
    /// (empty unless asked for).
    pub profile: Vec<(String, f64)>,
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

/// Integers up to this magnitude are exact in f32, the GPU's carrier of every value.
pub const EXACT_INT: f64 = 16_777_216.0;

/// An input array in the carrier the executor runs (f32), checked against the type the model
/// declares for it: the .npy's type must be that type, and integers must be exact in f32
/// (`|v| <= 2^24`) unless `exact` is false (a value input: a shape or a bound, folded on the
/// host, where a huge bound such as INT64_MAX only means "to the end").
pub fn to_runtime(name: &str, a: &Npy, declared: ElemType, exact: bool) -> Result<ArrayD<f32>> {
    let matches = matches!(
        (declared, a),
        (ElemType::F32, Npy::F32(_))
            | (ElemType::I64, Npy::I64(_))
            | (ElemType::I32, Npy::I32(_))
            | (ElemType::I8, Npy::I8(_))
            | (ElemType::U8, Npy::U8(_))
            | (ElemType::Bool, Npy::Bool(_))
    );
    if !matches {
        return Err(Error::InvalidArgument {
            op: "run",
            what: "input",
            value: name.to_string(),
            reason: format!(
                "the .npy holds {} ('{}'); the model declares {declared}",
                a.dtype(),
                a.descr()
            ),
        });
    }
    if let Npy::F32(x) = a {
        return Ok(x.clone());
    }
    let v = a.to_f64();
    if exact {
        if let Some((i, &bad)) = v.iter().enumerate().find(|(_, v)| v.abs() > EXACT_INT) {
            return Err(Error::InvalidArgument {
                op: "run",
                what: "input",
                value: name.to_string(),
                reason: format!(
                    "element {i} is {bad}: qforge carries {declared} values on the GPU as \
                     float32, exact up to 2^24 = 16777216"
                ),
            });
        }
    }
    Ok(v.mapv(|x| x as f32))
}

/// An output computed as f32 in the type the model gives it (integer and bool values are
/// exact integers in the carrier).
pub fn from_runtime(y: &ArrayD<f32>, t: ElemType) -> Npy {
    match t {
        ElemType::F32 => Npy::F32(y.clone()),
        ElemType::I64 => Npy::I64(y.mapv(|v| v as i64)),
        ElemType::I32 => Npy::I32(y.mapv(|v| v as i32)),
        ElemType::I8 => Npy::I8(y.mapv(|v| v as i8)),
        ElemType::U8 => Npy::U8(y.mapv(|v| v as u8)),
        ElemType::Bool => Npy::Bool(y.mapv(|v| v != 0.0)),
    }
}

/// The model's inputs from `--input` files, by name, in model order, as the executor takes
/// them.
fn npy_inputs(
    g: &Graph,
    files: &[(Option<String>, PathBuf)],
) -> Result<Vec<(String, ArrayD<f32>)>> {
    let model = g.name.clone();
    let graph_err = |message: String| Error::Graph {
        model: model.clone(),
        message,
    };
    let named: Vec<(String, &PathBuf)> = match files {
        [(None, p)] if g.inputs.len() == 1 => vec![(g.inputs[0].clone(), p)],
        [(None, _)] => {
            return Err(graph_err(format!(
                "`--input FILE` feeds a model with one input; this model has {} ({}): give \
                 --input NAME=FILE for each",
                g.inputs.len(),
                g.inputs.join(", ")
            )))
        }
        _ => files
            .iter()
            .map(|(n, p)| match n {
                Some(n) => Ok((n.clone(), p)),
                None => Err(Error::invalid(
                    "run",
                    "--input",
                    p.display(),
                    "with several --input flags, each is NAME=FILE",
                )),
            })
            .collect::<Result<_>>()?,
    };
    for (i, (n, _)) in named.iter().enumerate() {
        if !g.inputs.contains(n) {
            return Err(Error::invalid(
                "run",
                "--input",
                n,
                format!(
                    "the model has no input named so (inputs: {})",
                    g.inputs.join(", ")
                ),
            ));
        }
        if named[..i].iter().any(|(m, _)| m == n) {
            return Err(Error::invalid("run", "--input", n, "given twice"));
        }
    }
    let values = g.value_inputs();
    let mut out = Vec::with_capacity(g.inputs.len());
    for name in &g.inputs {
        let Some((_, path)) = named.iter().find(|(n, _)| n == name) else {
            return Err(graph_err(format!(
                "input '{name}' ({} {}) has no --input {name}=FILE.npy",
                g.elem_type(name),
                show(&g.input_dims[name])
            )));
        };
        let a = npy::read_any(path)?;
        out.push((name.clone(), model_input(g, &values, name, &a, path)?));
    }
    Ok(out)
}

/// Input `name` of `g` from array `a`, read from `path`: [`to_runtime`] with the type the
/// model declares (a value input, among `values`, may hold any integer), its errors naming
/// the file.
pub fn model_input(
    g: &Graph,
    values: &[String],
    name: &str,
    a: &Npy,
    path: &Path,
) -> Result<ArrayD<f32>> {
    to_runtime(
        name,
        a,
        g.elem_type(name),
        !values.iter().any(|v| v == name),
    )
    .map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::Io {
            action: "reading input",
            path: path.display().to_string(),
            message: format!("input '{name}': {reason}"),
        },
        other => other,
    })
}

/// Declared dims as `[N, 3, 224, 224]`.
fn show(d: &[crate::graph::ir::Dim]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| match d {
            crate::graph::ir::Dim::Fixed(v) => v.to_string(),
            crate::graph::ir::Dim::Named(n) => n.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Runs `run`.
pub fn run(job: &RunJob) -> Result<RunOutcome> {
    let mut inputs: Vec<&Path> = vec![job.model.as_path()];
    match &job.input {
        RunInput::Npy(files) => inputs.extend(files.iter().map(|(_, p)| p.as_path())),
        RunInput::Images(p, _) => inputs.push(p.as_path()),
    }
    if let Some(p) = &job.output {
        crate::files::check_output(p, &inputs)?;
    }
    let g = crate::graph::load(&job.model)?;
    let (samples, xs): (Vec<String>, Vec<(String, ArrayD<f32>)>) = match &job.input {
        RunInput::Npy(files) => (
            files
                .iter()
                .take(1)
                .map(|(_, p)| p.display().to_string())
                .collect(),
            npy_inputs(&g, files)?,
        ),
        RunInput::Images(d, pre) => {
            if g.inputs.len() != 1 {
                return Err(Error::Graph {
                    model: job.model.display().to_string(),
                    message: format!(
                        "--images feeds a model with one input; this model has {:?}: give \
                         --input NAME=FILE for each",
                        g.inputs
                    ),
                });
            }
            let (files, x) = images::load_dir(d, pre)?;
            (images::file_names(&files), vec![(g.inputs[0].clone(), x)])
        }
    };
    let gpu = Arc::new(Gpu::new()?);
    let outputs = g.outputs.clone();
    let types = g.value_types();
    let output_types: Vec<ElemType> = outputs
        .iter()
        .map(|o| types.get(o).copied().unwrap_or_default())
        .collect();
    let runner = Runner::new(gpu.clone(), g);
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        xs.iter().map(|(n, x)| (n.as_str(), x.view())).collect();
    let t0 = std::time::Instant::now();
    let ys = runner.run(&views)?;
    let seconds = t0.elapsed().as_secs_f64();
    let profile = if job.profile {
        runner.profile(&views)?
    } else {
        Vec::new()
    };
    let mut written = Vec::new();
    if let Some(dir) = &job.outputs {
        let mut out = Outputs::new(dir, &inputs)?;
        for ((n, y), &t) in outputs.iter().zip(&ys).zip(&output_types) {
            let p = out.path(&format!("{}.npy", sanitize(n)))?;
            npy::write_any(&p, &from_runtime(y, t))?;
        }
        written.extend(out.commit()?);
    }
    if let Some(p) = &job.output {
        npy::write_any(p, &from_runtime(&ys[0], output_types[0]))?;
        written.push(p.clone());
    }
    Ok(RunOutcome {
        adapter: gpu.describe(),
        samples,
        input_shape: xs
            .first()
            .map(|(_, x)| x.shape().to_vec())
            .unwrap_or_default(),
        outputs: outputs.into_iter().zip(ys).collect(),
        output_types,
        seconds,
        written,
        profile,
    })
}
