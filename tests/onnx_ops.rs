//! The ONNX ops beyond the CNN set (comparisons and logic, Mod, integer Div, Cast, Where,
//! Gather and GatherElements with runtime indices, Expand, Tile, folded Range / Size / Shape /
//! ConstantOfShape, reductions, normalizations …): each built as a one-node model, run on the
//! GPU and by the CPU reference (`reference::graph`) on seeded inputs over the op's whole
//! domain (negatives, zeros, NaN and infinities where the op takes floats), compared bit for
//! bit where the arithmetic is the same and within a stated tolerance where it is not.
//! ONNX's own expected values for these ops are checked by tests/conformance.rs.

mod common;

use common::build::{self, int, ints, Model, BOOL, FLOAT, INT32, INT64};
use common::{assert_bits_eq, assert_close, Tol};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Values over a float op's whole domain: ordinary ones, zeros of both signs, ±inf, NaN,
/// subnormals and huge ones.
fn floats(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..16) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::INFINITY,
            3 => f32::NEG_INFINITY,
            4 => f32::NAN,
            5 => 1e-40,
            6 => -3e38,
            7 => rng.random_range(-4i32..4) as f32,
            _ => rng.random_range(-10.0..10.0),
        })
        .collect()
}

/// Integers (as f32) in `lo..hi`.
fn integers(rng: &mut rand::rngs::StdRng, n: usize, lo: i32, hi: i32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi) as f32).collect()
}

fn dims(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// Runs `m` on the GPU and the CPU reference; asserts the outputs' bits agree, a zero's sign
/// and subnormal results aside (WGSL lets drivers ignore the sign of zero and flush
/// subnormals in float arithmetic: a subnormal result compares as 0).
fn same_bits(what: &str, m: &Model, inputs: &[(&str, ArrayD<f32>)]) -> Vec<ArrayD<f32>> {
    let gpu = common::gpu().expect("checked by the caller");
    let got = build::run(&gpu, &m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = build::reference(&m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what} output {k}");
        let unsign = |a: &ArrayD<f32>| -> Vec<f32> {
            a.iter()
                .map(|&v| if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v })
                .collect()
        };
        assert_bits_eq(&format!("{what} output {k}"), &unsign(g), &unsign(w));
    }
    got
}

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

/// Runs `m` on the GPU and the CPU reference; asserts the outputs agree within `tol` (NaN
/// where the reference has NaN, infinities equal).
fn close(what: &str, m: &Model, inputs: &[(&str, ArrayD<f32>)], tol: Tol) -> Vec<ArrayD<f32>> {
    let gpu = common::gpu().expect("checked by the caller");
    let got = build::run(&gpu, &m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = build::reference(&m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what} output {k}");
        let f = |a: &ArrayD<f32>| a.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(&format!("{what} output {k}"), &f(g), &f(w), tol);
    }
    got
}

/// Ordinary values with ties (small integers) and, with `special`, NaN and infinities.
fn values_with_ties(rng: &mut rand::rngs::StdRng, n: usize, special: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 if special => f32::NAN,
            1 if special => f32::INFINITY,
            2 if special => f32::NEG_INFINITY,
            3..=8 => rng.random_range(-3i32..3) as f32,
            _ => rng.random_range(-5.0..5.0),
        })
        .collect()
}

