//! GEMM in GFLOP/s (criterion's elements/s = FLOP/s) at 256..2048, next to ndarray's `dot`
//! on the CPU in the same run.
//!
//! `cargo bench --bench gemm`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use qforge::ops::gemm;

fn matrix(n: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, n), |(i, j)| {
        (((i * 31 + j * 17 + seed) % 101) as f32 - 50.0) / 50.0
    })
}

fn gemm_bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut g = c.benchmark_group(format!("gemm[{tag}]"));
    g.sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(3));
    for n in [256usize, 512, 1024, 2048] {
        let (a, b) = (matrix(n, 1), matrix(n, 2));
        let (ga, gb) = (
            gpu.upload(&a.view().into_dyn()).unwrap(),
            gpu.upload(&b.view().into_dyn()).unwrap(),
        );
        g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        g.bench_with_input(BenchmarkId::new("gpu matmul", n), &n, |bch, _| {
            bch.iter(|| {
                common::run(&gpu, |e| {
                    drop(gemm::matmul(e, &gpu, &ga, &gb, false, false).unwrap())
                })
            })
        });
        if n < 2048 {
            g.bench_with_input(BenchmarkId::new("gpu matmul transB", n), &n, |bch, _| {
                bch.iter(|| {
                    common::run(&gpu, |e| {
                        drop(gemm::matmul(e, &gpu, &ga, &gb, false, true).unwrap())
                    })
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("cpu ndarray dot", n), &n, |bch, _| {
            bch.iter(|| a.dot(&b))
        });
    }
    g.finish();
}

criterion_group!(benches, gemm_bench);
criterion_main!(benches);
