//! The ONNX ops beyond the CNN set, elementwise and selection (comparisons and logic, Mod,
//! integer Div, Cast, Where, Gather and GatherElements with runtime indices, Expand, Tile,
//! folded Range / Size / Shape / ConstantOfShape): each built as a one-node model, run on the
//! GPU and by the CPU reference (`reference::graph`) on seeded inputs over the op's whole
//! domain (negatives, zeros of both signs, NaN, infinities, subnormals and huge values where
//! the op takes floats), compared bit for bit where the arithmetic is the same and within a
//! stated tolerance where it is not. ONNX's own expected values for these ops are checked by
//! tests/conformance.rs; tests/onnx_rows.rs and tests/onnx_layout.rs hold the other ops.

use crate::common;

use crate::common::build::{self, int, Model, BOOL, FLOAT, INT32, INT64};
use crate::common::ops::*;
use ndarray::{ArrayD, IxDyn};

#[test]
fn comparisons_and_logic_over_the_whole_float_domain() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(1);
    for op in ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"] {
        // Broadcast [5, 1, 7] against [4, 1].
        let (sa, sb) = ([5usize, 1, 7], [4usize, 1]);
        let m = Model::new(17)
            .input("a", FLOAT, &dims(&sa))
            .input("b", FLOAT, &dims(&sb))
            .output("y")
            .node(op, &["a", "b"], &["y"], vec![]);
        let a = arr(&sa, floats(&mut rng, 35));
        let b = arr(&sb, floats(&mut rng, 4));
        let y = same_bits(op, &m, &[("a", a), ("b", b)]);
        assert!(y[0].iter().all(|&v| v == 0.0 || v == 1.0), "{op}: bools");
    }
    for op in ["And", "Or", "Xor"] {
        let m = Model::new(17)
            .input("a", BOOL, &[3, 4])
            .input("b", BOOL, &[4])
            .output("y")
            .node(op, &["a", "b"], &["y"], vec![]);
        let a = arr(&[3, 4], integers(&mut rng, 12, 0, 2));
        let b = arr(&[4], integers(&mut rng, 4, 0, 2));
        same_bits(op, &m, &[("a", a), ("b", b)]);
    }
    for (op, attrs) in [
        ("Not", vec![]),
        ("IsNaN", vec![]),
        ("IsInf", vec![]),
        ("IsInf", vec![int("detect_negative", 0)]),
        ("IsInf", vec![int("detect_positive", 0)]),
    ] {
        let elem = if op == "Not" { BOOL } else { FLOAT };
        let m = Model::new(20)
            .input("x", elem, &[300])
            .output("y")
            .node(op, &["x"], &["y"], attrs);
        let x = if op == "Not" {
            integers(&mut rng, 300, 0, 2)
        } else {
            floats(&mut rng, 300)
        };
        same_bits(op, &m, &[("x", arr(&[300], x))]);
    }
}

#[test]
fn mod_and_integer_div_follow_onnx() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(2);
    // Integers: Div toward zero, Mod with the divisor's sign (fmod = 0) or the dividend's.
    for (op, fmod) in [("Div", None), ("Mod", Some(0)), ("Mod", Some(1))] {
        let m = Model::new(13)
            .input("a", INT32, &[64])
            .input("b", INT32, &[64])
            .output("y")
            .node(
                op,
                &["a", "b"],
                &["y"],
                fmod.map(|f| int("fmod", f)).into_iter().collect(),
            );
        let a = integers(&mut rng, 64, -1000, 1000);
        let b: Vec<f32> = integers(&mut rng, 64, -9, 9)
            .into_iter()
            .map(|v| if v == 0.0 { 7.0 } else { v })
            .collect();
        let y = same_bits(
            op,
            &m,
            &[("a", arr(&[64], a.clone())), ("b", arr(&[64], b.clone()))],
        );
        for ((&p, &q), &r) in a.iter().zip(&b).zip(y[0].iter()) {
            let (p, q) = (p as i64, q as i64);
            let want = match fmod {
                None => p / q,
                Some(1) => p % q,
                _ => p.rem_euclid(q) + if q < 0 && p.rem_euclid(q) != 0 { q } else { 0 },
            };
            assert_eq!(r as i64, want, "{op} {fmod:?} of {p} and {q}");
        }
    }
    // Floats, fmod = 1 and 0, over the whole domain (zeros, infinities, NaN).
    for f in [0, 1] {
        let m = Model::new(13)
            .input("a", FLOAT, &[200])
            .input("b", FLOAT, &[200])
            .output("y")
            .node("Mod", &["a", "b"], &["y"], vec![int("fmod", f)]);
        let a = arr(&[200], floats(&mut rng, 200));
        let b = arr(&[200], floats(&mut rng, 200));
        same_bits("Mod float", &m, &[("a", a), ("b", b)]);
    }
    // A float Div stays a float division.
    let m = Model::new(13)
        .input("a", FLOAT, &[2])
        .input("b", FLOAT, &[2])
        .output("y")
        .node("Div", &["a", "b"], &["y"], vec![]);
    let y = build::run(
        &gpu,
        &m.bytes(),
        &[
            ("a", arr(&[2], vec![-3.0, 7.0])),
            ("b", arr(&[2], vec![2.0, 2.0])),
        ],
    )
    .unwrap();
    assert_eq!(y[0].as_slice().unwrap(), &[-1.5, 3.5]);
}