#[test]
fn reductions_over_any_axes() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(7);
    let ops = [
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ];
    let shape = [3usize, 5, 4];
    for (k, op) in ops.iter().enumerate() {
        for (axes, keep) in [(vec![1i64], 1), (vec![0, 2], 0), (vec![], 1), (vec![-1], 0)] {
            let mut m = Model::new(18).input("x", FLOAT, &dims(&shape)).output("y");
            let mut inputs = vec!["x"];
            if !axes.is_empty() {
                m = m.init_i64("axes", &[axes.len() as i64], &axes);
                inputs.push("axes");
            }
            let m = m.node(op, &inputs, &["y"], vec![int("keepdims", keep)]);
            // Products and logs stay finite on small positive values; the rest see the lot.
            let x: Vec<f32> = match *op {
                "ReduceProd" => (0..60).map(|_| rng.random_range(0.5..1.5)).collect(),
                "ReduceLogSum" => (0..60).map(|_| rng.random_range(0.0..2.0)).collect(),
                _ => values_with_ties(&mut rng, 60, k % 3 == 1),
            };
            let x = arr(&shape, x);
            if matches!(*op, "ReduceMax" | "ReduceMin") {
                same_bits(op, &m, &[("x", x)]);
            } else {
                close(
                    op,
                    &m,
                    &[("x", x)],
                    Tol {
                        abs: 1e-5,
                        rel: 1e-5,
                    },
                );
            }
        }
    }
    // Rows longer than a workgroup, and noop_with_empty_axes.
    let m = Model::new(18)
        .input("x", FLOAT, &[2, 3000])
        .init_i64("axes", &[1], &[1])
        .output("y")
        .node("ReduceSum", &["x", "axes"], &["y"], vec![]);
    close(
        "ReduceSum long",
        &m,
        &[(
            "x",
            arr(&[2, 3000], values_with_ties(&mut rng, 6000, false)),
        )],
        Tol::SUM,
    );
    let m = Model::new(18).input("x", FLOAT, &[2, 3]).output("y").node(
        "ReduceMax",
        &["x"],
        &["y"],
        vec![int("noop_with_empty_axes", 1)],
    );
    let x = arr(&[2, 3], values_with_ties(&mut rng, 6, false));
    assert_eq!(same_bits("noop", &m, &[("x", x.clone())])[0], x);
}

#[test]
fn arg_max_min_hardmax_and_top_k_order_ties_and_nan() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(8);
    let shape = [4usize, 6, 5];
    for op in ["ArgMax", "ArgMin"] {
        for axis in [0i64, 1, -1] {
            for last in [0, 1] {
                let m = Model::new(13)
                    .input("x", FLOAT, &dims(&shape))
                    .output("y")
                    .node(
                        op,
                        &["x"],
                        &["y"],
                        vec![
                            int("axis", axis),
                            int("select_last_index", last),
                            int("keepdims", last),
                        ],
                    );
                let x = arr(&shape, values_with_ties(&mut rng, 120, true));
                same_bits(op, &m, &[("x", x)]);
            }
        }
    }
    for (opset, axis) in [(13, 1i64), (13, -1), (11, 1)] {
        let m = Model::new(opset)
            .input("x", FLOAT, &dims(&shape))
            .output("y")
            .node("Hardmax", &["x"], &["y"], vec![int("axis", axis)]);
        same_bits(
            "Hardmax",
            &m,
            &[("x", arr(&shape, values_with_ties(&mut rng, 120, false)))],
        );
        let m = Model::new(opset)
            .input("x", FLOAT, &dims(&shape))
            .output("y")
            .node("LogSoftmax", &["x"], &["y"], vec![int("axis", axis)]);
        close(
            "LogSoftmax",
            &m,
            &[("x", arr(&shape, values_with_ties(&mut rng, 120, false)))],
            Tol {
                abs: 1e-5,
                rel: 1e-5,
            },
        );
    }
    for (axis, k, largest) in [(1i64, 3i64, 1), (-1, 5, 0), (0, 1, 1)] {
        let m = Model::new(11)
            .input("x", FLOAT, &dims(&shape))
            .init_i64("k", &[1], &[k])
            .output("v")
            .output("i")
            .node(
                "TopK",
                &["x", "k"],
                &["v", "i"],
                vec![int("axis", axis), int("largest", largest)],
            );
        same_bits(
            "TopK",
            &m,
            &[("x", arr(&shape, values_with_ties(&mut rng, 120, true)))],
        );
    }
}

