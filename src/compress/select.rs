//! AIMET's greedy per-layer ratio selection: every layer is scored alone at every candidate
//! ratio (the score table: accuracy or agreement, and the outputs' SQNR); then the highest
//! threshold is found at which choosing, per layer, the strongest compression that still
//! scores at least the threshold brings the whole model to the target cost. The table is
//! saved as JSON so a rerun skips evaluation, whichever score ranks.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::compress::{Cost, CostMetric};
use crate::error::{Error, Result};
use crate::eval::ScoreKind;

/// One layer compressed alone at one ratio.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub ratio: f64,
    /// Evaluation score of the model with only this layer compressed (NaN: outputs were
    /// not finite; never chosen).
    pub score: f64,
    /// SQNR (dB) of that model's outputs against the original's on the same images.
    pub sqnr: f64,
    /// Cost the whole model saves.
    pub macs_saved: u64,
    pub params_saved: u64,
}

impl Entry {
    /// The value the selection ranks by.
    pub fn value(&self, by: ScoreKind) -> f64 {
        match by {
            ScoreKind::Agreement => self.score,
            ScoreKind::Sqnr => self.sqnr,
        }
    }

    fn saved(&self, metric: CostMetric) -> u64 {
        match metric {
            CostMetric::Macs => self.macs_saved,
            CostMetric::Memory => self.params_saved,
        }
    }
}

/// Scores of one layer, by ratio.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerScores {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// Every layer's scores, with what they were measured against.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreTable {
    pub method: String,
    pub metric: String,
    /// Score of the uncompressed model.
    pub baseline: f64,
    /// Cost of the uncompressed model.
    pub cost: Cost,
    pub layers: Vec<LayerScores>,
}

/// The chosen ratio of each layer (1.0 = left alone) and the resulting cost.
#[derive(Clone, Debug)]
pub struct Selection {
    pub ratios: Vec<(String, f64)>,
    pub threshold: f64,
    /// Predicted cost of the whole model (sum of per-layer savings).
    pub cost: Cost,
}

impl ScoreTable {
    /// Writes the table as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let num = |v: f64| {
            if v.is_finite() {
                json!(v)
            } else if v.is_nan() {
                json!("NaN")
            } else {
                json!(if v > 0.0 { "inf" } else { "-inf" })
            }
        };
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"name": l.name, "entries": l.entries.iter().map(|e| json!({"ratio": e.ratio, "score": num(e.score), "sqnr": num(e.sqnr), "macs_saved": e.macs_saved, "params_saved": e.params_saved})).collect::<Vec<_>>()}))
            .collect();
        let v = json!({"method": self.method, "metric": self.metric, "baseline": self.baseline, "macs": self.cost.macs, "params": self.cost.params, "layers": layers});
        let text = serde_json::to_string_pretty(&v).expect("plain JSON");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                action: "creating the score-table folder",
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
        crate::files::write_atomic(path, text.as_bytes())
    }

    /// Reads a table written by [`ScoreTable::save`].
    pub fn load(path: &Path) -> Result<ScoreTable> {
        let file = path.display().to_string();
        let v = crate::files::read_json(path, "reading score table")?;
        let bad = |key: &str, message: &str| Error::Config {
            file: file.clone(),
            key: key.into(),
            message: message.into(),
        };
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(k, "missing or not a string"))
        };
        let u = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(k, "missing or not an integer"))
        };
        let f = |v: &Value, k: &str| match v.get(k) {
            Some(Value::String(t)) if t == "NaN" => Ok(f64::NAN),
            Some(Value::String(t)) if t == "inf" => Ok(f64::INFINITY),
            Some(Value::String(t)) if t == "-inf" => Ok(f64::NEG_INFINITY),
            Some(x) => x.as_f64().ok_or_else(|| bad(k, "not a number")),
            None => Err(bad(k, "missing")),
        };
        let (method, metric) = (s("method")?, s("metric")?);
        let mut layers = Vec::new();
        for l in v
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("layers", "missing or not a list"))?
        {
            let name = l
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("layers.name", "missing"))?
                .to_string();
            let mut entries = Vec::new();
            for e in l
                .get("entries")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("layers.entries", "missing or not a list"))?
            {
                entries.push(Entry {
                    ratio: f(e, "ratio")?,
                    score: f(e, "score")?,
                    sqnr: f(e, "sqnr")?,
                    macs_saved: u(e, "macs_saved")?,
                    params_saved: u(e, "params_saved")?,
                });
            }
            layers.push(LayerScores { name, entries });
        }
        Ok(ScoreTable {
            method,
            metric,
            baseline: f(&v, "baseline")?,
            cost: Cost {
                macs: u(&v, "macs")?,
                params: u(&v, "params")?,
            },
            layers,
        })
    }

    /// Whether this table was made for the same method, metric and layers.
    pub fn matches(&self, method: &str, metric: CostMetric, layers: &[String]) -> bool {
        self.method == method
            && self.metric == metric.name()
            && self.layers.iter().map(|l| &l.name).eq(layers.iter())
    }
}

/// Picks per-layer ratios meeting `target` (fraction of the table's cost in `metric`) at the
/// highest threshold of the `by` score that reaches it.
pub fn greedy(
    table: &ScoreTable,
    target: f64,
    metric: CostMetric,
    by: ScoreKind,
) -> Result<Selection> {
    let base = metric.of(&table.cost) as f64;
    let budget = target * base;
    let choose = |t: f64| -> (Vec<(String, f64)>, u64, u64) {
        let (mut macs, mut params) = (0u64, 0u64);
        let ratios = table
            .layers
            .iter()
            .map(|l| {
                // Strongest compression (most saved) among entries scoring at least t.
                let best = l
                    .entries
                    .iter()
                    .filter(|e| e.value(by) >= t)
                    .max_by_key(|e| e.saved(metric));
                match best {
                    Some(e) => {
                        macs += e.macs_saved;
                        params += e.params_saved;
                        (l.name.clone(), e.ratio)
                    }
                    None => (l.name.clone(), 1.0),
                }
            })
            .collect();
        (ratios, macs, params)
    };
    let mut thresholds: Vec<f64> = table
        .layers
        .iter()
        .flat_map(|l| l.entries.iter().map(|e| e.value(by)))
        .filter(|s| !s.is_nan())
        .collect();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    for t in thresholds
        .iter()
        .copied()
        .chain(std::iter::once(f64::NEG_INFINITY))
    {
        let (ratios, macs, params) = choose(t);
        let saved = match metric {
            CostMetric::Macs => macs,
            CostMetric::Memory => params,
        };
        if base - saved as f64 <= budget + 0.5 {
            let cost = Cost {
                macs: table.cost.macs - macs,
                params: table.cost.params - params,
            };
            return Ok(Selection {
                ratios,
                threshold: t,
                cost,
            });
        }
    }
    let (_, macs, params) = choose(f64::NEG_INFINITY);
    let best = match metric {
        CostMetric::Macs => (table.cost.macs - macs) as f64,
        CostMetric::Memory => (table.cost.params - params) as f64,
    } / base;
    Err(Error::invalid("compress", "target ratio", target, format!("not reachable with these layers and candidates: the strongest choice leaves {best:.3} of the {}", metric.name())))
}

/// The chosen ratios as a map.
pub fn ratio_map(s: &Selection) -> HashMap<String, f64> {
    s.ratios.iter().cloned().collect()
}
