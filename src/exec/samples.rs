//! A model's inputs for a number of samples: one tensor per input, each holding the samples
//! along its sample axis (the batch; see [`Graph::sample_axis`](crate::graph::ir::Graph)).
//! What calibration, evaluation and the techniques are fed: a single array for a model with
//! one input, tensors by name for a model with several.

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, Axis, CowArray, IxDyn, Slice};

use crate::error::{Error, Result};

/// One input's tensor.
#[derive(Clone, Debug)]
struct Part<'a> {
    /// The input it feeds; `None` for the one tensor of a one-input model.
    name: Option<String>,
    /// The axis holding the samples; `None` for a tensor every sample shares.
    axis: Option<usize>,
    x: CowArray<'a, f32, IxDyn>,
}

/// Samples of a model's inputs, owned or borrowed.
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    parts: Vec<Part<'a>>,
}

impl Samples<'static> {
    /// Tensors by input name, each with the axis holding its samples (`None`: shared by every
    /// sample, given whole to each batch). The sample axes must hold the same count.
    pub fn named(parts: Vec<(String, Option<usize>, ArrayD<f32>)>) -> Result<Samples<'static>> {
        let s = Samples {
            parts: parts
                .into_iter()
                .map(|(name, axis, x)| Part {
                    name: Some(name),
                    axis,
                    x: x.into(),
                })
                .collect(),
        };
        s.check()?;
        Ok(s)
    }
}

impl<'a> Samples<'a> {
    fn check(&self) -> Result<()> {
        let bad = |name: &str, reason: String| {
            Err(Error::invalid("samples", "input", name.to_string(), reason))
        };
        if self.parts.is_empty() {
            return bad("none", "at least one input tensor".into());
        }
        let mut count: Option<(usize, &str)> = None;
        for (i, p) in self.parts.iter().enumerate() {
            let name = p.name.as_deref().unwrap_or("input");
            if self.parts[..i].iter().any(|q| q.name == p.name) {
                return bad(name, "given once".into());
            }
            let Some(axis) = p.axis else { continue };
            if axis >= p.x.ndim() {
                return bad(
                    name,
                    format!(
                        "its samples along axis {axis}: the tensor has shape {:?}",
                        p.x.shape()
                    ),
                );
            }
            let n = p.x.len_of(Axis(axis));
            match count {
                Some((m, first)) if m != n => {
                    return bad(
                        name,
                        format!(
                            "{m} samples as in '{first}' (axis {axis} of shape {:?} holds {n})",
                            p.x.shape()
                        ),
                    )
                }
                None => count = Some((n, name)),
                _ => {}
            }
        }
        if count.is_none() {
            return bad("all", "one input with samples along an axis".into());
        }
        Ok(())
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.parts
            .iter()
            .find_map(|p| p.axis.map(|a| p.x.len_of(Axis(a))))
            .unwrap_or(0)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the samples are named tensors (a model with several inputs) rather than one.
    pub fn is_named(&self) -> bool {
        self.parts.iter().any(|p| p.name.is_some())
    }

    /// The one tensor, when these samples feed a single input (named or not).
    pub fn single(&self) -> Option<ArrayViewD<'_, f32>> {
        match self.parts.as_slice() {
            [p] => Some(p.x.view()),
            _ => None,
        }
    }

    /// Each tensor with its input name (`None` for an unnamed single tensor).
    pub fn tensors(&self) -> Vec<(Option<&str>, ArrayViewD<'_, f32>)> {
        self.parts
            .iter()
            .map(|p| (p.name.as_deref(), p.x.view()))
            .collect()
    }

    /// Borrows these samples.
    pub fn view(&self) -> Samples<'_> {
        self.map(|p| p.x.view().into())
    }

    /// Samples `range` (clamped to the count).
    pub fn slice(&self, range: Range<usize>) -> Samples<'_> {
        let n = self.len();
        let (start, end) = (range.start.min(n), range.end.min(n));
        self.map(|p| match p.axis {
            Some(a) => p.x.slice_axis(Axis(a), Slice::from(start..end)).into(),
            None => p.x.view().into(),
        })
    }

    /// The first `n` samples (all of them when there are fewer).
    pub fn first(&self, n: usize) -> Samples<'_> {
        self.slice(0..n)
    }

    /// Consecutive pieces of at most `piece` samples.
    pub fn chunks(&self, piece: usize) -> impl Iterator<Item = Samples<'_>> + use<'_, 'a> {
        let piece = piece.max(1);
        (0..self.len())
            .step_by(piece)
            .map(move |s| self.slice(s..s + piece))
    }

    /// Samples `rows`, in that order, copied.
    pub fn select(&self, rows: &[usize]) -> Samples<'static> {
        self.map(|p| {
            match p.axis {
                Some(a) => p.x.select(Axis(a), rows),
                None => p.x.to_owned(),
            }
            .into()
        })
    }

    /// Owned samples.
    pub fn into_owned(self) -> Samples<'static> {
        Samples {
            parts: self
                .parts
                .into_iter()
                .map(|p| Part {
                    name: p.name,
                    axis: p.axis,
                    x: p.x.into_owned().into(),
                })
                .collect(),
        }
    }

    /// The tensors as a run takes them, for a model whose inputs are `inputs` (in that order):
    /// an unnamed tensor feeds a model with one input; named tensors must name every input
    /// and nothing else.
    pub fn feed<'s>(&'s self, inputs: &'s [String]) -> Result<Vec<(&'s str, ArrayViewD<'s, f32>)>> {
        let list = || inputs.join(", ");
        if let [Part { name: None, x, .. }] = self.parts.as_slice() {
            return match inputs {
                [one] => Ok(vec![(one.as_str(), x.view())]),
                _ => Err(Error::invalid(
                    "samples",
                    "inputs",
                    "one unnamed tensor",
                    format!(
                        "one tensor per input, by name: the model has {} inputs ({})",
                        inputs.len(),
                        list()
                    ),
                )),
            };
        }
        if let Some(p) = self
            .parts
            .iter()
            .find(|p| !p.name.as_ref().is_some_and(|n| inputs.contains(n)))
        {
            return Err(Error::invalid(
                "samples",
                "input",
                p.name.as_deref().unwrap_or("unnamed"),
                format!("an input of the model ({})", list()),
            ));
        }
        inputs
            .iter()
            .map(|i| {
                self.parts
                    .iter()
                    .find(|p| p.name.as_ref() == Some(i))
                    .map(|p| (i.as_str(), p.x.view()))
                    .ok_or_else(|| {
                        Error::invalid(
                            "samples",
                            "input",
                            i,
                            format!("a tensor for every input of the model ({})", list()),
                        )
                    })
            })
            .collect()
    }

    /// The same inputs with each tensor made by `f`.
    fn map<'s, 'b>(&'s self, f: impl Fn(&'s Part<'a>) -> CowArray<'b, f32, IxDyn>) -> Samples<'b> {
        Samples {
            parts: self
                .parts
                .iter()
                .map(|p| Part {
                    name: p.name.clone(),
                    axis: p.axis,
                    x: f(p),
                })
                .collect(),
        }
    }
}

