//! Shared prefixes of partial simulations: the values crossing a cut of the prepared model,
//! batch by batch, computed once with one set of enabled quantizers; runs that differ from it
//! only after the cut start there. QuantAnalyzer's per-layer scores and mixed precision's
//! per-group sensitivities walk their layers in graph order with one of these each.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::quant::sim::{Enabled, QuantSim};

/// Values crossing a cut, by name, for each batch.
type State = Vec<HashMap<String, ArrayD<f32>>>;

/// The state of a model at a cut, under one set of enabled quantizers. It holds values, not
/// the simulation: each call takes the simulation, and the nodes a call runs use its weights
/// as they are then (AdaRound rounds a layer's weight after the cut has reached it and before
/// the cut passes it).
pub struct Prefix {
    enabled: Enabled,
    state: State,
    at: usize,
    piece: usize,
}

impl Prefix {
    /// The cut before the first node of `sim`'s prepared model, for `x` in batches of `piece`.
    pub fn new(sim: &QuantSim, x: &ArrayD<f32>, enabled: Enabled, piece: usize) -> Self {
        let piece = piece.max(1);
        let state = x
            .axis_chunks_iter(Axis(0), piece)
            .map(|c| HashMap::from([(sim.input_name().to_string(), c.to_owned())]))
            .collect();
        Prefix {
            enabled,
            state,
            at: 0,
            piece,
        }
    }

    /// Moves the cut forward to node position `cut` (never back), keeping only the values
    /// that cross it.
    pub fn advance_to(&mut self, sim: &QuantSim, cut: usize) -> Result<()> {
        if cut <= self.at {
            return Ok(());
        }
        advance(
            sim,
            &mut self.state,
            &self.enabled,
            (self.at, cut),
            self.piece,
        )?;
        let live = sim.prepared(1)?.crossing(cut);
        for values in self.state.iter_mut() {
            values.retain(|n, _| live.contains(n));
        }
        self.at = cut;
        Ok(())
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
        Ok(Some(crate::exec::join_batches(pieces)?.remove(0)))
    }

    /// The model's first output when the nodes after the cut run with `enabled` instead
    /// (all batches joined).
    pub fn finish(&self, sim: &QuantSim, enabled: &Enabled) -> Result<ArrayD<f32>> {
        let g = sim.prepared(1)?;
        let output = g.outputs[0].clone();
        let mut s = self.state.clone();
        advance(sim, &mut s, enabled, (self.at, g.nodes.len()), self.piece)?;
        let pieces: Vec<Vec<ArrayD<f32>>> = s
            .into_iter()
            .map(|mut v| {
                v.remove(&output).map(|y| vec![y]).ok_or_else(|| {
                    Error::invalid("partial run", "output", &output, "computed by the model")
                })
            })
            .collect::<Result<_>>()?;
        Ok(crate::exec::join_batches(pieces)?.remove(0))
    }
}

/// Runs nodes `from..to` with `enabled` on every batch of `state`: the segment's outputs are
/// added to each batch's values. Quantizers on segment inputs that an earlier segment computed
/// were applied there and are left out; model inputs enter raw and are quantized as they enter.
fn advance(
    sim: &QuantSim,
    state: &mut State,
    enabled: &Enabled,
    (from, to): (usize, usize),
    piece: usize,
) -> Result<()> {
    let g = sim.prepared(1)?;
    let seg = g.segment(from, to);
    if seg.nodes.is_empty() || seg.outputs.is_empty() {
        return Ok(());
    }
    let mut e = enabled.clone();
    for i in seg.inputs.iter().filter(|i| !g.inputs.contains(i)) {
        e.activations.remove(i);
    }
    let r = sim.partial_runner(&e, Some((from, to)))?.batch(piece);
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
        let outs = r.run(&feeds)?;
        for (name, y) in seg.outputs.iter().zip(outs) {
            values.insert(name.clone(), y);
        }
    }
    Ok(())
}
