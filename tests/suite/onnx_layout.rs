//! ONNX's layout and linear ops on the GPU against the CPU reference: Pad of every mode with
//! crops and axes, DepthToSpace/SpaceToDepth, Trilu, ScatterND, Gelu (tanh), MatMul of vectors
//! and broadcasting batches, 1-D convolutions and pools, Resize's axes and policies, Gemm with a
//! computed C, weights larger than one storage binding, Einsum against its definition,
//! ConvTranspose's output_shape and auto_pad against the explicit pads they stand for.

use crate::common;

use crate::common::build::{self, int, ints, Model, FLOAT, INT64};
use crate::common::ops::*;
use crate::common::{assert_close, Tol};
use ndarray::ArrayD;

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

/// A ConvTranspose's output_shape or SAME auto_pad gives the same outputs as the explicit pads
/// and output padding ONNX's rule derives (an output one larger than the natural one: output
/// padding; SAME_LOWER: the odd pad first); an output that would need negative leading pads is
/// a typed error.
#[test]
fn conv_transpose_output_shape_and_auto_pad() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(16);
    let x1 = arr(&[2, 4, 17], values_with_ties(&mut rng, 136, false));
    let w1 = values_with_ties(&mut rng, 36, false);
    let one_d = |attrs| {
        Model::new(13)
            .input("x", FLOAT, &[2, 4, 17])
            .init_f32("w", &[4, 3, 3], &w1)
            .output("y")
            .node("ConvTranspose", &["x", "w"], &["y"], attrs)
    };
    let x2 = arr(&[1, 2, 5, 6], values_with_ties(&mut rng, 60, false));
    let w2 = values_with_ties(&mut rng, 54, false);
    let two_d = |attrs| {
        Model::new(13)
            .input("x", FLOAT, &[1, 2, 5, 6])
            .init_f32("w", &[2, 3, 3, 3], &w2)
            .output("y")
            .node("ConvTranspose", &["x", "w"], &["y"], attrs)
    };
    let s = common::build::string;
    let pairs = [
        (
            "1-D output_shape one past the natural size",
            one_d(vec![ints("strides", &[2]), ints("output_shape", &[36])]),
            one_d(vec![ints("strides", &[2]), ints("output_padding", &[1])]),
            &x1,
            vec![2, 3, 36],
        ),
        (
            "SAME_LOWER",
            two_d(vec![ints("strides", &[2, 2]), s("auto_pad", "SAME_LOWER")]),
            two_d(vec![ints("strides", &[2, 2]), ints("pads", &[1, 1, 0, 0])]),
            &x2,
            vec![1, 3, 10, 12],
        ),
        (
            "SAME_UPPER with output_shape",
            two_d(vec![
                ints("strides", &[2, 2]),
                s("auto_pad", "SAME_UPPER"),
                ints("output_shape", &[9, 10]),
            ]),
            two_d(vec![ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 2])]),
            &x2,
            vec![1, 3, 9, 10],
        ),
    ];
    for (what, implicit, explicit, x, shape) in pairs {
        let got = close(what, &implicit, &[("x", x.clone())], Tol::GEMM);
        assert_eq!(got[0].shape(), &shape[..], "{what}");
        let want = build::run(&gpu, &explicit.bytes(), &[("x", x.clone())]).unwrap();
        let f = |a: &ArrayD<f32>| a.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(what, &f(&got[0]), &f(&want[0]), Tol::GEMM);
    }
    let too_large = two_d(vec![
        ints("strides", &[2, 2]),
        ints("output_shape", &[14, 12]),
    ]);
    let err = build::run(&gpu, &too_large.bytes(), &[("x", x2)]).unwrap_err();
    assert!(err.to_string().contains("leading outputs"), "{err}");
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

/// Einsum by its definition: every assignment of the labels, the operands' product added into
/// the output's element (labels as letters; `...` spelled out by the caller).
fn einsum_by_definition(terms: &[&str], out: &str, xs: &[ArrayD<f32>]) -> ArrayD<f32> {
    let mut size = std::collections::BTreeMap::new();
    for (t, x) in terms.iter().zip(xs) {
        for (c, &d) in t.chars().zip(x.shape()) {
            size.insert(c, d);
        }
    }
    let labels: Vec<char> = size.keys().copied().collect();
    let out_shape: Vec<usize> = out.chars().map(|c| size[&c]).collect();
    let mut y = ArrayD::<f64>::zeros(ndarray::IxDyn(&out_shape));
    let total: usize = labels.iter().map(|c| size[c]).product();
    for flat in 0..total {
        let mut rem = flat;
        let mut at = std::collections::BTreeMap::new();
        for c in labels.iter().rev() {
            at.insert(*c, rem % size[c]);
            rem /= size[c];
        }
        let idx = |t: &str| t.chars().map(|c| at[&c]).collect::<Vec<_>>();
        let p: f64 = terms
            .iter()
            .zip(xs)
            .map(|(t, x)| x[ndarray::IxDyn(&idx(t))] as f64)
            .product();
        y[ndarray::IxDyn(&idx(out))] += p;
    }
    y.mapv(|v| v as f32)
}

