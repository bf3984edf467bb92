//! QDQ ONNX: the prepared model with QuantizeLinear/DequantizeLinear pairs on every quantized
//! activation and int8 weights behind per-axis DequantizeLinear nodes, as ONNX Runtime and
//! Qualcomm's converters take it. 8-bit grids go into ONNX's uint8/int8; 16-bit and 4-bit
//! grids (mixed precision) into uint16/int16 and uint4/int4, with onnxruntime's
//! `com.microsoft` QuantizeLinear/DequantizeLinear where the model's opset (below 21) has no
//! such types.

use std::collections::{HashMap, HashSet};

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::graph::export::to_model;
use crate::graph::ir::Graph;
use crate::graph::onnx;
use crate::quant::encoding::Encoding;

const INT8: i32 = 3;
const UINT8: i32 = 2;
const INT16: i32 = 5;
const UINT16: i32 = 4;
const INT4: i32 = 22;
const UINT4: i32 = 21;
const FLOAT: i32 = 1;
const INT32: i32 = 6;
/// The first standard opset whose QuantizeLinear holds 4- and 16-bit integers.
const WIDE_OPSET: i64 = 21;
const MS_DOMAIN: &str = "com.microsoft";

/// The ONNX integer type holding an encoding's codes.
fn container(name: &str, e: &Encoding) -> Result<i32> {
    let signed = e.signed_codes();
    Ok(match (e.bitwidth, signed) {
        (8, true) => INT8,
        (8, false) => UINT8,
        (16, true) => INT16,
        (16, false) => UINT16,
        (4, true) => INT4,
        (4, false) => UINT4,
        (bw, _) => {
            return Err(Error::invalid(
                "qdq export",
                "bitwidth",
                format!("{bw} ({name})"),
                "QDQ models hold 4-, 8- and 16-bit grids (ONNX int4, int8, int16)",
            ))
        }
    })
}

/// Raw little-endian bytes of integer codes in ONNX type `dt` (4-bit values two per byte,
/// the first in the low nibble).
fn pack(codes: impl Iterator<Item = i32>, dt: i32) -> Vec<u8> {
    match dt {
        INT8 | UINT8 => codes.map(|c| c as u8).collect(),
        INT16 | UINT16 => codes.flat_map(|c| (c as u16).to_le_bytes()).collect(),
        _ => {
            let v: Vec<u8> = codes.map(|c| (c as u8) & 0x0f).collect();
            v.chunks(2)
                .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4))
                .collect()
        }
    }
}

