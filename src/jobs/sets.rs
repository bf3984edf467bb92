//! The data of a job that fits anything, split by image into what it fits on and what its
//! figures are measured on: an explicit evaluation set, or a seeded held-out share of the data
//! (`--holdout`), or, with `--holdout 0`, the fitting data itself (figures labelled in-sample).

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis};

use crate::data;
use crate::data::split::{draw, split, take, SEED};
use crate::error::{Error, Result};

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

/// What a job needs to know to load and split its data.
#[derive(Clone, Debug)]
pub struct SetsRequest<'a> {
    /// The job's name for the data in messages ("the calibration data").
    pub what: &'a str,
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
    pub fit: ArrayD<f32>,
    pub fit_names: Vec<String>,
    /// Labels of the fitting images (when the labels belong to the split data).
    pub fit_labels: Option<Vec<usize>>,
    pub eval: ArrayD<f32>,
    pub eval_names: Vec<String>,
    pub eval_labels: Option<Vec<usize>>,
    pub held_out: HeldOut,
}

impl Sets {
    /// Loads and splits the data as `r` asks.
    pub fn load(r: &SetsRequest) -> Result<Sets> {
        let (names, x) = data::load_named(r.data, None)?;
        let n = x.len_of(Axis(0));
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
            let (enames, ex) = data::load_named(e, r.eval_count)?;
            let fit = cap((0..n).collect(), r.fit_count);
            let eval_labels = r
                .labels
                .map(|l| read_labels(l, ex.len_of(Axis(0))))
                .transpose()?;
            let fit_labels = r
                .data_labels
                .map(|l| read_labels(l, n))
                .transpose()?
                .map(|l| fit.iter().map(|&i| l[i]).collect());
            return Ok(Sets {
                fit: take(&x, &fit),
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
            fit: take(&x, &fit),
            fit_names: pick(&fit),
            fit_labels: sub(&fit),
            eval: take(&x, &held),
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
        eval: &Path,
        eval_count: Option<usize>,
        labels: Option<&Path>,
    ) -> Result<Sets> {
        let (eval_names, ex) = data::load_named(eval, eval_count)?;
        let mut shape = ex.shape().to_vec();
        shape[0] = 0;
        let eval_labels = labels
            .map(|l| labels_for(l, ex.len_of(Axis(0))))
            .transpose()?;
        Ok(Sets {
            fit: ArrayD::zeros(shape),
            fit_names: Vec::new(),
            fit_labels: None,
            eval: ex,
            eval_names,
            eval_labels,
            held_out: HeldOut::Explicit(eval.to_path_buf()),
        })
    }

    /// Images fitted on.
    pub fn fit_len(&self) -> usize {
        self.fit.len_of(Axis(0))
    }

    /// Images evaluated on.
    pub fn eval_len(&self) -> usize {
        self.eval.len_of(Axis(0))
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

    /// One line saying what the figures rest on.
    pub fn describe(&self) -> String {
        match &self.held_out {
            HeldOut::Split { fraction } => format!(
                "held-out: {} images ({fraction} of the data, split by image, seed {SEED:#x}); fitted on the other {}",
                self.eval_len(),
                self.fit_len()
            ),
            HeldOut::Explicit(p) => format!(
                "held-out: {} images of {}; fitted on {} others",
                self.eval_len(),
                p.display(),
                self.fit_len()
            ),
            HeldOut::InSample => format!(
                "in-sample: the {} images fitted on (--holdout 0); these figures do not say how the model does on new data",
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