impl From<ArrayD<f32>> for Samples<'static> {
    fn from(x: ArrayD<f32>) -> Self {
        Samples {
            parts: vec![Part {
                name: None,
                axis: Some(0),
                x: x.into(),
            }],
        }
    }
}

impl<'a> From<ArrayViewD<'a, f32>> for Samples<'a> {
    fn from(x: ArrayViewD<'a, f32>) -> Self {
        Samples {
            parts: vec![Part {
                name: None,
                axis: Some(0),
                x: x.into(),
            }],
        }
    }
}

impl<'a> From<&'a ArrayD<f32>> for Samples<'a> {
    fn from(x: &'a ArrayD<f32>) -> Self {
        x.view().into()
    }
}

impl<'a, 'b: 'a> From<&'a Samples<'b>> for Samples<'a> {
    fn from(s: &'a Samples<'b>) -> Self {
        s.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named() -> Samples<'static> {
        Samples::named(vec![
            (
                "x".into(),
                Some(0),
                ArrayD::from_shape_fn(IxDyn(&[5, 2]), |i| (i[0] * 10 + i[1]) as f32),
            ),
            (
                "state".into(),
                Some(1),
                ArrayD::from_shape_fn(IxDyn(&[2, 5, 3]), |i| (i[1] * 100 + i[0]) as f32),
            ),
            ("scale".into(), None, ArrayD::from_elem(IxDyn(&[1]), 7.0)),
        ])
        .unwrap()
    }

    #[test]
    fn samples_slice_select_and_feed_along_each_inputs_axis() {
        let s = named();
        assert_eq!(s.len(), 5);
        let inputs = ["scale".to_string(), "x".to_string(), "state".to_string()];
        let part = s.slice(1..3);
        let f = part.feed(&inputs).unwrap();
        assert_eq!(f[0].0, "scale");
        assert_eq!(f[0].1.shape(), [1]);
        assert_eq!(f[1].1.shape(), [2, 2]);
        assert_eq!(f[1].1[[0, 0]], 10.0);
        assert_eq!(f[2].1.shape(), [2, 2, 3]);
        assert_eq!(f[2].1[[1, 1, 0]], 201.0);
        let chunks: Vec<usize> = s.chunks(2).map(|c| c.len()).collect();
        assert_eq!(chunks, [2, 2, 1]);
        let picked = s.select(&[4, 0]);
        let f = picked.feed(&inputs).unwrap();
        assert_eq!(f[1].1[[0, 1]], 41.0);
        assert_eq!(f[2].1[[0, 1, 0]], 0.0);
        assert_eq!(s.first(9).len(), 5);
    }

    #[test]
    fn samples_that_do_not_fit_the_model_are_refused_by_name() {
        let s = named();
        let e = s
            .feed(&["x".to_string(), "state".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scale"), "{e}");
        let e = s
            .feed(&[
                "x".to_string(),
                "state".to_string(),
                "scale".to_string(),
                "h".to_string(),
            ])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'h'") || e.contains("h"), "{e}");
        let one = Samples::from(ArrayD::<f32>::zeros(IxDyn(&[3, 2])));
        let e = one
            .feed(&["a".to_string(), "b".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 inputs (a, b)"), "{e}");
        let e = Samples::named(vec![
            ("a".into(), Some(0), ArrayD::zeros(IxDyn(&[3, 2]))),
            ("b".into(), Some(1), ArrayD::zeros(IxDyn(&[3, 2]))),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("3 samples as in 'a'"), "{e}");
        let e = Samples::named(vec![("a".into(), Some(2), ArrayD::zeros(IxDyn(&[3, 2])))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis 2"), "{e}");
    }
}
