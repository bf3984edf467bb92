//! Small ONNX models built in a test: inputs, initializers, nodes with attributes, any opset;
//! and a run of one through the executor with every input at its own shape.

use std::sync::Arc;

use ndarray::ArrayD;
use prost::Message;
use qforge::exec::Runner;
use qforge::gpu::Gpu;
use qforge::graph::onnx;

/// A model under construction.
pub struct Model {
    opset: i64,
    inputs: Vec<onnx::ValueInfoProto>,
    outputs: Vec<String>,
    inits: Vec<onnx::TensorProto>,
    nodes: Vec<onnx::NodeProto>,
}

/// ONNX element type codes.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const INT32: i32 = 6;
pub const BOOL: i32 = 9;

fn value_info(name: &str, elem: i32, dims: &[i64]) -> onnx::ValueInfoProto {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(onnx::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Model {
    /// An empty model at `opset`.
    pub fn new(opset: i64) -> Model {
        Model {
            opset,
            inputs: Vec::new(),
            outputs: Vec::new(),
            inits: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// A runtime input of element type `elem` and fixed dims.
    pub fn input(mut self, name: &str, elem: i32, dims: &[i64]) -> Model {
        self.inputs.push(value_info(name, elem, dims));
        self
    }

    /// A graph output.
    pub fn output(mut self, name: &str) -> Model {
        self.outputs.push(name.into());
        self
    }

    /// An f32 initializer.
    pub fn init_f32(mut self, name: &str, dims: &[i64], data: &[f32]) -> Model {
        self.inits.push(onnx::TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(FLOAT),
            float_data: data.to_vec(),
            ..Default::default()
        });
        self
    }

    /// An i64 initializer.
    pub fn init_i64(mut self, name: &str, dims: &[i64], data: &[i64]) -> Model {
        self.inits.push(onnx::TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(INT64),
            int64_data: data.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A node of the default domain.
    pub fn node(
        mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<onnx::AttributeProto>,
    ) -> Model {
        let k = self.nodes.len();
        self.nodes.push(onnx::NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}_{k}")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    /// The model's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        onnx::ModelProto {
            ir_version: Some(8),
            opset_import: vec![onnx::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(onnx::GraphProto {
                name: Some("built".into()),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self
                    .outputs
                    .iter()
                    .map(|o| onnx::ValueInfoProto {
                        name: Some(o.clone()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// An int attribute.
pub fn int(name: &str, v: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(2),
        ..Default::default()
    }
}

/// A float attribute.
pub fn float(name: &str, v: f32) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        f: Some(v),
        r#type: Some(1),
        ..Default::default()
    }
}

/// An ints attribute.
pub fn ints(name: &str, v: &[i64]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(7),
        ..Default::default()
    }
}

/// A floats attribute.
pub fn floats(name: &str, v: &[f32]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        floats: v.to_vec(),
        r#type: Some(6),
        ..Default::default()
    }
}

/// A string attribute.
pub fn string(name: &str, v: &str) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        s: Some(v.as_bytes().to_vec()),
        r#type: Some(3),
        ..Default::default()
    }
}

/// Imports `bytes` and runs it on the GPU with every input at its own shape (integer and
/// bool inputs as their exact f32 values); the outputs in model order.
pub fn run(
    gpu: &Arc<Gpu>,
    bytes: &[u8],
    inputs: &[(&str, ArrayD<f32>)],
) -> qforge::Result<Vec<ArrayD<f32>>> {
    let g = qforge::graph::import(bytes, "built", None)?;
    let runner = Runner::new(gpu.clone(), g).exact();
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        inputs.iter().map(|(n, x)| (*n, x.view())).collect();
    let mut ys = Vec::new();
    runner.for_each_piece(&views, |plan, part, _| {
        ys = plan.run(part, plan.outputs())?;
        Ok(())
    })?;
    Ok(ys)
}

/// Imports `bytes`, resolves it at the inputs' shapes and runs the CPU reference.
pub fn reference(bytes: &[u8], inputs: &[(&str, ArrayD<f32>)]) -> qforge::Result<Vec<ArrayD<f32>>> {
    let g = qforge::graph::import(bytes, "built", None)?;
    let values = g.value_inputs();
    let mut dims = std::collections::HashMap::new();
    let mut consts = Vec::new();
    let mut data = Vec::new();
    for (n, x) in inputs {
        if values.iter().any(|v| v == n) {
            let c = match g.elem_type(n) {
                qforge::graph::ElemType::F32 => qforge::graph::Const::F32(x.clone()),
                _ => qforge::graph::Const::I64(x.mapv(|v| v as i64)),
            };
            consts.push((n.to_string(), c));
        } else {
            for (d, &v) in g.input_dims[*n].iter().zip(x.shape()) {
                if let qforge::graph::Dim::Named(name) = d {
                    dims.insert(name.clone(), v);
                }
            }
            data.push((*n, x.clone()));
        }
    }
    let mut r = g.clone();
    r.resolve_with(&dims, None, &consts)?;
    qforge::reference::graph::run(&r, &data)
}
