//! Shared bench setup: the GPU (named in every group), timing that waits for the GPU.

use std::sync::Arc;

use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::BenchmarkGroup;
use qforge::gpu::{Encoder, Gpu};

/// A path in the repository (this package is its `benches/` folder).
#[allow(dead_code)]
pub fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// The shared GPU; panics with the reason when there is none (benches need one).
pub fn gpu() -> Arc<Gpu> {
    let gpu =
        Gpu::shared().expect("benches need a GPU adapter (apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", gpu.describe());
    gpu
}

/// A short adapter tag for group names, so every report line says where it ran.
pub fn tag(gpu: &Gpu) -> String {
    let name = &gpu.adapter().name;
    name.split_whitespace().next().unwrap_or(name).to_string()
}

/// Records with `f`, submits, and waits for the GPU to finish.
#[allow(dead_code)]
pub fn run(gpu: &Gpu, f: impl FnOnce(&mut Encoder)) {
    let mut enc = gpu.encoder();
    f(&mut enc);
    gpu.finish(enc).expect("GPU work");
}

/// A group's sampling: `samples` samples after `warm_ms` of warm-up over `measure_s` seconds;
/// with `QFORGE_BENCH_QUICK=1` (benches/device.sh) at most 10 samples over 1 s, so that every
/// bench fits the device script's time.
pub fn timing<M: Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    samples: usize,
    warm_ms: u64,
    measure_s: u64,
) {
    let quick = std::env::var("QFORGE_BENCH_QUICK").as_deref() == Ok("1");
    let (samples, warm_ms, measure_s) = if quick {
        (samples.min(10), warm_ms.min(100), measure_s.min(1))
    } else {
        (samples, warm_ms, measure_s)
    };
    g.sample_size(samples)
        .warm_up_time(Duration::from_millis(warm_ms))
        .measurement_time(Duration::from_secs(measure_s));
}
