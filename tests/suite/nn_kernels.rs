//! conv, pool, elementwise and reduce kernels against their CPU references over random shapes.

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use qforge::gpu::Gpu;
use qforge::graph::attrs::Conv2d;
use qforge::graph::attrs::{Binary, Pool2d, Unary};
use qforge::graph::shape::{conv_output_shape, pool_output_shape};
use qforge::ops::conv::{self, ConvKernel};
use qforge::ops::elementwise as ew;
use qforge::ops::pool;
use qforge::ops::reduce;
use qforge::reference::nn;
use qforge::DType;
use rand::Rng;

const NONE: qforge::ops::epilogue::Epilogue<'static> = qforge::ops::epilogue::Epilogue::NONE;

fn random(rng: &mut crate::common::TestRng, shape: &[usize]) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), values(rng, n, -2.0, 2.0)).unwrap()
}

fn close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tol: Tol) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    assert_close(
        what,
        &got.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        tol,
    );
}

fn run1(
    gpu: &Gpu,
    shape: &[usize],
    f: impl FnOnce(&mut qforge::gpu::Encoder, &qforge::gpu::GpuTensor),
) -> ArrayD<f32> {
    let y = gpu.empty(shape, DType::F32).unwrap();
    let mut enc = gpu.encoder();
    f(&mut enc, &y);
    gpu.submit(enc).unwrap();
    gpu.download(&y).unwrap()
}

