//! The op table of the import: each ONNX node type and its attributes as a typed
//! [`Op`], and the nodes some ONNX nodes expand into (Sum/Mean/Max/Min of many inputs, an
//! inference Dropout's mask).

use std::collections::{BTreeMap, HashMap};

use crate::graph::attrs::{AutoPad, Binary, Conv2d, Pool2d, Reduce, Unary};
use crate::graph::import::{dtype, tensor};
use crate::graph::ir::{Const, ElemType, Node, Op};
use crate::graph::{legacy, onnx};

struct Attrs<'a>(&'a HashMap<&'a str, &'a onnx::AttributeProto>);

impl Attrs<'_> {
    fn int(&self, k: &str, default: i64) -> i64 {
        self.0.get(k).and_then(|a| a.i).unwrap_or(default)
    }
    fn float(&self, k: &str, default: f32) -> f32 {
        self.0.get(k).and_then(|a| a.f).unwrap_or(default)
    }
    fn ints(&self, k: &str) -> Option<Vec<i64>> {
        self.0.get(k).map(|a| a.ints.clone())
    }
    fn string(&self, k: &str, default: &str) -> String {
        self.0
            .get(k)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }
    /// A window attribute of 2-D (or, 1 value, 1-D: run as 1 x n) windows.
    fn pair(&self, k: &str, default: usize) -> std::result::Result<[usize; 2], String> {
        // 1-D windows run as 2-D ones of height 1 (kernel 1, stride 1, dilation 1).
        let one = if k == "output_padding" { 0 } else { 1 };
        match self.ints(k) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) if v.len() == 1 && v[0] >= 0 => Ok([one, v[0] as usize]),
            Some(v) => Err(format!(
                "attribute {k} = {v:?}: qforge runs 1-D and 2-D windows with non-negative values"
            )),
        }
    }
    fn pads(&self) -> std::result::Result<[usize; 4], String> {
        if AutoPad::parse(&self.string("auto_pad", "NOTSET"))?.is_some() {
            // Set from the input's size at resolution.
            return Ok([0; 4]);
        }
        match self.ints("pads") {
            None => Ok([0; 4]),
            // ONNX order: begin_h, begin_w, end_h, end_w.
            Some(v) if v.len() == 4 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize])
            }
            // 1-D: (begin, end) of the width.
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Ok([0, v[0] as usize, 0, v[1] as usize])
            }
            Some(v) => Err(format!(
                "pads = {v:?}: qforge runs 1-D and 2-D windows with non-negative pads"
            )),
        }
    }
}

