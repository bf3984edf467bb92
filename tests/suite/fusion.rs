//! Fused epilogues: a convolution or GEMM that applies the BatchNorm, residual Add,
//! activation and fake quantizer after it gives the bits of the unfused sequence of kernels,
//! on every conv and GEMM kernel and through whole models (forward, float and integer
//! simulation), with fewer dispatches.

use std::collections::HashMap;
use std::sync::Arc;

use crate::common::*;
use ndarray::{ArrayD, Axis};
use qforge::exec::Runner;
use qforge::gpu::{Gpu, GpuTensor};
use qforge::graph::attrs::{Binary, Conv2d, Unary};
use qforge::graph::shape::conv_output_shape;
use qforge::ops::conv::{self, ConvKernel};
use qforge::ops::elementwise as ew;
use qforge::ops::epilogue::{Epilogue, Quantize};
use qforge::ops::gemm::{matmul_with, Bias, GemmKernel};
use qforge::ops::quant;
use qforge::quant::sim::{Arithmetic, QuantOptions, QuantSim};
use qforge::quant::QuantConfig;
use qforge::DType;

/// Epilogue cases: bit 0 affine, 1 residual, 2 activation, 3 quantizer, 4 quantizer before
/// the activation; the bits above pick the activation. Every part alone, all together, and mixes (a pipeline per case is compiled,
/// which is what the test's time goes to on software adapters).
const CASES: [usize; 8] = [
    1,
    2,
    4 | 1 << 4,
    8,
    15 | 2 << 4,
    14 | 3 << 4,
    12 | 4 << 4,
    6 | 1 << 4,
];

const ACTS: [Unary; 5] = [
    Unary::Relu,
    Unary::Clip(0.0, 6.0),
    Unary::HardSwish,
    Unary::LeakyRelu(0.1),
    Unary::Gelu,
];

fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> GpuTensor {
    gpu.upload_slice(shape, data).unwrap()
}

fn read(gpu: &Gpu, t: &GpuTensor) -> Vec<f32> {
    let a: ArrayD<f32> = gpu.download(t).unwrap();
    a.iter().copied().collect()
}

/// The parts of one epilogue as tensors, drawn at random; `channels` per-channel values.
struct Parts {
    affine: Option<GpuTensor>,
    residual: Option<GpuTensor>,
    table_pre: Option<GpuTensor>,
    act: Option<Unary>,
    table: Option<GpuTensor>,
}

impl Parts {
    fn draw(
        gpu: &Gpu,
        rng: &mut crate::common::TestRng,
        case: usize,
        y: &[usize],
        channels: usize,
    ) -> Parts {
        let len: usize = y.iter().product();
        let affine = (case & 1 != 0)
            .then(|| upload(gpu, &[channels, 2], &values(rng, channels * 2, -1.5, 1.5)));
        let residual = (case & 2 != 0).then(|| upload(gpu, y, &values(rng, len, -2.0, 2.0)));
        let act = (case & 4 != 0).then_some(ACTS[(case >> 5) % ACTS.len()]);
        // A per-tensor 8-bit grid around the outputs' range: scale, 1 / scale, offset.
        let scale = 0.031_f32;
        let table =
            (case & 8 != 0).then(|| upload(gpu, &[1, 4], &[scale, 1.0 / scale, -128.0, 0.0]));
        // And a coarser 7-bit grid before the activation.
        let pre = 0.047_f32;
        let table_pre =
            (case & 16 != 0).then(|| upload(gpu, &[1, 4], &[pre, 1.0 / pre, -60.0, 0.0]));
        Parts {
            affine,
            residual,
            table_pre,
            act,
            table,
        }
    }