#[test]
fn conv2d_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(30);
    let mut depthwise_cases = 0;
    for case in 0..50 {
        let groups = [1, 1, 2, 3, 0][case % 5];
        let cin_g = rng.random_range(1..6);
        let (cin, cout) = if groups == 0 {
            let c = rng.random_range(1..20);
            (c, c)
        } else {
            (
                cin_g * groups,
                rng.random_range(1..4) * groups * [1, 4][case % 2],
            )
        };
        let groups = if groups == 0 { cin } else { groups };
        let k = [1, 3, 3, 5, 2][case % 5];
        let a = Conv2d {
            strides: [rng.random_range(1..3), rng.random_range(1..3)],
            pads: [
                rng.random_range(0..3),
                rng.random_range(0..3),
                rng.random_range(0..3),
                rng.random_range(0..3),
            ],
            dilations: [rng.random_range(1..3), 1],
            groups,
        };
        let a = if case % 7 == 0 {
            Conv2d {
                strides: [1, 1],
                pads: [0; 4],
                dilations: [1, 1],
                groups: 1,
            }
        } else {
            a
        };
        let n = rng.random_range(1..3);
        let (h, w) = (rng.random_range(k * 2..30), rng.random_range(k * 2..30));
        let x = random(&mut rng, &[n, cin, h, w]);
        let wt = random(
            &mut rng,
            &[
                cout,
                cin / a.groups,
                if case % 7 == 0 { 1 } else { k },
                if case % 7 == 0 { 1 } else { k },
            ],
        );
        let b = random(&mut rng, &[cout]);
        let Ok(shape) = conv_output_shape(x.shape(), wt.shape(), &a) else {
            continue;
        };
        let (tx, tw, tb) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&wt.view()).unwrap(),
            gpu.upload(&b.view()).unwrap(),
        );
        let with_bias = case % 3 != 0;
        let got = run1(&gpu, &shape, |e, y| {
            conv::conv2d_into(e, &gpu, &tx, &tw, with_bias.then_some(&tb), &a, y).unwrap()
        });
        let bv = b.view();
        let want = nn::conv2d(&x.view(), &wt.view(), with_bias.then_some(&bv), &a);
        let what = format!(
            "conv case {case} {a:?} x {:?} w {:?}",
            x.shape(),
            wt.shape()
        );
        close(&what, &got, &want, Tol::GEMM);
        // Depthwise convs from the patch in workgroup memory give the direct kernel's bits.
        if ConvKernel::DepthwiseTiled.supports(x.shape(), wt.shape(), &a) {
            let b = with_bias.then_some(&tb);
            let [tiled, direct] = [ConvKernel::DepthwiseTiled, ConvKernel::Direct].map(|k| {
                run1(&gpu, &shape, |e, y| {
                    conv::conv2d_with(e, &gpu, k, &tx, &tw, b, &a, &NONE, None, y).unwrap()
                })
            });
            let same = tiled
                .iter()
                .zip(&direct)
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{what}: tiled depthwise and direct differ");
            depthwise_cases += 1;
        }
        // Dense convs through im2col + GEMM give the direct kernel's bits.
        if a.groups == 1 {
            let k = ConvKernel::Im2col;
            let col_shape = k.scratch(x.shape(), wt.shape(), &a).unwrap().unwrap();
            let col = gpu.empty(&col_shape, DType::F32).unwrap();
            let (b, c) = (with_bias.then_some(&tb), Some(&col));
            let via = run1(&gpu, &shape, |e, y| {
                conv::conv2d_with(e, &gpu, k, &tx, &tw, b, &a, &NONE, c, y).unwrap()
            });
            let direct = run1(&gpu, &shape, |e, y| {
                conv::conv2d_with(e, &gpu, ConvKernel::Direct, &tx, &tw, b, &a, &NONE, None, y)
                    .unwrap()
            });
            let same = via
                .iter()
                .zip(&direct)
                .all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{what}: im2col and direct differ");
            for k in [ConvKernel::Implicit, ConvKernel::ImplicitWide] {
                let implicit = run1(&gpu, &shape, |e, y| {
                    conv::conv2d_with(e, &gpu, k, &tx, &tw, b, &a, &NONE, None, y).unwrap()
                });
                let same = implicit
                    .iter()
                    .zip(&direct)
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{what}: {k:?} and direct differ");
            }
            if ConvKernel::Pointwise.supports(x.shape(), wt.shape(), &a) {
                let gemm = run1(&gpu, &shape, |e, y| {
                    conv::conv2d_with(
                        e,
                        &gpu,
                        ConvKernel::Pointwise,
                        &tx,
                        &tw,
                        b,
                        &a,
                        &NONE,
                        None,
                        y,
                    )
                    .unwrap()
                });
                let same = gemm
                    .iter()
                    .zip(&direct)
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{what}: pointwise GEMM and direct differ");
            }
        }
    }
    assert!(depthwise_cases >= 5, "{depthwise_cases} depthwise cases");
    // The implicit GEMMs past one 128 x 128 tile in both directions, ragged, strided and
    // padded: the direct kernel's bits.
    for (xs, ws, strides) in [
        ([2, 5, 13, 12], [130, 5, 3, 3], [1, 1]),
        ([1, 3, 31, 19], [257, 3, 2, 3], [2, 1]),
    ] {
        let a = Conv2d {
            strides,
            pads: [1, 0, 2, 1],
            dilations: [1, 1],
            groups: 1,
        };
        let (x, wt, b) = (
            random(&mut rng, &xs),
            random(&mut rng, &ws),
            random(&mut rng, &ws[..1]),
        );
        let shape = conv_output_shape(x.shape(), wt.shape(), &a).unwrap();
        assert!(shape[1] > 128 && shape[2] * shape[3] > 128, "{shape:?}");
        let (tx, tw, tb) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&wt.view()).unwrap(),
            gpu.upload(&b.view()).unwrap(),
        );
        let [direct, tiled, wide] = [
            ConvKernel::Direct,
            ConvKernel::Implicit,
            ConvKernel::ImplicitWide,
        ]
        .map(|k| {
            run1(&gpu, &shape, |e, y| {
                conv::conv2d_with(e, &gpu, k, &tx, &tw, Some(&tb), &a, &NONE, None, y).unwrap()
            })
        });
        let bits = |v: &ArrayD<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&tiled), bits(&direct), "{xs:?} {ws:?}: Implicit");
        assert_eq!(bits(&wide), bits(&direct), "{xs:?} {ws:?}: ImplicitWide");
        let bv = b.view();
        let want = nn::conv2d(&x.view(), &wt.view(), Some(&bv), &a);
        close(&format!("{xs:?} {ws:?}"), &direct, &want, Tol::GEMM);
    }
    // The tiled depthwise kernel takes any window whose 48 x 48 patch fits, and no other.
    let dw = |k: usize, s: usize, d: usize| {
        let a = Conv2d {
            strides: [s, s],
            pads: [1; 4],
            dilations: [d, d],
            groups: 8,
        };
        ConvKernel::DepthwiseTiled.supports(&[1, 8, 64, 64], &[8, 1, k, k], &a)
    };
    assert!(dw(3, 1, 1) && dw(3, 2, 1) && dw(5, 2, 2) && dw(7, 2, 2));
    assert!(dw(3, 3, 1), "a patch of 48 x 48 exactly");
    assert!(!dw(7, 2, 3) && !dw(3, 4, 1));
}