#[test]
fn cumulative_sums_and_global_max_pool() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(9);
    for (axis, exclusive, reverse) in [(0i64, 0, 0), (1, 1, 0), (-1, 0, 1), (1, 1, 1)] {
        let m = Model::new(14)
            .input("x", FLOAT, &[3, 7, 2])
            .init_i64("a", &[], &[axis])
            .output("y")
            .node(
                "CumSum",
                &["x", "a"],
                &["y"],
                vec![int("exclusive", exclusive), int("reverse", reverse)],
            );
        same_bits(
            "CumSum",
            &m,
            &[("x", arr(&[3, 7, 2], values_with_ties(&mut rng, 42, false)))],
        );
    }
    let m = Model::new(13)
        .input("x", FLOAT, &[2, 3, 4, 5])
        .output("y")
        .node("GlobalMaxPool", &["x"], &["y"], vec![]);
    same_bits(
        "GlobalMaxPool",
        &m,
        &[(
            "x",
            arr(&[2, 3, 4, 5], values_with_ties(&mut rng, 120, true)),
        )],
    );
}

#[test]
fn normalizations_match_the_reference() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(10);
    let tol = Tol {
        abs: 1e-5,
        rel: 1e-4,
    };
    let x = arr(&[2, 4, 3, 5], values_with_ties(&mut rng, 120, false));
    for axis in [-1i64, 1, 2] {
        let norm: usize = [2usize, 4, 3, 5][(if axis < 0 { 4 + axis } else { axis }) as usize..]
            .iter()
            .product();
        let sdims: Vec<i64> =
            [2i64, 4, 3, 5][(if axis < 0 { 4 + axis } else { axis }) as usize..].to_vec();
        let m = Model::new(17)
            .input("x", FLOAT, &[2, 4, 3, 5])
            .init_f32("s", &sdims, &values_with_ties(&mut rng, norm, false))
            .init_f32("b", &sdims, &values_with_ties(&mut rng, norm, false))
            .output("y")
            .output("mean")
            .output("inv")
            .node(
                "LayerNormalization",
                &["x", "s", "b"],
                &["y", "mean", "inv"],
                vec![int("axis", axis), common::build::float("epsilon", 1e-3)],
            );
        close("LayerNormalization", &m, &[("x", x.clone())], tol);
    }
    let m = Model::new(6)
        .input("x", FLOAT, &[2, 4, 3, 5])
        .init_f32("s", &[4], &[1.0, -2.0, 0.5, 3.0])
        .init_f32("b", &[4], &[0.0, 1.0, -1.0, 2.0])
        .output("y")
        .node("InstanceNormalization", &["x", "s", "b"], &["y"], vec![]);
    close("InstanceNormalization", &m, &[("x", x.clone())], tol);
    for (opset, params) in [(18, 2usize), (21, 4)] {
        let m = Model::new(opset)
            .input("x", FLOAT, &[2, 4, 3, 5])
            .init_f32(
                "s",
                &[params as i64],
                &values_with_ties(&mut rng, params, false),
            )
            .init_f32(
                "b",
                &[params as i64],
                &values_with_ties(&mut rng, params, false),
            )
            .output("y")
            .node(
                "GroupNormalization",
                &["x", "s", "b"],
                &["y"],
                vec![int("num_groups", 2)],
            );
        close("GroupNormalization", &m, &[("x", x.clone())], tol);
    }
    let m = Model::new(13)
        .input("x", FLOAT, &[2, 4, 3, 5])
        .output("y")
        .node(
            "MeanVarianceNormalization",
            &["x"],
            &["y"],
            vec![ints("axes", &[0, 2, 3])],
        );
    close("MeanVarianceNormalization", &m, &[("x", x)], tol);
}

#[test]
fn pad_modes_and_crops() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(11);
    let x = arr(&[2, 3, 4], floats(&mut rng, 24));
    for (mode, pads) in [
        ("constant", vec![0i64, 1, 2, 1, 0, 3]),
        ("constant", vec![-1, 1, -2, 0, 1, 1]),
        ("edge", vec![1, 2, 0, 0, 3, 5]),
        ("reflect", vec![1, 2, 3, 1, 2, 3]),
        ("wrap", vec![0, 4, 5, 2, 0, 7]),
        ("edge", vec![0, -1, 2, 0, -1, -2]),
    ] {
        let m = Model::new(19)
            .input("x", FLOAT, &[2, 3, 4])
            .init_i64("p", &[6], &pads)
            .init_f32("v", &[], &[2.5])
            .output("y")
            .node(
                "Pad",
                &["x", "p", "v"],
                &["y"],
                vec![common::build::string("mode", mode)],
            );
        same_bits(&format!("Pad {mode} {pads:?}"), &m, &[("x", x.clone())]);
    }
    // Pads for some axes only (opset 18's axes input).
    let m = Model::new(18)
        .input("x", FLOAT, &[2, 3, 4])
        .init_i64("p", &[4], &[1, 0, 2, 1])
        .init_i64("a", &[2], &[2, -2])
        .output("y")
        .node(
            "Pad",
            &["x", "p", "", "a"],
            &["y"],
            vec![common::build::string("mode", "reflect")],
        );
    let y = same_bits("Pad axes", &m, &[("x", x)]);
    assert_eq!(y[0].shape(), &[2, 4, 7]);
}

