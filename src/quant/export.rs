//! AIMET encodings JSON (version 1.0.0: lists of per-tensor / per-channel entries).

use serde_json::{json, Value};

use crate::quant::encoding::{Encoding, QuantKind};

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
pub fn encodings_1_0_0(activations: &[(String, Encoding)], params: &[(String, Encoding)], quantizer_args: Value) -> Value {
    json!({
        "activation_encodings": activations.iter().map(|(n, e)| entry_1_0_0(n, e)).collect::<Vec<_>>(),
        "param_encodings": params.iter().map(|(n, e)| entry_1_0_0(n, e)).collect::<Vec<_>>(),
        "producer": {"package": "qforge", "version": env!("CARGO_PKG_VERSION")},
        "quantizer_args": quantizer_args,
        "version": "1.0.0",
    })
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
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0.6.1" => Ok(EncodingsVersion::V0_6_1),
            "1.0.0" => Ok(EncodingsVersion::V1_0_0),
            "2.0.0" => Ok(EncodingsVersion::V2_0_0),
            other => Err(format!("unknown encodings version '{other}' (0.6.1, 1.0.0 or 2.0.0)")),
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
pub fn encodings_0_6_1(activations: &[(String, Encoding)], params: &[(String, Encoding)], quantizer_args: Value) -> Value {
    let section = |list: &[(String, Encoding)]| -> Value {
        Value::Object(list.iter().map(|(n, e)| (n.clone(), Value::Array((0..e.channels()).map(|c| channel_0_6_1(e, c)).collect()))).collect())
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
    m.insert("y_scale".into(), if e.axis.is_some() { json!(scales) } else { json!(scales[0]) });
    if !signed {
        let zps: Vec<i64> = e.offset.iter().map(|&o| -(o as i64)).collect();
        if zps.iter().any(|&z| z != 0) {
            m.insert("y_zero_point".into(), if e.axis.is_some() { json!(zps) } else { json!(zps[0]) });
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