/// The depthwise 3x3 kernel against the reference, and bit for bit against the direct kernel,
/// at both horizontal strides, odd widths (strips of 8 cut short), widths under 8, heights that
/// cut blocks of 4 rows short, and pads; widths that are multiples of 4 with a left pad of 1
/// take the vector-load form.
#[test]
fn depthwise3x3_matches_reference_and_the_direct_kernel() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(31);
    for case in 0..32 {
        let c = rng.random_range(1..12);
        let a = Conv2d {
            strides: [1 + case % 2, 1 + (case / 2) % 2],
            pads: [case % 2, (case / 4) % 2, (case / 8) % 3, case % 3],
            dilations: [1, 1],
            groups: c,
        };
        let n = 1 + case % 2;
        let (h, mut w) = (rng.random_range(3..20), rng.random_range(3..40));
        if case >= 24 {
            w = 4 * rng.random_range(1..10);
        }
        let x = random(&mut rng, &[n, c, h, w]);
        let wt = random(&mut rng, &[c, 1, 3, 3]);
        let b = random(&mut rng, &[c]);
        let shape = conv_output_shape(x.shape(), wt.shape(), &a).unwrap();
        assert!(ConvKernel::Depthwise3x3.supports(x.shape(), wt.shape(), &a));
        let (tx, tw, tb) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&wt.view()).unwrap(),
            gpu.upload(&b.view()).unwrap(),
        );
        let bias = (case % 3 != 0).then_some(&tb);
        let run = |kernel| {
            run1(&gpu, &shape, |e, y| {
                conv::conv2d_with(e, &gpu, kernel, &tx, &tw, bias, &a, &NONE, None, y).unwrap()
            })
        };
        let (fast, direct) = (run(ConvKernel::Depthwise3x3), run(ConvKernel::Direct));
        let bv = b.view();
        let want = nn::conv2d(&x.view(), &wt.view(), bias.map(|_| &bv), &a);
        let what = format!("depthwise case {case} {a:?} x {:?}", x.shape());
        close(&what, &fast, &want, Tol::GEMM);
        let same = fast
            .iter()
            .zip(&direct)
            .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: depthwise3x3 and direct differ");
    }
}

#[test]
fn pools_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(31);
    for case in 0..40 {
        let kernel = [rng.random_range(1..4), rng.random_range(1..4)];
        let a = Pool2d {
            kernel,
            strides: [rng.random_range(1..3), rng.random_range(1..3)],
            pads: [
                rng.random_range(0..kernel[0]),
                rng.random_range(0..kernel[1]),
                rng.random_range(0..kernel[0]),
                rng.random_range(0..kernel[1]),
            ],
            dilations: [1, 1],
            ceil_mode: case % 2 == 0,
            count_include_pad: case % 3 == 0,
        };
        let shape = [
            rng.random_range(1..3),
            rng.random_range(1..5),
            rng.random_range(4..20),
            rng.random_range(4..20),
        ];
        let x = random(&mut rng, &shape);
        let shape = pool_output_shape(x.shape(), &a).unwrap();
        let tx = gpu.upload(&x.view()).unwrap();
        for max in [true, false] {
            let got = run1(&gpu, &shape, |e, y| {
                pool::pool2d_into(e, &gpu, &tx, &a, max, y).unwrap()
            });
            close(
                &format!("pool case {case} max={max} {a:?}"),
                &got,
                &nn::pool2d(&x.view(), &a, max),
                Tol::STATS,
            );
        }
    }
    // Planes summed in one thread (up to 1,024 values; more planes than one pass of the
    // grid) and by a workgroup each (larger planes).
    for shape in [[3, 5, 17, 9], [4, 700, 7, 7], [2, 3, 40, 33]] {
        let x = random(&mut rng, &shape);
        let tx = gpu.upload(&x.view()).unwrap();
        let out = [shape[0], shape[1], 1, 1];
        let got = run1(&gpu, &out, |e, y| {
            pool::global_avg_pool_into(e, &gpu, &tx, y).unwrap()
        });
        let want = x
            .mean_axis(ndarray::Axis(3))
            .unwrap()
            .mean_axis(ndarray::Axis(2))
            .unwrap()
            .into_shape_with_order(IxDyn(&out))
            .unwrap();
        close(
            &format!("global average pool {shape:?}"),
            &got,
            &want,
            Tol::STATS,
        );
    }
}

