//! Calibration throughput for MobileNetV2 at 224x224 (images/s) with min-max and tf-enhanced
//! observers, next to the plain FP32 forward of the same prepared model in the same run; and
//! the simulated forward, float (AIMET's) and integer (onnxruntime's arithmetic), against it.
//!
//! `cargo bench -p qforge-benches --bench calibration`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use qforge::exec::{Compile, Plan, Runner};
use qforge::graph::Prepared;
use qforge::quant::analyzers::Scheme;
use qforge::quant::calibrate::Calibrator;
use qforge::quant::{place, QuantConfig};

fn calibration(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path = common::repo("models/mobilenet_v2.onnx");
    let model = std::sync::Arc::new(
        Prepared::bn_folded(qforge::graph::load(&path).unwrap(), Default::default())
            .unwrap()
            .0,
    );
    let batch = 8;
    let g = model.at(batch).unwrap();
    let placement = place(&g, &QuantConfig::default_per_channel());
    let x = ArrayD::from_shape_fn(IxDyn(&[batch, 3, 224, 224]), |d| {
        ((d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let mut grp = c.benchmark_group(format!("calibration[{tag}]"));
    common::timing(&mut grp, 10, 100, 10);
    grp.throughput(Throughput::Elements(batch as u64));
    let plan = Plan::compile(gpu.clone(), &g, Compile::default()).unwrap();
    grp.bench_function(BenchmarkId::new("plain forward", batch), |b| {
        b.iter(|| plan.run(&[("input", x.view())], plan.outputs()).unwrap())
    });
    for (name, scheme) in [
        ("minmax", Scheme::MinMax),
        ("tf-enhanced", Scheme::TfEnhanced { gamma: 3.0 }),
    ] {
        let taps = placement.taps(&g);
        let mut cal = Calibrator::new(
            gpu.clone(),
            Runner::new(gpu.clone(), model.clone()).taps(&taps),
            &placement,
            scheme,
        )
        .unwrap();
        cal.add(&[("input", x.view())]).unwrap();
        grp.bench_function(BenchmarkId::new(format!("calibrate {name}"), batch), |b| {
            b.iter(|| cal.add(&[("input", x.view())]).unwrap())
        });
    }
    grp.finish();
}

fn simulation(c: &mut Criterion) {
    use qforge::quant::sim::{Arithmetic, QuantOptions, QuantSim};
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    let path = common::repo("models/mobilenet_v2.onnx");
    let batch = 8;
    let x = ArrayD::from_shape_fn(IxDyn(&[batch, 3, 224, 224]), |d| {
        ((d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    let mut grp = c.benchmark_group(format!("simulation[{tag}]"));
    common::timing(&mut grp, 10, 100, 10);
    grp.throughput(Throughput::Elements(batch as u64));
    for (name, arithmetic) in [
        ("float", Arithmetic::Float),
        ("integer", Arithmetic::Integer),
    ] {
        let opts = QuantOptions {
            arithmetic,
            ..Default::default()
        };
        let mut sim = QuantSim::new(
            gpu.clone(),
            qforge::graph::load(&path).unwrap(),
            &QuantConfig::default_per_channel(),
            opts,
            Default::default(),
        )
        .unwrap();
        sim.calibrate(Scheme::MinMax, [x.view()]).unwrap();
        if name == "float" {
            grp.bench_function(BenchmarkId::new("fp32 forward", batch), |b| {
                b.iter(|| sim.fp32(&x, batch).unwrap())
            });
        }
        grp.bench_function(BenchmarkId::new(format!("simulate {name}"), batch), |b| {
            b.iter(|| sim.simulate(&x, batch).unwrap())
        });
    }
    grp.finish();
}

criterion_group!(benches, calibration, simulation);
criterion_main!(benches);
