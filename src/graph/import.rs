//! ONNX → [`Graph`]: typed ops, constants from initializers and Constant nodes, external data,
//! unique node names, topological order. Shapes and constant folding follow in `resolve`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use prost::Message;

use crate::error::{Error, Result};
use crate::graph::attrs::AutoPad;
use crate::graph::import_ops::{dropout_mask, to_op, variadic};
use crate::graph::ir::{Const, Dim, ElemType, Graph, Node};
use crate::graph::{legacy, onnx};

/// Opsets qforge reads: 6 to the newest onnx 1.23 defines. Forms older opsets give ops
/// (attributes later opsets take as inputs, Upsample, opset 6's broadcast) are rewritten to
/// today's at import (`graph::legacy`).
pub const OPSETS: std::ops::RangeInclusive<i64> = 6..=28;

/// ONNX TensorProto data types qforge reads.
pub(crate) mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const DOUBLE: i32 = 11;
}

/// Reads and imports an ONNX file (external data is read relative to its folder).
pub fn load(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        action: "reading model",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    import(&bytes, &path.display().to_string(), path.parent())
}

/// Imports ONNX bytes; `name` labels errors, `dir` resolves external data (None: refuse it).
pub fn import(bytes: &[u8], name: &str, dir: Option<&Path>) -> Result<Graph> {
    if bytes.is_empty() {
        return Err(Error::Model {
            model: name.into(),
            message: "the file is empty".into(),
        });
    }
    let model = onnx::ModelProto::decode(bytes).map_err(|e| Error::Model {
        model: name.into(),
        message: format!("not a valid ONNX protobuf: {e}"),
    })?;
    let bad = |message: String| Error::Model {
        model: name.into(),
        message,
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| bad("no default-domain opset_import".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(bad(format!(
            "opset {opset} is outside the supported {}..={}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let g = model.graph.ok_or_else(|| bad("no graph".into()))?;
    let mut consts = BTreeMap::new();
    for t in &g.initializer {
        let tname = t.name.clone().unwrap_or_default();
        consts.insert(
            tname.clone(),
            tensor(t, dir).map_err(|m| bad(format!("initializer '{tname}': {m}")))?,
        );
    }
    let mut graph = Graph {
        name: g.name.clone().unwrap_or_default(),
        opset,
        producer: model.producer_name.clone().unwrap_or_default(),
        ..Default::default()
    };
    for vi in &g.input {
        let vname = vi.name.clone().unwrap_or_default();
        if consts.contains_key(&vname) {
            continue;
        }
        let (dims, elem) = dims_of(vi).map_err(|m| bad(format!("input '{vname}': {m}")))?;
        graph.input_dims.insert(vname.clone(), dims);
        if elem != ElemType::F32 {
            graph.input_types.insert(vname.clone(), elem);
        }
        graph.inputs.push(vname);
    }
    graph.outputs = g
        .output
        .iter()
        .map(|o| o.name.clone().unwrap_or_default())
        .collect();
    if graph.outputs.is_empty() {
        return Err(bad("the graph has no outputs".into()));
    }
    if graph.inputs.is_empty() {
        return Err(bad(
            "the graph has no runtime inputs (every input is an initializer)".into(),
        ));
    }

    let declared_ranks: HashMap<String, usize> = g
        .value_info
        .iter()
        .chain(&g.output)
        .filter_map(|vi| {
            let onnx::type_proto::Value::TensorType(t) = vi.r#type.as_ref()?.value.as_ref()? else {
                return None;
            };
            Some((vi.name.clone()?, t.shape.as_ref()?.dim.len()))
        })
        .collect();
    let mut used_names: HashSet<String> = g
        .node
        .iter()
        .filter_map(|n| n.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    let mut nodes = Vec::new();
    let mut unsupported = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let op_type = n.op_type.clone().unwrap_or_default();
        let mut node_name = n.name.clone().unwrap_or_default();
        if node_name.is_empty() {
            node_name = (0..)
                .map(|k| {
                    if k == 0 {
                        format!("{op_type}_{i}")
                    } else {
                        format!("{op_type}_{i}_{k}")
                    }
                })
                .find(|c| !used_names.contains(c))
                .expect("a free name");
            used_names.insert(node_name.clone());
        }
        if !matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            unsupported.push(format!(
                "{}::{op_type} (node '{node_name}')",
                n.domain.as_deref().unwrap_or("")
            ));
            continue;
        }
        let attrs: HashMap<&str, &onnx::AttributeProto> = n
            .attribute
            .iter()
            .map(|a| (a.name.as_deref().unwrap_or(""), a))
            .collect();
        let ctx = |m: String| bad(format!("node '{node_name}' ({op_type}): {m}"));
        if op_type == "Constant" {
            let out = n
                .output
                .first()
                .cloned()
                .ok_or_else(|| ctx("no output".into()))?;
            consts.insert(out, constant_value(&attrs, dir).map_err(ctx)?);
            continue;
        }
        if let Some(chain) = variadic(&op_type, &node_name, &n.input, &n.output, &mut consts) {
            nodes.extend(chain);
            continue;
        }
        let auto_pad = attrs
            .get("auto_pad")
            .and_then(|a| a.s.as_ref())
            .map(|s| AutoPad::parse(&String::from_utf8_lossy(s)))
            .transpose()
            .map_err(ctx)?
            .flatten();
        if let Some(mode) = auto_pad {
            if !matches!(
                op_type.as_str(),
                "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool"
            ) {
                return Err(ctx(format!(
                    "auto_pad = {} is supported on Conv, ConvTranspose, MaxPool and AveragePool; export with explicit pads",
                    mode.onnx()
                )));
            }
            graph.auto_pads.insert(node_name.clone(), mode);
        }
        match to_op(&op_type, &attrs, opset, n.input.len()).map_err(ctx)? {
            Some(op) => {
                let ranks: Vec<Option<usize>> = n
                    .input
                    .iter()
                    .map(|i| {
                        consts
                            .get(i)
                            .map(|c| c.shape().len())
                            .or_else(|| graph.input_dims.get(i).map(Vec::len))
                            .or_else(|| declared_ranks.get(i).copied())
                    })
                    .collect();
                let mut node = Node {
                    name: node_name.clone(),
                    op,
                    inputs: n.input.clone(),
                    outputs: n.output.clone(),
                };
                let before =
                    legacy::rewrite(&op_type, &attrs, opset, &mut node, &mut consts, &ranks)
                        .map_err(ctx)?;
                nodes.extend(before);
                let mask = dropout_mask(&mut node);
                nodes.push(node);
                nodes.extend(mask);
            }
            None => unsupported.push(format!("{op_type} (node '{node_name}')")),
        }
    }
    if !unsupported.is_empty() {
        return Err(Error::Unsupported {
            model: name.into(),
            opset,
            ops: unsupported,
        });
    }
    graph.consts = consts;
    graph.nodes = topo_sort(nodes, &graph, name)?;
    for o in &graph.outputs {
        if !graph.inputs.contains(o)
            && !graph.consts.contains_key(o)
            && graph.producer_of(o).is_none()
        {
            return Err(Error::Graph {
                model: name.into(),
                message: format!("output '{o}' is produced by no node"),
            });
        }
    }
    Ok(graph)
}

/// An input's declared dims and element type. A dim without a name (or named `?`) is its
/// own unknown, `input[i]`, never shared with another input's.
fn dims_of(vi: &onnx::ValueInfoProto) -> std::result::Result<(Vec<Dim>, ElemType), String> {
    use onnx::tensor_shape_proto::dimension::Value;
    let Some(onnx::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err("is not a tensor".into());
    };
    let code = t.elem_type.unwrap_or(dtype::FLOAT);
    let elem = ElemType::from_onnx(code).ok_or_else(|| {
        format!(
            "has element type {} (qforge's inputs are float32, int64, int32, int8, uint8 or bool)",
            ElemType::onnx_name(code)
        )
    })?;
    let shape = t.shape.as_ref().ok_or("has no shape")?;
    let input = vi.name.clone().unwrap_or_default();
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(Value::DimValue(v)) if *v > 0 => Dim::Fixed(*v as usize),
            Some(Value::DimParam(p)) if !p.is_empty() && p != "?" => Dim::Named(p.clone()),
            _ => Dim::Named(format!("{input}[{i}]")),
        })
        .collect();
    Ok((dims, elem))
}

/// Decodes a TensorProto into a constant (f32 or i64), reading external data from `dir`.
pub fn tensor(t: &onnx::TensorProto, dir: Option<&Path>) -> std::result::Result<Const, String> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
        .collect::<std::result::Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("too many elements")?;
    if n > 1 << 31 {
        return Err(format!("{n} elements is more than qforge reads"));
    }
    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, dir)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };
    let dt = t.data_type.unwrap_or(0);
    let width = match dt {
        dtype::FLOAT | dtype::INT32 => 4,
        dtype::INT64 | dtype::DOUBLE => 8,
        dtype::UINT8 | dtype::INT8 | dtype::BOOL => 1,
        other => return Err(format!("data type {other} is not supported")),
    };
    let count = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("holds {len} values for shape {shape:?}"))
        }
    };
    let f32s = |v: Vec<f32>| {
        Ok(Const::F32(
            ArrayD::from_shape_vec(IxDyn(&shape), v).expect("count checked"),
        ))
    };
    let i64s = |v: Vec<i64>| {
        Ok(Const::I64(
            ArrayD::from_shape_vec(IxDyn(&shape), v).expect("count checked"),
        ))
    };
    if let Some(raw) = raw {
        if raw.len() != n * width {
            return Err(format!(
                "raw data has {} bytes, expected {} for shape {shape:?}",
                raw.len(),
                n * width
            ));
        }
        let chunks = raw.chunks_exact(width);
        return match dt {
            dtype::FLOAT => f32s(
                chunks
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            dtype::DOUBLE => f32s(
                chunks
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            ),
            dtype::INT32 => i64s(
                chunks
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            ),
            dtype::INT64 => i64s(
                chunks
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            dtype::INT8 => i64s(raw.iter().map(|&b| b as i8 as i64).collect()),
            _ => i64s(raw.iter().map(|&b| b as i64).collect()),
        };
    }
    match dt {
        dtype::FLOAT => count(t.float_data.len()).and_then(|_| f32s(t.float_data.clone())),
        dtype::DOUBLE => count(t.double_data.len())
            .and_then(|_| f32s(t.double_data.iter().map(|&v| v as f32).collect())),
        dtype::INT64 => count(t.int64_data.len()).and_then(|_| i64s(t.int64_data.clone())),
        _ => count(t.int32_data.len())
            .and_then(|_| i64s(t.int32_data.iter().map(|&v| v as i64).collect())),
    }
}

fn read_external(
    t: &onnx::TensorProto,
    dir: Option<&Path>,
) -> std::result::Result<Vec<u8>, String> {
    let entry = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("external data without a location")?;
    let dir = dir.ok_or("external data needs the model's folder")?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data location '{location}' must stay inside the model's folder"
        ));
    }
    let bytes =
        std::fs::read(dir.join(rel)).map_err(|e| format!("external data '{location}': {e}"))?;
    let parse = |k: &str| {
        entry(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("external data {k} '{v}' is not a number"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(bytes.len().saturating_sub(offset));
    bytes
        .get(
            offset
                ..offset
                    .checked_add(length)
                    .ok_or("external data range overflows")?,
        )
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            format!("external data '{location}' is shorter than offset {offset} + length {length}")
        })
}

