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
