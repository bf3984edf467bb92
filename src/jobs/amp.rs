//! `quantize --amp`: mixed precision inside the quantize job. The configurations are scored on
//! calibration images (the fitting side of the split), never on the held-out ones the job's
//! figures come from; the phase-1 table is kept in the output folder and reused.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::eval::ScoreKind;
use crate::jobs::sets::Sets;
use crate::jobs::Progress;
use crate::quant::amp::{
    baseline, search, AmpOptions, AmpResult, AmpSearch, Candidate, Sensitivities,
};
use crate::quant::sim::QuantSim;

/// The phase-1 table's file in the output folder.
pub const TABLE: &str = "amp_scores.json";

/// What `--amp` asks for.
#[derive(Clone, Debug)]
pub struct AmpRequest {
    pub candidates: Vec<Candidate>,
    /// See [`AmpOptions::allowed_drop`].
    pub allowed_drop: f64,
    pub score: ScoreKind,
    pub search: AmpSearch,
    /// Calibration samples the configurations are scored on.
    pub samples: usize,
    /// Evaluate phase 1 again even when a matching table is saved.
    pub fresh: bool,
}

impl AmpRequest {
    /// The search's options.
    pub fn options(&self, piece: usize) -> AmpOptions {
        AmpOptions {
            candidates: self.candidates.clone(),
            allowed_drop: self.allowed_drop,
            score: self.score,
            search: self.search,
            piece,
            curve_points: 8,
        }
    }

    /// Checks the request against the job's bitwidths (the baseline candidate's).
    pub fn check(&self, bitwidths: (u32, u32)) -> Result<()> {
        self.options(1).check()?;
        if self.samples == 0 {
            return Err(Error::invalid(
                "quantize",
                "--amp-samples",
                0,
                "at least one sample to score configurations on",
            ));
        }
        let top = baseline(&self.candidates);
        if bitwidths != (top.param_bw, top.act_bw) {
            return Err(Error::invalid(
                "quantize",
                "bitwidths",
                format!("W{}A{}", bitwidths.0, bitwidths.1),
                format!("--amp builds the simulation at its widest candidate, {top}"),
            ));
        }
        Ok(())
    }
}

/// Runs the search on `sim` (calibrated at the baseline), installs the chosen encodings, and
/// returns the result and the table to save.
pub fn mixed(
    req: &AmpRequest,
    sim: &mut QuantSim,
    sets: &Sets,
    out: &Path,
    piece: usize,
    progress: &mut dyn Progress,
) -> Result<AmpResult> {
    let x = sets.fit.first(req.samples);
    let n = x.len();
    if n < crate::quant::analysis::FEW_SAMPLES {
        log::warn!(
            "AMP scores configurations on {n} calibration samples: fewer than {} rank groups by noise (--amp-samples)",
            crate::quant::analysis::FEW_SAMPLES
        );
    }
    let labels = sets
        .fit_labels
        .as_ref()
        .map(|l| l[..n.min(l.len())].to_vec());
    let saved: PathBuf = out.join(TABLE);
    let cached = if req.fresh || !saved.exists() {
        None
    } else {
        match Sensitivities::load(&saved) {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("AMP: the saved table is not used: {e}");
                None
            }
        }
    };
    let r = search(
        sim,
        &x,
        labels.as_deref(),
        &req.options(piece),
        cached,
        &mut |phase, done, total| progress.step(phase, done, total),
    )?;
    sim.set_activation_encodings(&r.activations)?;
    sim.set_param_encodings(r.params.clone())?;
    Ok(r)
}
