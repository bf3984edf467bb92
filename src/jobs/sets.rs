//! The data of a job that fits anything, split by image into what it fits on and what its
//! figures are measured on: an explicit evaluation set, or a seeded held-out share of the data
//! (`--holdout`), or, with `--holdout 0`, the fitting data itself (figures labelled in-sample).
//! A model with one input takes images, an .npy or IDX file; a model with several takes an
//! .npz with one array per input or a folder holding `NAME.npy` for each.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use crate::data;
use crate::data::npy::Npy;
use crate::data::split::{draw, split, SEED};
use crate::error::{Error, Result};
use crate::exec::Samples;
use crate::graph::ir::Graph;
use crate::jobs::run::{from_runtime, model_input};

/// The samples in `path` for `g`'s inputs, at most `limit`, with a name per sample (the
/// image's file name for a folder of images, `#i` otherwise). Refuses NaN and Inf values.
pub fn load_samples(
    path: &Path,
    g: &Graph,
    limit: Option<usize>,
) -> Result<(Vec<String>, Samples<'static>)> {
    let per_input = data::npz::is_npz(path)
        || (path.is_dir()
            && g.inputs.len() > 1
            && g.inputs
                .iter()
                .all(|i| path.join(format!("{i}.npy")).is_file()));
    if !per_input {
        if g.inputs.len() != 1 {
            return Err(Error::invalid(
                "data",
                "path",
                path.display(),
                format!(
                    "an .npz with one array per input, or a folder holding NAME.npy for each: \
                     the model has {} inputs ({})",
                    g.inputs.len(),
                    g.inputs.join(", ")
                ),
            ));
        }
        let (names, x) = data::load_named(path, limit)?;
        return Ok((names, x.into()));
    }
    let arrays: Vec<(String, Npy)> = if path.is_dir() {
        g.inputs
            .iter()
            .map(|i| {
                Ok((
                    i.clone(),
                    data::npy::read_any(&path.join(format!("{i}.npy")))?,
                ))
            })
            .collect::<Result<_>>()?
    } else {
        data::npz::read(path)?
    };
    let bad = |reason: String| Error::invalid("data", "path", path.display(), reason);
    if let Some((n, _)) = arrays.iter().find(|(n, _)| !g.inputs.contains(n)) {
        return Err(bad(format!(
            "holds '{n}', which is not an input of the model ({})",
            g.inputs.join(", ")
        )));
    }
    let values = g.value_inputs();
    let mut parts = Vec::with_capacity(g.inputs.len());
    for name in &g.inputs {
        let Some((_, a)) = arrays.iter().find(|(n, _)| n == name) else {
            return Err(bad(format!("holds no array for the input '{name}'")));
        };
        let x = model_input(g, &values, name, a, path)?;
        let bad_values = x.iter().filter(|v| !v.is_finite()).count();
        if bad_values > 0 {
            return Err(Error::NonFinite {
                op: "loading data",
                tensor: format!("{}: {name}", path.display()),
                count: bad_values as u64,
            });
        }
        parts.push((name.clone(), g.sample_axis(name), x));
    }
    let all = Samples::named(parts)?;
    let x = all.first(limit.unwrap_or(usize::MAX)).into_owned();
    if x.is_empty() {
        return Err(Error::EmptyTensor {
            op: "loading data",
            tensor: path.display().to_string(),
        });
    }
    Ok(((0..x.len()).map(|i| format!("#{i}")).collect(), x))
}

/// The labels (IDX) of `n` images: exactly one each.
fn labels_for(p: &Path, n: usize) -> Result<Vec<usize>> {
    let l = data::idx::read_labels(p, Some(n))?;
    if l.len() != n {
        return Err(Error::invalid(
            "data",
            "--labels",
            p.display(),
            format!(
                "holds {} labels for {n} images: one label per image is needed",
                l.len()
            ),
        ));
    }
    Ok(l)
}

