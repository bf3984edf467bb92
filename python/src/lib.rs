//! `qforge._native`: the library's calls for Python. Arrays cross as (little-endian f32 bytes,
//! shape) pairs that the pure-Python layer (`qforge/__init__.py`) checks and converts, so the
//! extension needs no numpy headers and builds one abi3 wheel. Long calls release the GIL;
//! errors are `QforgeError` with the library's message.

use std::path::PathBuf;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator};
use qforge::eval::ScoreKind;
use qforge::quant::amp::{baseline, AmpOptions, AmpSearch, Candidate};
use qforge::quant::analyzers::Scheme;
use qforge::quant::export::EncodingsVersion;
use qforge::quant::params::ParamRange;
use qforge::quant::sim::{QuantOptions, QuantSim as Sim};
use qforge::quant::{PlacementStyle, QuantConfig};

create_exception!(_native, QforgeError, PyException);

fn err(e: qforge::Error) -> PyErr {
    QforgeError::new_err(e.to_string())
}

fn bad(message: String) -> PyErr {
    QforgeError::new_err(message)
}

/// An array from its f32 bytes and shape.
fn array(data: &[u8], shape: &[usize]) -> PyResult<ArrayD<f32>> {
    let n: usize = shape.iter().product();
    if data.len() != 4 * n {
        return Err(bad(format!(
            "array data: {} bytes for shape {shape:?} ({} f32 values)",
            data.len(),
            n
        )));
    }
    let v: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length checked"))
}

/// An array as Python receives it.
type Packed<'py> = (Bound<'py, PyBytes>, Vec<usize>);

/// An array as (bytes, shape) for Python.
fn out<'py>(py: Python<'py>, a: &ArrayD<f32>) -> Packed<'py> {
    let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    (PyBytes::new(py, &bytes), a.shape().to_vec())
}

/// A model from a path or the bytes of an ONNX file.
fn load_model(model: &Bound<'_, PyAny>) -> PyResult<qforge::graph::Graph> {
    if let Ok(b) = model.extract::<Vec<u8>>() {
        if model.is_instance_of::<PyBytes>() {
            return qforge::graph::import(&b, "model", None).map_err(err);
        }
    }
    let path: PathBuf = model.extract()?;
    qforge::graph::load(&path).map_err(err)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| bad(format!("{what} '{s}': {e}")))
}

/// The adapters wgpu sees (`WGPU_BACKEND` honoured), one line each.
#[pyfunction]
fn devices() -> Vec<String> {
    qforge::gpu::list_adapters()
        .iter()
        .map(|a| {
            format!(
                "{} ({:?}, {:?}, driver {} {})",
                a.name, a.backend, a.device_type, a.driver, a.driver_info
            )
        })
        .collect()
}

/// The adapter qforge runs on.
#[pyfunction]
fn adapter(py: Python<'_>) -> PyResult<String> {
    py.detach(|| qforge::gpu::Gpu::shared().map(|g| g.describe()))
        .map_err(err)
}

/// Runs `model` on named inputs ((name, bytes, shape) each; an empty name is the first
/// input) in batches of `batch`; returns its outputs.
#[pyfunction]
#[pyo3(signature = (model, inputs, batch = 8))]
fn run<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    inputs: Vec<(String, Vec<u8>, Vec<usize>)>,
    batch: usize,
) -> PyResult<Vec<Packed<'py>>> {
    let g = load_model(model)?;
    let feeds: Vec<(String, ArrayD<f32>)> = inputs
        .iter()
        .map(|(n, d, s)| {
            let name = match (n.is_empty(), g.inputs.first()) {
                (true, Some(first)) => first.clone(),
                _ => n.clone(),
            };
            Ok((name, array(d, s)?))
        })
        .collect::<PyResult<_>>()?;
    let ys = py
        .detach(|| -> qforge::Result<Vec<ArrayD<f32>>> {
            let gpu = qforge::gpu::Gpu::shared()?;
            let r = qforge::exec::Runner::new(gpu, Arc::new(qforge::graph::Prepared::new(g)))
                .batch(batch.max(1));
            let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
                feeds.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
            r.run(&views)
        })
        .map_err(err)?;
    Ok(ys.iter().map(|y| out(py, y)).collect())
}

