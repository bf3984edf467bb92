//! Training throughput: one step (forward, cross-entropy, backward, Adam update, in one
//! submission) of the BN-folded Fashion-MNIST CNN at batch 128 and MobileNetV2 at batch 16,
//! with and without `TrainConfig::recompute`, next to the plain forward of the same model and
//! batch in the same run (the target: a step costs <= 3.5 forwards). Before timing,
//! each model's GPU memory is printed: the bytes held by an inference plan (parameters +
//! activations) and the peak held while a training step is built and run, with and without
//! recomputation, against the target 3 x activations + 4 x parameters; and the kernels each
//! step's time goes to (forward and backward, each dispatch timed alone: `Steps::profile`).
//!
//! `cargo bench -p qforge-benches --bench train`

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use qforge::exec::{Compile, Params, Plan};
use qforge::gpu::Gpu;
use qforge::graph::Prepared;
use qforge::train::{
    self, LossKind, Optimizer, Schedule, StepMemory, Target, TrainConfig, Trainer,
};

fn model(rel: &str, batch: usize) -> Arc<qforge::graph::ir::Graph> {
    let path = common::repo(rel);
    let (p, _) =
        Prepared::bn_folded(qforge::graph::load(&path).unwrap(), Default::default()).unwrap();
    p.at(batch).unwrap()
}

fn config() -> TrainConfig {
    TrainConfig {
        optimizer: Optimizer::adam(),
        lr: 1e-5,
        schedule: Schedule::Constant,
        loss: LossKind::CrossEntropy,
        max_grad_norm: None,
        accumulate: 1,
        recompute: false,
    }
}

fn trainer(gpu: &Arc<Gpu>, g: &qforge::graph::ir::Graph, recompute: bool) -> Trainer {
    let trainable: HashSet<String> = train::parameters(g).into_iter().collect();
    let params = Arc::new(Params::new(gpu.clone()));
    let cfg = TrainConfig {
        recompute,
        ..config()
    };
    Trainer::new(gpu.clone(), g, params, &trainable, &g.outputs[0], cfg).unwrap()
}

const MIB: f64 = 1024.0 * 1024.0;

/// Prints inference and training-step memory for `g` on a GPU of its own, with and without
/// recomputation, and where each step's kernel time goes.
fn memory(name: &str, g: &qforge::graph::ir::Graph, x: &ArrayD<f32>, labels: &[usize]) {
    let trainable: HashSet<String> = train::parameters(g).into_iter().collect();
    let inputs = [(g.inputs[0].as_str(), x.view())];
    let top = |p: Vec<(String, f64)>| {
        let total: f64 = p.iter().map(|(_, s)| s).sum();
        let head: Vec<String> = p
            .iter()
            .take(6)
            .map(|(k, s)| format!("{k} {:.0}%", 100.0 * s / total))
            .collect();
        format!("{:.3} s: {}", total, head.join(", "))
    };
    let mut peaks = Vec::new();
    for (tag, recompute) in [("", false), (", recompute", true)] {
        let gpu = Arc::new(Gpu::new().unwrap());
        let cfg = TrainConfig {
            recompute,
            ..config()
        };
        let (m, t) =
            StepMemory::measure(&gpu, g, &trainable, cfg, &inputs, Target::Labels(labels)).unwrap();
        eprintln!(
            "kernels[{name}{tag}]: forward {}; backward {}",
            top(t.forward().profile().unwrap()),
            top(t.backward().profile(&gpu).unwrap())
        );
        peaks.push(m);
    }
    let [m, r] = [peaks[0], peaks[1]];
    eprintln!(
        "memory[{name}]: inference {:.1} MiB (parameters {:.1}, activations {:.1}); training step peak {:.1} MiB = {:.2} x (3 x activations + 4 x parameters); with recompute {:.1} MiB = {:.2} x",
        (m.params + m.activations) as f64 / MIB,
        m.params as f64 / MIB,
        m.activations as f64 / MIB,
        m.peak as f64 / MIB,
        m.budget_ratio(),
        r.peak as f64 / MIB,
        r.budget_ratio()
    );
}

fn step(c: &mut Criterion) {
    let gpu = common::gpu();
    let tag = common::tag(&gpu);
    for (name, rel, batch, classes) in [
        ("fmnist_cnn", "models/fmnist_cnn.onnx", 128usize, 10usize),
        ("mobilenet_v2", "models/mobilenet_v2.onnx", 16, 1000),
    ] {
        let g = model(rel, batch);
        let shape = g.shapes[&g.inputs[0]].clone();
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |d| {
            ((d[0] * 5 + d[1] * 7 + d[2] * 3 + d[3]) % 17) as f32 / 8.0 - 1.0
        });
        let labels: Vec<usize> = (0..batch).map(|i| (i * 7) % classes).collect();
        memory(name, &g, &x, &labels);
        let input = g.inputs[0].clone();
        let mut grp = c.benchmark_group(format!("train[{tag}] {name}"));
        common::timing(&mut grp, 10, 100, 5);
        grp.throughput(Throughput::Elements(batch as u64));
        let plan = Plan::compile(gpu.clone(), &g, Compile::default()).unwrap();
        plan.write_inputs(&[(&input, x.view())]).unwrap();
        grp.bench_function(BenchmarkId::new("forward", batch), |b| {
            b.iter(|| common::run(&gpu, |e| plan.record(e)))
        });
        drop(plan);
        for (what, recompute) in [
            ("train step (adam)", false),
            ("train step (adam, recompute)", true),
        ] {
            let mut t = trainer(&gpu, &g, recompute);
            grp.bench_function(BenchmarkId::new(what, batch), |b| {
                b.iter(|| {
                    t.step(&[(&input, x.view())], Target::Labels(&labels))
                        .unwrap();
                    t.read_loss().unwrap()
                })
            });
        }
        grp.finish();
    }
}

criterion_group!(benches, step);
criterion_main!(benches);
