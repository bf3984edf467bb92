//! Activation encodings of a [`QuantSim`]: calibration on data, data-free ranges from
//! batch-norm statistics, encodings read from a file, and the same observations at other
//! bitwidths (what mixed precision tries).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::exec::Samples;
use crate::ops::quant::{upload_table, write_table};
use crate::quant::analyzers::Scheme;
use crate::quant::calibrate::{Calibrator, Observed};
use crate::quant::config::PlacementStyle;
use crate::quant::encoding::{Encoding, QuantKind};
use crate::quant::params::kind_for;
use crate::quant::placement::Quantizer;
use crate::quant::sim::{Arithmetic, Model, QuantSim};

impl QuantSim {
    /// Calibration over `batches` (each [`Samples`], or an array `[batch, ...]` for a model
    /// with one input, views or owned) with the given scheme, on the model the style
    /// calibrates ([`QuantSim::calibration_model`]). Statistics stay on the GPU; memory is
    /// flat in the count.
    pub fn calibrate<'a, B: Into<Samples<'a>>>(
        &mut self,
        scheme: Scheme,
        batches: impl IntoIterator<Item = B>,
    ) -> Result<()> {
        let g = self.model.at(1)?;
        let taps = self.placement.taps(&g);
        let mut cal = Calibrator::new(
            self.gpu.clone(),
            self.runner(self.calibration_model())?.taps(&taps),
            &self.placement,
            scheme,
        )?;
        for b in batches {
            cal.add(&b.into().feed(&self.inputs)?)?;
        }
        if cal.samples == 0 {
            return Err(Error::EmptyTensor {
                op: "calibrate",
                tensor: "calibration data".into(),
            });
        }
        let observed = cal.observed(self.opts.act_bw, &self.activation_kinds())?;
        for ((q, &(olo, ohi)), &bad) in self
            .placement
            .activations
            .iter()
            .zip(&cal.ranges)
            .zip(&cal.non_finite)
        {
            if olo > ohi {
                return Err(Error::NonFinite {
                    op: "calibrate",
                    tensor: q.tensor.clone(),
                    count: bad.max(cal.samples as u64),
                });
            }
        }
        for (name, bad) in cal
            .names()
            .iter()
            .zip(&cal.non_finite)
            .filter(|(_, &b)| b > 0)
        {
            log::warn!(
                "calibration: {bad} non-finite values in '{name}' were left out of its range"
            );
        }
        let acts = self.encodings_from(&observed, self.opts.act_bw)?;
        self.install_activations(acts, observed)?;
        // A search over densities depends on the bitwidth: keep them for other bitwidths.
        self.calibrated_on = cal.samples;
        self.calibration = matches!(scheme, Scheme::TfEnhanced { .. }).then_some(cal);
        self.scheme = scheme;
        Ok(())
    }

    /// The model whose activations calibration observes: the FP32 model in the targets'
    /// style (as onnxruntime's, QNN's and TFLite's calibrators run it), the model with its
    /// weights quantized in aimet-onnx's (as AIMET's `compute_encodings` runs it).
    pub fn calibration_model(&self) -> Model {
        match self.config.placement {
            PlacementStyle::Targets => Model::Fp32,
            PlacementStyle::AimetOnnx => Model::Weights,
        }
    }

    /// Sets the activation encodings directly (e.g. read from an encodings file with
    /// [`crate::quant::export::read_activations_1_0_0`]): one per activation quantizer, by name.
    /// Their bitwidths may differ from each other (mixed precision) in the float simulation;
    /// the integer one takes 8-bit grids.
    pub fn set_activation_encodings(&mut self, encodings: &[(String, Encoding)]) -> Result<()> {
        let by_name: HashMap<&str, &Encoding> =
            encodings.iter().map(|(n, e)| (n.as_str(), e)).collect();
        let mut acts = Vec::with_capacity(self.placement.activations.len());
        let mut missing = Vec::new();
        for q in &self.placement.activations {
            let Some(e) = by_name.get(q.tensor.as_str()) else {
                missing.push(q.tensor.clone());
                continue;
            };
            if self.opts.arithmetic == Arithmetic::Integer && e.bitwidth != self.opts.act_bw {
                return Err(Error::invalid(
                    "set_activation_encodings",
                    "bitwidth",
                    format!("{} ({})", e.bitwidth, q.tensor),
                    format!(
                        "the integer simulation's activations are {}-bit",
                        self.opts.act_bw
                    ),
                ));
            }
            let grid = Observed::Grid {
                scale: e.scale[0],
                offset: e.offset[0],
            };
            acts.push((q.tensor.clone(), self.encoding_of(q, grid, e.bitwidth)?));
        }
        if !missing.is_empty() {
            return Err(Error::invalid(
                "set_activation_encodings",
                "encodings",
                missing.join(", "),
                "no encoding for these activation quantizers",
            ));
        }
        let observed = acts
            .iter()
            .map(|(_, e)| {
                let (lo, hi) = e.grid_range(0);
                Observed::Range(lo, hi)
            })
            .collect();
        self.install_activations(acts, observed)?;
        self.calibration = None;
        Ok(())
    }