#[test]
fn activations_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(32);
    let x = random(&mut rng, &[7, 301]);
    let tx = gpu.upload(&x.view()).unwrap();
    let all = [
        Unary::Relu,
        Unary::Clip(-0.5, 1.5),
        Unary::LeakyRelu(0.1),
        Unary::Sigmoid,
        Unary::HardSigmoid(0.2, 0.5),
        Unary::HardSwish,
        Unary::Tanh,
        Unary::Erf,
        Unary::Gelu,
        Unary::Exp,
        Unary::Neg,
    ];
    for f in all {
        let got = run1(&gpu, x.shape(), |e, y| {
            ew::unary_into(e, &gpu, f, &tx, y).unwrap()
        });
        close(
            &format!("{f:?}"),
            &got,
            &x.mapv(|v| nn::unary_value(f, v)),
            Tol {
                abs: 2e-6,
                rel: 2e-5,
            },
        );
    }
}

/// Broadcasting binary ops and strided copies with both kernel choices (runs of consecutive
/// elements on CPU adapters, one element per lane on GPUs), on shapes whose innermost dim is
/// shorter than a run, ends mid-run, or disappears when dims collapse.
#[test]
fn broadcasting_binary_ops_match_reference() {
    let Some(shared) = gpu() else { return };
    let Some(mut other) = own_gpu() else { return };
    other.set_cpu_kernels(!shared.cpu_kernels());
    let mut rng = rng(33);
    let pairs: [(&[usize], &[usize]); 10] = [
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[2, 3, 4, 5], &[5]),
        (&[4, 1], &[1, 6]),
        (&[1], &[3, 7]),
        (&[2, 1, 3, 1, 2, 1, 2, 3], &[1, 4, 1, 2, 1, 3, 1, 1]),
        (&[5, 3], &[5, 1]),
        (&[7, 3, 1], &[1, 3, 1]),
        (&[3, 11, 13], &[3, 11, 1]),
        (&[], &[]),
    ];
    for gpu in [&*shared, &other] {
        for (sa, sb) in pairs {
            let (a, b) = (
                random(&mut rng, sa),
                random(&mut rng, sb).mapv(|v| if v.abs() < 0.1 { 0.5 } else { v }),
            );
            let (ta, tb) = (
                gpu.upload(&a.view()).unwrap(),
                gpu.upload(&b.view()).unwrap(),
            );
            for op in [
                Binary::Add,
                Binary::Sub,
                Binary::Mul,
                Binary::Div,
                Binary::PRelu,
                Binary::Max,
                Binary::Min,
            ] {
                let want = nn::binary(op, &a.view(), &b.view());
                let got = run1(gpu, want.shape(), |e, y| {
                    ew::binary_into(e, gpu, op, &ta, &tb, y).unwrap()
                });
                close(
                    &format!("{op:?} {sa:?} {sb:?} cpu kernels {}", gpu.cpu_kernels()),
                    &got,
                    &want,
                    Tol {
                        abs: 1e-6,
                        rel: 1e-6,
                    },
                );
            }
        }
        // Transposes: the output walked in order, the input with strides.
        for (shape, perm) in [
            (&[3, 5, 7][..], &[2, 0, 1][..]),
            (&[2, 3, 4, 5], &[0, 2, 1, 3]),
            (&[9, 2], &[1, 0]),
            (&[4, 1, 6], &[1, 2, 0]),
        ] {
            let x = random(&mut rng, shape);
            let want = x.view().permuted_axes(perm).as_standard_layout().to_owned();
            let st = qforge::graph::shape::strides(shape);
            let src = ew::StridedView {
                offset: 0,
                strides: perm.iter().map(|&p| st[p]).collect(),
            };
            let dst = ew::StridedView {
                offset: 0,
                strides: qforge::graph::shape::strides(want.shape()),
            };
            let tx = gpu.upload(&x.view()).unwrap();
            let got = run1(gpu, want.shape(), |e, y| {
                ew::strided_copy_into(e, gpu, &tx, &src, y, &dst, want.shape()).unwrap()
            });
            assert_eq!(got, want, "transpose {shape:?} by {perm:?}");
        }
    }
}