/// A one-node Einsum model of `eq` over inputs `x0, x1, ...` of the operands' shapes, run on
/// the GPU.
fn einsum(
    gpu: &std::sync::Arc<qforge::gpu::Gpu>,
    eq: &str,
    xs: Vec<ArrayD<f32>>,
) -> qforge::Result<Vec<ArrayD<f32>>> {
    let names: Vec<String> = (0..xs.len()).map(|i| format!("x{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut m = Model::new(17).output("y");
    for (n, x) in names.iter().zip(&xs) {
        m = m.input(n, FLOAT, &dims(x.shape()));
    }
    let m = m.node("Einsum", &refs, &["y"], vec![build::string("equation", eq)]);
    let inputs: Vec<(&str, ArrayD<f32>)> = refs.into_iter().zip(xs).collect();
    build::run(gpu, &m.bytes(), &inputs)
}

/// Einsum as its exporters write it (attention scores and values, bilinear forms, batched
/// products with `...`, transposes, traces of products, sums, an implicit output, three
/// operands) against the definition; what it cannot do (a diagonal, a label of two sizes)
/// is a typed error naming the equation.
#[test]
fn einsum_equations_match_their_definition() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(23);
    // (equation, operand shapes, the equation with `...` and the implicit output spelled out)
    let cases: [(&str, &[&[usize]], &str); 14] = [
        ("ij,jk->ik", &[&[3, 4], &[4, 5]], "ij,jk->ik"),
        (
            "bhqd,bhkd->bhqk",
            &[&[2, 3, 5, 4], &[2, 3, 6, 4]],
            "bhqd,bhkd->bhqk",
        ),
        (
            "bhqk,bhkd->bhqd",
            &[&[2, 3, 5, 6], &[2, 3, 6, 4]],
            "bhqk,bhkd->bhqd",
        ),
        (
            "...ij,...jk->...ik",
            &[&[2, 3, 4, 5], &[3, 5, 2]],
            "xyij,yjk->xyik",
        ),
        ("ij->ji", &[&[3, 7]], "ij->ji"),
        ("ij->", &[&[3, 7]], "ij->"),
        ("ijk->ki", &[&[2, 3, 4]], "ijk->ki"),
        ("i,i->", &[&[9], &[9]], "i,i->"),
        ("i,j->ij", &[&[4], &[3]], "i,j->ij"),
        ("ij,ij->i", &[&[5, 6], &[5, 6]], "ij,ij->i"),
        (
            "bn,anm,bm->ba",
            &[&[2, 3], &[4, 3, 5], &[2, 5]],
            "bn,anm,bm->ba",
        ),
        ("ij,jk", &[&[3, 4], &[4, 2]], "ij,jk->ik"),
        ("ba,ca", &[&[3, 4], &[2, 4]], "ba,ca->bc"),
        ("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 5]], "ij,jk,kl->il"),
    ];
    for (eq, shapes, spelled) in cases {
        let xs: Vec<ArrayD<f32>> = shapes
            .iter()
            .map(|s| arr(s, common::values(&mut rng, s.iter().product(), -2.0, 2.0)))
            .collect();
        let (lhs, out) = spelled.split_once("->").unwrap();
        let terms: Vec<&str> = lhs.split(',').collect();
        let want = einsum_by_definition(&terms, out, &xs);
        let got = einsum(&gpu, eq, xs).unwrap();
        assert_eq!(got[0].shape(), want.shape(), "{eq}");
        assert_close(
            eq,
            &got[0].iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            Tol::GEMM,
        );
    }
    for (eq, shapes, says) in [
        ("ii->i", &[&[3usize, 3][..]][..], "diagonal"),
        ("ij,jk->ik", &[&[3, 4], &[5, 2]], "label 'j'"),
        ("ij,jk->iq", &[&[3, 4], &[4, 2]], "output label 'q'"),
        ("ijk->i", &[&[3, 4]], "names 3 dims"),
    ] {
        let xs = shapes
            .iter()
            .map(|s| ArrayD::zeros(ndarray::IxDyn(s)))
            .collect();
        let e = einsum(&gpu, eq, xs).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains(eq), "{eq}: {e}");
    }
}
