//! GEMM in GFLOP/s (criterion's elements/s = FLOP/s) for every kernel the adapter can run, at
//! n = 256..1024 and on two of MobileNetV2's pointwise shapes, next to ndarray's `dot` on the CPU
//! in the same run; MobileNetV2's depthwise 3x3 convs with every conv kernel that computes
//! them (`cargo bench -p qforge-benches --bench gemm -- depthwise`); and ResNet's dense 3x3
//! convs with the dense-conv kernels of the adapter class (`-- dense`).
//!
//! `cargo bench -p qforge-benches --bench gemm`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, Array3};
use qforge::error::DType;
use qforge::gpu::{Gpu, GpuTensor};
use qforge::graph::attrs::Conv2d;
use qforge::graph::shape::conv_output_shape;
use qforge::ops::conv::{conv2d_with, ConvKernel};
use qforge::ops::epilogue::Epilogue;
use qforge::ops::gemm::{matmul_with, Bias, GemmKernel};

const NONE: Epilogue<'static> = Epilogue::NONE;

fn value(i: usize, seed: usize) -> f32 {
    ((i * 31 + seed * 17) % 101) as f32 / 50.0 - 1.0
}

/// One kernel on one product, a batch of `[m, k] * [k, n]` with the left matrix shared.
fn gpu_case(gpu: &Gpu, kernel: GemmKernel, a: &GpuTensor, b: &GpuTensor, c: &GpuTensor) {
    common::run(gpu, |e| {
        matmul_with(
            e,
            gpu,
            kernel,
            a,
            b,
            false,
            false,
            1.0,
            Bias::None,
            &NONE,
            c,
        )
        .unwrap()
    })
}

fn gemm_bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("gemm[{tag}]"));
    common::timing(&mut g, 10, 300, 3);
    // (name, batch, m, k, n): square products, and a pointwise conv of MobileNetV2 (24 output
    // channels from 144 at 56 x 56, batch 8) as the conv lowering runs it.
    let mut cases = vec![
        ("n=256", 1, 256, 256, 256),
        ("n=512", 1, 512, 512, 512),
        ("n=1024", 1, 1024, 1024, 1024),
        ("pointwise 24x144x3136 b8", 8, 24, 144, 3136),
        // A 7 x 7 pointwise conv: N = 49 is no multiple of 4, so B is read by elements.
        ("pointwise 960x160x49 b8", 8, 960, 160, 49),
    ];
    // The size GPU peak fractions are quoted at (minutes per sample on a software adapter).
    if !gpu.adapter().is_software() {
        cases.push(("n=4096", 1, 4096, 4096, 4096));
    }
    for (name, batch, m, k, n) in cases {
        let a = Array2::from_shape_fn((m, k), |(i, j)| value(i * k + j, 1));
        let b = Array3::from_shape_fn((batch, k, n), |(q, i, j)| value((q * k + i) * n + j, 2));
        let ga = gpu.upload(&a.view().into_dyn()).unwrap();
        let gb = gpu.upload(&b.view().into_dyn()).unwrap();
        let gc = gpu.empty(&[batch, m, n], DType::F32).unwrap();
        g.throughput(Throughput::Elements(2 * (batch * m * k * n) as u64));
        for kernel in GemmKernel::available(&gpu) {
            let id = BenchmarkId::new(format!("gpu {kernel:?}"), name);
            g.bench_function(id, |bch| bch.iter(|| gpu_case(&gpu, kernel, &ga, &gb, &gc)));
        }
        if m * k * n > 1 << 30 {
            continue;
        }
        g.bench_function(BenchmarkId::new("cpu ndarray dot", name), |bch| {
            bch.iter(|| {
                for q in 0..batch {
                    std::hint::black_box(a.dot(&b.index_axis(ndarray::Axis(0), q)));
                }
            })
        });
    }
    g.finish();
}