fn constant_value(
    attrs: &HashMap<&str, &onnx::AttributeProto>,
    dir: Option<&Path>,
) -> std::result::Result<Const, String> {
    if let Some(t) = attrs.get("value").and_then(|a| a.t.as_ref()) {
        return tensor(t, dir);
    }
    if let Some(a) = attrs.get("value_float") {
        return Ok(Const::F32(ArrayD::from_elem(
            IxDyn(&[]),
            a.f.unwrap_or(0.0),
        )));
    }
    if let Some(a) = attrs.get("value_floats") {
        return Ok(Const::F32(
            ArrayD::from_shape_vec(IxDyn(&[a.floats.len()]), a.floats.clone()).expect("1-D"),
        ));
    }
    if let Some(a) = attrs.get("value_int") {
        return Ok(Const::I64(ArrayD::from_elem(IxDyn(&[]), a.i.unwrap_or(0))));
    }
    if let Some(a) = attrs.get("value_ints") {
        return Ok(Const::I64(
            ArrayD::from_shape_vec(IxDyn(&[a.ints.len()]), a.ints.clone()).expect("1-D"),
        ));
    }
    Err("Constant without a supported value attribute".into())
}

/// Orders nodes so every input is produced before use; names cycles and dangling inputs.
fn topo_sort(nodes: Vec<Node>, g: &Graph, model: &str) -> Result<Vec<Node>> {
    let mut available: HashSet<String> = g.inputs.iter().chain(g.consts.keys()).cloned().collect();
    available.insert(String::new());
    let produced: HashSet<&String> = nodes.iter().flat_map(|n| n.outputs.iter()).collect();
    for n in &nodes {
        if let Some(missing) = n
            .inputs
            .iter()
            .find(|i| !available.contains(*i) && !produced.contains(i))
        {
            return Err(Error::Graph {
                model: model.into(),
                message: format!(
                    "node '{}' reads '{missing}', which no node, input or initializer provides",
                    n.name
                ),
            });
        }
    }
    let mut seen_outputs = HashSet::new();
    for o in nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .filter(|o| !o.is_empty())
    {
        if !seen_outputs.insert(o) || g.inputs.contains(o) || g.consts.contains_key(o) {
            return Err(Error::Graph {
                model: model.into(),
                message: format!("value '{o}' is defined more than once"),
            });
        }
    }
    let mut pending = nodes;
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for n in pending {
            if n.inputs.iter().all(|i| available.contains(i)) {
                available.extend(n.outputs.iter().cloned());
                ordered.push(n);
            } else {
                rest.push(n);
            }
        }
        if rest.len() == before {
            let names: Vec<&str> = rest.iter().take(5).map(|n| n.name.as_str()).collect();
            return Err(Error::Graph {
                model: model.into(),
                message: format!("cycle among nodes {names:?}"),
            });
        }
        pending = rest;
    }
    Ok(ordered)
}
