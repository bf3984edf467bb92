//! Compression numerics next to their CPU baselines in the same run: batched GPU SVD vs
//! nalgebra's SVD (one matrix after another), GPU Gram accumulation + Cholesky vs nalgebra,
//! and the greedy selection's score table on the Fashion-MNIST CNN (spatial SVD, 3 candidates,
//! 64 images). The whole MobileNetV2 selection is timed by the CLI (see README).
//!
//! `cargo bench -p qforge-benches --bench compress`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use qforge::compress::linalg::{solve_batched, svd_batched, NormalEquations, SvdOptions};
use qforge::compress::{CompressOptions, Compressor, Method, Scorer};
use qforge::reference::linalg as cpu;

fn mat(m: usize, n: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((m, n), |(i, j)| {
        (((i * 31 + j * 17 + seed * 7) % 97) as f32 / 48.0 - 1.0) + if i == j { 1.0 } else { 0.0 }
    })
}

fn svd(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut grp = c.benchmark_group(format!("svd[{tag}]"));
    common::timing(&mut grp, 10, 100, 5);
    for (what, mats) in [
        (
            "16 x 256x64",
            (0..16).map(|s| mat(256, 64, s)).collect::<Vec<_>>(),
        ),
        ("1 x 384x384", vec![mat(384, 384, 1)]),
        ("1 x 1024x256", vec![mat(1024, 256, 2)]),
    ] {
        let views: Vec<_> = mats.iter().map(|m| m.view()).collect();
        grp.bench_function(format!("gpu jacobi {what}"), |b| {
            b.iter(|| svd_batched(&gpu, &views, &SvdOptions::default()).unwrap())
        });
        grp.bench_function(format!("nalgebra {what}"), |b| {
            b.iter(|| views.iter().map(|v| cpu::svd(*v)).collect::<Vec<_>>())
        });
    }
    grp.finish();

    let mut grp = c.benchmark_group(format!("lstsq[{tag}]"));
    common::timing(&mut grp, 10, 100, 5);
    let (x, y) = (mat(2560, 576, 3), mat(2560, 64, 4));
    grp.bench_function(
        "gpu gram + cholesky 2560 samples, 576 features, 64 outputs",
        |b| {
            b.iter(|| {
                let mut ne = NormalEquations::new(&gpu, 576, 64).unwrap();
                ne.add(&gpu, x.view(), y.view()).unwrap();
                solve_batched(&gpu, &[&ne], 1e-4).unwrap()
            })
        },
    );
    grp.bench_function("nalgebra gram + cholesky (f64)", |b| {
        b.iter(|| {
            let (g, r) = (
                cpu::gram(x.view(), x.view()).mapv(|v| v as f32),
                cpu::gram(x.view(), y.view()).mapv(|v| v as f32),
            );
            cpu::ridge_solve(g.view(), r.view(), 1e-4).unwrap()
        })
    });
    grp.finish();

    let mut grp = c.benchmark_group(format!("greedy fmnist_cnn[{tag}]"));
    common::timing(&mut grp, 10, 100, 10);
    let path = common::repo("models/fmnist_cnn.onnx");
    let g = qforge::graph::load(&path).unwrap();
    let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[64, 1, 28, 28]), |d| {
        ((d[0] * 5 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let scorer = Scorer::new(gpu.clone(), &g, x, None).unwrap();
    let opts = CompressOptions {
        candidates: vec![0.25, 0.5, 0.75],
        ..Default::default()
    };
    grp.bench_function("ssvd score table (2 layers x 3 ratios, 64 images)", |b| {
        b.iter(|| {
            Compressor::new(gpu.clone(), &g, Method::SpatialSvd, opts.clone(), None)
                .unwrap()
                .score_table(&scorer, |_, _| {})
                .unwrap()
        })
    });
    grp.finish();
}

criterion_group!(benches, svd);
criterion_main!(benches);
