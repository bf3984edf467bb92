//! QuantAnalyzer and mixed precision next to one calibration pass of the same model, in the
//! same run (Fashion-MNIST CNN, 8 images): the analysis whole and its per-layer phase with
//! shared prefixes against the same scores from whole-model reruns; AMP's phase 1 (shared
//! prefixes) against whole reruns, and its whole search. On MobileNetV2 the CLI prints each
//! phase's time (README: "Analysis", "Mixed precision"); here, on MobileNetV2 (8 images), a
//! run from a shared cut (what each per-layer or per-group run is) against a whole-model run,
//! next to a calibration pass. On the small CNN the runs cost about what their plans cost to
//! compile, so sharing prefixes saves little there; on MobileNetV2 compute dominates.
//!
//! `cargo bench -p qforge-benches --bench analysis`

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{ArrayD, Axis};
use qforge::eval::ScoreKind;
use qforge::quant::amp::{groups, search, AmpOptions, AmpSearch, Candidate};
use qforge::quant::analysis::{analyze, layers, AnalysisOptions};
use qforge::quant::analyzers::Scheme;
use qforge::quant::sim::{Enabled, QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn sim(gpu: &std::sync::Arc<qforge::gpu::Gpu>, c: Candidate, x: &ArrayD<f32>) -> QuantSim {
    let path = common::repo("models/fmnist_cnn.onnx");
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
        .run(&[(sim.inputs()[0].as_str(), x.view())])
        .unwrap()
        .remove(0)
}

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path = common::repo("tests/golden/fmnist_input8.npy");
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
        score: ScoreKind::Sqnr,
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

fn mobilenet(c: &mut Criterion) {
    use qforge::quant::prefix::Prefix;
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path = common::repo("models/mobilenet_v2.onnx");
    let x = ArrayD::from_shape_fn(ndarray::IxDyn(&[8, 3, 224, 224]), |d| {
        ((d[0] * 5 + d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let mut s = QuantSim::new(
        gpu.clone(),
        qforge::graph::load(&path).unwrap(),
        &QuantConfig::default_per_channel(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let mut grp = c.benchmark_group(format!("prefix mobilenet_v2[{tag}]"));
    common::timing(&mut grp, 10, 100, 10);
    grp.bench_function("calibration pass, 8 images (baseline)", |b| {
        b.iter(|| {
            s.calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 8))
                .unwrap()
        })
    });
    let all = Enabled::all(&s);
    grp.bench_function("whole simulated run", |b| b.iter(|| whole(&s, &all, &x)));
    let n = s.prepared(1).unwrap().nodes.len();
    for (what, cut) in [("half", n / 2), ("last quarter", 3 * n / 4)] {
        let mut p = Prefix::new(&s, &x, all.clone(), 8).unwrap();
        p.advance_to(&s, cut).unwrap();
        grp.bench_function(format!("run from the shared cut before the {what}"), |b| {
            b.iter(|| p.finish(&s, &all).unwrap())
        });
    }
    grp.finish();
}

criterion_group!(benches, bench, mobilenet);
criterion_main!(benches);
