//! Every opset from 6 to the newest onnx 1.23 defines loads, and the forms older opsets give
//! ops run as ONNX defines them there: opset 6's `broadcast` / `axis` on binary ops and its
//! per-channel PRelu, Slice and Pad with attributes (before 10 and 11), Upsample (7 to 9,
//! scales as an attribute before 9), opset 10's Resize. Expected values are written out by
//! hand from ONNX's operator definitions.

use crate::common;

use crate::common::build::{self, float, floats, int, ints, string, Model, FLOAT};
use ndarray::{ArrayD, IxDyn};
use qforge::graph;

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn iota(shape: &[usize]) -> ArrayD<f32> {
    let n = shape.iter().product();
    arr(shape, (0..n).map(|i| i as f32).collect())
}

#[test]
fn every_opset_from_6_to_28_loads_and_others_are_refused_by_name() {
    for opset in 6..=28 {
        let m = Model::new(opset)
            .input("x", FLOAT, &[2, 3])
            .output("y")
            .node("Relu", &["x"], &["y"], vec![]);
        graph::import(&m.bytes(), "m", None).unwrap_or_else(|e| panic!("opset {opset}: {e}"));
    }
    for opset in [1, 5, 29] {
        let m = Model::new(opset)
            .input("x", FLOAT, &[2, 3])
            .output("y")
            .node("Relu", &["x"], &["y"], vec![]);
        let e = graph::import(&m.bytes(), "m", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("opset {opset}")) && e.contains("6..=28"),
            "{e}"
        );
    }
}

#[test]
fn opset_6_broadcast_and_axis_align_the_second_input_at_axis() {
    let Some(gpu) = common::gpu() else { return };
    // A [2, 3, 2] + B [3] along axis 1: B[c] added to every A[n, c, w].
    let m = Model::new(6)
        .input("a", FLOAT, &[2, 3, 2])
        .input("b", FLOAT, &[3])
        .output("y")
        .node(
            "Add",
            &["a", "b"],
            &["y"],
            vec![int("broadcast", 1), int("axis", 1)],
        );
    let a = iota(&[2, 3, 2]);
    let b = arr(&[3], vec![100.0, 200.0, 300.0]);
    let want = arr(
        &[2, 3, 2],
        vec![
            100.0, 101.0, 202.0, 203.0, 304.0, 305.0, 106.0, 107.0, 208.0, 209.0, 310.0, 311.0,
        ],
    );
    let y = build::run(&gpu, &m.bytes(), &[("a", a.clone()), ("b", b.clone())]).unwrap();
    assert_eq!(y[0], want);
    // Without axis, broadcast = 1 aligns the last dims (NumPy's rule).
    let m = Model::new(6)
        .input("a", FLOAT, &[3, 2])
        .input("b", FLOAT, &[2])
        .output("y")
        .node("Mul", &["a", "b"], &["y"], vec![int("broadcast", 1)]);
    let y = build::run(
        &gpu,
        &m.bytes(),
        &[("a", iota(&[3, 2])), ("b", arr(&[2], vec![10.0, -1.0]))],
    )
    .unwrap();
    assert_eq!(y[0], arr(&[3, 2], vec![0.0, -1.0, 20.0, -3.0, 40.0, -5.0]));
    // An axis the ranks do not allow is refused at load.
    let m = Model::new(6)
        .input("a", FLOAT, &[3, 2])
        .input("b", FLOAT, &[2, 2])
        .output("y")
        .node(
            "Add",
            &["a", "b"],
            &["y"],
            vec![int("broadcast", 1), int("axis", 1)],
        );
    let e = graph::import(&m.bytes(), "m", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("axis"), "{e}");
}

#[test]
fn opset_6_prelu_slopes_are_per_channel() {
    let Some(gpu) = common::gpu() else { return };
    let m = Model::new(6)
        .input("x", FLOAT, &[1, 2, 2])
        .init_f32("s", &[2], &[0.5, 2.0])
        .output("y")
        .node("PRelu", &["x", "s"], &["y"], vec![]);
    let x = arr(&[1, 2, 2], vec![-1.0, 1.0, -3.0, 3.0]);
    let y = build::run(&gpu, &m.bytes(), &[("x", x)]).unwrap();
    assert_eq!(y[0], arr(&[1, 2, 2], vec![-0.5, 1.0, -6.0, 3.0]));
}

#[test]
fn slice_and_pad_attributes_before_opsets_10_and_11() {
    let Some(gpu) = common::gpu() else { return };
    let m = Model::new(9).input("x", FLOAT, &[3, 4]).output("y").node(
        "Slice",
        &["x"],
        &["y"],
        vec![
            ints("starts", &[1, 1]),
            ints("ends", &[3, 1000]),
            ints("axes", &[0, 1]),
        ],
    );
    let y = build::run(&gpu, &m.bytes(), &[("x", iota(&[3, 4]))]).unwrap();
    assert_eq!(y[0], arr(&[2, 3], vec![5.0, 6.0, 7.0, 9.0, 10.0, 11.0]));
    let m = Model::new(7).input("x", FLOAT, &[1, 2]).output("y").node(
        "Pad",
        &["x"],
        &["y"],
        vec![
            ints("pads", &[0, 1, 1, 0]),
            float("value", 9.0),
            string("mode", "constant"),
        ],
    );
    let y = build::run(&gpu, &m.bytes(), &[("x", arr(&[1, 2], vec![1.0, 2.0]))]).unwrap();
    assert_eq!(y[0], arr(&[2, 3], vec![9.0, 1.0, 2.0, 9.0, 9.0, 9.0]));
}

#[test]
fn upsample_and_opset_10_resize_repeat_elements() {
    let Some(gpu) = common::gpu() else { return };
    let x = arr(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let want = arr(
        &[1, 1, 4, 6],
        vec![
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0,
            4.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
        ],
    );
    // Opset 7: scales as an attribute.
    let m = Model::new(7)
        .input("x", FLOAT, &[1, 1, 2, 2])
        .output("y")
        .node(
            "Upsample",
            &["x"],
            &["y"],
            vec![
                floats("scales", &[1.0, 1.0, 2.0, 3.0]),
                string("mode", "nearest"),
            ],
        );
    assert_eq!(
        build::run(&gpu, &m.bytes(), &[("x", x.clone())]).unwrap()[0],
        want
    );
    // Opset 9 Upsample and opset 10 Resize: scales as an input.
    for (opset, op) in [(9, "Upsample"), (10, "Resize")] {
        let m = Model::new(opset)
            .input("x", FLOAT, &[1, 1, 2, 2])
            .init_f32("scales", &[4], &[1.0, 1.0, 2.0, 3.0])
            .output("y")
            .node(
                op,
                &["x", "scales"],
                &["y"],
                vec![string("mode", "nearest")],
            );
        let y = build::run(&gpu, &m.bytes(), &[("x", x.clone())]).unwrap();
        assert_eq!(y[0], want, "opset {opset} {op}");
    }
}

#[test]
fn batch_norm_with_per_element_statistics_is_refused_by_name() {
    let m = Model::new(7)
        .input("x", FLOAT, &[1, 2, 2, 2])
        .init_f32("s", &[2], &[1.0, 1.0])
        .init_f32("b", &[2], &[0.0, 0.0])
        .init_f32("m", &[2], &[0.0, 0.0])
        .init_f32("v", &[2], &[1.0, 1.0])
        .output("y")
        .node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![int("spatial", 0)],
        );
    let e = graph::import(&m.bytes(), "m", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("spatial = 0"), "{e}");
}
