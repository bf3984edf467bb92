//! Phase 1's table as JSON (`amp_scores.json`), so that a rerun with another allowed drop or
//! search reuses it.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::quant::amp::{Candidate, Sensitivities};
use crate::quant::analysis::Score;

fn num(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

fn read_num(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_f64(),
    }
}

impl Sensitivities {
    /// The table as JSON text.
    pub fn to_json(&self) -> String {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .zip(&self.scores)
            .map(|(name, row)| {
                json!({
                    "name": name,
                    "scores": row.iter().map(|(c, s)| json!({
                        "candidate": c.to_string(),
                        "sqnr_db": num(s.sqnr_db),
                        "top1_agreement": s.top1_agreement,
                        "accuracy": s.accuracy,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let v = json!({
            "table": "amp phase 1",
            "baseline_sqnr_db": num(self.baseline_sqnr_db),
            "groups": groups,
        });
        serde_json::to_string_pretty(&v).expect("plain JSON")
    }

    /// Reads a table written by [`Sensitivities::to_json`].
    pub fn load(path: &Path) -> Result<Sensitivities> {
        let file = path.display().to_string();
        let v = crate::files::read_json(path, "reading the AMP score table")?;
        let bad = |key: &str, message: &str| Error::Config {
            file: file.clone(),
            key: key.into(),
            message: message.into(),
        };
        if v.get("table").and_then(Value::as_str) != Some("amp phase 1") {
            return Err(bad("table", "not an AMP phase-1 table"));
        }
        let baseline_sqnr_db = v
            .get("baseline_sqnr_db")
            .and_then(read_num)
            .ok_or_else(|| bad("baseline_sqnr_db", "missing or not a number"))?;
        let mut out = Sensitivities {
            baseline_sqnr_db,
            ..Default::default()
        };
        for g in v
            .get("groups")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("groups", "missing or not a list"))?
        {
            let name = g
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("groups.name", "missing or not a string"))?;
            let mut row = Vec::new();
            for s in g
                .get("scores")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("groups.scores", "missing or not a list"))?
            {
                let c: Candidate = s
                    .get("candidate")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("scores.candidate", "missing or not a string"))?
                    .parse()?;
                let score = Score {
                    sqnr_db: s
                        .get("sqnr_db")
                        .and_then(read_num)
                        .ok_or_else(|| bad("scores.sqnr_db", "missing or not a number"))?,
                    top1_agreement: s.get("top1_agreement").and_then(Value::as_f64),
                    accuracy: s.get("accuracy").and_then(Value::as_f64),
                };
                row.push((c, score));
            }
            out.groups.push(name.to_string());
            out.scores.push(row);
        }
        Ok(out)
    }
}
