//! ONNX's row ops on the GPU against the CPU reference: the reductions, ArgMax/ArgMin,
//! Hardmax, LogSoftmax, TopK, CumSum, GlobalMaxPool and the normalizations (ties, NaN,
//! infinities and empty axes included).

use crate::common;

use crate::common::build::{int, ints, Model, FLOAT};
use crate::common::ops::*;
use crate::common::Tol;
use rand::Rng;

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