#[test]
fn softmax_and_mean_rows_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(34);
    for len in [1, 7, 256, 1000, 3001] {
        let x = random(&mut rng, &[5, len]).mapv(|v| v * 10.0);
        let tx = gpu.upload(&x.view()).unwrap();
        let got = run1(&gpu, &[5, len], |e, y| {
            reduce::softmax_rows_into(e, &gpu, &tx, len, y).unwrap()
        });
        close(
            &format!("softmax {len}"),
            &got,
            &ArrayD::from_shape_vec(
                IxDyn(&[5, len]),
                nn::softmax_rows(x.as_slice().unwrap(), len),
            )
            .unwrap(),
            Tol {
                abs: 1e-6,
                rel: 1e-4,
            },
        );
        let got = run1(&gpu, &[5], |e, y| {
            reduce::mean_rows_into(e, &gpu, &tx, len, y).unwrap()
        });
        close(
            &format!("mean {len}"),
            &got,
            &ArrayD::from_shape_vec(IxDyn(&[5]), nn::mean_rows(x.as_slice().unwrap(), len))
                .unwrap(),
            Tol::STATS,
        );
    }
}

/// Convolutions whose reduction (C_in x kh x kw) exceeds one invocation's loop budget on
/// software adapters.
#[test]
fn long_conv_reductions_are_complete() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(31);
    for (cin, k) in [(2048, 3), (8192, 3), (40_000, 1)] {
        let a = Conv2d {
            strides: [1, 1],
            pads: [1; 4],
            dilations: [1, 1],
            groups: 1,
        };
        let x = random(&mut rng, &[1, cin, 4, 4]);
        let wt = random(&mut rng, &[2, cin, k, k]);
        let shape = conv_output_shape(x.shape(), wt.shape(), &a).unwrap();
        let (tx, tw) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&wt.view()).unwrap(),
        );
        let got = run1(&gpu, &shape, |e, y| {
            conv::conv2d_into(e, &gpu, &tx, &tw, None, &a, y).unwrap()
        });
        let want = nn::conv2d(&x.view(), &wt.view(), None, &a);
        let red = (cin * k * k) as f64;
        close(
            &format!("{cin} channels, {k}x{k}"),
            &got,
            &want,
            Tol {
                abs: Tol::GEMM.abs * red.sqrt(),
                rel: Tol::GEMM.rel,
            },
        );
    }
}