/// The typed op for an ONNX node; `Ok(None)` for an op qforge does not run.
pub(crate) fn to_op(
    op_type: &str,
    attrs: &HashMap<&str, &onnx::AttributeProto>,
    opset: i64,
    n_inputs: usize,
) -> std::result::Result<Option<Op>, String> {
    let a = Attrs(attrs);
    let conv = || -> std::result::Result<Conv2d, String> {
        Ok(Conv2d {
            strides: a.pair("strides", 1)?,
            pads: a.pads()?,
            dilations: a.pair("dilations", 1)?,
            groups: a.int("group", 1).max(1) as usize,
        })
    };
    let pool = || -> std::result::Result<Pool2d, String> {
        let kernel = a.pair("kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err("kernel_shape must be 1 or 2 positive values".into());
        }
        Ok(Pool2d {
            kernel,
            strides: a.pair("strides", 1)?,
            pads: a.pads()?,
            dilations: a.pair("dilations", 1)?,
            ceil_mode: a.int("ceil_mode", 0) != 0,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        })
    };
    let axes = || a.ints("axes").unwrap_or_default();
    Ok(Some(match op_type {
        "Conv" => Op::Conv(conv()?),
        "ConvTranspose" => {
            let output_shape = a.ints("output_shape").unwrap_or_default();
            if output_shape.len() > 2 || output_shape.iter().any(|&d| d <= 0) {
                return Err(format!(
                    "ConvTranspose output_shape = {output_shape:?}: 1 or 2 positive spatial sizes"
                ));
            }
            Op::ConvTranspose {
                conv: conv()?,
                output_padding: a.pair("output_padding", 0)?,
                output_shape: output_shape.iter().map(|&d| d as usize).collect(),
            }
        }
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        },
        "MatMul" => Op::MatMul,
        "BatchNormalization" => {
            if a.int("training_mode", 0) != 0 {
                return Err("training_mode BatchNormalization is not supported".into());
            }
            Op::BatchNorm {
                epsilon: a.float("epsilon", 1e-5),
            }
        }
        "Relu" => Op::Unary(Unary::Relu),
        // Opset < 11 Clip has min/max attributes; later ones take inputs (resolved at load).
        "Clip" => Op::Unary(Unary::Clip(
            a.float("min", f32::MIN),
            a.float("max", f32::MAX),
        )),
        "LeakyRelu" => Op::Unary(Unary::LeakyRelu(a.float("alpha", 0.01))),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "HardSigmoid" => Op::Unary(Unary::HardSigmoid(
            a.float("alpha", 0.2),
            a.float("beta", 0.5),
        )),
        "HardSwish" => Op::Unary(Unary::HardSwish),
        "Einsum" => Op::Einsum {
            equation: a.string("equation", ""),
        },
        "Tanh" => Op::Unary(Unary::Tanh),
        "Erf" => Op::Unary(Unary::Erf),
        "Gelu" if a.string("approximate", "none") == "none" => Op::Unary(Unary::Gelu),
        "Gelu" if a.string("approximate", "none") == "tanh" => Op::Unary(Unary::GeluTanh),
        "DepthToSpace" | "SpaceToDepth" => {
            let b = a.int("blocksize", 0);
            if b < 1 {
                return Err(format!("{op_type}: blocksize = {b}"));
            }
            let mode = a.string("mode", "DCR");
            if op_type == "DepthToSpace" {
                Op::DepthToSpace {
                    blocksize: b as usize,
                    crd: match mode.as_str() {
                        "DCR" => false,
                        "CRD" => true,
                        m => return Err(format!("DepthToSpace mode '{m}'")),
                    },
                }
            } else {
                if mode != "DCR" {
                    return Err(format!(
                        "SpaceToDepth mode '{mode}' is not supported (DCR only)"
                    ));
                }
                Op::SpaceToDepth {
                    blocksize: b as usize,
                }
            }
        }
        "Trilu" => Op::Trilu {
            upper: a.int("upper", 1) != 0,
        },
        "ScatterND" => {
            let r = a.string("reduction", "none");
            if !matches!(r.as_str(), "none" | "add" | "mul" | "max" | "min") {
                return Err(format!("ScatterND reduction '{r}'"));
            }
            Op::ScatterNd { reduction: r }
        }
        "Exp" => Op::Unary(Unary::Exp),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Neg" => Op::Unary(Unary::Neg),
        "Abs" => Op::Unary(Unary::Abs),
        "Sign" => Op::Unary(Unary::Sign),
        "Floor" => Op::Unary(Unary::Floor),
        "Ceil" => Op::Unary(Unary::Ceil),
        "Round" => Op::Unary(Unary::Round),
        "Reciprocal" => Op::Unary(Unary::Reciprocal),
        "Log" => Op::Unary(Unary::Log),
        "Softplus" => Op::Unary(Unary::Softplus),
        "Softsign" => Op::Unary(Unary::Softsign),
        "Elu" => Op::Unary(Unary::Elu(a.float("alpha", 1.0))),
        "Selu" => Op::Unary(Unary::Selu(
            a.float("alpha", 1.673_263_2),
            a.float("gamma", 1.050_701),
        )),
        "Celu" => {
            let alpha = a.float("alpha", 1.0);
            if alpha == 0.0 {
                return Err("Celu: alpha = 0 divides by zero".into());
            }
            Op::Unary(Unary::Celu(alpha))
        }
        "Mish" => Op::Unary(Unary::Mish),
        "Shrink" => Op::Unary(Unary::Shrink(a.float("bias", 0.0), a.float("lambd", 0.5))),
        "ThresholdedRelu" => Op::Unary(Unary::ThresholdedRelu(a.float("alpha", 1.0))),
        "Not" => Op::Unary(Unary::Not),
        "IsNaN" => Op::Unary(Unary::IsNaN),
        "IsInf" => Op::Unary(Unary::IsInf {
            positive: a.int("detect_positive", 1) != 0,
            negative: a.int("detect_negative", 1) != 0,
        }),
        "Sin" => Op::Unary(Unary::Sin),
        "Cos" => Op::Unary(Unary::Cos),
        "Equal" => Op::Binary(Binary::Equal),
        "Less" => Op::Binary(Binary::Less),
        "Greater" => Op::Binary(Binary::Greater),
        "LessOrEqual" => Op::Binary(Binary::LessOrEqual),
        "GreaterOrEqual" => Op::Binary(Binary::GreaterOrEqual),
        "And" => Op::Binary(Binary::And),
        "Or" => Op::Binary(Binary::Or),
        "Xor" => Op::Binary(Binary::Xor),
        "Mod" => Op::Binary(Binary::Mod {
            fmod: a.int("fmod", 0) != 0,
        }),
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "PRelu" => Op::Binary(Binary::PRelu),
        "Pow" => Op::Binary(Binary::Pow),
        "Max" if n_inputs == 2 => Op::Binary(Binary::Max),
        "Min" if n_inputs == 2 => Op::Binary(Binary::Min),
        "MaxPool" => {
            if a.int("storage_order", 0) != 0 {
                return Err("MaxPool storage_order = 1 is not supported".into());
            }
            Op::MaxPool(pool()?)
        }
        "AveragePool" => Op::AveragePool(pool()?),
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "LRN" => {
            let size = a.int("size", 0);
            if size < 1 {
                return Err(format!("LRN: size = {size}, must be at least 1"));
            }
            Op::Lrn {
                size: size as usize,
                alpha: a.float("alpha", 1e-4),
                beta: a.float("beta", 0.75),
                bias: a.float("bias", 1.0),
            }
        }
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1),
        },
        "Reshape" => Op::Reshape {
            allow_zero: a.int("allowzero", 0) != 0,
        },
        "Transpose" => Op::Transpose {
            perm: a
                .ints("perm")
                .unwrap_or_default()
                .iter()
                .map(|&p| p as usize)
                .collect(),
        },
        "Concat" => Op::Concat {
            axis: a.int("axis", 0),
        },
        "Split" => Op::Split {
            axis: a.int("axis", 0),
            split: a
                .ints("split")
                .unwrap_or_default()
                .iter()
                .map(|&s| s.max(0) as usize)
                .collect(),
        },
        "Slice" => Op::Slice,
        "Pad" => Op::Pad {
            mode: a.string("mode", "constant"),
            value: 0.0,
        },
        "Upsample" => legacy::upsample(&a.string("mode", "nearest"))?,
        "Resize" if opset < 11 => legacy::upsample(&a.string("mode", "nearest"))?,
        "Resize"
            if !matches!(
                a.string("keep_aspect_ratio_policy", "stretch").as_str(),
                "stretch" | "not_larger" | "not_smaller"
            ) =>
        {
            return Err(format!(
                "Resize keep_aspect_ratio_policy = {}",
                a.string("keep_aspect_ratio_policy", "stretch")
            ))
        }
        "Resize" => Op::Resize {
            mode: a.string("mode", "nearest"),
            coordinate_transformation: a.string("coordinate_transformation_mode", "half_pixel"),
            nearest_mode: a.string("nearest_mode", "round_prefer_floor"),
            axes: axes(),
            keep_aspect: a.string("keep_aspect_ratio_policy", "stretch"),
            cubic_coeff_a: a.float("cubic_coeff_a", -0.75),
            exclude_outside: a.int("exclude_outside", 0) != 0,
            antialias: a.int("antialias", 0) != 0,
            extrapolation_value: a.float("extrapolation_value", 0.0),
        },
        "Softmax" => Op::Softmax {
            axis: a.int("axis", if opset < 13 { 1 } else { -1 }),
            legacy: opset < 13,
        },
        "ReduceMean"
            if a.int("noop_with_empty_axes", 0) != 0 && n_inputs < 2 && axes().is_empty() =>
        {
            Op::Identity
        }
        "ReduceMean" => Op::ReduceMean {
            axes: axes(),
            keepdims: a.int("keepdims", 1) != 0,
        },
        t if Reduce::from_onnx(t).is_some() => Op::Reduce {
            op: Reduce::from_onnx(t).expect("checked"),
            axes: axes(),
            keepdims: a.int("keepdims", 1) != 0,
            noop_empty: a.int("noop_with_empty_axes", 0) != 0,
        },
        "ArgMax" | "ArgMin" => Op::Arg {
            min: op_type == "ArgMin",
            axis: a.int("axis", 0),
            keepdims: a.int("keepdims", 1) != 0,
            last: a.int("select_last_index", 0) != 0,
        },
        "LogSoftmax" => Op::LogSoftmax {
            axis: a.int("axis", if opset < 13 { 1 } else { -1 }),
            legacy: opset < 13,
        },
        "Hardmax" => Op::Hardmax {
            axis: a.int("axis", if opset < 13 { 1 } else { -1 }),
            legacy: opset < 13,
        },
        "TopK" => Op::TopK {
            axis: a.int("axis", -1),
            largest: a.int("largest", 1) != 0,
        },
        "CumSum" => Op::CumSum {
            exclusive: a.int("exclusive", 0) != 0,
            reverse: a.int("reverse", 0) != 0,
        },
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "LayerNormalization" => Op::LayerNorm {
            axis: a.int("axis", -1),
            epsilon: a.float("epsilon", 1e-5),
        },
        "InstanceNormalization" => Op::InstanceNorm {
            epsilon: a.float("epsilon", 1e-5),
        },
        "GroupNormalization" => {
            let groups = a.int("num_groups", 0);
            if groups < 1 {
                return Err(format!("GroupNormalization: num_groups = {groups}"));
            }
            Op::GroupNorm {
                groups: groups as usize,
                epsilon: a.float("epsilon", 1e-5),
            }
        }
        "MeanVarianceNormalization" => Op::MeanVarianceNorm {
            axes: a.ints("axes").unwrap_or_else(|| vec![0, 2, 3]),
        },
        "Squeeze" => Op::Squeeze { axes: axes() },
        "Unsqueeze" => Op::Unsqueeze { axes: axes() },
        "Identity" => Op::Identity,
        "Dropout" => Op::Dropout,
        "Shape" => Op::Shape {
            start: a.int("start", 0),
            end: attrs.get("end").and_then(|v| v.i),
        },
        "Size" => Op::Size,
        "Range" => Op::Range,
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "Where" => Op::Where,
        "CastLike" => Op::CastLike,
        "Gather" => Op::Gather {
            axis: a.int("axis", 0),
        },
        "GatherElements" => Op::GatherElements {
            axis: a.int("axis", 0),
        },
        "Cast" => {
            let to = a.int("to", dtype::FLOAT as i64) as i32;
            // float16, float64 and bfloat16 values inside a graph are computed in f32.
            if ElemType::from_onnx(to).is_none() && !matches!(to, 10 | 11 | 16) {
                return Err(format!(
                    "Cast to {} is not supported",
                    ElemType::onnx_name(to)
                ));
            }
            Op::Cast { to }
        }
        "ConstantOfShape" => {
            let value = match attrs.get("value").and_then(|v| v.t.as_ref()) {
                Some(t) => {
                    let c = tensor(t, None)?;
                    if c.shape().iter().product::<usize>() != 1 {
                        return Err("ConstantOfShape's value must hold one element".into());
                    }
                    let elem = ElemType::from_onnx(t.data_type.unwrap_or(1)).ok_or_else(|| {
                        format!(
                            "ConstantOfShape of {} is not supported",
                            ElemType::onnx_name(t.data_type.unwrap_or(0))
                        )
                    })?;
                    let value = match c {
                        Const::F32(a) => Const::F32(
                            ndarray::arr0(a.iter().copied().next().unwrap_or(0.0)).into_dyn(),
                        ),
                        Const::I64(a) => Const::I64(
                            ndarray::arr0(a.iter().copied().next().unwrap_or(0)).into_dyn(),
                        ),
                    };
                    (value, elem)
                }
                None => (Const::F32(ndarray::arr0(0.0f32).into_dyn()), ElemType::F32),
            };
            Op::ConstantOfShape {
                value: value.0,
                elem: value.1,
            }
        }
        _ => return Ok(None),
    }))
}