/// Batches pulled from a Python iterator of (bytes, shape) with the GIL taken per batch. The
/// first error (the user's exception, unchanged) is kept, and an empty batch of no shape is
/// yielded in its place: the calibration refuses it and so installs nothing.
struct Batches<'a> {
    it: Py<PyIterator>,
    error: &'a mut Option<PyErr>,
    progress: Option<Py<PyAny>>,
    done: usize,
}

impl Iterator for Batches<'_> {
    type Item = ArrayD<f32>;

    fn next(&mut self) -> Option<ArrayD<f32>> {
        if self.error.is_some() {
            return None;
        }
        Python::attach(|py| {
            if let (Some(p), true) = (&self.progress, self.done > 0) {
                if let Err(e) = p.call1(py, (self.done,)) {
                    *self.error = Some(e);
                    return Some(ArrayD::zeros(IxDyn(&[0])));
                }
            }
            let item = self.it.bind(py).clone().next()?;
            let r = item.and_then(|i| {
                let (d, s): (Vec<u8>, Vec<usize>) = i.extract()?;
                array(&d, &s)
            });
            match r {
                Ok(a) => {
                    self.done += 1;
                    Some(a)
                }
                Err(e) => {
                    *self.error = Some(e);
                    Some(ArrayD::zeros(IxDyn(&[0])))
                }
            }
        })
    }
}

/// Data as the command line reads it: a folder of images (resized, center-cropped and
/// normalized as ImageNet models expect; their file names), an .npy batch or IDX images.
#[pyfunction]
#[pyo3(signature = (path, limit = None))]
fn load_data<'py>(
    py: Python<'py>,
    path: PathBuf,
    limit: Option<usize>,
) -> PyResult<(Option<Vec<String>>, Packed<'py>)> {
    let (names, x) = py
        .detach(|| qforge::data::load_named(&path, limit))
        .map_err(err)?;
    let names = path.is_dir().then_some(names);
    Ok((names, out(py, &x)))
}

/// Labels of an IDX label file (e.g. Fashion-MNIST's).
#[pyfunction]
#[pyo3(signature = (path, limit = None))]
fn load_labels(path: PathBuf, limit: Option<usize>) -> PyResult<Vec<usize>> {
    qforge::data::idx::read_labels(&path, limit).map_err(err)
}

/// A Python progress callback `(phase, done, total)` called from GPU-side loops (the GIL
/// taken per call); its first exception is kept and raised when the call returns.
struct Progress {
    cb: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl Progress {
    fn new(cb: Option<Py<PyAny>>) -> Self {
        Progress { cb, error: None }
    }

    fn call(&mut self, phase: &str, done: usize, total: usize) {
        let (Some(cb), None) = (&self.cb, &self.error) else {
            return;
        };
        if let Err(e) = Python::attach(|py| cb.call1(py, (phase, done, total))) {
            self.error = Some(e);
        }
    }

    /// The callback's exception, else `r`.
    fn finish<T>(self, r: PyResult<T>) -> PyResult<T> {
        match self.error {
            Some(e) => Err(e),
            None => r,
        }
    }
}

/// AIMET's QuantizationSimModel on the GPU (see `qforge.QuantSim`).
#[pyclass(unsendable)]
struct QuantSim {
    sim: Sim,
    scheme: Scheme,
    batch: usize,
}

fn eval_dict<'py>(
    py: Python<'py>,
    e: &qforge::quant::sim::Evaluation,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sqnr_db", e.sqnr_db)?;
    d.set_item("top1_agreement", e.top1_agreement)?;
    d.set_item("top5_agreement", e.top5_agreement)?;
    d.set_item("samples", e.samples)?;
    if let Some((f, q)) = e.accuracy {
        d.set_item("fp32_accuracy", f)?;
        d.set_item("accuracy", q)?;
    }
    Ok(d)
}

fn encodings<'py>(
    py: Python<'py>,
    list: &[(String, qforge::quant::Encoding)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (n, e) in list {
        let x = PyDict::new(py);
        x.set_item("bitwidth", e.bitwidth)?;
        x.set_item("axis", e.axis)?;
        x.set_item("scale", e.scale.clone())?;
        x.set_item("offset", e.offset.clone())?;
        x.set_item("kind", format!("{:?}", e.kind))?;
        d.set_item(n, x)?;
    }
    Ok(d)
}

