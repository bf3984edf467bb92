//! Exporting a simulation: AIMET encodings JSON (0.6.1, 1.0.0, 2.0.0), the prepared FP32
//! model and the QDQ model.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::graph::attrs::Unary;
use crate::graph::ir::{Graph, Op};
use crate::quant::analyzers::Scheme;
use crate::quant::config::PlacementStyle;
use crate::quant::encoding::{Encoding, QuantKind};
use crate::quant::integer::IntegerPlan;
use crate::quant::params::{kind_for, stored_weight_codes};
use crate::quant::sim::QuantSim;

/// One named encoding as AIMET 1.0.0 writes it.
pub fn entry_1_0_0(name: &str, e: &Encoding) -> Value {
    let symmetric = e.kind != QuantKind::Asymmetric;
    json!({
        "bw": e.bitwidth,
        "dtype": "INT",
        "enc_type": if e.axis.is_some() { "PER_CHANNEL" } else { "PER_TENSOR" },
        "is_sym": symmetric,
        "name": name,
        "offset": e.offset.iter().map(|&o| o as f64).collect::<Vec<f64>>(),
        "scale": e.scale.iter().map(|&s| s as f64).collect::<Vec<f64>>(),
    })
}

/// The whole file: activation and parameter encodings, in the given order.
pub fn encodings_1_0_0(
    activations: &[(String, Encoding)],
    params: &[(String, Encoding)],
    quantizer_args: Value,
) -> Value {
    json!({
        "activation_encodings": activations.iter().map(|(n, e)| entry_1_0_0(n, e)).collect::<Vec<_>>(),
        "param_encodings": params.iter().map(|(n, e)| entry_1_0_0(n, e)).collect::<Vec<_>>(),
        "producer": {"package": "qforge", "version": env!("CARGO_PKG_VERSION")},
        "quantizer_args": quantizer_args,
        "version": "1.0.0",
    })
}

/// The activation encodings of an AIMET 1.0.0 encodings file (per tensor, in file order).
pub fn read_activations_1_0_0(v: &Value, file: &str) -> Result<Vec<(String, Encoding)>> {
    let bad = |key: String, message: &str| Error::Config {
        file: file.into(),
        key,
        message: message.into(),
    };
    if v["version"] != "1.0.0" {
        return Err(bad(
            "version".into(),
            "expected an AIMET 1.0.0 encodings file",
        ));
    }
    let list = v["activation_encodings"]
        .as_array()
        .ok_or_else(|| bad("activation_encodings".into(), "missing or not a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let key = |k: &str| format!("activation_encodings[{i}].{k}");
        let name = e["name"]
            .as_str()
            .ok_or_else(|| bad(key("name"), "missing or not a string"))?;
        let bitwidth = e["bw"]
            .as_u64()
            .ok_or_else(|| bad(key("bw"), "missing or not an integer"))?
            as u32;
        let num = |k: &str| {
            e[k].as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(key(k), "missing or not a list of numbers"))
        };
        let (scale, offset) = (num("scale")? as f32, num("offset")? as f32);
        let half = 2f32.powi(bitwidth as i32 - 1);
        let kind = match (e["is_sym"].as_bool(), offset) {
            (Some(false), _) => QuantKind::Asymmetric,
            (Some(true), 0.0) => QuantKind::UnsignedSymmetric,
            (Some(true), o) if o == -half => QuantKind::SignedSymmetric,
            (Some(true), o) if o == 1.0 - half => QuantKind::StrictSymmetric,
            _ => return Err(bad(key("is_sym"), "not a boolean matching the offset")),
        };
        let enc = Encoding {
            bitwidth,
            kind,
            axis: None,
            scale: vec![scale],
            offset: vec![offset],
        };
        enc.validate("encodings file")?;
        out.push((name.to_string(), enc));
    }
    Ok(out)
}

/// Which AIMET encodings format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingsVersion {
    V0_6_1,
    V1_0_0,
    V2_0_0,
}

impl std::str::FromStr for EncodingsVersion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "0.6.1" => Ok(EncodingsVersion::V0_6_1),
            "1.0.0" => Ok(EncodingsVersion::V1_0_0),
            "2.0.0" => Ok(EncodingsVersion::V2_0_0),
            other => Err(format!(
                "unknown encodings version '{other}' (0.6.1, 1.0.0 or 2.0.0)"
            )),
        }
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// One channel of an encoding as AIMET 0.6.1 writes it (min/max re-derived from the grid).
fn channel_0_6_1(e: &Encoding, c: usize) -> Value {
    let (s, o) = (e.scale[c] as f64, e.offset[c] as f64);
    json!({
        "bitwidth": e.bitwidth,
        "dtype": "int",
        "is_symmetric": py_bool(e.kind != QuantKind::Asymmetric),
        "max": (o + e.steps() as f64) * s,
        "min": o * s,
        "offset": o,
        "scale": s,
    })
}

