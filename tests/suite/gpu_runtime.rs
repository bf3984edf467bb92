//! The runtime: adapter choice, transfers, buffer pool, pipeline cache, typed errors.

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use qforge::gpu::{pick_adapter, AdapterSummary};
use qforge::ops;

fn adapter(name: &str, backend: wgpu::Backend, device_type: wgpu::DeviceType) -> AdapterSummary {
    AdapterSummary {
        name: name.into(),
        backend,
        device_type,
        driver: String::new(),
        driver_info: String::new(),
        max_storage_binding: 128 << 20,
        max_buffer: 1 << 30,
        max_workgroups_per_dim: 65535,
        max_invocations: 256,
        workgroup_storage: 16384,
        storage_buffers: 8,
        subgroups: false,
        subgroup_min: 0,
        timestamps: false,
        f16: false,
    }
}

#[test]
fn adapter_choice_prefers_hardware_then_native_backends() {
    use wgpu::{Backend::*, DeviceType::*};
    let list = vec![
        adapter("llvmpipe", Vulkan, Cpu),
        adapter("Intel UHD", Gl, IntegratedGpu),
        adapter("Intel UHD", Vulkan, IntegratedGpu),
        adapter("NVIDIA H100", Vulkan, DiscreteGpu),
    ];
    assert_eq!(pick_adapter(&list, None, false), Some(3));
    assert_eq!(
        pick_adapter(&list, None, true),
        Some(2),
        "low power: integrated, Vulkan over GL"
    );
    assert_eq!(
        pick_adapter(&list, Some("LLVM"), false),
        Some(0),
        "name filter, case-insensitive"
    );
    assert_eq!(pick_adapter(&list, Some("radeon"), false), None);
    assert_eq!(
        pick_adapter(&list[..1], None, false),
        Some(0),
        "software accepted when alone"
    );
    assert_eq!(pick_adapter(&[], None, false), None);
}

#[test]
fn upload_download_round_trip_every_dtype() {
    let Some(gpu) = gpu() else { return };
    let f = ArrayD::from_shape_vec(
        IxDyn(&[2, 3, 5]),
        (0..30).map(|i| i as f32 * 0.5 - 3.0).collect(),
    )
    .unwrap();
    assert_eq!(
        gpu.download::<f32>(&gpu.upload(&f.view()).unwrap())
            .unwrap(),
        f
    );
    // A transposed (non-standard layout) view uploads in logical order.
    let t = f.clone().permuted_axes(IxDyn(&[2, 1, 0]));
    assert_eq!(
        gpu.download::<f32>(&gpu.upload(&t.view()).unwrap())
            .unwrap(),
        t
    );
    let i = gpu.upload_slice(&[3], &[-1i32, 0, 7]).unwrap();
    assert_eq!(
        gpu.download::<i32>(&i).unwrap().into_raw_vec_and_offset().0,
        vec![-1, 0, 7]
    );
    let u = gpu.upload_slice(&[2], &[1u32, u32::MAX]).unwrap();
    assert_eq!(
        gpu.download::<u32>(&u).unwrap().into_raw_vec_and_offset().0,
        vec![1, u32::MAX]
    );
    assert!(matches!(
        gpu.download::<f32>(&u).unwrap_err(),
        qforge::Error::DTypeMismatch { .. }
    ));
    assert!(
        gpu.upload_slice(&[4], &[1.0f32; 3]).is_err(),
        "shape and data disagree"
    );
    let e = gpu.upload_slice::<f32>(&[0, 4], &[]).unwrap();
    assert_eq!(gpu.download::<f32>(&e).unwrap().shape(), &[0, 4]);
}