    /// Activation encodings from batch-norm statistics alone (data-free: mean ± 3 std per
    /// channel where a batch norm measured it, 6 past a linear layer without one; clipped to
    /// the activation's bounds; the model input taken as N(0, 1)).
    pub fn calibrate_data_free(&mut self) -> Result<()> {
        self.calibrated_on = 0;
        let stats = crate::quant::dfq::channel_stats(&*self.model.at(1)?, &self.bn);
        let mut ranges = Vec::with_capacity(self.placement.activations.len());
        let mut unknown = Vec::new();
        for q in &self.placement.activations {
            match stats.get(&q.tensor) {
                Some(s) => ranges.push(s.range()),
                None => unknown.push(q.tensor.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::invalid(
                "calibrate_data_free",
                "activations",
                unknown.join(", "),
                "their statistics do not follow from batch norms: calibrate on data",
            ));
        }
        let observed: Vec<Observed> = ranges
            .into_iter()
            .map(|(lo, hi)| Observed::Range(lo, hi))
            .collect();
        let acts = self.encodings_from(&observed, self.opts.act_bw)?;
        self.install_activations(acts, observed)?;
        self.calibration = None;
        Ok(())
    }

    /// Every activation quantizer's encoding at `bitwidth` from what was observed: the
    /// calibrated ranges (min-max, percentile), the density search redone at that bitwidth
    /// (tf-enhanced), or the range of each grid set from a file. Nothing is installed.
    pub fn activation_encodings_at(&self, bitwidth: u32) -> Result<Vec<(String, Encoding)>> {
        if self.activations.is_empty() {
            return Err(Error::invalid(
                "activation_encodings_at",
                "encodings",
                "none",
                "calibrate first",
            ));
        }
        match &self.calibration {
            Some(cal) => {
                let observed = cal.observed(bitwidth, &self.activation_kinds())?;
                self.encodings_from(&observed, bitwidth)
            }
            None => self.encodings_from(&self.observed, bitwidth),
        }
    }

    fn activation_kinds(&self) -> Vec<QuantKind> {
        self.placement
            .activations
            .iter()
            .map(|q| self.kind_of(q))
            .collect()
    }

    fn kind_of(&self, q: &Quantizer) -> QuantKind {
        kind_for(
            q.symmetric,
            self.config.strict_symmetric,
            self.config.unsigned_symmetric,
        )
    }

    /// One quantizer's encoding from what was observed for it. A config's encoding
    /// constraints replace the observed bounds they name.
    fn encoding_of(&self, q: &Quantizer, o: Observed, bitwidth: u32) -> Result<Encoding> {
        let kind = self.kind_of(q);
        let from_range = |(lo, hi): (f32, f32)| {
            let (lo, hi) = match q.constraints {
                Some((cmin, cmax)) => (cmin.unwrap_or(lo), cmax.unwrap_or(hi)),
                None => (lo, hi),
            };
            Encoding::from_ranges(&[lo], &[hi], bitwidth, kind, None)
        };
        match o {
            Observed::Range(lo, hi) => from_range((lo, hi)),
            Observed::Grid { scale, offset } => {
                let e = Encoding {
                    bitwidth,
                    kind,
                    axis: None,
                    scale: vec![scale],
                    offset: vec![offset],
                };
                e.validate("calibrate")?;
                if q.constraints.is_some() {
                    from_range(e.grid_range(0))
                } else {
                    Ok(e)
                }
            }
        }
    }

    /// Encodings of every activation quantizer, in placement order, from `observed`.
    fn encodings_from(
        &self,
        observed: &[Observed],
        bitwidth: u32,
    ) -> Result<Vec<(String, Encoding)>> {
        self.placement
            .activations
            .iter()
            .zip(observed)
            .map(|(q, &o)| Ok((q.tensor.clone(), self.encoding_of(q, o, bitwidth)?)))
            .collect()
    }

    /// Makes `acts` the simulation's activation encodings (placement order) and `observed`
    /// what they came from.
    fn install_activations(
        &mut self,
        acts: Vec<(String, Encoding)>,
        observed: Vec<Observed>,
    ) -> Result<()> {
        for (name, e) in &acts {
            let grid = e.grid()?;
            match self.tables.get(name) {
                // Plans read the table, but the grid's step count is part of the kernel call.
                Some((t, steps)) if *steps == e.steps() => write_table(&self.gpu, t, &grid)?,
                _ => {
                    self.tables
                        .insert(name.clone(), (upload_table(&self.gpu, &grid)?, e.steps()));
                }
            }
        }
        self.activations = acts;
        self.observed = observed;
        // Simulated plans hold the tables (rewritten above) but the integer simulation's
        // fused nodes depend on the encodings.
        let mut d = self.derived();
        d.integer = None;
        d.runners.retain(|(m, _), _| *m != Model::Simulated);
        Ok(())
    }
}