/// Where the evaluation images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum HeldOut {
    /// A seeded share of the data, split by image.
    Split { fraction: f64 },
    /// A separate evaluation set.
    Explicit(PathBuf),
    /// The fitting data itself (`--holdout 0`).
    InSample,
}

/// Writes samples as a job reads them back: an .npy for one unnamed tensor, otherwise an .npz
/// of one array per input in the type `g` declares.
pub fn write_samples(path: &Path, x: &Samples, g: &Graph) -> Result<()> {
    let tensors = x.tensors();
    if let [(None, t)] = tensors.as_slice() {
        return data::npy::write(path, &t.to_owned());
    }
    let arrays: Vec<(String, Npy)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let n = n.unwrap_or("input").to_string();
            let a = from_runtime(&t.to_owned(), g.elem_type(&n));
            (n, a)
        })
        .collect();
    data::npz::write(path, &arrays)
}

/// What a job needs to know to load and split its data.
#[derive(Clone, Debug)]
pub struct SetsRequest<'a> {
    /// The job's name for the data in messages ("the calibration data").
    pub what: &'a str,
    /// The model the data feeds (its inputs decide how the data is read).
    pub model: &'a Graph,
    pub data: &'a Path,
    /// An explicit evaluation set (then all of `data` fits).
    pub eval: Option<&'a Path>,
    /// Labels (IDX) of the images the evaluation is drawn from: `eval` when given, else `data`.
    pub labels: Option<&'a Path>,
    /// Labels (IDX) of `data` itself when `eval` is given (the fitting images' labels, for a
    /// job that trains on them).
    pub data_labels: Option<&'a Path>,
    /// Share of `data` held out when there is no `eval`.
    pub holdout: f64,
    /// At most this many fitting images (after the split).
    pub fit_count: Option<usize>,
    /// At most this many evaluation images (after the split).
    pub eval_count: Option<usize>,
}

/// The fitting and evaluation images, their names and labels.
#[derive(Clone, Debug)]
pub struct Sets {
    pub fit: Samples<'static>,
    pub fit_names: Vec<String>,
    /// Labels of the fitting images (when the labels belong to the split data).
    pub fit_labels: Option<Vec<usize>>,
    pub eval: Samples<'static>,
    pub eval_names: Vec<String>,
    pub eval_labels: Option<Vec<usize>>,
    pub held_out: HeldOut,
}