#[test]
fn depth_space_trilu_scatter_and_gelu_tanh() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(12);
    let x = arr(&[2, 8, 3, 5], floats(&mut rng, 240));
    for mode in ["DCR", "CRD"] {
        let m = Model::new(13)
            .input("x", FLOAT, &[2, 8, 3, 5])
            .output("y")
            .node(
                "DepthToSpace",
                &["x"],
                &["y"],
                vec![int("blocksize", 2), common::build::string("mode", mode)],
            );
        same_bits("DepthToSpace", &m, &[("x", x.clone())]);
    }
    let m = Model::new(13)
        .input("x", FLOAT, &[2, 3, 4, 6])
        .output("y")
        .node("SpaceToDepth", &["x"], &["y"], vec![int("blocksize", 2)]);
    same_bits(
        "SpaceToDepth",
        &m,
        &[("x", arr(&[2, 3, 4, 6], floats(&mut rng, 144)))],
    );
    // DepthToSpace undoes SpaceToDepth (DCR).
    let m = Model::new(13)
        .input("x", FLOAT, &[2, 3, 4, 6])
        .output("y")
        .node("SpaceToDepth", &["x"], &["d"], vec![int("blocksize", 2)])
        .node("DepthToSpace", &["d"], &["y"], vec![int("blocksize", 2)]);
    let x4 = arr(&[2, 3, 4, 6], values_with_ties(&mut rng, 144, false));
    assert_eq!(same_bits("round trip", &m, &[("x", x4.clone())])[0], x4);
    for (upper, k) in [(1, 0i64), (0, 0), (1, 2), (0, -1)] {
        let m = Model::new(14)
            .input("x", FLOAT, &[2, 4, 5])
            .init_i64("k", &[], &[k])
            .output("y")
            .node("Trilu", &["x", "k"], &["y"], vec![int("upper", upper)]);
        same_bits("Trilu", &m, &[("x", arr(&[2, 4, 5], floats(&mut rng, 40)))]);
    }
    for reduction in ["none", "add", "mul", "max", "min"] {
        let m = Model::new(18)
            .input("x", FLOAT, &[4, 3, 2])
            .input("i", INT64, &[5, 2])
            .input("u", FLOAT, &[5, 2])
            .output("y")
            .node(
                "ScatterND",
                &["x", "i", "u"],
                &["y"],
                vec![common::build::string("reduction", reduction)],
            );
        // Repeated tuples apply in order; -1 counts from the end.
        let idx = arr(
            &[5, 2],
            vec![0.0, 1.0, 3.0, -1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
        );
        same_bits(
            "ScatterND",
            &m,
            &[
                ("x", arr(&[4, 3, 2], values_with_ties(&mut rng, 24, false))),
                ("i", idx),
                ("u", arr(&[5, 2], values_with_ties(&mut rng, 10, false))),
            ],
        );
    }
    let m = Model::new(20).input("x", FLOAT, &[400]).output("y").node(
        "Gelu",
        &["x"],
        &["y"],
        vec![common::build::string("approximate", "tanh")],
    );
    close(
        "Gelu tanh",
        &m,
        &[("x", arr(&[400], floats(&mut rng, 400)))],
        Tol {
            abs: 1e-6,
            rel: 1e-5,
        },
    );
}

