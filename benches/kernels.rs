//! Memory-bound kernels in GB/s (bytes read + written) next to a plain buffer copy on the same
//! adapter (the roofline), and next to the CPU reference in the same run.
//!
//! `cargo bench -p qforge-benches --bench kernels`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use qforge::graph::attrs::Binary;
use qforge::ops::{calib, elementwise, quant};
use qforge::quant::{Encoding, QuantKind};
use qforge::reference;

fn data(n: usize) -> ArrayD<f32> {
    ArrayD::from_shape_vec(
        IxDyn(&[64, n / 64]),
        (0..n)
            .map(|i| ((i * 7919) % 10007) as f32 / 1000.0 - 5.0)
            .collect(),
    )
    .unwrap()
}

fn bandwidth(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("bandwidth[{tag}]"));
    common::timing(&mut g, 20, 500, 3);
    let per_tensor = Encoding::from_ranges(&[-4.0], &[4.0], 8, QuantKind::Asymmetric, None)
        .unwrap()
        .grid()
        .unwrap();
    let per_channel = Encoding::from_ranges(
        &[-4.0; 64],
        &[4.0; 64],
        8,
        QuantKind::SignedSymmetric,
        Some(0),
    )
    .unwrap()
    .grid()
    .unwrap();
    for n in [1usize << 20, 1 << 22, 1 << 24] {
        let host = data(n);
        let x = gpu.upload(&host.view()).unwrap();
        let dst = gpu.empty(x.shape(), qforge::DType::F32).unwrap();
        let rw = Throughput::Bytes(2 * 4 * n as u64);
        let read = Throughput::Bytes(4 * n as u64);
        g.throughput(rw.clone());
        g.bench_with_input(BenchmarkId::new("copy_buffer (roofline)", n), &n, |b, _| {
            b.iter(|| common::run(&gpu, |e| e.copy(&x, 0, &dst, 0, x.bytes())))
        });
        g.bench_with_input(BenchmarkId::new("copy_kernel", n), &n, |b, _| {
            b.iter(|| common::run(&gpu, |e| drop(elementwise::copy(e, &gpu, &x).unwrap())))
        });
        g.bench_with_input(BenchmarkId::new("fake_quant per-tensor", n), &n, |b, _| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    drop(quant::fake_quant(e, &gpu, &x, &per_tensor).unwrap())
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("fake_quant per-channel", n), &n, |b, _| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    drop(quant::fake_quant(e, &gpu, &x, &per_channel).unwrap())
                })
            })
        });
        g.throughput(read.clone());
        g.bench_with_input(BenchmarkId::new("min_max per-tensor", n), &n, |b, _| {
            b.iter(|| common::run(&gpu, |e| drop(calib::min_max(e, &gpu, &x, None).unwrap())))
        });
        g.bench_with_input(BenchmarkId::new("min_max per-channel", n), &n, |b, _| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    drop(calib::min_max(e, &gpu, &x, Some(0)).unwrap())
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("histogram 2048 bins", n), &n, |b, _| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    drop(
                        calib::histogram(
                            e,
                            &gpu,
                            &x,
                            None,
                            &[qforge::graph::attrs::BinGrid::over(-5.0, 5.0, 2048)],
                            2048,
                            qforge::graph::attrs::Outside::Edge,
                            None,
                        )
                        .unwrap(),
                    )
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("moments per-channel", n), &n, |b, _| {
            b.iter(|| {
                common::run(&gpu, |e| {
                    drop(calib::moments(e, &gpu, &x, Some(0)).unwrap())
                })
            })
        });
        if n <= 1 << 22 {
            g.throughput(rw);
            g.bench_with_input(
                BenchmarkId::new("cpu reference fake_quant", n),
                &n,
                |b, _| b.iter(|| reference::quant::fake_quant(&host.view(), &per_tensor).unwrap()),
            );
            g.throughput(read);
            g.bench_with_input(BenchmarkId::new("cpu reference min_max", n), &n, |b, _| {
                b.iter(|| reference::calib::min_max(&host.view(), None).unwrap())
            });
        }
    }
    g.finish();
}

/// Broadcasting binary ops and strided copies (transposes), with the kernel choice picked for
/// this adapter and with the other one (CPU adapters walk runs of 8 elements per lane, GPUs one
/// element per lane), next to the plain copy kernel.
fn strided(c: &mut Criterion) {
    let gpu = common::gpu();
    let mut other = qforge::gpu::Gpu::new().unwrap();
    other.set_cpu_kernels(!gpu.cpu_kernels());
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("strided[{tag}]"));
    common::timing(&mut g, 20, 500, 3);
    let n = 1usize << 22;
    for (which, gpu) in [("picked", &*gpu), ("other", &other)] {
        let cpu = if gpu.cpu_kernels() { "cpu" } else { "gpu" };
        let x = gpu.upload(&data(n).view()).unwrap();
        let nchw = x.reshape(&[4, 64, 128, 128]).unwrap();
        let bias = gpu
            .upload(&ArrayD::<f32>::ones(IxDyn(&[64, 1, 1])).view())
            .unwrap();
        let y = gpu.empty(&[4, 64, 128, 128], qforge::DType::F32).unwrap();
        g.throughput(Throughput::Bytes(2 * 4 * n as u64));
        g.bench_function(format!("copy_kernel ({which}: {cpu})"), |b| {
            b.iter(|| common::run(gpu, |e| drop(elementwise::copy(e, gpu, &x).unwrap())))
        });
        g.throughput(Throughput::Bytes(3 * 4 * n as u64));
        g.bench_function(format!("add same shape ({which}: {cpu})"), |b| {
            b.iter(|| {
                common::run(gpu, |e| {
                    elementwise::binary_into(e, gpu, Binary::Add, &nchw, &nchw, &y).unwrap()
                })
            })
        });
        g.throughput(Throughput::Bytes(2 * 4 * n as u64));
        g.bench_function(format!("add per channel ({which}: {cpu})"), |b| {
            b.iter(|| {
                common::run(gpu, |e| {
                    elementwise::binary_into(e, gpu, Binary::Add, &nchw, &bias, &y).unwrap()
                })
            })
        });
        // NCHW -> NHWC.
        let src = elementwise::StridedView {
            offset: 0,
            strides: vec![64 * 128 * 128, 128, 1, 128 * 128],
        };
        let dst = elementwise::StridedView {
            offset: 0,
            strides: vec![128 * 128 * 64, 128 * 64, 64, 1],
        };
        g.bench_function(format!("transpose NCHW->NHWC ({which}: {cpu})"), |b| {
            b.iter(|| {
                common::run(gpu, |e| {
                    elementwise::strided_copy_into(
                        e,
                        gpu,
                        &nchw,
                        &src,
                        &y,
                        &dst,
                        &[4, 128, 128, 64],
                    )
                    .unwrap()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bandwidth, strided);
criterion_main!(benches);
