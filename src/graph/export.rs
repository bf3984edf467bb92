//! [`Graph`] → ONNX: attribute-inputs re-emitted in the opset's form, constants as
//! initializers, written atomically (temp file + rename), never over the input model.

use std::path::Path;

use prost::Message;

use crate::error::Result;
use crate::graph::attrs::Unary;
use crate::graph::ir::{Const, Dim, ElemType, Graph, Op};
use crate::graph::onnx;

fn attr_int(name: &str, v: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}
fn attr_float(name: &str, v: f32) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(1),
        f: Some(v),
        ..Default::default()
    }
}
fn attr_ints(name: &str, v: &[i64]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn attr_str(name: &str, v: &str) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(3),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A constant as a TensorProto (raw little-endian data).
pub fn tensor_proto(name: &str, c: &Const) -> onnx::TensorProto {
    let (data_type, raw): (i32, Vec<u8>) = match c {
        Const::F32(a) => (1, a.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Const::I64(a) => (7, a.iter().flat_map(|v| v.to_le_bytes()).collect()),
    };
    onnx::TensorProto {
        name: Some(name.into()),
        dims: c.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Option<Vec<Dim>>, elem: ElemType) -> onnx::ValueInfoProto {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    let shape = dims.map(|d| onnx::TensorShapeProto {
        dim: d
            .into_iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => Value::DimValue(v as i64),
                    Dim::Named(n) => Value::DimParam(n),
                }),
                ..Default::default()
            })
            .collect(),
    });
    onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(elem.onnx()),
                    shape,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An output's dims: its resolved shape, with dim 0 named like the first input's when that one
/// is named (the batch).
fn output_dims(g: &Graph, name: &str) -> Option<Vec<Dim>> {
    let shape = g.shapes.get(name)?;
    let batch = g
        .inputs
        .first()
        .and_then(|i| g.input_dims.get(i))
        .and_then(|d| d.first())
        .cloned();
    Some(
        shape
            .iter()
            .enumerate()
            .map(|(i, &d)| match (&batch, i) {
                (Some(Dim::Named(n)), 0) => Dim::Named(n.clone()),
                _ => Dim::Fixed(d),
            })
            .collect(),
    )
}

/// Builds the ONNX model of a graph.
/// The 3-D weights of 1-D convolutions that run as 2-D (`graph::rewrite`: the input gets a
/// height-1 axis, the weight keeps its shape and name and is read as `[.., .., 1, k]`). ONNX
/// needs such a weight 4-D: the exports write it with the unit axis at 2.
pub fn weights_of_2d_windows(g: &Graph) -> std::collections::HashSet<String> {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_) | Op::ConvTranspose { .. }))
        .filter(|n| n.inputs.first().and_then(|x| g.shapes.get(x)).map(Vec::len) == Some(4))
        .filter_map(|n| n.inputs.get(1))
        .filter(|w| g.consts.get(*w).map(|c| c.shape().len()) == Some(3))
        .cloned()
        .collect()
}