#[test]
fn matmul_of_vectors_and_broadcast_batches() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(13);
    for (sa, sb) in [
        (vec![5], vec![5]),
        (vec![4], vec![2, 4, 3]),
        (vec![2, 3, 4], vec![4]),
        (vec![3, 1, 2, 4], vec![1, 2, 4, 5]),
        (vec![2, 1, 3, 4], vec![5, 4, 2]),
    ] {
        let m = Model::new(13)
            .input("a", FLOAT, &dims(&sa))
            .input("b", FLOAT, &dims(&sb))
            .output("y")
            .node("MatMul", &["a", "b"], &["y"], vec![]);
        let n = |s: &[usize]| s.iter().product::<usize>();
        close(
            &format!("MatMul {sa:?} x {sb:?}"),
            &m,
            &[
                ("a", arr(&sa, values_with_ties(&mut rng, n(&sa), false))),
                ("b", arr(&sb, values_with_ties(&mut rng, n(&sb), false))),
            ],
            Tol::GEMM,
        );
    }
}

#[test]
fn one_dimensional_convolutions_and_pools() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(14);
    let x = arr(&[2, 4, 17], values_with_ties(&mut rng, 136, false));
    let w: Vec<f32> = values_with_ties(&mut rng, 6 * 4 * 3, false);
    for (strides, pads, dil, group) in [(1, [1, 1], 1, 1), (2, [0, 2], 2, 2), (3, [2, 0], 1, 1)] {
        let cin = 4 / group;
        let m = Model::new(13)
            .input("x", FLOAT, &[2, 4, 17])
            .init_f32("w", &[6, cin as i64, 3], &w[..6 * cin * 3])
            .init_f32("b", &[6], &[0.5, -1.0, 0.0, 2.0, 1.0, -0.5])
            .output("y")
            .node(
                "Conv",
                &["x", "w", "b"],
                &["y"],
                vec![
                    ints("strides", &[strides]),
                    ints("pads", &pads),
                    ints("dilations", &[dil]),
                    int("group", group as i64),
                    ints("kernel_shape", &[3]),
                ],
            );
        close("Conv1d", &m, &[("x", x.clone())], Tol::GEMM);
    }
    for op in ["MaxPool", "AveragePool"] {
        let m = Model::new(13)
            .input("x", FLOAT, &[2, 4, 17])
            .output("y")
            .node(
                op,
                &["x"],
                &["y"],
                vec![
                    ints("kernel_shape", &[3]),
                    ints("strides", &[2]),
                    ints("pads", &[1, 1]),
                ],
            );
        close(
            op,
            &m,
            &[("x", x.clone())],
            Tol {
                abs: 1e-6,
                rel: 1e-6,
            },
        );
    }
    let m = Model::new(13)
        .input("x", FLOAT, &[2, 4, 17])
        .init_f32("w", &[4, 3, 3], &values_with_ties(&mut rng, 36, false))
        .output("y")
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["y"],
            vec![ints("strides", &[2])],
        );
    close("ConvTranspose1d", &m, &[("x", x)], Tol::GEMM);
}

