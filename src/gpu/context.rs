//! The GPU context: instance, adapter and device chosen from the environment.

use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::gpu::kernels::KernelCache;
use crate::gpu::pool::BufferPool;

/// What to tell a user who has no adapter at all.
const NO_ADAPTER_HINT: &str = "qforge needs a Vulkan, Metal, DX12 or GL driver. On a Linux machine \
without a GPU, install Mesa's software Vulkan driver: `apt-get install mesa-vulkan-drivers libvulkan1`";

/// Bytes a buffer pool may keep idle before it frees buffers instead of keeping them.
const DEFAULT_POOL_CAP: u64 = 512 << 20;

/// One adapter as `qforge devices` lists it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroups_per_dim: u32,
    pub max_invocations: u32,
    pub workgroup_storage: u32,
    /// Storage buffers one compute shader may bind.
    pub storage_buffers: u32,
    pub subgroups: bool,
    /// The smallest subgroup the adapter may run (0 without subgroups).
    pub subgroup_min: u32,
    pub timestamps: bool,
    pub f16: bool,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        AdapterSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            workgroup_storage: limits.max_compute_workgroup_storage_size,
            storage_buffers: limits.max_storage_buffers_per_shader_stage,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: if features.contains(wgpu::Features::SUBGROUP) {
                info.subgroup_min_size
            } else {
                0
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            f16: features.contains(wgpu::Features::SHADER_F16),
        }
    }

    /// True for CPU (software) adapters such as lavapipe/llvmpipe or WARP.
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

/// Limits the kernels plan their work against (taken from the adapter, never from defaults).
#[derive(Clone, Copy, Debug)]
pub struct GpuLimits {
    /// Largest storage-buffer binding in bytes (128 MiB on lavapipe and many others).
    pub max_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Largest dispatch size per dimension (65,535 almost everywhere).
    pub max_groups: u32,
    /// Alignment of storage-buffer binding offsets in bytes.
    pub offset_align: u64,
    /// Storage buffers one compute shader may bind (8 or more on most adapters).
    pub storage_buffers: u32,
}

impl GpuLimits {
    /// Rows of `row` f32 elements that fit one storage binding with room for its offset
    /// alignment (at least 1).
    pub fn rows_per_binding(&self, row: usize) -> usize {
        ((self.max_binding - self.offset_align) / 4 / row.max(1) as u64).max(1) as usize
    }
}

/// The device qforge computes on, with its kernel cache and buffer pool.
///
/// One `Gpu` can be shared across threads; ops record into [`crate::gpu::Encoder`]s and
/// [`Gpu::submit`] / [`Gpu::read`] are the only places that submit or wait.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    summary: AdapterSummary,
    limits: GpuLimits,
    /// Whether kernels are picked for a CPU adapter (see [`Gpu::cpu_kernels`]).
    cpu_kernels: bool,
    /// Whether plans fuse epilogues (see [`Gpu::fuses`]).
    fuse: bool,
    pub(crate) kernels: KernelCache,
    pub(crate) pool: Arc<BufferPool>,
    /// The first error wgpu reported outside an error scope; taken by the next submit.
    pub(crate) uncaptured: Arc<Mutex<Option<String>>>,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Lists every adapter the environment allows (`WGPU_BACKEND` is honoured).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(AdapterSummary::of)
        .collect()
}

/// Chooses among adapters: a name filter (`WGPU_ADAPTER_NAME`) wins; otherwise the
/// preferred device type (discrete first, or integrated first for `low_power`), then a native
/// backend over GL. Returns the index of the chosen adapter.
pub fn pick_adapter(
    adapters: &[AdapterSummary],
    name_filter: Option<&str>,
    low_power: bool,
) -> Option<usize> {
    if let Some(filter) = name_filter {
        let filter = filter.to_lowercase();
        return adapters
            .iter()
            .position(|a| a.name.to_lowercase().contains(&filter));
    }
    let type_rank = |t: wgpu::DeviceType| match (t, low_power) {
        (wgpu::DeviceType::DiscreteGpu, false) | (wgpu::DeviceType::IntegratedGpu, true) => 0,
        (wgpu::DeviceType::IntegratedGpu, false) | (wgpu::DeviceType::DiscreteGpu, true) => 1,
        (wgpu::DeviceType::VirtualGpu, _) => 2,
        (wgpu::DeviceType::Other, _) => 3,
        (wgpu::DeviceType::Cpu, _) => 4,
    };
    let backend_rank = |b: wgpu::Backend| if b == wgpu::Backend::Gl { 1 } else { 0 };
    (0..adapters.len()).min_by_key(|&i| {
        (
            type_rank(adapters[i].device_type),
            backend_rank(adapters[i].backend),
            i,
        )
    })
}

