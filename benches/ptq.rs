//! Post-training techniques next to a calibration pass of the same model in the same run:
//! CLE and analytical bias correction on MobileNetV2 (224x224); CLE, both bias corrections
//! (64 images) and sequential MSE (8 images) on the Fashion-MNIST CNN. Empirical bias
//! correction and seq-MSE run one forward per layer, so on MobileNetV2 they are timed by the
//! CLI (see README).
//!
//! `cargo bench -p qforge-benches --bench ptq`

mod common;

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{ArrayD, Axis, IxDyn};
use qforge::graph::passes::cle::CleOptions;
use qforge::quant::analyzers::Scheme;
use qforge::quant::sim::QuantSim;
use qforge::quant::{bias_correction, seq_mse, QuantConfig};

fn sim(gpu: &std::sync::Arc<qforge::gpu::Gpu>, model: &str) -> QuantSim {
    let path = common::repo(&format!("models/{model}"));
    QuantSim::new(
        gpu.clone(),
        qforge::graph::load(&path).unwrap(),
        &QuantConfig::default_per_channel().per_tensor(),
        Default::default(),
        HashMap::new(),
    )
    .unwrap()
}

fn ptq(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let x = ArrayD::from_shape_fn(IxDyn(&[8, 3, 224, 224]), |d| {
        ((d[0] * 5 + d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let mut grp = c.benchmark_group(format!("ptq mobilenet_v2[{tag}]"));
    common::timing(&mut grp, 10, 100, 5);
    let base = sim(&gpu, "mobilenet_v2.onnx");
    grp.bench_function(BenchmarkId::new("calibrate minmax", 8), |b| {
        b.iter_batched(
            || sim(&gpu, "mobilenet_v2.onnx"),
            |mut s| {
                s.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 8))
                    .unwrap()
            },
            criterion::BatchSize::PerIteration,
        )
    });
    grp.bench_function("cle", |b| {
        b.iter_batched(
            || sim(&gpu, "mobilenet_v2.onnx"),
            |mut s| s.equalize(CleOptions::default()).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    grp.bench_function("bias correction analytical", |b| {
        b.iter_batched(
            || sim(&gpu, "mobilenet_v2.onnx"),
            |mut s| bias_correction::analytical(&mut s).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    drop(base);
    grp.finish();

    let x = ArrayD::from_shape_fn(IxDyn(&[64, 1, 28, 28]), |d| {
        ((d[0] * 5 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let mut grp = c.benchmark_group(format!("ptq fmnist_cnn[{tag}]"));
    common::timing(&mut grp, 10, 100, 5);
    let calibrated = || {
        let mut s = sim(&gpu, "fmnist_cnn.onnx");
        s.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 64))
            .unwrap();
        s
    };
    grp.bench_function(BenchmarkId::new("calibrate minmax", 64), |b| {
        b.iter_batched(
            || sim(&gpu, "fmnist_cnn.onnx"),
            |mut s| {
                s.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 64))
                    .unwrap()
            },
            criterion::BatchSize::PerIteration,
        )
    });
    grp.bench_function("cle", |b| {
        b.iter_batched(
            || sim(&gpu, "fmnist_cnn.onnx"),
            |mut s| s.equalize(CleOptions::default()).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    grp.bench_function("bias correction analytical", |b| {
        b.iter_batched(
            || sim(&gpu, "fmnist_cnn.onnx"),
            |mut s| bias_correction::analytical(&mut s).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    grp.bench_function(BenchmarkId::new("bias correction empirical", 64), |b| {
        b.iter_batched(
            calibrated,
            |mut s| bias_correction::empirical(&mut s, &x, 64).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    let few = x.slice_axis(Axis(0), (0..8).into()).to_owned();
    grp.bench_function(BenchmarkId::new("seq-mse 20 candidates", 8), |b| {
        b.iter_batched(
            || sim(&gpu, "fmnist_cnn.onnx"),
            |mut s| seq_mse::apply(&mut s, &few, 8, 20).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    grp.finish();
}

criterion_group!(benches, ptq);
criterion_main!(benches);