/// The whole file in AIMET's 0.6.1 layout (objects keyed by tensor name, lists per channel).
pub fn encodings_0_6_1(
    activations: &[(String, Encoding)],
    params: &[(String, Encoding)],
    quantizer_args: Value,
) -> Value {
    let section = |list: &[(String, Encoding)]| -> Value {
        Value::Object(
            list.iter()
                .map(|(n, e)| {
                    (
                        n.clone(),
                        Value::Array((0..e.channels()).map(|c| channel_0_6_1(e, c)).collect()),
                    )
                })
                .collect(),
        )
    };
    json!({
        "activation_encodings": section(activations),
        "param_encodings": section(params),
        "producer": {"package": "qforge", "version": env!("CARGO_PKG_VERSION")},
        "quantizer_args": quantizer_args,
        "version": "0.6.1",
    })
}

/// One entry of AIMET's 2.0.0 layout (ONNX QuantizeLinear terms: y_scale, y_zero_point = -offset
/// for unsigned grids, omitted when 0).
pub fn entry_2_0_0(name: &str, e: &Encoding) -> Value {
    let signed = e.signed_codes();
    let dtype = format!("{}int{}", if signed { "" } else { "u" }, e.bitwidth);
    let mut m = serde_json::Map::new();
    if let Some(axis) = e.axis {
        m.insert("axis".into(), json!(axis));
    }
    m.insert("name".into(), json!(name));
    m.insert("output_dtype".into(), json!(dtype));
    let scales: Vec<f64> = e.scale.iter().map(|&s| s as f64).collect();
    m.insert(
        "y_scale".into(),
        if e.axis.is_some() {
            json!(scales)
        } else {
            json!(scales[0])
        },
    );
    if !signed {
        let zps: Vec<i64> = e.offset.iter().map(|&o| -(o as i64)).collect();
        if zps.iter().any(|&z| z != 0) {
            m.insert(
                "y_zero_point".into(),
                if e.axis.is_some() {
                    json!(zps)
                } else {
                    json!(zps[0])
                },
            );
        }
    }
    Value::Object(m)
}

/// An int32 bias encoding (scale = input scale x weight scale per channel), as 2.0.0 lists it.
pub fn bias_entry_2_0_0(name: &str, scales: &[f32]) -> Value {
    json!({"axis": 0, "name": name, "output_dtype": "int32", "y_scale": scales.iter().map(|&s| s as f64).collect::<Vec<f64>>()})
}

/// The whole file in AIMET's 2.0.0 layout.
pub fn encodings_2_0_0(entries: Vec<Value>) -> Value {
    json!({"encodings": entries, "producer": {"package": "qforge", "version": env!("CARGO_PKG_VERSION")}, "version": "2.0.0"})
}

impl QuantSim {
    /// Encodings of tensors without a quantizer of their own, as AIMET's 2.0.0 export lists
    /// them: outputs inside a supergroup take the group output's encoding, outputs of ops that
    /// only move data take their input's.
    fn aliases(&self, g: &Graph) -> Vec<(String, Encoding)> {
        let mut known: HashMap<String, Encoding> =
            self.activation_encodings().iter().cloned().collect();
        let mut out = Vec::new();
        // Data-moving ops forward their input's encoding (in graph order).
        for n in &g.nodes {
            if n.op.is_view() || matches!(n.op, Op::Transpose { .. }) {
                if let (Some(e), Some(o)) = (known.get(&n.inputs[0]).cloned(), n.outputs.first()) {
                    if !known.contains_key(o) {
                        known.insert(o.clone(), e.clone());
                        out.push((o.clone(), e));
                    }
                }
            }
        }
        // Supergroup insides take the encoding of their single consumer's output (last first).
        for n in g.nodes.iter().rev() {
            let Some(o) = n.outputs.first() else { continue };
            if known.contains_key(o) {
                continue;
            }
            if let [c] = g.consumers_of(o)[..] {
                if let Some(e) = g.nodes[c]
                    .outputs
                    .first()
                    .and_then(|co| known.get(co))
                    .cloned()
                {
                    known.insert(o.clone(), e.clone());
                    out.push((o.clone(), e));
                }
            }
        }
        out
    }

    /// In the aimet-onnx placement, the encodings of Clips' constant bounds: aimet-onnx
    /// quantizes them as activations (calibrated like any tensor: the range of the value and
    /// zero), qforge folds them into the Clip. Named as the exported model names the bounds, so
    /// that the encodings load strictly into aimet-onnx (`model`: `g` as exported); empty in
    /// the targets' placement.
    fn clip_bounds(
        &self,
        g: &Graph,
        model: &crate::graph::onnx::ModelProto,
    ) -> Result<Vec<(String, Encoding)>> {
        if self.config().placement != PlacementStyle::AimetOnnx {
            return Ok(Vec::new());
        }
        let kind = kind_for(
            self.config().ops_symmetric,
            self.config().strict_symmetric,
            self.config().unsigned_symmetric,
        );
        let exported: HashMap<&str, &[String]> = model
            .graph
            .iter()
            .flat_map(|m| &m.node)
            .filter_map(|n| Some((n.name.as_deref()?, &n.input[..])))
            .collect();
        let mut out = Vec::new();
        for n in &g.nodes {
            let Op::Unary(Unary::Clip(lo, hi)) = n.op else {
                continue;
            };
            let Some(inputs) = exported.get(n.name.as_str()) else {
                continue;
            };
            for (name, v) in inputs.iter().skip(1).zip([lo, hi]) {
                let e = Encoding::from_ranges(
                    &[v.min(0.0)],
                    &[v.max(0.0)],
                    self.options().act_bw,
                    kind,
                    None,
                )?;
                out.push((name.clone(), e));
            }
        }
        Ok(out)
    }