impl Sets {
    /// Loads and splits the data as `r` asks.
    pub fn load(r: &SetsRequest) -> Result<Sets> {
        let (names, x) = load_samples(r.data, r.model, None)?;
        let n = x.len();
        let read_labels = labels_for;
        // A count below the part's size takes a seeded random subset of it, so that a folder
        // sorted by name is not cut to its first sources.
        let cap = |v: Vec<usize>, c: Option<usize>| -> Vec<usize> {
            match c {
                Some(k) if k < v.len() => {
                    let mut pick = draw(v.len(), k, SEED + 2).0;
                    pick.sort_unstable();
                    pick.into_iter().map(|i| v[i]).collect()
                }
                _ => v,
            }
        };
        let pick =
            |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| names[i].clone()).collect() };
        if let Some(e) = r.eval {
            let (enames, ex) = load_samples(e, r.model, r.eval_count)?;
            let fit = cap((0..n).collect(), r.fit_count);
            let eval_labels = r.labels.map(|l| read_labels(l, ex.len())).transpose()?;
            let fit_labels = r
                .data_labels
                .map(|l| read_labels(l, n))
                .transpose()?
                .map(|l| fit.iter().map(|&i| l[i]).collect());
            return Ok(Sets {
                fit: x.select(&fit),
                fit_names: pick(&fit),
                fit_labels,
                eval: ex,
                eval_names: enames,
                eval_labels,
                held_out: HeldOut::Explicit(e.to_path_buf()),
            });
        }
        let labels = r.labels.map(|l| read_labels(l, n)).transpose()?;
        let s = split(r.what, n, r.holdout, SEED)?;
        let (fit, held) = if s.held_out.is_empty() {
            (s.fit.clone(), s.fit)
        } else {
            (s.fit, s.held_out)
        };
        let (fit, held) = (cap(fit, r.fit_count), cap(held, r.eval_count));
        let sub = |idx: &[usize]| labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect());
        Ok(Sets {
            fit: x.select(&fit),
            fit_names: pick(&fit),
            fit_labels: sub(&fit),
            eval: x.select(&held),
            eval_names: pick(&held),
            eval_labels: sub(&held),
            held_out: if r.holdout == 0.0 {
                HeldOut::InSample
            } else {
                HeldOut::Split {
                    fraction: r.holdout,
                }
            },
        })
    }

    /// A data-free job's evaluation set: nothing is fitted on data, so all of `eval` is held out.
    pub fn data_free(
        model: &Graph,
        eval: &Path,
        eval_count: Option<usize>,
        labels: Option<&Path>,
    ) -> Result<Sets> {
        let (eval_names, ex) = load_samples(eval, model, eval_count)?;
        let eval_labels = labels.map(|l| labels_for(l, ex.len())).transpose()?;
        Ok(Sets {
            fit: ex.select(&[]),
            fit_names: Vec::new(),
            fit_labels: None,
            eval: ex,
            eval_names,
            eval_labels,
            held_out: HeldOut::Explicit(eval.to_path_buf()),
        })
    }

    /// The fitting and evaluation samples as single arrays, for a job that takes models with
    /// one input.
    pub fn single(&self, job: &'static str) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        match (self.fit.single(), self.eval.single()) {
            (Some(f), Some(e)) => Ok((f.to_owned(), e.to_owned())),
            _ => Err(Error::invalid(
                job,
                "model",
                "several inputs",
                "a model with one input (quantize takes models with several)",
            )),
        }
    }

    /// Images fitted on.
    pub fn fit_len(&self) -> usize {
        self.fit.len()
    }

    /// Images evaluated on.
    pub fn eval_len(&self) -> usize {
        self.eval.len()
    }

    /// Whether the evaluation images are the fitting images.
    pub fn in_sample(&self) -> bool {
        self.held_out == HeldOut::InSample
    }

    /// "held-out" or "in-sample": the label every evaluation figure carries.
    pub fn label(&self) -> &'static str {
        if self.in_sample() {
            "in-sample"
        } else {
            "held-out"
        }
    }

    /// One line saying what the figures rest on (images, or samples of several inputs).
    pub fn describe(&self) -> String {
        let u = if self.fit.is_named() || self.eval.is_named() {
            "samples"
        } else {
            "images"
        };
        match &self.held_out {
            HeldOut::Split { fraction } => format!(
                "held-out: {} {u} ({fraction} of the data, split by {one}, seed {SEED:#x}); fitted on the other {}",
                self.eval_len(),
                self.fit_len(),
                one = u.trim_end_matches('s'),
            ),
            HeldOut::Explicit(p) => format!(
                "held-out: {} {u} of {}; fitted on {} others",
                self.eval_len(),
                p.display(),
                self.fit_len()
            ),
            HeldOut::InSample => format!(
                "in-sample: the {} {u} fitted on (--holdout 0); these figures do not say how the model does on new data",
                self.eval_len()
            ),
        }
    }

    /// The split as JSON: which images fitted and which were evaluated.
    pub fn to_json(&self) -> String {
        let list = |v: &[String]| serde_json::to_value(v).expect("strings");
        let j = serde_json::json!({
            "evaluation": self.label(),
            "seed": SEED,
            "holdout": match &self.held_out {
                HeldOut::Split { fraction } => serde_json::json!(fraction),
                HeldOut::Explicit(p) => serde_json::json!(p.display().to_string()),
                HeldOut::InSample => serde_json::json!(0.0),
            },
            "fit": list(&self.fit_names),
            "eval": list(&self.eval_names),
        });
        serde_json::to_string_pretty(&j).expect("json")
    }
}