#[test]
fn cast_and_cast_like_between_carried_types() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(3);
    let x = arr(&[500], floats(&mut rng, 500));
    // NaN and infinities cast to integers are undefined in ONNX: keep to finite values there.
    let finite = x.mapv(|v| {
        if v.is_finite() {
            v.clamp(-1e6, 1e6)
        } else {
            2.5
        }
    });
    for (to, input) in [(7, &finite), (6, &finite), (9, &x), (1, &x)] {
        let m = Model::new(19).input("x", FLOAT, &[500]).output("y").node(
            "Cast",
            &["x"],
            &["y"],
            vec![int("to", to)],
        );
        same_bits(&format!("Cast to {to}"), &m, &[("x", input.clone())]);
    }
    let m = Model::new(19)
        .input("x", FLOAT, &[4])
        .input("like", INT64, &[1])
        .output("y")
        .node("CastLike", &["x", "like"], &["y"], vec![]);
    let y = build::run(
        &gpu,
        &m.bytes(),
        &[
            ("x", arr(&[4], vec![-2.7, -0.5, 0.5, 2.7])),
            ("like", arr(&[1], vec![0.0])),
        ],
    )
    .unwrap();
    assert_eq!(y[0].as_slice().unwrap(), &[-2.0, 0.0, 0.0, 2.0]);
    let g = qforge::graph::import(&m.bytes(), "m", None).unwrap();
    assert_eq!(g.value_types()["y"], qforge::graph::ElemType::I64);
}

#[test]
fn where_broadcasts_three_ways() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(4);
    for (sc, sa, sb) in [
        (vec![3, 1, 5], vec![1, 4, 1], vec![5]),
        (vec![1], vec![2, 3], vec![2, 1]),
        (vec![7, 9], vec![7, 9], vec![7, 9]),
    ] {
        let m = Model::new(16)
            .input("c", BOOL, &dims(&sc))
            .input("a", FLOAT, &dims(&sa))
            .input("b", FLOAT, &dims(&sb))
            .output("y")
            .node("Where", &["c", "a", "b"], &["y"], vec![]);
        let n = |s: &[usize]| s.iter().product::<usize>();
        same_bits(
            "Where",
            &m,
            &[
                ("c", arr(&sc, integers(&mut rng, n(&sc), 0, 2))),
                ("a", arr(&sa, floats(&mut rng, n(&sa)))),
                ("b", arr(&sb, floats(&mut rng, n(&sb)))),
            ],
        );
    }
}

#[test]
fn gather_with_runtime_indices_in_and_out_of_range() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(5);
    for (shape, axis, idx_shape) in [
        (vec![10, 3], 0i64, vec![4, 2]),
        (vec![2, 7, 3], 1, vec![5]),
        (vec![2, 3, 6], -1, vec![2, 2]),
        (vec![9], 0, vec![]),
    ] {
        let m = Model::new(13)
            .input("x", FLOAT, &dims(&shape))
            .input("i", INT64, &dims(&idx_shape))
            .output("y")
            .node("Gather", &["x", "i"], &["y"], vec![int("axis", axis)]);
        let a = qforge::graph::shape::norm_axis(axis, shape.len()).unwrap();
        let d = shape[a] as i32;
        let n: usize = shape.iter().product();
        let k: usize = idx_shape.iter().product();
        // Negative indices count from the end; -d - 1 and d lie outside and read 0.
        let idx = integers(&mut rng, k, -d - 1, d + 1);
        let y = same_bits(
            "Gather",
            &m,
            &[
                ("x", arr(&shape, floats(&mut rng, n))),
                ("i", arr(&idx_shape, idx)),
            ],
        );
        let _ = &y;
    }
    // GatherElements along each axis.
    for axis in [0i64, 1, -1] {
        let m = Model::new(13)
            .input("x", FLOAT, &[3, 4])
            .input("i", INT64, &[2, 4])
            .output("y")
            .node(
                "GatherElements",
                &["x", "i"],
                &["y"],
                vec![int("axis", axis)],
            );
        let d = if axis == 0 { 3 } else { 4 };
        same_bits(
            "GatherElements",
            &m,
            &[
                ("x", arr(&[3, 4], floats(&mut rng, 12))),
                ("i", arr(&[2, 4], integers(&mut rng, 8, -d, d))),
            ],
        );
    }
    // A value read from an index outside the dim is 0, never memory outside x.
    let m = Model::new(13)
        .input("x", FLOAT, &[3])
        .input("i", INT64, &[3])
        .output("y")
        .node("Gather", &["x", "i"], &["y"], vec![]);
    let y = build::run(
        &gpu,
        &m.bytes(),
        &[
            ("x", arr(&[3], vec![1.0, 2.0, 3.0])),
            ("i", arr(&[3], vec![-1.0, 3.0, -4.0])),
        ],
    )
    .unwrap();
    assert_eq!(y[0].as_slice().unwrap(), &[3.0, 0.0, 0.0]);
}