    /// Writes `<stem>.onnx` (the prepared FP32 model) and `<stem>.encodings` in the chosen
    /// AIMET format into `dir`.
    pub fn export(&self, dir: &Path, stem: &str, version: EncodingsVersion) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            action: "creating",
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let g = self.prepared(1)?;
        let model = crate::graph::export::to_model(&g);
        crate::graph::export::save_model(&model, &dir.join(format!("{stem}.onnx")), None)?;
        let opts = self.options();
        let mut activations = self.activation_encodings().to_vec();
        activations.extend(self.clip_bounds(&g, &model)?);
        let (activations, params) = (&activations[..], self.param_encodings());
        let args = json!({
            "activation_bitwidth": opts.act_bw,
            "dtype": "int",
            "is_symmetric": self.config().params_symmetric,
            "param_bitwidth": opts.param_bw,
            "per_channel_quantization": self.placement().params.iter().any(|q| q.axis.is_some()),
            "quant_scheme": match self.scheme() {
                Scheme::MinMax => "min_max".to_string(),
                Scheme::TfEnhanced { .. } => "tf_enhanced".to_string(),
                Scheme::Percentile(p) => format!("percentile_{p}"),
            },
        });
        let json = match version {
            EncodingsVersion::V1_0_0 => encodings_1_0_0(activations, params, args),
            EncodingsVersion::V0_6_1 => encodings_0_6_1(activations, params, args),
            EncodingsVersion::V2_0_0 => {
                let aliases = self.aliases(&g);
                let mut entries: Vec<Value> = activations
                    .iter()
                    .chain(params)
                    .chain(&aliases)
                    .map(|(n, e)| entry_2_0_0(n, e))
                    .collect();
                let acts: HashMap<&str, &Encoding> = activations
                    .iter()
                    .chain(&aliases)
                    .map(|(n, e)| (n.as_str(), e))
                    .collect();
                let params: HashMap<&str, &Encoding> =
                    params.iter().map(|(n, e)| (n.as_str(), e)).collect();
                for n in &g.nodes {
                    let (Some(w), Some(b), Some(x)) = (
                        n.inputs.get(1),
                        n.inputs.get(2).filter(|b| !b.is_empty()),
                        n.inputs.first(),
                    ) else {
                        continue;
                    };
                    if let (Some(we), Some(xe)) = (params.get(w.as_str()), acts.get(x.as_str())) {
                        let scales: Vec<f32> = we.scale.iter().map(|&s| s * xe.scale[0]).collect();
                        entries.push(bias_entry_2_0_0(b, &scales));
                    }
                }
                encodings_2_0_0(entries)
            }
        };
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
        crate::files::write_atomic(&dir.join(format!("{stem}.encodings")), text.as_bytes())
    }

    /// Writes `<stem>_qdq.onnx`: the prepared model with QuantizeLinear/DequantizeLinear on
    /// every quantized activation and int8 weights (8-bit grids); the biases of the layers an
    /// integer runtime fuses as int32 behind DequantizeLinear (scale `s_x * s_w`), as the
    /// integer simulation uses them: with integer arithmetic, and in the targets' style
    /// wherever every grid is 8-bit (onnxruntime runs a Conv or Gemm with a float bias in
    /// float; its quantizer, QNN and TFLite store int32 biases).
    pub fn export_qdq(&self, dir: &Path, stem: &str) -> Result<()> {
        if self.activation_encodings().is_empty() {
            return Err(Error::invalid(
                "export_qdq",
                "encodings",
                "none",
                "calibrate first",
            ));
        }
        let g = self.prepared(1)?;
        let mut codes: HashMap<String, ArrayD<i32>> = HashMap::new();
        for (name, e) in self.param_encodings() {
            let w = g.weight(name).ok_or_else(|| Error::Graph {
                model: g.name.clone(),
                message: format!("parameter '{name}' is not a constant"),
            })?;
            codes.insert(name.clone(), stored_weight_codes(w, e)?);
        }
        let biases = match self.integer_plan()? {
            Some(p) => p.biases.clone(),
            None if self.config().placement == PlacementStyle::Targets => {
                IntegerPlan::new(&g, self.activation_encodings(), self.param_encodings())
                    .map(|p| p.biases)
                    .unwrap_or_default()
            }
            None => HashMap::new(),
        };
        let model = crate::quant::qdq::qdq_model(
            &g,
            self.activation_encodings(),
            self.param_encodings(),
            &codes,
            &biases,
        )?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            action: "creating",
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        crate::files::write_atomic(
            &dir.join(format!("{stem}_qdq.onnx")),
            &prost::Message::encode_to_vec(&model),
        )
    }
}
