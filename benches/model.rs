//! MobileNetV2 forward in images/s at batch 1, 8 and 32 on the adapter, next to the same
//! forward with the other adapter class's kernels and without fused epilogues (batch 1 and
//! 8) and through the CPU reference interpreter (batch 1) in the same run; and conv GFLOP/s
//! (criterion's elements/s = FLOP/s) for MobileNetV2's conv shapes with the picked kernel and
//! the direct one.
//!
//! `cargo bench -p qforge-benches --bench model`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use qforge::exec::Runner;
use qforge::graph::{self, attrs::Conv2d, shape::conv_output_shape};
use qforge::ops::conv;
use qforge::ops::epilogue::Epilogue;
use qforge::DType;

const NONE: Epilogue<'static> = Epilogue::NONE;

fn input(batch: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[batch, 3, 224, 224]), |d| {
        ((d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    })
}

fn forward(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path = common::repo("models/mobilenet_v2.onnx");
    let model = graph::load(&path).unwrap();
    let mut g = c.benchmark_group(format!("mobilenet_v2[{tag}]"));
    common::timing(&mut g, 10, 100, 5);
    // The executor splits batches whose activations exceed one storage binding (batch 32 at
    // 224x224 does on 128 MiB adapters) and reuses one plan per piece size.
    // The same forward with the kernels picked for the other adapter class (on a software
    // adapter: the GPU kernels), as the baseline in the same run.
    let mut other = qforge::gpu::Gpu::new().unwrap();
    other.set_cpu_kernels(!gpu.cpu_kernels());
    let class = |cpu: bool| {
        if cpu {
            "CPU-adapter kernels"
        } else {
            "GPU kernels"
        }
    };
    let baseline = Runner::new(std::sync::Arc::new(other), model.clone());
    // And with one dispatch per node (no fused epilogues), the fusion's baseline.
    let mut plain = qforge::gpu::Gpu::new().unwrap();
    plain.set_fusion(false);
    let unfused = Runner::new(std::sync::Arc::new(plain), model.clone());
    let exec = Runner::new(gpu.clone(), model);
    for batch in [1usize, 8, 32] {
        let x = input(batch);
        exec.run(&[("input", x.view())]).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        let id = format!("gpu forward, {}", class(gpu.cpu_kernels()));
        g.bench_with_input(BenchmarkId::new(id, batch), &batch, |b, _| {
            b.iter(|| exec.run(&[("input", x.view())]).unwrap())
        });
        if batch <= 8 {
            let id = format!("gpu forward, {}", class(!gpu.cpu_kernels()));
            g.bench_with_input(BenchmarkId::new(id, batch), &batch, |b, _| {
                b.iter(|| baseline.run(&[("input", x.view())]).unwrap())
            });
            let id = format!("gpu forward unfused, {}", class(gpu.cpu_kernels()));
            g.bench_with_input(BenchmarkId::new(id, batch), &batch, |b, _| {
                b.iter(|| unfused.run(&[("input", x.view())]).unwrap())
            });
        }
        if batch == 1 {
            let r = exec.graph(1, &[]).unwrap();
            g.bench_with_input(
                BenchmarkId::new("cpu reference forward", batch),
                &batch,
                |b, _| {
                    b.iter(|| qforge::reference::graph::run(&r, &[("input", x.clone())]).unwrap())
                },
            );
        }
    }
    g.finish();
}

fn convs(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("conv[{tag}]"));
    common::timing(&mut g, 10, 100, 2);
    // (name, cin, cout, k, stride, groups, spatial)
    let shapes = [
        ("3x3 stem 3->32 s2", 3, 32, 3, 2, 1, 224),
        ("3x3 depthwise 144 @56", 144, 144, 3, 1, 144, 56),
        ("1x1 pointwise 144->24 @56", 144, 24, 1, 1, 1, 56),
        ("3x3 dense 64->64 @56", 64, 64, 3, 1, 1, 56),
    ];
    for (name, cin, cout, k, s, groups, hw) in shapes {
        let a = Conv2d {
            strides: [s, s],
            pads: [k / 2; 4],
            dilations: [1, 1],
            groups,
        };
        let x = gpu
            .upload(&ArrayD::from_elem(IxDyn(&[8, cin, hw, hw]), 0.5f32).view())
            .unwrap();
        let w = gpu
            .upload(&ArrayD::from_elem(IxDyn(&[cout, cin / groups, k, k]), 0.1f32).view())
            .unwrap();
        let shape = conv_output_shape(x.shape(), w.shape(), &a).unwrap();
        let y = gpu.empty(&shape, DType::F32).unwrap();
        let macs = shape.iter().product::<usize>() * (cin / groups) * k * k;
        g.throughput(Throughput::Elements(2 * macs as u64));
        // The kernel the plan picks (im2col + GEMM takes a scratch matrix).
        let kernel = conv::ConvKernel::pick(&gpu, x.shape(), w.shape(), &a);
        let col = kernel
            .scratch(x.shape(), w.shape(), &a)
            .unwrap()
            .map(|s| gpu.empty(&s, DType::F32).unwrap());
        let id = BenchmarkId::new(format!("gpu conv2d batch 8 {kernel:?}"), name);
        g.bench_function(id, |b| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    let col = col.as_ref();
                    conv::conv2d_with(e, &gpu, kernel, &x, &w, None, &a, &NONE, col, &y).unwrap()
                })
            })
        });
        if kernel != conv::ConvKernel::Direct {
            let id = BenchmarkId::new("gpu conv2d batch 8 Direct (baseline)", name);
            g.bench_function(id, |b| {
                b.iter(|| {
                    common::run(&gpu, |e| {
                        let k = conv::ConvKernel::Direct;
                        conv::conv2d_with(e, &gpu, k, &x, &w, None, &a, &NONE, None, &y).unwrap()
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, forward, convs);
criterion_main!(benches);