#[pymethods]
impl QuantSim {
    #[new]
    #[pyo3(signature = (model, config = None, param_bw = 8, act_bw = 8, scheme = "minmax", per_tensor = false, placement = "targets", batch = 8))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        config: Option<PathBuf>,
        param_bw: u32,
        act_bw: u32,
        scheme: &str,
        per_tensor: bool,
        placement: &str,
        batch: usize,
    ) -> PyResult<Self> {
        let g = load_model(model)?;
        let scheme: Scheme = parse("scheme", scheme)?;
        let placement: PlacementStyle = parse("placement", placement)?;
        for (what, bw) in [("param_bw", param_bw), ("act_bw", act_bw)] {
            if !(2..=16).contains(&bw) {
                return Err(bad(format!(
                    "{what} = {bw}: the bitwidth must be in 2..=16"
                )));
            }
        }
        let cfg = match &config {
            Some(p) => QuantConfig::load(p).map_err(err)?,
            None => QuantConfig::default_per_channel(),
        };
        let cfg = if per_tensor { cfg.per_tensor() } else { cfg }.with_placement(placement);
        let param_range = match scheme {
            Scheme::TfEnhanced { gamma } => ParamRange::TfEnhanced { gamma },
            _ => ParamRange::MinMax,
        };
        let sim = py
            .detach(|| {
                Sim::new(
                    qforge::gpu::Gpu::shared()?,
                    g,
                    &cfg,
                    QuantOptions {
                        param_bw,
                        act_bw,
                        param_range,
                        arithmetic: Default::default(),
                    },
                    Default::default(),
                )
            })
            .map_err(err)?;
        Ok(QuantSim {
            sim,
            scheme,
            batch: batch.max(1),
        })
    }

    /// Calibrates on an iterator of (bytes, shape) batches; `progress(batches_done)` is
    /// called after each.
    #[pyo3(signature = (batches, progress = None))]
    fn compute_encodings(
        &mut self,
        py: Python<'_>,
        batches: &Bound<'_, PyAny>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let it = batches.try_iter()?.unbind();
        let mut error = None;
        let scheme = self.scheme;
        let sim = &mut self.sim;
        let r = py.detach(|| {
            sim.calibrate(
                scheme,
                Batches {
                    it,
                    error: &mut error,
                    progress,
                    done: 0,
                },
            )
        });
        if let Some(e) = error {
            return Err(e);
        }
        r.map_err(err)
    }

    /// Cross-layer equalization (with high-bias absorption); call before compute_encodings.
    fn equalize<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let sim = &mut self.sim;
        let r = py
            .detach(|| sim.equalize(Default::default()))
            .map_err(err)?;
        let d = PyDict::new(py);
        d.set_item("sets", r.sets.len())?;
        d.set_item("iterations", r.iterations)?;
        Ok(d)
    }

    /// Bias correction: analytical (data-free) or empirical on `x` (after compute_encodings).
    #[pyo3(signature = (kind, x = None))]
    fn bias_correction(
        &mut self,
        py: Python<'_>,
        kind: &str,
        x: Option<(Vec<u8>, Vec<usize>)>,
    ) -> PyResult<usize> {
        let sim = &mut self.sim;
        let batch = self.batch;
        match (kind, x) {
            ("analytical", _) => py
                .detach(|| qforge::quant::bias_correction::analytical(sim))
                .map(|r| r.corrected.len())
                .map_err(err),
            ("empirical", Some((d, s))) => {
                let x = array(&d, &s)?;
                py.detach(|| qforge::quant::bias_correction::empirical(sim, &x, batch))
                    .map(|r| r.corrected.len())
                    .map_err(err)
            }
            ("empirical", None) => Err(bad("empirical bias correction needs x".into())),
            (k, _) => Err(bad(format!(
                "bias correction '{k}': analytical or empirical"
            ))),
        }
    }

    /// Sequential MSE: per-channel weight ranges searched layer by layer on `x`.
    #[pyo3(signature = (x, candidates = 20))]
    fn seq_mse(
        &mut self,
        py: Python<'_>,
        x: (Vec<u8>, Vec<usize>),
        candidates: usize,
    ) -> PyResult<()> {
        let x = array(&x.0, &x.1)?;
        let sim = &mut self.sim;
        let batch = self.batch;
        py.detach(|| qforge::quant::seq_mse::apply(sim, &x, batch, candidates))
            .map(|_| ())
            .map_err(err)
    }

    /// AdaRound: learned weight rounding, layer by layer, on `x` (call before
    /// `compute_encodings`). Returns one dict per layer rounded.
    #[pyo3(signature = (x, iterations = None, batch = 32, reg = 0.01, seed = 0, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn adaround<'py>(
        &mut self,
        py: Python<'py>,
        x: (Vec<u8>, Vec<usize>),
        iterations: Option<usize>,
        batch: usize,
        reg: f32,
        seed: u64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let x = array(&x.0, &x.1)?;
        let opts = qforge::quant::adaround::AdaroundOptions {
            iterations,
            batch,
            reg,
            seed,
            ..Default::default()
        };
        let sim = &mut self.sim;
        let piece = self.batch;
        let mut p = Progress::new(progress);
        let r = py.detach(|| {
            qforge::quant::adaround::apply(sim, &x, piece, &opts, &mut |layer, layers, it, its| {
                p.call(&format!("AdaRound layer {}/{layers}", layer + 1), it, its)
            })
        });
        let r = p.finish(r.map_err(err))?;
        r.layers
            .iter()
            .map(|l| {
                let d = PyDict::new(py);
                d.set_item("weight", &l.weight)?;
                d.set_item("loss_nearest", l.loss_nearest)?;
                d.set_item("loss_adaround", l.loss_adaround)?;
                d.set_item("rounded_up", l.rounded_up)?;
                d.set_item("changed", l.changed)?;
                d.set_item("iterations", l.iterations)?;
                d.set_item("seconds", l.seconds)?;
                Ok(d)
            })
            .collect()
    }

    /// Quantization-aware training on `x` (after `compute_encodings`): distillation from the
    /// FP32 model, or cross-entropy with `labels`; ranges learned unless `learn_ranges` is
    /// false, at `range_lr` (learned as logarithms: about the fraction of a scale one step
    /// moves); `schedule` constant, step or cosine; `lsq` scales the range gradients as LSQ
    /// does; `temperature` softens distillation's outputs; `augment` (none, or a comma list of
    /// flip, crop, crops keeping at least `crop_scale` of the area) varies each image `[C, H,
    /// W]` as it enters a batch. Returns (optimizer step, loss) readings.
    #[pyo3(signature = (x, epochs = 1, batch = 32, lr = 1e-4, learn_ranges = true, labels = None, seed = 0, progress = None, schedule = "constant".to_string(), lsq = false, range_lr = 1e-2, temperature = 1.0, augment = "none".to_string(), crop_scale = 0.35))]
    #[allow(clippy::too_many_arguments)]
    fn qat(
        &mut self,
        py: Python<'_>,
        x: (Vec<u8>, Vec<usize>),
        epochs: usize,
        batch: usize,
        lr: f32,
        learn_ranges: bool,
        labels: Option<Vec<usize>>,
        seed: u64,
        progress: Option<Py<PyAny>>,
        schedule: String,
        lsq: bool,
        range_lr: f32,
        temperature: f32,
        augment: String,
        crop_scale: f64,
    ) -> PyResult<Vec<(u64, f64)>> {
        let x = array(&x.0, &x.1)?;
        let augment = qforge::data::augment::Augment::named(&augment, crop_scale).map_err(err)?;
        let opts = qforge::quant::qat::QatOptions {
            epochs,
            batch,
            lr,
            range_lr,
            learn_ranges,
            labels,
            seed,
            schedule,
            lsq,
            temperature,
            augment,
        };
        let sim = &mut self.sim;
        let mut p = Progress::new(progress);
        let r = py.detach(|| {
            qforge::quant::qat::apply(sim, &x, &opts, &mut |epoch, epochs, done, _| {
                p.call(&format!("QAT epoch {}/{epochs}", epoch + 1), done, 0)
            })
        });
        p.finish(r.map_err(err)).map(|r| r.loss)
    }

    /// Data-free quantization's techniques: CLE, then analytical bias correction (then
    /// `compute_encodings` on data, or `compute_encodings_data_free`). Returns the layers
    /// corrected.
    fn dfq(&mut self, py: Python<'_>) -> PyResult<usize> {
        let sim = &mut self.sim;
        py.detach(|| -> qforge::Result<usize> {
            sim.equalize(Default::default())?;
            Ok(qforge::quant::bias_correction::analytical(sim)?
                .corrected
                .len())
        })
        .map_err(err)
    }

    /// QuantAnalyzer on `x` (histograms of activations on `calib`): scores with weights only,
    /// activations only and both quantized, and per layer with only it and all but it.
    #[pyo3(signature = (x, calib, labels = None, bins = 64, progress = None))]
    fn analyze<'py>(
        &self,
        py: Python<'py>,
        x: (Vec<u8>, Vec<usize>),
        calib: (Vec<u8>, Vec<usize>),
        labels: Option<Vec<usize>>,
        bins: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        use qforge::quant::analysis::{analyze, AnalysisOptions, Score};
        let (x, calib) = (array(&x.0, &x.1)?, array(&calib.0, &calib.1)?);
        let (sim, piece) = (&self.sim, self.batch);
        let mut p = Progress::new(progress);
        let r = py.detach(|| {
            analyze(
                sim,
                &x,
                labels.as_deref(),
                &calib,
                AnalysisOptions { piece, bins },
                &mut |phase, done, total| p.call(phase, done, total),
            )
        });
        let a = p.finish(r.map_err(err))?;
        let score = |s: &Score| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            d.set_item("sqnr_db", s.sqnr_db)?;
            d.set_item("top1_agreement", s.top1_agreement)?;
            d.set_item("accuracy", s.accuracy)?;
            Ok(d)
        };
        let d = PyDict::new(py);
        d.set_item("samples", a.samples)?;
        d.set_item("weights_only", score(&a.weights_only)?)?;
        d.set_item("activations_only", score(&a.activations_only)?)?;
        d.set_item("quantized", score(&a.quantized)?)?;
        let layers = pyo3::types::PyList::empty(py);
        for l in &a.layers {
            let e = PyDict::new(py);
            e.set_item("name", &l.layer.name)?;
            e.set_item("op", &l.layer.op)?;
            e.set_item("only", score(&l.only)?)?;
            e.set_item("all_but", score(&l.all_but)?)?;
            layers.append(e)?;
        }
        d.set_item("layers", layers)?;
        let errors: Vec<(String, f64, f64)> = a
            .errors
            .iter()
            .map(|(n, s)| (n.clone(), s.db(), s.mse()))
            .collect();
        d.set_item("activation_errors", errors)?;
        Ok(d)
    }

    /// Activation ranges from batch-norm statistics alone (data-free).
    fn compute_encodings_data_free(&mut self, py: Python<'_>) -> PyResult<()> {
        let sim = &mut self.sim;
        py.detach(|| sim.calibrate_data_free()).map_err(err)
    }

    /// SQNR and top-1/top-5 agreement of the simulated model against FP32 on `x`.
    #[pyo3(signature = (x, labels = None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        x: (Vec<u8>, Vec<usize>),
        labels: Option<Vec<usize>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let x = array(&x.0, &x.1)?;
        let (sim, batch) = (&self.sim, self.batch);
        let e = py
            .detach(|| sim.evaluate(&x, batch, labels.as_deref()))
            .map_err(err)?;
        eval_dict(py, &e)
    }

    /// The simulated model's outputs on `x`.
    fn simulate<'py>(
        &self,
        py: Python<'py>,
        x: (Vec<u8>, Vec<usize>),
    ) -> PyResult<Vec<Packed<'py>>> {
        let x = array(&x.0, &x.1)?;
        let (sim, batch) = (&self.sim, self.batch);
        let ys = py.detach(|| sim.simulate(&x, batch)).map_err(err)?;
        Ok(ys.iter().map(|y| out(py, y)).collect())
    }

    /// The reference FP32 model's outputs on `x`.
    fn fp32<'py>(&self, py: Python<'py>, x: (Vec<u8>, Vec<usize>)) -> PyResult<Vec<Packed<'py>>> {
        let x = array(&x.0, &x.1)?;
        let (sim, batch) = (&self.sim, self.batch);
        let ys = py.detach(|| sim.fp32(&x, batch)).map_err(err)?;
        Ok(ys.iter().map(|y| out(py, y)).collect())
    }

    /// Writes `<stem>.onnx` and `<stem>.encodings` (AIMET 0.6.1, 1.0.0 or 2.0.0) into `dir`.
    #[pyo3(signature = (dir, stem = "model", encodings_version = "1.0.0"))]
    fn export(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        stem: &str,
        encodings_version: &str,
    ) -> PyResult<()> {
        let v: EncodingsVersion = parse("encodings version", encodings_version)?;
        let sim = &self.sim;
        py.detach(|| sim.export(&dir, stem, v)).map_err(err)
    }

    /// Writes `<stem>_qdq.onnx` into `dir`.
    #[pyo3(signature = (dir, stem = "model"))]
    fn export_qdq(&self, py: Python<'_>, dir: PathBuf, stem: &str) -> PyResult<()> {
        let sim = &self.sim;
        py.detach(|| sim.export_qdq(&dir, stem)).map_err(err)
    }

    /// AMP on `x`: installs the chosen mix and returns what it chose.
    #[pyo3(signature = (x, candidates, allowed_drop, score = "agreement", search = "binary", labels = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn choose_mixed_precision<'py>(
        &mut self,
        py: Python<'py>,
        x: (Vec<u8>, Vec<usize>),
        candidates: &str,
        allowed_drop: f64,
        score: &str,
        search: &str,
        labels: Option<Vec<usize>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let x = array(&x.0, &x.1)?;
        let candidates = Candidate::parse_list(candidates).map_err(err)?;
        let opts = AmpOptions {
            candidates,
            allowed_drop,
            score: match score {
                "agreement" => ScoreKind::Agreement,
                "sqnr" => ScoreKind::Sqnr,
                s => return Err(bad(format!("score '{s}': agreement or sqnr"))),
            },
            search: match search {
                "binary" => AmpSearch::Binary,
                "greedy" => AmpSearch::Greedy,
                s => return Err(bad(format!("search '{s}': binary or greedy"))),
            },
            piece: self.batch,
            curve_points: 8,
        };
        let sim = &mut self.sim;
        let mut p = Progress::new(progress);
        let r = py.detach(|| -> qforge::Result<_> {
            let r = qforge::quant::amp::search(
                sim,
                &x,
                labels.as_deref(),
                &opts,
                None,
                &mut |phase, done, total| p.call(phase, done, total),
            )?;
            sim.set_activation_encodings(&r.activations)?;
            sim.set_param_encodings(r.params.clone())?;
            Ok(r)
        });
        let r = p.finish(r.map_err(err))?;
        let d = PyDict::new(py);
        d.set_item("baseline", baseline(&r.candidates).to_string())?;
        d.set_item("relative_bit_ops", r.point.relative_bit_ops)?;
        d.set_item("sqnr_db", r.point.score.sqnr_db)?;
        d.set_item("baseline_sqnr_db", r.baseline_score.sqnr_db)?;
        d.set_item("score", r.point.score.value(r.score))?;
        d.set_item("baseline_score", r.baseline_score.value(r.score))?;
        let groups: Vec<(String, String)> = r
            .groups
            .iter()
            .zip(&r.chosen)
            .map(|(g, c)| (g.name.clone(), c.to_string()))
            .collect();
        d.set_item("groups", groups)?;
        let curve: Vec<(f64, f64)> = r
            .curve
            .iter()
            .map(|p| (p.relative_bit_ops, p.score.value(r.score)))
            .collect();
        d.set_item("curve", curve)?;
        Ok(d)
    }

    /// Activation encodings by tensor name (empty until calibrated).
    #[getter]
    fn activation_encodings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        encodings(py, self.sim.activation_encodings())
    }

    /// Parameter encodings by tensor name.
    #[getter]
    fn param_encodings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        encodings(py, self.sim.param_encodings())
    }

    /// The model input's name and its shape (None for a free dim); the first input of a
    /// model with several (the Python API feeds one array).
    #[getter]
    fn input(&self) -> PyResult<(String, Vec<Option<usize>>)> {
        let g = self.sim.reference_graph(1).map_err(err)?;
        let name = self.sim.inputs()[0].clone();
        let shape = g.shapes.get(&name).cloned().unwrap_or_default();
        // Batch 1 resolves every dim; the first is the batch.
        let mut dims: Vec<Option<usize>> = shape.into_iter().map(Some).collect();
        if let Some(d) = dims.first_mut() {
            *d = None;
        }
        Ok((name, dims))
    }
}