/// NaN and infinities go through activations, Max/Min and MaxPool as onnxruntime 1.32 sends them
/// (its outputs on [NaN, 1, -2, inf] are the expected rows); the CPU reference agrees. A NaN in a
/// MaxPool window is the window's result (onnxruntime's depends on the NaN's position).
#[test]
fn nan_and_inf_propagate_as_onnxruntime() {
    let Some(gpu) = gpu() else { return };
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![nan, 1.0, -2.0, inf]).unwrap();
    let tx = gpu.upload(&x.view()).unwrap();
    let same = |a: f32, b: f32| {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * b.abs().max(1.0) || a == b
    };
    let cases = [
        (Unary::Relu, [nan, 1.0, 0.0, inf]),
        (Unary::Clip(0.0, 6.0), [nan, 1.0, 0.0, 6.0]),
        (Unary::LeakyRelu(0.01), [nan, 1.0, -0.02, inf]),
        (Unary::HardSigmoid(0.2, 0.5), [nan, 0.7, 0.1, 1.0]),
        (Unary::HardSwish, [nan, 0.666_666_7, -0.333_333_3, inf]),
        (Unary::Sigmoid, [nan, 0.731_058_6, 0.119_202_91, 1.0]),
        (Unary::Tanh, [nan, 0.761_594_2, -0.964_027_6, 1.0]),
        (Unary::Exp, [nan, std::f32::consts::E, 0.135_335_28, inf]),
        (Unary::Sqrt, [nan, 1.0, nan, inf]),
    ];
    for (f, want) in cases {
        let got = run1(&gpu, &[1, 1, 2, 2], |e, y| {
            ew::unary_into(e, &gpu, f, &tx, y).unwrap()
        });
        let cpu = x.mapv(|v| nn::unary_value(f, v));
        for (i, (&w, (&g, &c))) in want.iter().zip(got.iter().zip(cpu.iter())).enumerate() {
            assert!(
                same(g, w) && same(c, w),
                "{f:?}[{i}]: GPU {g}, CPU {c}, onnxruntime {w}"
            );
        }
    }
    let zero = gpu.upload_slice(&[1], &[0.0f32]).unwrap();
    for (op, want) in [
        (Binary::Max, [nan, 1.0, 0.0, inf]),
        (Binary::Min, [nan, 0.0, -2.0, 0.0]),
    ] {
        let got = run1(&gpu, &[1, 1, 2, 2], |e, y| {
            ew::binary_into(e, &gpu, op, &tx, &zero, y).unwrap()
        });
        let cpu = nn::binary(op, &x.view(), &ArrayD::from_elem(IxDyn(&[1]), 0.0).view());
        for (i, (&w, (&g, &c))) in want.iter().zip(got.iter().zip(cpu.iter())).enumerate() {
            assert!(
                same(g, w) && same(c, w),
                "{op:?}[{i}]: GPU {g}, CPU {c}, onnxruntime {w}"
            );
        }
    }
    let a = Pool2d {
        kernel: [2, 2],
        strides: [1, 1],
        pads: [0; 4],
        dilations: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
    };
    for pos in 0..4 {
        let mut v = vec![1.0f32, -2.0, 0.0, 3.0];
        v[pos] = nan;
        let xn = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), v).unwrap();
        let t = gpu.upload(&xn.view()).unwrap();
        let got = run1(&gpu, &[1, 1, 1, 1], |e, y| {
            pool::pool2d_into(e, &gpu, &t, &a, true, y).unwrap()
        });
        assert!(
            got[[0, 0, 0, 0]].is_nan() && nn::pool2d(&xn.view(), &a, true)[[0, 0, 0, 0]].is_nan(),
            "MaxPool keeps a NaN at {pos}"
        );
    }
}

/// Pow over its whole real domain as C's pow (and onnxruntime) define it: negative bases with
/// integral exponents (LayerNorm exported as (x - mean)^2), zero and infinite bases and
/// exponents, NaN; GPU and CPU reference against Rust's powf.
#[test]
fn pow_is_real_for_negative_bases_and_edge_values() {
    let Some(gpu) = gpu() else { return };
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let bases = [
        -3.0, -2.0, -1.5, -1.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.0, 3.0, 1e30, inf, -inf, nan,
    ];
    let exps = [
        -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 2.5, 1e9, -1e9, inf, -inf, nan,
    ];
    let mut a = Vec::new();
    let mut b = Vec::new();
    for &x in &bases {
        for &y in &exps {
            a.push(x);
            b.push(y);
        }
    }
    let n = a.len();
    let (ta, tb) = (
        gpu.upload_slice(&[n], &a).unwrap(),
        gpu.upload_slice(&[n], &b).unwrap(),
    );
    let got = run1(&gpu, &[n], |e, y| {
        ew::binary_into(e, &gpu, Binary::Pow, &ta, &tb, y).unwrap()
    });
    let av = ArrayD::from_shape_vec(IxDyn(&[n]), a.clone()).unwrap();
    let bv = ArrayD::from_shape_vec(IxDyn(&[n]), b.clone()).unwrap();
    let cpu = nn::binary(Binary::Pow, &av.view(), &bv.view());
    for i in 0..n {
        let want = a[i].powf(b[i]);
        for (who, v) in [("GPU", got[i]), ("CPU", cpu[i])] {
            let ok = if want.is_nan() {
                v.is_nan()
            } else if want.is_infinite() || want == 0.0 {
                v == want && v.is_sign_negative() == want.is_sign_negative()
            } else {
                ((v - want) / want).abs() <= 1e-5
            };
            assert!(ok, "{who}: {}^{} = {v}, expected {want}", a[i], b[i]);
        }
    }
}