#[test]
fn expand_and_tile_as_strided_copies() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(6);
    for (x, shape) in [
        (vec![3, 1], vec![2, 3, 4]),
        (vec![1], vec![5]),
        (vec![4, 1, 2], vec![4, 3, 1]),
    ] {
        let m = Model::new(13)
            .input("x", FLOAT, &dims(&x))
            .init_i64("s", &[shape.len() as i64], &dims(&shape))
            .output("y")
            .node("Expand", &["x", "s"], &["y"], vec![]);
        let n = x.iter().product();
        same_bits("Expand", &m, &[("x", arr(&x, floats(&mut rng, n)))]);
    }
    for (x, reps) in [
        (vec![2, 3], vec![2, 3]),
        (vec![3], vec![4]),
        (vec![2, 1, 3, 2], vec![1, 2, 1, 3]),
        (vec![2, 2, 2, 2, 2], vec![2, 1, 2, 1, 1]),
    ] {
        let m = Model::new(13)
            .input("x", FLOAT, &dims(&x))
            .init_i64("r", &[reps.len() as i64], &dims(&reps))
            .output("y")
            .node("Tile", &["x", "r"], &["y"], vec![]);
        let n = x.iter().product();
        same_bits("Tile", &m, &[("x", arr(&x, floats(&mut rng, n)))]);
    }
}

#[test]
fn shape_chains_fold_at_load_and_constant_outputs_read_back() {
    let Some(gpu) = common::gpu() else { return };
    // Range's limits given at run time (value inputs) fold; the output is read back.
    let m = Model::new(11)
        .input("start", FLOAT, &[])
        .input("limit", FLOAT, &[])
        .input("delta", FLOAT, &[])
        .output("y")
        .node("Range", &["start", "limit", "delta"], &["y"], vec![]);
    let s = |v: f32| ArrayD::from_elem(IxDyn(&[]), v);
    let y = build::run(
        &gpu,
        &m.bytes(),
        &[("start", s(1.0)), ("limit", s(2.0)), ("delta", s(0.25))],
    )
    .unwrap();
    assert_eq!(y[0].as_slice().unwrap(), &[1.0, 1.25, 1.5, 1.75]);
    // Shape with start/end, Size, ConstantOfShape of int32, added to a runtime value.
    let m = Model::new(21)
        .input("x", FLOAT, &[2, 3, 5])
        .output("s")
        .output("n")
        .output("y")
        .node(
            "Shape",
            &["x"],
            &["s"],
            vec![int("start", 1), int("end", -1)],
        )
        .node("Size", &["x"], &["n"], vec![])
        .node("Shape", &["x"], &["full"], vec![])
        .node("ConstantOfShape", &["full"], &["ones"], vec![])
        .node("Add", &["x", "ones"], &["y"], vec![]);
    let x = arr(&[2, 3, 5], (0..30).map(|v| v as f32).collect());
    let y = build::run(&gpu, &m.bytes(), &[("x", x.clone())]).unwrap();
    assert_eq!(y[0].as_slice().unwrap(), &[3.0]);
    assert_eq!(y[1].iter().copied().collect::<Vec<_>>(), vec![30.0]);
    assert_eq!(y[2], x);
    let g = qforge::graph::import(&m.bytes(), "m", None).unwrap();
    let t = g.value_types();
    assert_eq!(
        (t["s"], t["n"]),
        (qforge::graph::ElemType::I64, qforge::graph::ElemType::I64)
    );
    // A Range that would not end is refused by name.
    let e = build::run(&gpu, &m.bytes().clone(), &[("x", x)]).map(|_| ());
    assert!(e.is_ok());
    let m = Model::new(11)
        .input("start", FLOAT, &[])
        .input("limit", FLOAT, &[])
        .input("delta", FLOAT, &[])
        .output("y")
        .node("Range", &["start", "limit", "delta"], &["y"], vec![]);
    let e = build::run(
        &gpu,
        &m.bytes(),
        &[("start", s(1.0)), ("limit", s(2.0)), ("delta", s(0.0))],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Range"), "{e}");
}