impl Gpu {
    /// Creates a context on the adapter the environment and [`pick_adapter`] choose.
    pub fn new() -> Result<Gpu> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let summaries: Vec<AdapterSummary> = adapters.iter().map(AdapterSummary::of).collect();
        let name_filter = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .filter(|s| !s.is_empty());
        let low_power = matches!(
            std::env::var("WGPU_POWER_PREF").as_deref(),
            Ok("low") | Ok("low-power")
        );
        let Some(index) = pick_adapter(&summaries, name_filter.as_deref(), low_power) else {
            let detail = match (&name_filter, summaries.is_empty()) {
                (_, true) => String::new(),
                (Some(f), false) => format!(
                    " matching WGPU_ADAPTER_NAME='{f}' (available: {})",
                    summaries
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (None, false) => String::new(),
            };
            return Err(Error::NoAdapter {
                detail,
                hint: NO_ADAPTER_HINT,
            });
        };
        let adapter = adapters
            .into_iter()
            .nth(index)
            .expect("index from pick_adapter");
        Self::from_adapter(adapter)
    }

    /// Creates a context on a given adapter, with the adapter's real limits.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let summary = AdapterSummary::of(&adapter);
        if summary.is_software() {
            log::warn!(
                "using software adapter '{}' ({:?}): no hardware GPU found; results are exact but slow",
                summary.name,
                summary.backend
            );
        }
        let optional =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("qforge"),
            required_features: adapter.features() & optional,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: summary.name.clone(),
            message: e.to_string(),
        })?;

        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("wgpu: {e}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));

        let limits = GpuLimits {
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_buffer: limits.max_buffer_size,
            max_groups: limits.max_compute_workgroups_per_dimension,
            offset_align: limits.min_storage_buffer_offset_alignment as u64,
            storage_buffers: limits.max_storage_buffers_per_shader_stage,
        };
        Ok(Gpu {
            device,
            queue,
            cpu_kernels: summary.is_software(),
            fuse: true,
            summary,
            limits,
            kernels: KernelCache::default(),
            pool: Arc::new(BufferPool::new(DEFAULT_POOL_CAP)),
            uncaptured,
        })
    }

    /// A process-wide shared context, created on first use (tests and benches share one device).
    pub fn shared() -> Result<Arc<Gpu>> {
        static SHARED: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Gpu::new().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|detail| Error::NoAdapter {
                detail: format!(" ({detail})"),
                hint: NO_ADAPTER_HINT,
            })
    }

    /// The chosen adapter's description.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The limits kernels plan against.
    pub fn limits(&self) -> GpuLimits {
        self.limits
    }

    /// Lowers the storage-binding limit that kernels split their work by. Tests use this to
    /// exercise the chunked paths on small tensors; it can only lower the adapter's limit.
    pub fn set_max_binding(&mut self, bytes: u64) {
        let align = self.limits.offset_align.max(4);
        let bytes = (bytes / align).max(1) * align;
        self.limits.max_binding = bytes.min(self.summary.max_storage_binding);
    }

    /// True when kernels are picked for a CPU adapter (register blocking, no workgroup memory):
    /// the adapter is a software one unless [`Gpu::set_cpu_kernels`] said otherwise.
    pub fn cpu_kernels(&self) -> bool {
        self.cpu_kernels
    }

    /// Picks kernels as for a CPU adapter (`true`) or a GPU (`false`) whatever the adapter is:
    /// benches compare both on one adapter, tests run the GPU choices on a software adapter.
    pub fn set_cpu_kernels(&mut self, cpu: bool) {
        self.cpu_kernels = cpu;
    }

    /// True when plans record the nodes after a convolution or GEMM in its epilogue where
    /// the graph allows (the default); see `exec::fuse`.
    pub fn fuses(&self) -> bool {
        self.fuse
    }

    /// Turns epilogue fusion on or off for plans compiled afterwards: tests and benches
    /// compare fused plans with the one-dispatch-per-node baseline.
    pub fn set_fusion(&mut self, fuse: bool) {
        self.fuse = fuse;
    }

    /// Lowers the dispatch limit per dimension (tests use it to exercise 2-D dispatch cheaply).
    pub fn set_max_groups(&mut self, groups: u32) {
        self.limits.max_groups = groups.clamp(1, self.summary.max_workgroups_per_dim);
    }

    /// A one-line description: name, backend, type.
    pub fn describe(&self) -> String {
        let s = &self.summary;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            s.name, s.backend, s.device_type, s.driver, s.driver_info
        )
    }
}

impl Gpu {
    /// Counters of the buffer pool.
    pub fn pool_stats(&self) -> crate::gpu::pool::PoolStats {
        self.pool.stats()
    }

    /// Starts a new peak of [`crate::gpu::pool::PoolStats::peak_bytes`] from the bytes held now.
    pub fn reset_peak_bytes(&self) {
        self.pool.reset_peak()
    }

    /// Number of compiled pipelines in the cache.
    pub fn pipeline_count(&self) -> usize {
        self.kernels.pipeline_count()
    }
}