/// Every unary op over the extremes of its domain (infinities, huge and subnormal values,
/// signed zeros, negatives where the op is undefined): GPU against the CPU reference, which is
/// checked against Rust's own functions where they exist.
#[test]
fn unary_ops_hold_at_the_ends_of_their_domain() {
    let Some(gpu) = gpu() else { return };
    let inf = f32::INFINITY;
    let xs = vec![
        -inf, -1e30, -100.0, -20.0, -9.5, -1.0, -1e-39, -0.0, 0.0, 1e-39, 1.0, 9.5, 20.0, 100.0,
        1e30, inf,
    ];
    let n = xs.len();
    let tx = gpu.upload_slice(&[n], &xs).unwrap();
    for f in ALL_UNARY {
        let got = run1(&gpu, &[n], |e, y| {
            ew::unary_into(e, &gpu, f, &tx, y).unwrap()
        });
        for (i, &x) in xs.iter().enumerate() {
            let cpu = nn::unary_value(f, x);
            let std = match f {
                Unary::Tanh => Some(x.tanh()),
                Unary::Exp => Some(x.exp()),
                Unary::Sqrt => Some(x.sqrt()),
                Unary::Sigmoid => Some(1.0 / (1.0 + (-x).exp())),
                Unary::Log => Some(x.ln()),
                Unary::Abs => Some(x.abs()),
                Unary::Floor => Some(x.floor()),
                Unary::Ceil => Some(x.ceil()),
                Unary::Round => Some(x.round_ties_even()),
                Unary::Reciprocal => Some(1.0 / x),
                _ => None,
            };
            let close = |a: f32, b: f32| {
                (a.is_nan() && b.is_nan())
                    || a == b
                    || (a - b).abs() <= 2e-6 * b.abs().max(1e-30) + 1e-37
            };
            // A GPU may flush a subnormal input to zero (or not): Log's result depends on it.
            let flushed = f == Unary::Log && x != 0.0 && x.abs() < f32::MIN_POSITIVE;
            assert!(
                flushed || close(got[i], cpu),
                "{f:?}({x}): GPU {}, CPU {cpu}",
                got[i]
            );
            if let Some(s) = std {
                assert!(close(cpu, s), "{f:?}({x}): CPU {cpu}, std {s}");
            }
        }
    }
}

/// Division, subtraction and products at zeros, infinities and NaN give IEEE's results (1/0 =
/// inf, 0/0 = NaN, inf - inf = NaN, 0 * inf = NaN), as onnxruntime's do.
#[test]
fn arithmetic_at_zeros_and_infinities_is_ieee() {
    let Some(gpu) = gpu() else { return };
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let vals = [-inf, -1.0, -0.0, 0.0, 1e-39, 1.0, 3e38, inf, nan];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &x in &vals {
        for &y in &vals {
            a.push(x);
            b.push(y);
        }
    }
    let n = a.len();
    let (ta, tb) = (
        gpu.upload_slice(&[n], &a).unwrap(),
        gpu.upload_slice(&[n], &b).unwrap(),
    );
    for (op, f) in [
        (Binary::Add, (|x, y| x + y) as fn(f32, f32) -> f32),
        (Binary::Sub, |x, y| x - y),
        (Binary::Mul, |x, y| x * y),
        (Binary::Div, |x, y| x / y),
    ] {
        let got = run1(&gpu, &[n], |e, y| {
            ew::binary_into(e, &gpu, op, &ta, &tb, y).unwrap()
        });
        for i in 0..n {
            let want = f(a[i], b[i]);
            let g = got[i];
            // Subnormal results may be flushed to zero by a GPU.
            let ok = (want.is_nan() && g.is_nan())
                || g == want
                || (want.abs() < f32::MIN_POSITIVE && g.abs() < f32::MIN_POSITIVE)
                || (g - want).abs() <= 1e-6 * want.abs();
            assert!(ok, "{op:?}({}, {}) = {g}, expected {want}", a[i], b[i]);
        }
    }
}

