//! Shared prefixes of partial simulations: [`crate::exec::Prefix`] under one set of enabled
//! quantizers, computed once; runs that differ from it only after the cut start there.
//! QuantAnalyzer's per-layer scores, mixed precision's per-group sensitivities and AdaRound's
//! layer inputs walk their layers in graph order with one of these each.

use ndarray::ArrayD;

use crate::error::Result;
use crate::exec::{Runner, Samples};
use crate::quant::sim::{Enabled, QuantSim};

/// The state of a simulation at a cut, under one set of enabled quantizers. It holds values,
/// not the simulation: each call takes the simulation, and the nodes a call runs use its
/// weights as they are then (AdaRound rounds a layer's weight after the cut has reached it
/// and before the cut passes it).
pub struct Prefix {
    enabled: Enabled,
    cut: crate::exec::Prefix,
    piece: usize,
}

impl Prefix {
    /// The cut before the first node of `sim`'s prepared model, for samples `x` in batches of
    /// `piece`.
    pub fn new<'a>(
        sim: &QuantSim,
        x: impl Into<Samples<'a>>,
        enabled: Enabled,
        piece: usize,
    ) -> Result<Self> {
        Ok(Prefix {
            enabled,
            cut: crate::exec::Prefix::new(sim.inputs(), &x.into(), piece)?,
            piece: piece.max(1),
        })
    }

    /// Moves the cut forward to node position `cut` (never back), keeping only the values
    /// that cross it.
    pub fn advance_to(&mut self, sim: &QuantSim, cut: usize) -> Result<()> {
        if cut <= self.cut.at() {
            return Ok(());
        }
        let r = self.runner(sim, &self.enabled, cut)?;
        self.cut.advance(&*sim.prepared(1)?, cut, &r)
    }

    /// Value `name` crossing the cut (all batches joined), if it does.
    pub fn value(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        self.cut.value(name)
    }

    /// The model's first output when the nodes after the cut run with `enabled` instead
    /// (all batches joined).
    pub fn finish(&self, sim: &QuantSim, enabled: &Enabled) -> Result<ArrayD<f32>> {
        let g = sim.prepared(1)?;
        let r = self.runner(sim, enabled, g.nodes.len())?;
        self.cut.finish(&g, &r)
    }

    /// A runner of nodes from the cut to `to` with `enabled`. Quantizers on the segment's
    /// inputs that an earlier segment computed were applied there and are left out; model
    /// inputs enter raw and are quantized as they enter.
    fn runner(&self, sim: &QuantSim, enabled: &Enabled, to: usize) -> Result<Runner> {
        let g = sim.prepared(1)?;
        let seg = g.segment(self.cut.at(), to);
        let mut e = enabled.clone();
        for i in seg.inputs.iter().filter(|i| !g.inputs.contains(i)) {
            e.activations.remove(i);
        }
        Ok(sim
            .partial_runner(&e, Some((self.cut.at(), to)))?
            .batch(self.piece))
    }
}
