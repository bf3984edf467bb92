//! QuantAnalyzer and mixed precision next to one calibration pass of the same model, in the
//! same run (Fashion-MNIST CNN, 8 images): the analysis whole and its per-layer phase with
//! shared prefixes against the same scores from whole-model reruns; AMP's phase 1 (shared
//! prefixes) against whole reruns, and its whole search. On MobileNetV2 the CLI prints each
//! phase's time (README: "Analysis", "Mixed precision").
//!
//! `cargo bench --bench analysis`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{ArrayD, Axis};
use qforge::quant::amp::{groups, search, AmpOptions, AmpScore, AmpSearch, Candidate};
use qforge::quant::analysis::{analyze, layers, AnalysisOptions};
use qforge::quant::analyzers::Scheme;
use qforge::quant::sim::{Enabled, QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn sim(gpu: &std::sync::Arc<qforge::gpu::Gpu>, c: Candidate, x: &ArrayD<f32>) -> QuantSim {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist_cnn.onnx");
    let mut sim = QuantSim::new(
        gpu.clone(),
        qforge::graph::load(&path).unwrap(),
        &QuantConfig::default_per_channel(),
        QuantOptions {
            param_bw: c.param_bw,
            act_bw: c.act_bw,
            ..Default::default()
        },
        Default::default(),
    )
    .unwrap();
    sim.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 8))
        .unwrap();
    sim
}

fn whole(sim: &QuantSim, e: &Enabled, x: &ArrayD<f32>) -> ArrayD<f32> {
    sim.partial_runner(e, None)
        .unwrap()
        .batch(8)
        .run(&[(sim.input_name(), x.view())])
        .unwrap()
        .remove(0)
}

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fmnist_input8.npy");
    let x: ArrayD<f32> = ndarray_npy::read_npy(path).unwrap();
    let w8a8: Candidate = "W8A8".parse().unwrap();
    let mut s = sim(&gpu, w8a8, &x);
    let mut grp = c.benchmark_group(format!("analysis fmnist_cnn[{tag}]"));
    common::timing(&mut grp, 10, 200, 5);
    grp.bench_function("calibration pass (baseline)", |b| {
        b.iter(|| {
            s.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 8))
                .unwrap()
        })
    });
    let opts = AnalysisOptions { piece: 8, bins: 64 };
    grp.bench_function("analyze (all phases)", |b| {
        b.iter(|| analyze(&s, &x, None, &x, opts, &mut |_, _, _| {}).unwrap())
    });
    let all = Enabled::all(&s);
    let ls = layers(&s).unwrap();
    grp.bench_function("per-layer only/all-but: whole reruns", |b| {
        b.iter(|| {
            for l in &ls {
                whole(&s, &l.quantizers, &x);
                whole(&s, &all.minus(&l.quantizers), &x);
            }
        })
    });
    grp.finish();

    let top: Candidate = "W8A16".parse().unwrap();
    let s = sim(&gpu, top, &x);
    let o = AmpOptions {
        candidates: Candidate::parse_list("W4A8,W8A8,W8A16").unwrap(),
        allowed_drop: 1.0,
        score: AmpScore::Sqnr,
        search: AmpSearch::Binary,
        piece: 8,
        curve_points: 8,
    };
    let mut grp = c.benchmark_group(format!("amp fmnist_cnn[{tag}]"));
    common::timing(&mut grp, 10, 200, 5);
    grp.bench_function("search (phases 1 and 2)", |b| {
        b.iter(|| search(&s, &x, None, &o, None, &mut |_, _, _| {}).unwrap())
    });
    let table = search(&s, &x, None, &o, None, &mut |_, _, _| {})
        .unwrap()
        .sensitivities;
    grp.bench_function("phase 2 with a saved phase-1 table", |b| {
        b.iter(|| search(&s, &x, None, &o, Some(table.clone()), &mut |_, _, _| {}).unwrap())
    });
    let gs = groups(&s).unwrap();
    let acts: std::collections::HashMap<_, _> =
        s.activation_encodings_at(8).unwrap().into_iter().collect();
    let params: std::collections::HashMap<_, _> =
        s.param_encodings_at(4).unwrap().into_iter().collect();
    grp.bench_function("phase 1 at W4A8: whole reruns", |b| {
        b.iter(|| {
            for g in &gs {
                let enc: Vec<_> = g
                    .quantizers
                    .activations
                    .iter()
                    .map(|n| (n.clone(), acts[n].clone()))
                    .chain(
                        g.quantizers
                            .params
                            .iter()
                            .map(|n| (n.clone(), params[n].clone())),
                    )
                    .collect();
                whole(&s, &Enabled::all(&s).with_encodings(&enc), &x);
            }
        })
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