/// Cubic (two coefficients, with and without exclude_outside) and antialiased linear and cubic
/// resizes, every coordinate transform, up and down by integer and fractional factors, and
/// tf_crop_and_resize in every mode, against the reference (ONNX's tap rule, in f64); the ONNX
/// node cases check the reference's rule.
#[test]
fn filtered_resizes_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(36);
    let coords = [
        "half_pixel",
        "asymmetric",
        "align_corners",
        "pytorch_half_pixel",
        "half_pixel_symmetric",
    ];
    for case in 0..40 {
        let mode = if case % 4 == 3 { "linear" } else { "cubic" };
        let base = qforge::graph::attrs::Resize::from_onnx(mode, coords[case % 5], "floor");
        let r = qforge::graph::attrs::Resize {
            cubic_a: if case % 2 == 0 { -0.75 } else { -0.5 },
            exclude_outside: case % 3 == 0,
            antialias: mode == "linear" || case % 5 == 1,
            ..base.unwrap()
        };
        assert!(r.filtered());
        let xs = [
            rng.random_range(1..3),
            rng.random_range(1..3),
            rng.random_range(2..12),
            rng.random_range(2..12),
        ];
        let pick = |rng: &mut crate::common::TestRng| {
            [0.3f32, 0.5, 0.8, 1.0, 1.7, 3.0][rng.random_range(0..6)]
        };
        let scales = [pick(&mut rng), pick(&mut rng)];
        let out = [
            ((xs[2] as f32 * scales[0]).floor() as usize).max(1),
            ((xs[3] as f32 * scales[1]).floor() as usize).max(1),
        ];
        let x = random(&mut rng, &xs);
        let want = nn::resize(&x.view(), r, scales, out);
        let tx = gpu.upload(&x.view()).unwrap();
        let got = run1(&gpu, &[xs[0], xs[1], out[0], out[1]], |e, y| {
            pool::resize_into(e, &gpu, &tx, r, scales, y).unwrap()
        });
        let what = format!("resize case {case} {r:?} x {xs:?} scales {scales:?}");
        close(&what, &got, &want, Tol::GEMM);
    }
    // tf_crop_and_resize: regions inside and reaching outside the input (extrapolated), each
    // mode, one-pixel outputs.
    for case in 0..24 {
        let mode = ["nearest", "linear", "cubic"][case % 3];
        let mut roi = [0.0f32; 4];
        for k in 0..2 {
            let a = rng.random_range(-0.3f32..0.6);
            roi[2 * k] = a;
            roi[2 * k + 1] = a + rng.random_range(0.2f32..1.0);
        }
        let r = qforge::graph::attrs::Resize {
            roi,
            extrapolation: if case % 2 == 0 { 0.0 } else { 10.0 },
            ..qforge::graph::attrs::Resize::from_onnx(
                mode,
                "tf_crop_and_resize",
                "round_prefer_ceil",
            )
            .unwrap()
        };
        let xs = [1, 2, rng.random_range(2..10), rng.random_range(2..10)];
        let out = [rng.random_range(1..9), rng.random_range(1..9)];
        let scales = [out[0] as f32 / xs[2] as f32, out[1] as f32 / xs[3] as f32];
        let x = random(&mut rng, &xs);
        let want = nn::resize(&x.view(), r, scales, out);
        let tx = gpu.upload(&x.view()).unwrap();
        let got = run1(&gpu, &[xs[0], xs[1], out[0], out[1]], |e, y| {
            pool::resize_into(e, &gpu, &tx, r, scales, y).unwrap()
        });
        let what = format!("tf_crop_and_resize case {case} {r:?} x {xs:?} -> {out:?}");
        close(&what, &got, &want, Tol::GEMM);
    }
}
