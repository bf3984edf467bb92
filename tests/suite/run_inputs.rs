//! `run` with one .npy per input: inputs by name in their declared types, named dims bound
//! from every input (a dim without a name is the input's own), outputs written in their
//! element types, value inputs (a Reshape's shape given at run time) bound as constants.

use crate::common;

use crate::common::build::{int, Model, FLOAT, INT64};
use ndarray::{ArrayD, IxDyn};
use qforge::data::npy::{self, Npy};
use qforge::jobs::run::{run, RunInput, RunJob};

#[test]
fn several_inputs_typed_outputs_and_value_inputs() {
    let Some(_) = common::gpu() else { return };
    let dir = common::Scratch::new("run-inputs");
    let d = dir.path();
    // y = reshape(a + b, shape); idx = argmax(a + b, axis 1) as int64.
    let m = Model::new(17)
        .input("a", FLOAT, &[2, 3])
        .input("b", FLOAT, &[3])
        .input("shape", INT64, &[2])
        .output("y")
        .output("idx")
        .node("Add", &["a", "b"], &["s"], vec![])
        .node("Reshape", &["s", "shape"], &["y"], vec![])
        .node(
            "ArgMax",
            &["s"],
            &["idx"],
            vec![int("axis", 1), int("keepdims", 0)],
        );
    std::fs::write(d.join("m.onnx"), m.bytes()).unwrap();
    let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 5.0, 2.0, 0.0, -1.0, 3.0]).unwrap();
    let b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.5f32, 0.0, 1.0]).unwrap();
    let shape = ArrayD::from_shape_vec(IxDyn(&[2]), vec![3i64, 2]).unwrap();
    npy::write(&d.join("a.npy"), &a).unwrap();
    npy::write(&d.join("b.npy"), &b).unwrap();
    npy::write_any(&d.join("shape.npy"), &Npy::I64(shape)).unwrap();
    let r = run(&RunJob {
        model: d.join("m.onnx"),
        input: RunInput::Npy(vec![
            (Some("a".into()), d.join("a.npy")),
            (Some("b".into()), d.join("b.npy")),
            (Some("shape".into()), d.join("shape.npy")),
        ]),
        output: None,
        outputs: Some(d.join("out")),
        profile: true,
    })
    .unwrap();
    assert_eq!(r.outputs.len(), 2);
    assert!(
        r.profile.iter().any(|(k, s)| k == "binary_op" && *s > 0.0),
        "{:?}",
        r.profile
    );
    assert!(
        r.profile.windows(2).all(|w| w[0].1 >= w[1].1),
        "slowest first"
    );
    let y = npy::read_any(&d.join("out/y.npy")).unwrap();
    let want = vec![1.5f32, 5.0, 3.0, 0.5, -1.0, 4.0];
    assert_eq!(
        y,
        Npy::F32(ArrayD::from_shape_vec(IxDyn(&[3, 2]), want).unwrap())
    );
    let idx = npy::read_any(&d.join("out/idx.npy")).unwrap();
    assert_eq!(
        idx,
        Npy::I64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1, 2]).unwrap())
    );
}

#[test]
fn unnamed_dims_belong_to_their_input() {
    let Some(_) = common::gpu() else { return };
    let dir = common::Scratch::new("run-dims");
    let d = dir.path();
    // Two inputs whose dim 1 is unnamed: each binds its own size (a [2, 3] and b [2, 5]).
    let mut m = Model::new(17)
        .input("a", FLOAT, &[2, 3])
        .input("b", FLOAT, &[2, 5])
        .output("y")
        .node("Concat", &["a", "b"], &["y"], vec![int("axis", 1)])
        .bytes();
    // Clear dim 1 of both inputs (no value, no name), as exporters write `?`.
    use prost::Message;
    let mut proto = qforge::graph::onnx::ModelProto::decode(&m[..]).unwrap();
    for vi in &mut proto.graph.as_mut().unwrap().input {
        if let Some(qforge::graph::onnx::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[1].value = None;
        }
    }
    m = proto.encode_to_vec();
    std::fs::write(d.join("m.onnx"), &m).unwrap();
    npy::write(&d.join("a.npy"), &ArrayD::zeros(IxDyn(&[2, 3]))).unwrap();
    npy::write(&d.join("b.npy"), &ArrayD::ones(IxDyn(&[2, 5]))).unwrap();
    let r = run(&RunJob {
        model: d.join("m.onnx"),
        input: RunInput::Npy(vec![
            (Some("a".into()), d.join("a.npy")),
            (Some("b".into()), d.join("b.npy")),
        ]),
        output: None,
        outputs: None,
        profile: false,
    })
    .unwrap();
    assert_eq!(r.outputs[0].1.shape(), &[2, 8]);
    let g = qforge::graph::import(&m, "m", None).unwrap();
    assert_eq!(
        g.input_dims["a"][1],
        qforge::graph::Dim::Named("a[1]".into()),
        "an unnamed dim is its input's own"
    );
}