    fn epilogue(&self, exact: bool) -> Epilogue<'_> {
        Epilogue {
            affine: self.affine.as_ref(),
            residual: self.residual.as_ref(),
            quant_pre: self.table_pre.as_ref().map(|table| Quantize {
                table,
                steps: 127,
                exact,
            }),
            act: self.act,
            quant: self.table.as_ref().map(|table| Quantize {
                table,
                steps: 255,
                exact,
            }),
        }
    }

    /// The same parts as their own kernels, in the epilogue's order, on `y` (`inner` outputs
    /// per channel run).
    fn unfused(&self, gpu: &Gpu, y: &GpuTensor, inner: usize, exact: bool) -> Vec<f32> {
        let mut cur = y.clone();
        let mut enc = gpu.encoder();
        let next = |gpu: &Gpu| gpu.empty(y.shape(), DType::F32).unwrap();
        if let Some(ab) = &self.affine {
            let out = next(gpu);
            ew::channel_affine_into(&mut enc, gpu, &cur, ab, inner, &out).unwrap();
            cur = out;
        }
        if let Some(r) = &self.residual {
            let out = next(gpu);
            ew::binary_into(&mut enc, gpu, Binary::Add, &cur, r, &out).unwrap();
            cur = out;
        }
        if let Some(t) = &self.table_pre {
            let out = next(gpu);
            quant::fake_quant_table_into(&mut enc, gpu, &cur, t, 127, None, exact, &out).unwrap();
            cur = out;
        }
        if let Some(f) = self.act {
            let out = next(gpu);
            ew::unary_into(&mut enc, gpu, f, &cur, &out).unwrap();
            cur = out;
        }
        if let Some(t) = &self.table {
            let out = next(gpu);
            quant::fake_quant_table_into(&mut enc, gpu, &cur, t, 255, None, exact, &out).unwrap();
            cur = out;
        }
        gpu.submit(enc).unwrap();
        read(gpu, &cur)
    }
}

/// `run` (a kernel writing an output of `shape` with `channels` channels of `inner` elements,
/// applying the epilogue it is given) against the unfused parts on its plain output, for every
/// case of [`CASES`].
fn every_case(
    gpu: &Gpu,
    rng: &mut crate::common::TestRng,
    (shape, channels, inner): (&[usize], usize, usize),
    run: impl Fn(&Epilogue<'_>) -> GpuTensor,
    what: &str,
) {
    let plain = run(&Epilogue::NONE);
    for case in CASES {
        let exact = (case >> 5) % 2 == 1;
        let parts = Parts::draw(gpu, rng, case, shape, channels);
        let fused = read(gpu, &run(&parts.epilogue(exact)));
        let want = parts.unfused(gpu, &plain, inner, exact);
        assert_bits_eq(&format!("{what} case {case}"), &fused, &want);
    }
}

#[test]
fn every_conv_kernel_fuses_every_epilogue_part_bit_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(41);
    // (x shape, weight shape, attributes): depthwise 3x3 at odd widths and stride 2, a dense
    // 3x3 with pads, a pointwise conv, and a dense conv long enough to split its reduction.
    let depthwise = |c, s| Conv2d {
        groups: c,
        strides: [s, s],
        pads: [1; 4],
        ..Conv2d::default()
    };
    let cases: Vec<(Vec<usize>, Vec<usize>, Conv2d)> = vec![
        (vec![2, 6, 9, 13], vec![6, 1, 3, 3], depthwise(6, 1)),
        (vec![1, 5, 11, 7], vec![5, 1, 3, 3], depthwise(5, 2)),
        (
            vec![2, 3, 8, 9],
            vec![4, 3, 3, 3],
            Conv2d {
                pads: [1, 0, 1, 2],
                ..Conv2d::default()
            },
        ),
        (vec![2, 7, 5, 6], vec![9, 7, 1, 1], Conv2d::default()),
        (
            vec![1, 700, 4, 3],
            vec![4, 700, 3, 3],
            Conv2d {
                pads: [1; 4],
                ..Conv2d::default()
            },
        ),
    ];
    for (xs, ws, a) in cases {
        let y_shape = conv_output_shape(&xs, &ws, &a).unwrap().to_vec();
        let x = upload(&gpu, &xs, &values(&mut rng, xs.iter().product(), -2.0, 2.0));
        let w = upload(&gpu, &ws, &values(&mut rng, ws.iter().product(), -0.5, 0.5));
        let b = upload(&gpu, &[ws[0]], &values(&mut rng, ws[0], -0.3, 0.3));
        let inner = y_shape[2] * y_shape[3];
        for kernel in [
            ConvKernel::Direct,
            ConvKernel::Depthwise3x3,
            ConvKernel::Pointwise,
            ConvKernel::Im2col,
            ConvKernel::Implicit,
            ConvKernel::ImplicitWide,
            ConvKernel::DepthwiseTiled,
        ] {
            if !kernel.supports(&xs, &ws, &a) {
                continue;
            }
            let col = kernel
                .scratch(&xs, &ws, &a)
                .unwrap()
                .map(|s| gpu.empty(&s, DType::F32).unwrap());
            let run = |epi: &Epilogue<'_>| {
                let y = gpu.empty(&y_shape, DType::F32).unwrap();
                let mut enc = gpu.encoder();
                conv::conv2d_with(
                    &mut enc,
                    &gpu,
                    kernel,
                    &x,
                    &w,
                    Some(&b),
                    &a,
                    epi,
                    col.as_ref(),
                    &y,
                )
                .unwrap();
                gpu.submit(enc).unwrap();
                y
            };
            let what = format!("{kernel:?} {xs:?} {ws:?}");
            every_case(&gpu, &mut rng, (&y_shape, ws[0], inner), run, &what);
        }
    }
}