#[test]
fn resize_axes_aspect_policies_and_half_pixel_symmetric() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(15);
    let x = arr(&[1, 2, 5, 6], values_with_ties(&mut rng, 60, false));
    let s = common::build::string;
    // Scales for axes (3, 2) only; sizes with each policy; half_pixel_symmetric.
    let cases: Vec<(Model, &str)> = vec![
        (
            Model::new(19)
                .input("x", FLOAT, &[1, 2, 5, 6])
                .init_f32("sc", &[2], &[1.5, 2.0])
                .output("y")
                .node(
                    "Resize",
                    &["x", "", "sc"],
                    &["y"],
                    vec![ints("axes", &[3, 2]), s("mode", "linear")],
                ),
            "axes scales",
        ),
        (
            Model::new(19)
                .input("x", FLOAT, &[1, 2, 5, 6])
                .init_i64("sz", &[2], &[8, 8])
                .output("y")
                .node(
                    "Resize",
                    &["x", "", "", "sz"],
                    &["y"],
                    vec![
                        ints("axes", &[2, 3]),
                        s("keep_aspect_ratio_policy", "not_larger"),
                    ],
                ),
            "not_larger",
        ),
        (
            Model::new(19)
                .input("x", FLOAT, &[1, 2, 5, 6])
                .init_i64("sz", &[2], &[7, 7])
                .output("y")
                .node(
                    "Resize",
                    &["x", "", "", "sz"],
                    &["y"],
                    vec![
                        ints("axes", &[-2, -1]),
                        s("keep_aspect_ratio_policy", "not_smaller"),
                        s("mode", "linear"),
                    ],
                ),
            "not_smaller",
        ),
        (
            Model::new(19)
                .input("x", FLOAT, &[1, 2, 5, 6])
                .init_f32("sc", &[4], &[1.0, 1.0, 0.7, 1.3])
                .output("y")
                .node(
                    "Resize",
                    &["x", "", "sc"],
                    &["y"],
                    vec![
                        s("coordinate_transformation_mode", "half_pixel_symmetric"),
                        s("mode", "linear"),
                    ],
                ),
            "half_pixel_symmetric",
        ),
    ];
    for (m, what) in cases {
        close(
            what,
            &m,
            &[("x", x.clone())],
            Tol {
                abs: 1e-5,
                rel: 1e-5,
            },
        );
    }
}

#[test]
fn gemm_with_a_computed_c() {
    let Some(_) = common::gpu() else { return };
    let mut rng = common::rng(16);
    let m = Model::new(13)
        .input("a", FLOAT, &[3, 4])
        .input("b", FLOAT, &[4, 5])
        .input("c", FLOAT, &[3, 5])
        .output("y")
        .node("Relu", &["c"], &["rc"], vec![])
        .node(
            "Gemm",
            &["a", "b", "rc"],
            &["g"],
            vec![common::build::float("beta", 0.5)],
        )
        .node("Relu", &["g"], &["y"], vec![]);
    close(
        "Gemm runtime C",
        &m,
        &[
            ("a", arr(&[3, 4], values_with_ties(&mut rng, 12, false))),
            ("b", arr(&[4, 5], values_with_ties(&mut rng, 20, false))),
            ("c", arr(&[3, 5], values_with_ties(&mut rng, 15, false))),
        ],
        Tol::GEMM,
    );
}

#[test]
fn weights_larger_than_one_binding_split_into_blocks() {
    let Some(mut g) = common::own_gpu() else {
        return;
    };
    // 64 KiB bindings: every weight below is several bindings large.
    g.set_max_binding(64 * 1024);
    let gpu = std::sync::Arc::new(g);
    let mut rng = common::rng(17);
    let (m, k, n) = (5usize, 300usize, 130usize);
    let a = arr(&[m, k], values_with_ties(&mut rng, m * k, false));
    let w = values_with_ties(&mut rng, k * n, false);
    let bias = values_with_ties(&mut rng, n, false);
    let models = [
        // Gemm with a transposed weight [n, k] (split by output columns) and a bias.
        Model::new(13)
            .input("a", FLOAT, &[m as i64, k as i64])
            .init_f32("w", &[n as i64, k as i64], &w)
            .init_f32("c", &[n as i64], &bias)
            .output("y")
            .node(
                "Gemm",
                &["a", "w", "c"],
                &["g"],
                vec![int("transB", 1), common::build::float("beta", 0.5)],
            )
            .node("Relu", &["g"], &["y"], vec![]),
        // MatMul with a plain weight [k, n] (split along k, partial products summed).
        Model::new(13)
            .input("a", FLOAT, &[m as i64, k as i64])
            .init_f32("w", &[k as i64, n as i64], &w)
            .output("y")
            .node("MatMul", &["a", "w"], &["y"], vec![]),
    ];
    for (i, model) in models.iter().enumerate() {
        let got = build::run(&gpu, &model.bytes(), &[("a", a.clone())]).unwrap();
        let want = build::reference(&model.bytes(), &[("a", a.clone())]).unwrap();
        let f = |x: &ArrayD<f32>| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(
            &format!("split weight {i}"),
            &f(&got[0]),
            &f(&want[0]),
            Tol::GEMM,
        );
    }
}
