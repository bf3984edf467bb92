//! Shared bench setup: the GPU (named in every group), timing that waits for the GPU.

use std::sync::Arc;

use qforge::gpu::{Encoder, Gpu};

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