#[test]
fn every_gemm_kernel_fuses_every_epilogue_part_bit_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(42);
    // Odd sizes past the block edges, a batch, and an inner dimension past one dispatch. All
    // within one 16 x 16 tile of the tiled kernel, so that one tile shape of it is compiled
    // per epilogue (its tile shapes are `gemm_kernels`' test).
    let kernels = GemmKernel::available(&gpu);
    for (batch, m, k, n) in [(1, 13, 19, 11), (3, 9, 8, 12), (1, 5, 20000, 6)] {
        let a = upload(
            &gpu,
            &[batch, m, k],
            &values(&mut rng, batch * m * k, -1.0, 1.0),
        );
        let b = upload(&gpu, &[k, n], &values(&mut rng, k * n, -1.0, 1.0));
        let bias = upload(&gpu, &[m], &values(&mut rng, m, -0.5, 0.5));
        let shape = [batch, m, n];
        for &kernel in &kernels {
            let run = |epi: &Epilogue<'_>| {
                let c = gpu.empty(&shape, DType::F32).unwrap();
                let mut enc = gpu.encoder();
                matmul_with(
                    &mut enc,
                    &gpu,
                    kernel,
                    &a,
                    &b,
                    false,
                    false,
                    0.5,
                    Bias::PerRow(&bias),
                    epi,
                    &c,
                )
                .unwrap();
                gpu.submit(enc).unwrap();
                c
            };
            let what = format!("{kernel:?} {shape:?} k {k}");
            every_case(&gpu, &mut rng, (&shape, m, n), run, &what);
        }
    }
}

#[test]
fn an_epilogue_of_the_wrong_shape_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let x = upload(&gpu, &[1, 2, 4, 4], &[0.5; 32]);
    let w = upload(&gpu, &[3, 2, 1, 1], &[0.5; 6]);
    let y = gpu.empty(&[1, 3, 4, 4], DType::F32).unwrap();
    let short = upload(&gpu, &[5], &[0.0; 5]);
    for epi in [
        Epilogue {
            affine: Some(&short),
            ..Epilogue::NONE
        },
        Epilogue {
            residual: Some(&short),
            ..Epilogue::NONE
        },
        Epilogue {
            quant: Some(Quantize {
                table: &short,
                steps: 255,
                exact: false,
            }),
            ..Epilogue::NONE
        },
    ] {
        let mut enc = gpu.encoder();
        let e = conv::conv2d_with(
            &mut enc,
            &gpu,
            ConvKernel::Pointwise,
            &x,
            &w,
            None,
            &Conv2d::default(),
            &epi,
            None,
            &y,
        )
        .unwrap_err();
        assert!(matches!(e, qforge::Error::ShapeMismatch { .. }), "{e}");
    }
}

