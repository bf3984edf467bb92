//! AdaRound and QAT speed: the whole-model forward at AdaRound's batch (32) next to AdaRound
//! over every layer at 10 iterations each, and QAT (8 steps of 32, the training graph's
//! compilation included) with per-channel and per-tensor quantizers, in the same run (AIMET's
//! users see per-channel QAT 50x slower than per-tensor); before timing, one AdaRound run prints
//! each layer's iterations/s and the whole model's time extrapolated to AIMET's default
//! 10,000 iterations per layer (caching and losses as measured, iterations at the measured
//! rate). Fashion-MNIST CNN always; MobileNetV2 too with `QFORGE_BENCH_MOBILENET=1` (slow on
//! software adapters: every layer caches 32 photos' inputs through the model before it).
//!
//! `cargo bench -p qforge-benches --bench adaround`

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use qforge::exec::Runner;
use qforge::quant::adaround::{self, AdaroundOptions};
use qforge::quant::analyzers::Scheme;
use qforge::quant::qat::{self, QatOptions};
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn sim(gpu: &Arc<qforge::gpu::Gpu>, rel: &str) -> QuantSim {
    sim_with(gpu, rel, QuantConfig::default_per_channel())
}

fn sim_with(gpu: &Arc<qforge::gpu::Gpu>, rel: &str, cfg: QuantConfig) -> QuantSim {
    let path = common::repo(rel);
    QuantSim::new(
        gpu.clone(),
        qforge::graph::load(&path).unwrap(),
        &cfg,
        QuantOptions {
            param_bw: 4,
            act_bw: 8,
            ..Default::default()
        },
        Default::default(),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let mut models = vec![("fmnist_cnn", "models/fmnist_cnn.onnx")];
    if std::env::var("QFORGE_BENCH_MOBILENET").is_ok_and(|v| v == "1") {
        models.push(("mobilenet_v2", "models/mobilenet_v2.onnx"));
    }
    let samples = 32;
    for (name, rel) in models {
        let s = sim(&gpu, rel);
        let g = s.prepared(samples).unwrap();
        let shape = g.shapes[&g.inputs[0]].clone();
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |d| {
            ((d[0] * 5 + d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
        });
        let opts = |iterations| AdaroundOptions {
            iterations: Some(iterations),
            ..Default::default()
        };
        let mut one = sim(&gpu, rel);
        let r = adaround::apply(&mut one, &x, samples, &opts(100), &mut |_, _, _, _| {}).unwrap();
        let mut total = 0.0;
        for l in &r.layers {
            let fixed = l.seconds - l.train_seconds;
            total += fixed + 10_000.0 / l.iterations_per_s();
            eprintln!(
                "adaround[{tag}] {name} {}: {:.0} iterations/s, caching and losses {:.2} s",
                l.weight,
                l.iterations_per_s(),
                fixed
            );
        }
        eprintln!(
            "adaround[{tag}] {name}: {} layers, 10,000 iterations per layer extrapolated: {:.0} s",
            r.layers.len(),
            total
        );
        let mut grp = c.benchmark_group(format!("adaround[{tag}] {name}"));
        common::timing(&mut grp, 10, 100, 5);
        grp.throughput(Throughput::Elements(samples as u64));
        let fwd = Runner::new(gpu.clone(), s.model().clone()).batch(samples);
        let input = g.inputs[0].clone();
        grp.bench_function(BenchmarkId::new("forward", samples), |b| {
            b.iter(|| fwd.run(&[(&input, x.view())]).unwrap())
        });
        grp.bench_function(
            BenchmarkId::new("adaround, 10 iterations per layer", samples),
            |b| {
                b.iter(|| {
                    let mut s = sim(&gpu, rel);
                    adaround::apply(&mut s, &x, samples, &opts(10), &mut |_, _, _, _| {}).unwrap()
                })
            },
        );
        for (label, cfg) in [
            ("per-channel", QuantConfig::default_per_channel()),
            (
                "per-tensor",
                QuantConfig::default_per_channel().per_tensor(),
            ),
        ] {
            let mut s = sim_with(&gpu, rel, cfg);
            s.calibrate(Scheme::MinMax, std::iter::once(x.view()))
                .unwrap();
            let opts = QatOptions {
                epochs: 8,
                ..Default::default()
            };
            grp.bench_function(
                BenchmarkId::new(format!("QAT {label}, 8 steps"), samples),
                |b| b.iter(|| qat::apply(&mut s, &x, &opts, &mut |_, _, _, _| {}).unwrap()),
            );
        }
        grp.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