/// Compresses `model` to `target` of its MACs with `methods` (ssvd, wsvd, cp), scoring layers
/// on `scoring` and rebuilding pruned ones on `rebuild` ((bytes, shape) each); writes the
/// compressed model to `output` and returns its cost and scores.
#[pyfunction]
#[pyo3(signature = (model, output, target, scoring, rebuild, methods = vec!["ssvd".to_string(), "cp".to_string()], labels = None, progress = None, score = "agreement".to_string()))]
#[allow(clippy::too_many_arguments)]
fn compress<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    output: PathBuf,
    target: f64,
    scoring: (Vec<u8>, Vec<usize>),
    rebuild: (Vec<u8>, Vec<usize>),
    methods: Vec<String>,
    labels: Option<Vec<usize>>,
    progress: Option<Py<PyAny>>,
    score: String,
) -> PyResult<Bound<'py, PyDict>> {
    use qforge::compress::{pipeline, CompressOptions, Method, Scorer};
    let score = qforge::eval::ScoreKind::named(&score).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "score '{score}': expected agreement or sqnr"
        ))
    })?;
    let g = load_model(model)?;
    let (scoring, rebuild) = (
        array(&scoring.0, &scoring.1)?,
        array(&rebuild.0, &rebuild.1)?,
    );
    let methods: Vec<Method> = methods
        .iter()
        .map(|m| Method::parse(m))
        .collect::<qforge::Result<_>>()
        .map_err(err)?;
    let mut p = Progress::new(progress);
    let o = py.detach(|| -> qforge::Result<_> {
        let gpu = qforge::gpu::Gpu::shared()?;
        let scorer = Scorer::new(gpu.clone(), &g, scoring, labels)?;
        let opts = CompressOptions {
            target,
            score,
            ..Default::default()
        };
        let o = pipeline::compress(
            gpu,
            &g,
            &methods,
            &opts,
            &scorer,
            &rebuild,
            None,
            |m: Method, done, total| p.call(m.name(), done, total),
        )?;
        let m = qforge::graph::export::to_model(&o.graph);
        qforge::graph::export::save_model(&m, &output, None)?;
        Ok(o)
    });
    let o = p.finish(o.map_err(err))?;
    let d = PyDict::new(py);
    d.set_item("macs_before", o.cost_before.macs)?;
    d.set_item("macs_after", o.cost_after.macs)?;
    d.set_item("score_before", o.score_before)?;
    d.set_item("score_after", o.score_after)?;
    Ok(d)
}