#[test]
fn pool_reuses_buffers_by_size_class() {
    let Some(gpu) = own_gpu() else { return };
    let before = gpu.pool_stats();
    for _ in 0..5 {
        let t = gpu.empty(&[1000], qforge::DType::F32).unwrap();
        drop(t);
    }
    let after = gpu.pool_stats();
    assert_eq!(
        after.misses - before.misses,
        1,
        "one allocation, then reuse"
    );
    assert_eq!(after.hits - before.hits, 4);
    assert_eq!(
        after.live_bytes, before.live_bytes,
        "every buffer went back"
    );
    gpu.reset_peak_bytes();
    let a = gpu.empty(&[1000], qforge::DType::F32).unwrap();
    let b = gpu.empty(&[2000], qforge::DType::F32).unwrap();
    drop((a, b));
    let held = gpu.pool_stats();
    assert_eq!(held.live_bytes, before.live_bytes);
    assert_eq!(
        held.peak_bytes - before.live_bytes,
        qforge::gpu::pool::size_class(4000) + qforge::gpu::pool::size_class(8000),
        "the peak counts both buffers held at once"
    );
    // A buffer still bound by an unsubmitted encoder is not handed out again.
    let x = gpu.upload_slice(&[1000], &[1.0f32; 1000]).unwrap();
    let mut enc = gpu.encoder();
    let y = ops::elementwise::copy(&mut enc, &gpu, &x).unwrap();
    drop(x);
    let z = gpu.upload_slice(&[1000], &[2.0f32; 1000]).unwrap();
    let out = gpu.submit_and_read(enc, &[&y, &z]).unwrap();
    let y: Vec<f32> = bytemuck::pod_collect_to_vec(&out[0]);
    assert!(
        y.iter().all(|&v| v == 1.0),
        "copy saw its own input, not a reused buffer"
    );
}

/// fill sets exactly the tensor's elements, by vectors of 4 or one by one (lengths that are
/// multiples of 4 or not), and nothing next to them.
#[test]
fn fill_sets_every_element_and_no_other() {
    let Some(gpu) = gpu() else { return };
    for len in [1usize, 3, 4, 7, 64, 1000, 1001, 4099] {
        let before = gpu
            .upload_slice(&[len + 8], &vec![1.0f32; len + 8])
            .unwrap();
        let mut enc = gpu.encoder();
        let y = gpu.upload_slice(&[len], &vec![2.0f32; len]).unwrap();
        ops::elementwise::fill_into(&mut enc, &gpu, &y, -3.5).unwrap();
        let out = gpu.submit_and_read(enc, &[&y, &before]).unwrap();
        let y: Vec<f32> = bytemuck::pod_collect_to_vec(&out[0]);
        let other: Vec<f32> = bytemuck::pod_collect_to_vec(&out[1]);
        assert!(y.iter().all(|&v| v == -3.5), "length {len}: {y:?}");
        assert!(
            other.iter().all(|&v| v == 1.0),
            "length {len}: another buffer changed"
        );
    }
}

#[test]
fn pipelines_are_cached_per_entry_and_constants() {
    let Some(gpu) = own_gpu() else { return };
    let a = gpu.upload_slice(&[4, 4], &[1.0f32; 16]).unwrap();
    let run = |ta, tb| {
        let mut enc = gpu.encoder();
        ops::gemm::matmul(&mut enc, &gpu, &a, &a, ta, tb).unwrap();
        gpu.submit(enc).unwrap();
    };
    run(false, false);
    let one = gpu.pipeline_count();
    run(false, false);
    assert_eq!(gpu.pipeline_count(), one, "same key, same pipeline");
    run(true, false);
    assert_eq!(
        gpu.pipeline_count(),
        one + 1,
        "override constants are part of the key"
    );
}

#[test]
fn every_family_builds_on_the_device() {
    let Some(gpu) = gpu() else { return };
    for family in qforge::gpu::kernels::Family::ALL {
        match gpu.check_family(family) {
            Err(qforge::Error::Shader { message, .. })
                if family.needs_subgroups() && !gpu.adapter().subgroups =>
            {
                assert!(message.contains("subgroups"), "{message}")
            }
            other => other.unwrap(),
        }
    }
    println!("adapter: {}", gpu.describe());
}
