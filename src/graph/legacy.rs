//! Old-opset forms as today's ops, at import: attributes that later opsets take as inputs
//! become constant inputs (Slice before 10, Pad before 11, Upsample's scales before 9),
//! Upsample and opset 10's Resize become today's Resize, and opset 6's `broadcast` / `axis` on
//! binary ops and its per-channel PRelu slope become an Unsqueeze of the second input. What
//! has no equivalent is refused by name.

use std::collections::{BTreeMap, HashMap};

use ndarray::{ArrayD, IxDyn};

use crate::graph::ir::{Const, Node, Op};
use crate::graph::onnx;

/// An import node's attributes by name.
pub type Attrs<'a> = HashMap<&'a str, &'a onnx::AttributeProto>;

fn ints_const(v: &[i64]) -> Const {
    Const::I64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-D"))
}

fn floats_const(v: &[f32]) -> Const {
    Const::F32(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-D"))
}

/// Adds a constant named after the node; returns its name.
fn add_const(consts: &mut BTreeMap<String, Const>, node: &str, what: &str, c: Const) -> String {
    let mut name = format!("{node}/{what}");
    let mut k = 1;
    while consts.contains_key(&name) {
        name = format!("{node}/{what}_{k}");
        k += 1;
    }
    consts.insert(name.clone(), c);
    name
}

/// Binary ops that carried `broadcast` and `axis` attributes before opset 7.
const LEGACY_BROADCAST: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
];