/// An inference Dropout's mask output (every element kept) as nodes of its own that fold
/// at load: `ConstantOfShape(Shape(x), true)`.
pub(crate) fn dropout_mask(node: &mut Node) -> Vec<Node> {
    if node.op != Op::Dropout
        || node.inputs.is_empty()
        || node.outputs.get(1).is_none_or(|m| m.is_empty())
    {
        return Vec::new();
    }
    let mask = node.outputs.remove(1);
    node.outputs.truncate(1);
    let shape = format!("{}/mask_shape", node.name);
    vec![
        Node {
            name: format!("{}/shape", node.name),
            op: Op::Shape {
                start: 0,
                end: None,
            },
            inputs: vec![node.inputs[0].clone()],
            outputs: vec![shape.clone()],
        },
        Node {
            name: format!("{}/mask", node.name),
            op: Op::ConstantOfShape {
                value: Const::I64(ndarray::arr0(1i64).into_dyn()),
                elem: ElemType::Bool,
            },
            inputs: vec![shape],
            outputs: vec![mask],
        },
    ]
}

/// Sum, Mean, Max and Min of any number of inputs as a chain of broadcasting binary nodes
/// (Mean then scaled by 1 / n; one input is its own result). `None` for other ops and for the
/// two-input Max/Min the op table maps directly.
pub(crate) fn variadic(
    op_type: &str,
    name: &str,
    inputs: &[String],
    outputs: &[String],
    consts: &mut BTreeMap<String, Const>,
) -> Option<Vec<Node>> {
    let op = match op_type {
        "Sum" | "Mean" => Binary::Add,
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        _ => return None,
    };
    let inputs: Vec<&String> = inputs.iter().filter(|i| !i.is_empty()).collect();
    let out = outputs.first()?;
    if inputs.is_empty() || (inputs.len() == 2 && op_type != "Sum" && op_type != "Mean") {
        return None;
    }
    let mean = op_type == "Mean" && inputs.len() > 1;
    let mut nodes = Vec::new();
    let mut acc = inputs[0].clone();
    let steps = inputs.len() - 1;
    for (k, next) in inputs[1..].iter().enumerate() {
        let last = k + 1 == steps && !mean;
        let y = if last {
            out.clone()
        } else {
            format!("{out}/{op_type}_{k}")
        };
        nodes.push(Node {
            name: format!("{name}/{k}"),
            op: Op::Binary(op),
            inputs: vec![acc, (*next).clone()],
            outputs: vec![y.clone()],
        });
        acc = y;
    }
    if mean {
        let scale = format!("{out}/Mean_scale");
        consts.insert(
            scale.clone(),
            Const::F32(ndarray::arr0(1.0 / inputs.len() as f32).into_dyn()),
        );
        nodes.push(Node {
            name: format!("{name}/scale"),
            op: Op::Binary(Binary::Mul),
            inputs: vec![acc.clone(), scale],
            outputs: vec![out.clone()],
        });
    }
    if nodes.is_empty() {
        nodes.push(Node {
            name: name.to_string(),
            op: Op::Identity,
            inputs: vec![acc],
            outputs: vec![out.clone()],
        });
    }
    Some(nodes)
}
