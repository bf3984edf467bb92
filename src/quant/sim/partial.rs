//! Partial simulations: the prepared model with only some of its quantizers enabled, whole or
//! as a segment of its nodes. QuantAnalyzer's sensitivities (weights only, activations only,
//! one layer only, all but one layer) are runs of partial simulations; a segment lets a run
//! start from values a shared prefix computed once. Mixed precision's runs enable every
//! quantizer and give some of them encodings at other bitwidths.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::exec::{Params, Runner};
use crate::ops::quant::upload_table;
use crate::quant::encoding::Encoding;
use crate::quant::params::quantize_weights;
use crate::quant::sim::{Arithmetic, Model, QuantSim, SimLowering};

/// The quantizers a partial simulation enables, by tensor name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Enabled {
    /// Activation quantizers (values fake-quantized as they are computed or enter).
    pub activations: BTreeSet<String>,
    /// Parameter quantizers (weights and biases replaced by their quantized values).
    pub params: BTreeSet<String>,
    /// Encodings that replace the simulation's own for some enabled quantizers (another
    /// bitwidth, as mixed precision tries them); entries for quantizers not enabled are unused.
    pub encodings: BTreeMap<String, Encoding>,
}

impl Enabled {
    /// Every quantizer of `sim` (activations once it is calibrated).
    pub fn all(sim: &QuantSim) -> Enabled {
        Enabled {
            activations: sim.activations.iter().map(|(n, _)| n.clone()).collect(),
            params: sim.params.iter().map(|(n, _)| n.clone()).collect(),
            ..Default::default()
        }
    }

    /// Only the parameter quantizers of `sim` (AIMET's weight-quantized model).
    pub fn weights_only(sim: &QuantSim) -> Enabled {
        Enabled {
            params: Enabled::all(sim).params,
            ..Default::default()
        }
    }

    /// Only the activation quantizers of `sim`.
    pub fn activations_only(sim: &QuantSim) -> Enabled {
        Enabled {
            activations: Enabled::all(sim).activations,
            ..Default::default()
        }
    }

    /// The quantizers of both.
    pub fn union(&self, other: &Enabled) -> Enabled {
        Enabled {
            activations: self
                .activations
                .union(&other.activations)
                .cloned()
                .collect(),
            params: self.params.union(&other.params).cloned().collect(),
            encodings: self
                .encodings
                .iter()
                .chain(&other.encodings)
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect(),
        }
    }

    /// These quantizers with `encodings` replacing the simulation's own (later entries of the
    /// same name win).
    pub fn with_encodings<'a>(
        mut self,
        encodings: impl IntoIterator<Item = &'a (String, Encoding)>,
    ) -> Enabled {
        self.encodings
            .extend(encodings.into_iter().map(|(n, e)| (n.clone(), e.clone())));
        self
    }

    /// These quantizers without `other`'s.
    pub fn minus(&self, other: &Enabled) -> Enabled {
        Enabled {
            activations: self
                .activations
                .difference(&other.activations)
                .cloned()
                .collect(),
            params: self.params.difference(&other.params).cloned().collect(),
            encodings: self.encodings.clone(),
        }
    }

    /// Whether no quantizer is enabled.
    pub fn is_empty(&self) -> bool {
        self.activations.is_empty() && self.params.is_empty()
    }
}

impl QuantSim {
    /// A runner of the prepared model with only `enabled`'s quantizers, of nodes `from..to`
    /// of it where `segment` is given ([`crate::graph::Prepared::segment`]: positions in
    /// [`QuantSim::prepared`], inputs and outputs the values crossing the cuts; an enabled
    /// quantizer on a segment input applies as the value enters). Float arithmetic only.
    /// With every quantizer enabled it computes what [`Model::Simulated`] computes, with
    /// only the parameters [`Model::Weights`], with none [`Model::Fp32`].
    pub fn partial_runner(
        &self,
        enabled: &Enabled,
        segment: Option<(usize, usize)>,
    ) -> Result<Runner> {
        if self.opts.arithmetic == Arithmetic::Integer {
            return Err(Error::invalid(
                "partial simulation",
                "arithmetic",
                "integer",
                "quantizers are enabled one by one in the float simulation (AIMET's)",
            ));
        }
        let unknown: Vec<&String> = enabled
            .activations
            .iter()
            .filter(|a| !self.tables.contains_key(*a))
            .chain(
                enabled
                    .params
                    .iter()
                    .filter(|p| !self.weights.contains_key(*p)),
            )
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid(
                "partial simulation",
                "quantizers",
                format!("{unknown:?}"),
                "quantizers of this simulation (activations once calibrated)",
            ));
        }
        let g = self.model.at(1)?;
        let replaced: Vec<(String, Encoding)> = enabled
            .params
            .iter()
            .filter_map(|n| enabled.encodings.get(n).map(|e| (n.clone(), e.clone())))
            .collect();
        let replaced = quantize_weights(&g, &replaced)?;
        let all = Enabled::all(self);
        let params: Arc<Params> = if enabled.params.is_empty() {
            self.runner(Model::Fp32)?.params().clone()
        } else if enabled.params == all.params && replaced.is_empty() {
            self.runner(Model::Weights)?.params().clone()
        } else {
            let p = Arc::new(Params::new(self.gpu.clone()));
            for name in &enabled.params {
                let w = replaced.get(name).unwrap_or(&self.weights[name]);
                p.set(name, &w.to_f32().view())?;
            }
            p
        };
        let model = match segment {
            Some((from, to)) => self.model.segment(from, to),
            None => self.model.clone(),
        };
        let r = Runner::new(self.gpu.clone(), model).with_params(params);
        if enabled.activations.is_empty() {
            return Ok(r);
        }
        let mut tables = std::collections::HashMap::new();
        for name in &enabled.activations {
            let table = match enabled.encodings.get(name) {
                Some(e) => (upload_table(&self.gpu, &e.grid()?)?, e.steps()),
                None => self.tables[name].clone(),
            };
            tables.insert(name.clone(), table);
        }
        Ok(r.simulation(Arc::new(SimLowering {
            tables,
            integer: None,
        })))
    }
}