/// The shared GPU (fusing) and one of its own that does not.
fn fused_and_unfused() -> Option<(Arc<Gpu>, Arc<Gpu>)> {
    let mut plain = own_gpu()?;
    plain.set_fusion(false);
    Some((gpu()?, Arc::new(plain)))
}

fn load(model: &str) -> qforge::graph::ir::Graph {
    qforge::graph::load(&repo(model)).unwrap()
}

#[test]
fn fused_forwards_give_the_unfused_bits_with_fewer_dispatches() {
    let Some((fused, plain)) = fused_and_unfused() else {
        return;
    };
    let crops = photo_crops(true)
        .slice_axis(Axis(0), (0..3).into())
        .to_owned();
    let (mnist, _) = fashion_mnist(true, 5);
    // MobileNetV2 as exported (BN folded: Conv -> Clip, residual Adds) and the Fashion-MNIST
    // CNN (Conv -> BatchNormalization -> Relu).
    for (model, x) in [
        ("models/mobilenet_v2.onnx", crops),
        ("models/fmnist_cnn.onnx", mnist),
    ] {
        let g = load(model);
        let a = Runner::new(fused.clone(), g.clone());
        let b = Runner::new(plain.clone(), g);
        let (ya, yb) = (
            a.run(&[("input", x.view())]).unwrap(),
            b.run(&[("input", x.view())]).unwrap(),
        );
        let flat = |v: &ArrayD<f32>| v.iter().copied().collect::<Vec<f32>>();
        assert_bits_eq(model, &flat(&ya[0]), &flat(&yb[0]));
        let n = x.shape()[0];
        let (da, db) = (
            a.plan(n, &[]).unwrap().dispatch_count(),
            b.plan(n, &[]).unwrap().dispatch_count(),
        );
        eprintln!("{model}: {da} dispatches fused, {db} unfused");
        assert!(da < db, "{model}: {da} fused vs {db} unfused dispatches");
    }
}

#[test]
fn fused_simulations_give_the_unfused_bits() {
    let Some((fused, plain)) = fused_and_unfused() else {
        return;
    };
    let calib = photo_crops(false)
        .slice_axis(Axis(0), (0..4).into())
        .to_owned();
    let eval = photo_crops(true)
        .slice_axis(Axis(0), (0..3).into())
        .to_owned();
    for arithmetic in [Arithmetic::Float, Arithmetic::Integer] {
        let sim = |gpu: Arc<Gpu>| {
            let opts = QuantOptions {
                arithmetic,
                ..Default::default()
            };
            let mut s = QuantSim::new(
                gpu,
                load("models/mobilenet_v2.onnx"),
                &QuantConfig::default_per_channel(),
                opts,
                HashMap::new(),
            )
            .unwrap();
            s.calibrate(
                qforge::quant::analyzers::Scheme::MinMax,
                calib.axis_chunks_iter(Axis(0), 4),
            )
            .unwrap();
            s.simulate(&eval, 3).unwrap().remove(0)
        };
        let (a, b) = (sim(fused.clone()), sim(plain.clone()));
        let flat = |v: &ArrayD<f32>| v.iter().copied().collect::<Vec<f32>>();
        assert_bits_eq(&format!("{arithmetic:?} simulation"), &flat(&a), &flat(&b));
        assert_eq!(a.shape(), &[3, 1000]);
    }
}