/// A convolution's input `xs` and weights `ws` (scaled by `w_scale`) on the GPU, filled with
/// [`value`] row by row, and its output tensor with the output's shape.
fn conv_operands(
    gpu: &Gpu,
    xs: [usize; 4],
    ws: [usize; 4],
    a: &Conv2d,
    w_scale: f32,
) -> (GpuTensor, GpuTensor, GpuTensor, [usize; 4]) {
    let upload = |shape: [usize; 4], scale: f32| {
        let rows = shape[0] * shape[1];
        let x = Array2::from_shape_fn((rows, shape[2] * shape[3]), |(r, i)| scale * value(i, r));
        gpu.upload(&x.into_shape_with_order(shape).unwrap().into_dyn().view())
            .unwrap()
    };
    let ys = conv_output_shape(&xs, &ws, a).unwrap();
    let y = gpu.empty(&ys, DType::F32).unwrap();
    (upload(xs, 1.0), upload(ws, w_scale), y, ys)
}

/// MobileNetV2's depthwise 3x3 convs at batch 8 (channels, input size, stride; pads 1), in
/// GFLOP/s, for every kernel that computes them.
fn depthwise_bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("depthwise[{tag}]"));
    common::timing(&mut g, 10, 300, 3);
    for (ch, size, stride) in [
        (32, 112, 1),
        (96, 112, 2),
        (144, 56, 1),
        (144, 56, 2),
        (192, 28, 1),
        (384, 14, 1),
        (960, 7, 1),
    ] {
        let a = Conv2d {
            strides: [stride; 2],
            pads: [1; 4],
            dilations: [1, 1],
            groups: ch,
        };
        let (x, w, y, ys) = conv_operands(&gpu, [8, ch, size, size], [ch, 1, 3, 3], &a, 1.0);
        g.throughput(Throughput::Elements(
            2 * 9 * ys.iter().product::<usize>() as u64,
        ));
        let name = format!("{ch}x{size}x{size} s{stride} b8");
        for kernel in [
            ConvKernel::Depthwise3x3,
            ConvKernel::DepthwiseTiled,
            ConvKernel::Direct,
        ] {
            let id = BenchmarkId::new(format!("gpu {kernel:?}"), &name);
            g.bench_function(id, |bch| {
                bch.iter(|| {
                    common::run(&gpu, |e| {
                        conv2d_with(e, &gpu, kernel, &x, &w, None, &a, &NONE, None, &y).unwrap()
                    })
                })
            });
        }
    }
    g.finish();
}

/// Dense 3x3 convs (pads 1) of ResNet's stages, in GFLOP/s, with the kernels for dense convs
/// on this adapter class (im2col on CPU adapters; the implicit GEMMs on both tile sizes on
/// GPUs, at batch 32, where [`ConvKernel::pick`] takes the 128-wide tiles for the larger two)
/// and the direct kernel (`cargo bench -p qforge-benches --bench gemm -- dense`).
fn dense_conv_bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("dense conv[{tag}]"));
    common::timing(&mut g, 10, 300, 3);
    let (batch, kernels) = match gpu.cpu_kernels() {
        true => (8, vec![ConvKernel::Im2col, ConvKernel::Direct]),
        false => (
            32,
            vec![
                ConvKernel::Implicit,
                ConvKernel::ImplicitWide,
                ConvKernel::Direct,
            ],
        ),
    };
    for (ch, size) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let a = Conv2d {
            pads: [1; 4],
            ..Conv2d::default()
        };
        let (xs, ws) = ([batch, ch, size, size], [ch, ch, 3, 3]);
        let (x, w, y, ys) = conv_operands(&gpu, xs, ws, &a, 1.0 / 16.0);
        g.throughput(Throughput::Elements(
            2 * 9 * ch as u64 * ys.iter().product::<usize>() as u64,
        ));
        let name = format!("{ch}x{size}x{size} b{batch}");
        for &kernel in &kernels {
            let col = kernel
                .scratch(&xs, &ws, &a)
                .unwrap()
                .map(|s| gpu.empty(&s, DType::F32).unwrap());
            let id = BenchmarkId::new(format!("gpu {kernel:?}"), &name);
            g.bench_function(id, |bch| {
                bch.iter(|| {
                    common::run(&gpu, |e| {
                        conv2d_with(e, &gpu, kernel, &x, &w, None, &a, &NONE, col.as_ref(), &y)
                            .unwrap()
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, gemm_bench, depthwise_bench, dense_conv_bench);
criterion_main!(benches);