/// Rewrites `node` (already typed) from its opset's form to today's: its inputs may change,
/// constants may be added, nodes may be returned to run before it. `ranks` are its inputs'
/// ranks where the import knows them (constants, declared inputs, value_info).
pub fn rewrite(
    op_type: &str,
    attrs: &Attrs<'_>,
    opset: i64,
    node: &mut Node,
    consts: &mut BTreeMap<String, Const>,
    ranks: &[Option<usize>],
) -> Result<Vec<Node>, String> {
    let ints = |k: &str| attrs.get(k).map(|a| a.ints.clone());
    let mut before = Vec::new();
    match op_type {
        t if opset < 7 && LEGACY_BROADCAST.contains(&t) => {
            let broadcast = attrs.get("broadcast").and_then(|a| a.i).unwrap_or(0);
            if broadcast != 0 {
                if let (Some(axis), 2) = (attrs.get("axis").and_then(|a| a.i), node.inputs.len()) {
                    // B's dims line up with A's from `axis`: trailing ones make NumPy's
                    // broadcasting (which aligns the last dims) do the same.
                    let (a, b) = (&node.inputs[0], &node.inputs[1]);
                    let rank = |i: usize| ranks.get(i).copied().flatten();
                    let (ra, rb) = match (rank(0), rank(1)) {
                        (Some(ra), Some(rb)) => (ra, rb),
                        _ => {
                            return Err(format!(
                                "opset {opset} broadcast with axis = {axis} needs the ranks of \
                                 '{a}' and '{b}' (declare them in value_info)"
                            ))
                        }
                    };
                    let axis = if axis < 0 { axis + ra as i64 } else { axis };
                    if axis < 0 || axis as usize + rb > ra {
                        return Err(format!(
                            "broadcast axis {axis} does not fit rank {rb} into rank {ra}"
                        ));
                    }
                    let trailing = ra - axis as usize - rb;
                    if trailing > 0 {
                        let axes: Vec<i64> = (rb..rb + trailing).map(|d| d as i64).collect();
                        let out = format!("{}/aligned", node.name);
                        before.push(Node {
                            name: format!("{}/align", node.name),
                            op: Op::Unsqueeze { axes },
                            inputs: vec![b.clone()],
                            outputs: vec![out.clone()],
                        });
                        node.inputs[1] = out;
                    }
                }
            }
        }
        "PRelu" if opset < 7 => {
            // Before opset 7 a 1-D slope holds one value per channel (dim 1).
            let rank = |i: usize| ranks.get(i).copied().flatten();
            if let (Some(rx), Some(1), 2) = (rank(0), rank(1), node.inputs.len()) {
                if rx > 2 {
                    let axes: Vec<i64> = (1..rx as i64 - 1).collect();
                    let out = format!("{}/per_channel", node.name);
                    before.push(Node {
                        name: format!("{}/channels", node.name),
                        op: Op::Unsqueeze { axes },
                        inputs: vec![node.inputs[1].clone()],
                        outputs: vec![out.clone()],
                    });
                    node.inputs[1] = out;
                }
            }
        }
        "Slice" | "Pad" | "Upsample" | "Resize" | "TopK" if node.inputs.is_empty() => {
            return Err(format!("{op_type} needs an input"));
        }
        "Slice" if opset < 10 => {
            let starts = ints("starts").ok_or("Slice needs starts")?;
            let ends = ints("ends").ok_or("Slice needs ends")?;
            let mut inputs = vec![
                node.inputs[0].clone(),
                add_const(consts, &node.name, "starts", ints_const(&starts)),
                add_const(consts, &node.name, "ends", ints_const(&ends)),
            ];
            if let Some(axes) = ints("axes") {
                inputs.push(add_const(consts, &node.name, "axes", ints_const(&axes)));
            }
            node.inputs = inputs;
        }
        "Pad" if opset < 11 => {
            let pads = ints("pads")
                .or_else(|| ints("paddings"))
                .ok_or("Pad needs pads")?;
            let value = attrs.get("value").and_then(|a| a.f).unwrap_or(0.0);
            node.inputs = vec![
                node.inputs[0].clone(),
                add_const(consts, &node.name, "pads", ints_const(&pads)),
                add_const(
                    consts,
                    &node.name,
                    "value",
                    Const::F32(ArrayD::from_elem(IxDyn(&[]), value)),
                ),
            ];
        }
        "Upsample" => {
            let scales = if opset < 9 {
                let s = attrs
                    .get("scales")
                    .map(|a| a.floats.clone())
                    .ok_or("Upsample needs scales")?;
                add_const(consts, &node.name, "scales", floats_const(&s))
            } else {
                node.inputs.get(1).cloned().ok_or("Upsample needs scales")?
            };
            node.inputs = vec![node.inputs[0].clone(), String::new(), scales];
        }
        "TopK" if opset < 10 => {
            let k = attrs.get("k").and_then(|a| a.i).ok_or("TopK needs k")?;
            node.inputs = vec![
                node.inputs[0].clone(),
                add_const(consts, &node.name, "k", ints_const(&[k])),
            ];
        }
        "Resize" if opset < 11 => {
            let scales = node.inputs.get(1).cloned().ok_or("Resize needs scales")?;
            node.inputs = vec![node.inputs[0].clone(), String::new(), scales];
        }
        "BatchNormalization"
            if opset < 9 && attrs.get("spatial").and_then(|a| a.i).unwrap_or(1) == 0 =>
        {
            return Err(
                "BatchNormalization spatial = 0 (statistics per element) is not supported".into(),
            );
        }
        _ => {}
    }
    Ok(before)
}

/// Upsample's and opset 10 Resize's modes as today's Resize (asymmetric coordinates, nearest
/// neighbours by floor: an integer scale repeats each element).
pub fn upsample(mode: &str) -> Result<Op, String> {
    let mode = match mode {
        "nearest" => "nearest",
        "linear" | "bilinear" => "linear",
        other => return Err(format!("Upsample mode '{other}' is not supported")),
    };
    Ok(Op::Resize {
        mode: mode.into(),
        coordinate_transformation: "asymmetric".into(),
        nearest_mode: "floor".into(),
        axes: Vec::new(),
        keep_aspect: "stretch".into(),
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        antialias: false,
        extrapolation_value: 0.0,
    })
}
