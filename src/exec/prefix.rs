//! Shared prefixes: the values of a model crossing a cut before one of its nodes, batch by
//! batch, so that runs which differ from the model only after the cut start there instead of
//! at the input. The caller supplies a runner of each segment (the plain model, or a
//! simulation of it): this type only keeps values and feeds them.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayViewD};

use crate::error::{Error, Result};
use crate::exec::{join_batches, Runner, Samples};
use crate::graph::ir::Graph;

/// Values crossing a cut, by name, for each batch.
type State = Vec<HashMap<String, ArrayD<f32>>>;

/// The values crossing the cut before node `at` of a resolved graph, per batch.
#[derive(Clone)]
pub struct Prefix {
    state: State,
    at: usize,
}

impl Prefix {
    /// The cut before the first node, for samples `x` of the model's `inputs` in batches of
    /// `piece`.
    pub fn new(inputs: &[String], x: &Samples, piece: usize) -> Result<Prefix> {
        let state = x
            .chunks(piece)
            .map(|c| {
                Ok(c.feed(inputs)?
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v.to_owned()))
                    .collect())
            })
            .collect::<Result<_>>()?;
        Ok(Prefix { state, at: 0 })
    }

    /// The node position of the cut.
    pub fn at(&self) -> usize {
        self.at
    }

    /// Moves the cut forward to node position `to` of `g` (the resolved graph whose segments
    /// `runner` runs: nodes `self.at()..to`), keeping only the values crossing it. A cut at
    /// or before the current one is left where it is.
    pub fn advance(&mut self, g: &Graph, to: usize, runner: &Runner) -> Result<()> {
        if to <= self.at {
            return Ok(());
        }
        run_segment(&mut self.state, g, (self.at, to), runner)?;
        let live = g.crossing(to);
        for values in self.state.iter_mut() {
            values.retain(|n, _| live.contains(n));
        }
        self.at = to;
        Ok(())
    }

    /// `g`'s first output with the nodes from the cut to the end run by `runner` (all batches
    /// joined). `g` may differ from the model the cut was made in, but only after the cut.
    pub fn finish(&self, g: &Graph, runner: &Runner) -> Result<ArrayD<f32>> {
        let output = g.outputs.first().ok_or_else(|| Error::Graph {
            model: g.name.clone(),
            message: "no output".into(),
        })?;
        let mut s = self.state.clone();
        run_segment(&mut s, g, (self.at, g.nodes.len()), runner)?;
        let pieces: Vec<Vec<ArrayD<f32>>> = s
            .into_iter()
            .map(|mut v| {
                v.remove(output).map(|y| vec![y]).ok_or_else(|| {
                    Error::invalid("partial run", "output", output, "computed by the model")
                })
            })
            .collect::<Result<_>>()?;
        Ok(join_batches(pieces)?.remove(0))
    }

    /// Value `name` crossing the cut (all batches joined), if it does.
    pub fn value(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        let mut pieces = Vec::with_capacity(self.state.len());
        for values in &self.state {
            match values.get(name) {
                Some(v) => pieces.push(vec![v.clone()]),
                None => return Ok(None),
            }
        }
        Ok(Some(join_batches(pieces)?.remove(0)))
    }
}

/// Runs nodes `from..to` of `g` with `runner` on every batch of `state`: the segment's
/// outputs are added to each batch's values.
fn run_segment(
    state: &mut State,
    g: &Graph,
    (from, to): (usize, usize),
    runner: &Runner,
) -> Result<()> {
    let seg = g.segment(from, to);
    if seg.nodes.is_empty() || seg.outputs.is_empty() {
        return Ok(());
    }
    for values in state.iter_mut() {
        let feeds: Vec<(&str, ArrayViewD<'_, f32>)> = seg
            .inputs
            .iter()
            .map(|i| {
                values
                    .get(i)
                    .map(|v| (i.as_str(), v.view()))
                    .ok_or_else(|| {
                        Error::invalid("partial run", "cut", i, "a value computed before it")
                    })
            })
            .collect::<Result<_>>()?;
        // Values inside the model may hold infinities it means (attention masks): not
        // refused as a model input's would be.
        let outs = runner.run_names(&feeds, &seg.outputs)?;
        for (name, y) in seg.outputs.iter().zip(outs) {
            values.insert(name.clone(), y);
        }
    }
    Ok(())
}