/// Fine-tunes `model` on `data` (a folder, .npy or IDX; labels or distillation from itself)
/// as `qforge finetune` does, writing into `out`; returns the scores and losses.
#[pyfunction]
#[pyo3(signature = (model, data, out, labels = None, eval = None, eval_labels = None, holdout = 0.25, epochs = 1, lr = 1e-4, batch = 32, loss = None, freeze = Vec::new(), data_count = None, eval_count = None, resume = false, progress = None))]
#[allow(clippy::too_many_arguments)]
fn finetune<'py>(
    py: Python<'py>,
    model: PathBuf,
    data: PathBuf,
    out: PathBuf,
    labels: Option<PathBuf>,
    eval: Option<PathBuf>,
    eval_labels: Option<PathBuf>,
    holdout: f64,
    epochs: usize,
    lr: f32,
    batch: usize,
    loss: Option<String>,
    freeze: Vec<String>,
    data_count: Option<usize>,
    eval_count: Option<usize>,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    use qforge::jobs::finetune::{finetune as run_job, FinetuneJob, TrainSettings};
    struct P<'a>(&'a mut Progress);
    impl qforge::jobs::Progress for P<'_> {
        fn step(&mut self, what: &str, done: usize, total: usize) {
            self.0.call(what, done, total)
        }
    }
    let job = FinetuneJob {
        model,
        data,
        labels,
        teacher: None,
        eval,
        eval_labels,
        holdout,
        data_count,
        eval_count,
        train: TrainSettings {
            epochs,
            lr,
            batch,
            loss,
            freeze,
            ..Default::default()
        },
        resume,
        out,
    };
    let mut p = Progress::new(progress);
    let r = py.detach(|| run_job(&job, &mut P(&mut p)));
    let o = p.finish(r.map_err(err))?;
    let d = PyDict::new(py);
    d.set_item("metric", o.tuned.metric)?;
    d.set_item("scores", o.tuned.fitted.scores.clone())?;
    d.set_item("loss", o.tuned.fitted.loss.clone())?;
    d.set_item("epochs", o.tuned.fitted.epochs)?;
    d.set_item("images_per_s", o.tuned.fitted.images_per_s)?;
    let written: Vec<String> = o.written.iter().map(|w| w.display().to_string()).collect();
    d.set_item("written", written)?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("QforgeError", m.py().get_type::<QforgeError>())?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(adapter, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(finetune, m)?)?;
    m.add_function(wrap_pyfunction!(load_data, m)?)?;
    m.add_function(wrap_pyfunction!(load_labels, m)?)?;
    m.add_class::<QuantSim>()?;
    Ok(())
}