pub fn to_model(g: &Graph) -> onnx::ModelProto {
    // Only constants something reads (folded attribute inputs such as Clip's bounds are not).
    let used: std::collections::HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(&g.outputs)
        .map(String::as_str)
        .collect();
    let mut initializers: Vec<onnx::TensorProto> = g
        .consts
        .iter()
        .filter(|(n, _)| used.contains(n.as_str()))
        .map(|(n, c)| tensor_proto(n, c))
        .collect();
    let windows = weights_of_2d_windows(g);
    for t in &mut initializers {
        if windows.contains(t.name.as_deref().unwrap_or("")) {
            t.dims.insert(2, 1);
        }
    }
    let mut extra_const = |stem: &str, c: Const| {
        let mut name = stem.to_string();
        let mut k = 1;
        while g.consts.contains_key(&name)
            || initializers
                .iter()
                .any(|t| t.name.as_deref() == Some(name.as_str()))
        {
            name = format!("{stem}_{k}");
            k += 1;
        }
        initializers.push(tensor_proto(&name, &c));
        name
    };
    let ints_const = |v: &[i64]| {
        Const::I64(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.to_vec()).expect("1-D"),
        )
    };
    let scalar = |v: f32| Const::F32(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), v));
    // Models imported below opset 11 were rewritten to today's forms (Slice and Pad bounds as
    // inputs, Upsample as Resize, graph::legacy): they export at opset 11, where those forms
    // exist and the others mean what they meant.
    let opset = g.opset.max(11);
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let mut inputs = n.inputs.clone();
        let mut attrs = Vec::new();
        match &n.op {
            Op::Conv(c) | Op::ConvTranspose { conv: c, .. } => {
                attrs.push(attr_ints("strides", &c.strides.map(|v| v as i64)));
                attrs.push(attr_ints("pads", &c.pads.map(|v| v as i64)));
                attrs.push(attr_ints("dilations", &c.dilations.map(|v| v as i64)));
                attrs.push(attr_int("group", c.groups as i64));
                if let Op::ConvTranspose {
                    output_padding,
                    output_shape,
                    ..
                } = &n.op
                {
                    attrs.push(attr_ints(
                        "output_padding",
                        &output_padding.map(|v| v as i64),
                    ));
                    // Not yet turned into pads (the input's size unknown): kept as given.
                    if !output_shape.is_empty() {
                        let os: Vec<i64> = output_shape.iter().map(|&d| d as i64).collect();
                        attrs.push(attr_ints("output_shape", &os));
                    }
                }
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                attrs.extend([
                    attr_float("alpha", *alpha),
                    attr_float("beta", *beta),
                    attr_int("transA", *trans_a as i64),
                    attr_int("transB", *trans_b as i64),
                ]);
            }
            Op::BatchNorm { epsilon } => attrs.push(attr_float("epsilon", *epsilon)),
            Op::Unary(Unary::Clip(lo, hi)) => {
                if opset >= 11 {
                    inputs.push(extra_const(&format!("{}_min", n.name), scalar(*lo)));
                    inputs.push(extra_const(&format!("{}_max", n.name), scalar(*hi)));
                } else {
                    attrs.extend([attr_float("min", *lo), attr_float("max", *hi)]);
                }
            }
            Op::Unary(
                Unary::LeakyRelu(a) | Unary::Elu(a) | Unary::Celu(a) | Unary::ThresholdedRelu(a),
            ) => attrs.push(attr_float("alpha", *a)),
            Op::Unary(Unary::Selu(a, g)) => {
                attrs.extend([attr_float("alpha", *a), attr_float("gamma", *g)])
            }
            Op::Unary(Unary::Shrink(b, l)) => {
                attrs.extend([attr_float("bias", *b), attr_float("lambd", *l)])
            }
            Op::Unary(Unary::IsInf { positive, negative }) => attrs.extend([
                attr_int("detect_positive", *positive as i64),
                attr_int("detect_negative", *negative as i64),
            ]),
            Op::Binary(crate::graph::attrs::Binary::Mod { fmod }) => {
                attrs.push(attr_int("fmod", *fmod as i64))
            }
            Op::Unary(Unary::HardSigmoid(a, b)) => {
                attrs.extend([attr_float("alpha", *a), attr_float("beta", *b)])
            }
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => attrs.extend([
                attr_int("size", *size as i64),
                attr_float("alpha", *alpha),
                attr_float("beta", *beta),
                attr_float("bias", *bias),
            ]),
            Op::MaxPool(p) | Op::AveragePool(p) => {
                attrs.push(attr_ints("kernel_shape", &p.kernel.map(|v| v as i64)));
                attrs.push(attr_ints("strides", &p.strides.map(|v| v as i64)));
                attrs.push(attr_ints("pads", &p.pads.map(|v| v as i64)));
                attrs.push(attr_int("ceil_mode", p.ceil_mode as i64));
                if matches!(n.op, Op::MaxPool(_)) {
                    attrs.push(attr_ints("dilations", &p.dilations.map(|v| v as i64)));
                } else {
                    attrs.push(attr_int("count_include_pad", p.count_include_pad as i64));
                }
            }
            Op::Flatten { axis } => attrs.push(attr_int("axis", *axis)),
            Op::Reshape { allow_zero } if *allow_zero => attrs.push(attr_int("allowzero", 1)),
            Op::Transpose { perm } if !perm.is_empty() => attrs.push(attr_ints(
                "perm",
                &perm.iter().map(|&p| p as i64).collect::<Vec<_>>(),
            )),
            Op::Concat { axis } => attrs.push(attr_int("axis", *axis)),
            Op::Split { axis, split } => {
                attrs.push(attr_int("axis", *axis));
                if !split.is_empty() {
                    let v: Vec<i64> = split.iter().map(|&s| s as i64).collect();
                    if opset >= 13 {
                        inputs.push(extra_const(&format!("{}_split", n.name), ints_const(&v)));
                    } else {
                        attrs.push(attr_ints("split", &v));
                    }
                }
            }
            Op::Pad { mode, value } => {
                attrs.push(attr_str("mode", mode));
                inputs.truncate(2);
                inputs.push(extra_const(&format!("{}_value", n.name), scalar(*value)));
            }
            Op::Resize {
                mode,
                coordinate_transformation,
                nearest_mode,
                cubic_coeff_a,
                exclude_outside,
                antialias,
                extrapolation_value,
                ..
            } => {
                attrs.extend([
                    attr_str("mode", mode),
                    attr_str("coordinate_transformation_mode", coordinate_transformation),
                    attr_str("nearest_mode", nearest_mode),
                ]);
                if mode == "cubic" {
                    attrs.push(attr_float("cubic_coeff_a", *cubic_coeff_a));
                }
                if *exclude_outside {
                    attrs.push(attr_int("exclude_outside", 1));
                }
                if *antialias {
                    attrs.push(attr_int("antialias", 1));
                }
                if coordinate_transformation == "tf_crop_and_resize" {
                    attrs.push(attr_float("extrapolation_value", *extrapolation_value));
                }
            }
            Op::Softmax { axis, .. } | Op::LogSoftmax { axis, .. } | Op::Hardmax { axis, .. } => {
                attrs.push(attr_int("axis", *axis))
            }
            Op::Reduce {
                op,
                axes,
                keepdims,
                noop_empty,
            } => {
                attrs.push(attr_int("keepdims", *keepdims as i64));
                if *noop_empty {
                    attrs.push(attr_int("noop_with_empty_axes", 1));
                }
                // ReduceSum takes its axes as an input from opset 13, the others from 18.
                let as_input =
                    opset >= 18 || (opset >= 13 && *op == crate::graph::attrs::Reduce::Sum);
                if !axes.is_empty() {
                    if as_input {
                        inputs.push(extra_const(&format!("{}_axes", n.name), ints_const(axes)));
                    } else {
                        attrs.push(attr_ints("axes", axes));
                    }
                }
            }
            Op::Arg {
                axis,
                keepdims,
                last,
                ..
            } => attrs.extend([
                attr_int("axis", *axis),
                attr_int("keepdims", *keepdims as i64),
                attr_int("select_last_index", *last as i64),
            ]),
            Op::TopK { axis, largest } => attrs.extend([
                attr_int("axis", *axis),
                attr_int("largest", *largest as i64),
                attr_int("sorted", 1),
            ]),
            Op::CumSum { exclusive, reverse } => attrs.extend([
                attr_int("exclusive", *exclusive as i64),
                attr_int("reverse", *reverse as i64),
            ]),
            Op::LayerNorm { axis, epsilon } => {
                attrs.extend([attr_int("axis", *axis), attr_float("epsilon", *epsilon)])
            }
            Op::InstanceNorm { epsilon } => attrs.push(attr_float("epsilon", *epsilon)),
            Op::GroupNorm { groups, epsilon } => attrs.extend([
                attr_int("num_groups", *groups as i64),
                attr_float("epsilon", *epsilon),
            ]),
            Op::MeanVarianceNorm { axes } => attrs.push(attr_ints("axes", axes)),
            Op::Einsum { equation } => attrs.push(attr_str("equation", equation)),
            Op::Unary(Unary::GeluTanh) => attrs.push(attr_str("approximate", "tanh")),
            Op::DepthToSpace { blocksize, crd } => attrs.extend([
                attr_int("blocksize", *blocksize as i64),
                attr_str("mode", if *crd { "CRD" } else { "DCR" }),
            ]),
            Op::SpaceToDepth { blocksize } => attrs.push(attr_int("blocksize", *blocksize as i64)),
            Op::Trilu { upper } => attrs.push(attr_int("upper", *upper as i64)),
            Op::ScatterNd { reduction } if reduction != "none" => {
                attrs.push(attr_str("reduction", reduction))
            }
            Op::ReduceMean { axes, keepdims } => {
                attrs.push(attr_int("keepdims", *keepdims as i64));
                if !axes.is_empty() {
                    if opset >= 18 {
                        inputs.push(extra_const(&format!("{}_axes", n.name), ints_const(axes)));
                    } else {
                        attrs.push(attr_ints("axes", axes));
                    }
                }
            }
            Op::Squeeze { axes } | Op::Unsqueeze { axes } if !axes.is_empty() => {
                if opset >= 13 {
                    inputs.push(extra_const(&format!("{}_axes", n.name), ints_const(axes)));
                } else {
                    attrs.push(attr_ints("axes", axes));
                }
            }
            Op::Gather { axis } | Op::GatherElements { axis } => {
                attrs.push(attr_int("axis", *axis))
            }
            Op::Shape { start, end } => {
                if *start != 0 {
                    attrs.push(attr_int("start", *start));
                }
                if let Some(e) = end {
                    attrs.push(attr_int("end", *e));
                }
            }
            Op::Cast { to } => attrs.push(attr_int("to", *to as i64)),
            _ => {}
        }
        // Pads not yet computed from the input's size stay ONNX's auto_pad.
        if let Some(mode) = g.auto_pads.get(&n.name) {
            if !g.shapes.contains_key(&n.inputs[0]) {
                attrs.retain(|a| a.name.as_deref() != Some("pads"));
                attrs.push(attr_str("auto_pad", mode.onnx()));
            }
        }
        nodes.push(onnx::NodeProto {
            name: Some(n.name.clone()),
            op_type: Some(n.op.onnx_type().into()),
            input: inputs,
            output: n.outputs.clone(),
            attribute: attrs,
            ..Default::default()
        });
    }
    let graph = onnx::GraphProto {
        name: Some(g.name.clone()),
        node: nodes,
        initializer: initializers,
        input: g
            .inputs
            .iter()
            .map(|i| value_info(i, g.input_dims.get(i).cloned(), g.elem_type(i)))
            .collect(),
        output: g
            .outputs
            .iter()
            .map(|o| value_info(o, output_dims(g, o), g.elem_type(o)))
            .collect(),
        ..Default::default()
    };
    onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("qforge".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// Exports the graph as ONNX to `path`; refuses to overwrite `source` (the model it came from).
pub fn save(g: &Graph, path: &Path, source: Option<&Path>) -> Result<()> {
    save_model(&to_model(g), path, source)
}

/// Writes a built model (see [`to_model`]) to `path`; refuses to overwrite `source`.
pub fn save_model(m: &onnx::ModelProto, path: &Path, source: Option<&Path>) -> Result<()> {
    crate::files::check_output(path, source.as_slice())?;
    crate::files::write_atomic(path, &m.encode_to_vec())
}