fn tensor(name: &str, dims: &[usize], data_type: i32, raw: Vec<u8>) -> onnx::TensorProto {
    onnx::TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn node(
    domain: &Option<String>,
    op: &str,
    name: String,
    inputs: Vec<String>,
    output: String,
    axis: Option<usize>,
) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: Some(op.into()),
        domain: domain.clone(),
        name: Some(name),
        input: inputs,
        output: vec![output],
        attribute: axis
            .map(|a| {
                vec![onnx::AttributeProto {
                    name: Some("axis".into()),
                    r#type: Some(2),
                    i: Some(a as i64),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Scale and zero-point initializers of an encoding (zero point = -offset on unsigned grids)
/// and the type of its codes.
fn scale_zp(name: &str, e: &Encoding) -> Result<(onnx::TensorProto, onnx::TensorProto, i32)> {
    let dt = container(name, e)?;
    let dims: Vec<usize> = if e.axis.is_some() {
        vec![e.channels()]
    } else {
        vec![]
    };
    let scale = tensor(
        &format!("{name}_scale"),
        &dims,
        FLOAT,
        e.scale.iter().flat_map(|s| s.to_le_bytes()).collect(),
    );
    let zp = if e.signed_codes() {
        pack(std::iter::repeat_n(0, e.channels()), dt)
    } else {
        pack(e.offset.iter().map(|&o| (-o) as i32), dt)
    };
    Ok((
        scale,
        tensor(&format!("{name}_zero_point"), &dims, dt, zp),
        dt,
    ))
}

/// The QDQ model. `weight_codes` are the integer weights (signed codes, q + offset) of every
/// parameter encoding; `int_biases` (bias name → int32 codes and per-channel scales) replace
/// those float biases by int32 ones behind a DequantizeLinear.
pub fn qdq_model(
    g: &Graph,
    activations: &[(String, Encoding)],
    params: &[(String, Encoding)],
    weight_codes: &HashMap<String, ArrayD<i32>>,
    int_biases: &HashMap<String, (Vec<i32>, Vec<f32>)>,
) -> Result<onnx::ModelProto> {
    let mut wide = false;
    for (name, e) in activations.iter().chain(params) {
        wide |= !matches!(container(name, e)?, INT8 | UINT8);
    }
    let mut m = to_model(g);
    m.opset_import[0].version = Some(g.opset.max(13));
    // Wide grids in an older opset: onnxruntime's contrib QuantizeLinear/DequantizeLinear.
    let domain = (wide && g.opset < WIDE_OPSET).then(|| MS_DOMAIN.to_string());
    if domain.is_some() {
        m.opset_import.push(onnx::OperatorSetIdProto {
            domain: domain.clone(),
            version: Some(1),
        });
    }
    let graph = m.graph.as_mut().expect("to_model makes a graph");
    let mut head: Vec<onnx::NodeProto> = Vec::new();
    // Weights: int8 initializer + DequantizeLinear producing the original name.
    let param_names: HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let windows = crate::graph::export::weights_of_2d_windows(g);
    graph
        .initializer
        .retain(|t| !param_names.contains(t.name.as_deref().unwrap_or("")));
    for (name, e) in params {
        let codes = weight_codes
            .get(name)
            .ok_or_else(|| Error::invalid("qdq export", "weight codes", name, "missing"))?;
        let (scale, zp, dt) = scale_zp(name, e)?;
        let raw = pack(codes.iter().copied(), dt);
        let mut dims = codes.shape().to_vec();
        if windows.contains(name) {
            dims.insert(2, 1);
        }
        graph
            .initializer
            .push(tensor(&format!("{name}_quantized"), &dims, dt, raw));
        head.push(node(
            &domain,
            "DequantizeLinear",
            format!("{name}_dequantize"),
            vec![
                format!("{name}_quantized"),
                scale.name.clone().unwrap(),
                zp.name.clone().unwrap(),
            ],
            name.clone(),
            e.axis,
        ));
        graph.initializer.extend([scale, zp]);
    }
    graph
        .initializer
        .retain(|t| !int_biases.contains_key(t.name.as_deref().unwrap_or("")));
    let mut biases: Vec<_> = int_biases.iter().collect();
    biases.sort_by(|a, b| a.0.cmp(b.0));
    for (name, (codes, scales)) in biases {
        let c = codes.len();
        graph.initializer.push(tensor(
            &format!("{name}_quantized"),
            &[c],
            INT32,
            codes.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        graph.initializer.push(tensor(
            &format!("{name}_scale"),
            &[c],
            FLOAT,
            scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        graph.initializer.push(tensor(
            &format!("{name}_zero_point"),
            &[c],
            INT32,
            vec![0u8; 4 * c],
        ));
        head.push(node(
            &domain,
            "DequantizeLinear",
            format!("{name}_dequantize"),
            vec![
                format!("{name}_quantized"),
                format!("{name}_scale"),
                format!("{name}_zero_point"),
            ],
            name.clone(),
            Some(0),
        ));
    }
    // Activations: Q/DQ after the producer (or at the start for graph inputs).
    let outputs: HashSet<String> = graph.output.iter().filter_map(|o| o.name.clone()).collect();
    let mut after: HashMap<String, Vec<onnx::NodeProto>> = HashMap::new();
    let mut rename: HashMap<String, String> = HashMap::new();
    for (name, e) in activations {
        let (scale, zp, _) = scale_zp(name, e)?;
        let (sn, zn) = (scale.name.clone().unwrap(), zp.name.clone().unwrap());
        graph.initializer.extend([scale, zp]);
        let is_output = outputs.contains(name);
        let (src, dst) = if is_output {
            (format!("{name}_float"), name.clone())
        } else {
            (name.clone(), format!("{name}_dequantized"))
        };
        if is_output {
            rename.insert(name.clone(), src.clone());
        } else {
            rename.insert(name.clone(), dst.clone());
        }
        let pair = vec![
            node(
                &domain,
                "QuantizeLinear",
                format!("{name}_quantize"),
                vec![src.clone(), sn.clone(), zn.clone()],
                format!("{name}_quantized"),
                None,
            ),
            node(
                &domain,
                "DequantizeLinear",
                format!("{name}_dequantize"),
                vec![format!("{name}_quantized"), sn, zn],
                dst,
                None,
            ),
        ];
        after.entry(name.clone()).or_default().extend(pair);
    }
    let mut nodes = head;
    for input in graph.input.iter().filter_map(|i| i.name.clone()) {
        nodes.extend(after.remove(&input).unwrap_or_default());
    }
    for mut n in std::mem::take(&mut graph.node) {
        for i in n.input.iter_mut() {
            if let Some(r) = rename.get(i.as_str()) {
                if !outputs.contains(i.as_str()) {
                    *i = r.clone();
                }
            }
        }
        let produced: Vec<String> = n.output.clone();
        for o in n.output.iter_mut() {
            if outputs.contains(o.as_str()) {
                if let Some(r) = rename.get(o.as_str()) {
                    *o = r.clone();
                }
            }
        }
        nodes.push(n);
        for o in produced {
            nodes.extend(after.remove(&o).unwrap_or_default());
        }
    }
    graph.node = nodes;
    Ok(m)
}
