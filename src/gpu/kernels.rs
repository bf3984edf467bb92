//! The kernel table: every WGSL family embedded once, explicit bind-group layouts, and a
//! pipeline cache keyed by (family, entry point, override constants).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// A WGSL source file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Elementwise,
    Quant,
    Calib,
    Gemm,
    /// The register-blocked GEMM with a subgroup shuffle (`gemm.wgsl` + `gemm_subgroup.wgsl`);
    /// only on adapters with subgroups.
    GemmSubgroup,
    Conv,
    Pool,
    Reduce,
    Svd,
    Lstsq,
    /// Backward kernels (each adds into a gradient buffer).
    Grad,
    /// Losses, gradient norms and optimizer steps.
    Train,
}

impl Family {
    /// Every family, for validation tests and `qforge devices --check`.
    pub const ALL: [Family; 12] = [
        Family::Elementwise,
        Family::Quant,
        Family::Calib,
        Family::Gemm,
        Family::GemmSubgroup,
        Family::Conv,
        Family::Pool,
        Family::Reduce,
        Family::Svd,
        Family::Lstsq,
        Family::Grad,
        Family::Train,
    ];

    /// Files joined to families' sources rather than families of their own (depthwise.wgsl:
    /// appended to conv.wgsl, whose parameters and bindings it uses).
    pub const SHARED: [&'static str; 3] = ["activation.wgsl", "epilogue.wgsl", "depthwise.wgsl"];

    /// The file name without extension.
    pub fn name(self) -> &'static str {
        match self {
            Family::Elementwise => "elementwise",
            Family::Quant => "quant",
            Family::Calib => "calib",
            Family::Gemm => "gemm",
            Family::GemmSubgroup => "gemm_subgroup",
            Family::Conv => "conv",
            Family::Pool => "pool",
            Family::Reduce => "reduce",
            Family::Svd => "svd",
            Family::Lstsq => "lstsq",
            Family::Grad => "grad",
            Family::Train => "train",
        }
    }

    /// True when the family's shaders use subgroup operations (wgpu's `SUBGROUP` feature).
    pub fn needs_subgroups(self) -> bool {
        self == Family::GemmSubgroup
    }

    /// The WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            Family::Elementwise => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/elementwise.wgsl")
            ),
            Family::Quant => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/quant.wgsl")
            ),
            Family::Calib => include_str!("../../shaders/calib.wgsl"),
            Family::Gemm => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/epilogue.wgsl"),
                include_str!("../../shaders/gemm.wgsl")
            ),
            Family::GemmSubgroup => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/epilogue.wgsl"),
                include_str!("../../shaders/gemm.wgsl"),
                include_str!("../../shaders/gemm_subgroup.wgsl")
            ),
            Family::Conv => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/epilogue.wgsl"),
                include_str!("../../shaders/conv.wgsl"),
                include_str!("../../shaders/depthwise.wgsl")
            ),
            Family::Pool => include_str!("../../shaders/pool.wgsl"),
            Family::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Family::Svd => include_str!("../../shaders/svd.wgsl"),
            Family::Lstsq => include_str!("../../shaders/lstsq.wgsl"),
            Family::Grad => concat!(
                include_str!("../../shaders/activation.wgsl"),
                include_str!("../../shaders/grad.wgsl")
            ),
            Family::Train => include_str!("../../shaders/train.wgsl"),
        }
    }
}

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A uniform parameter block (always binding 0).
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// One entry point with its binding signature (bindings numbered from 0 in this order).
#[derive(Debug)]
pub struct Kernel {
    pub family: Family,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

/// A compiled pipeline and the layout its bind groups are made against.
pub struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

type PipelineKey = (Family, &'static str, Vec<(&'static str, u64)>);

/// A binding signature's bind-group layout and the pipeline layout over it.
type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// Shader modules, bind-group layouts and pipelines, created once and shared.
#[derive(Default)]
pub struct KernelCache {
    modules: RwLock<HashMap<Family, Arc<wgpu::ShaderModule>>>,
    layouts: RwLock<HashMap<&'static [Access], Arc<Layouts>>>,
    pipelines: RwLock<HashMap<PipelineKey, Arc<CachedPipeline>>>,
}

/// Runs `f` inside validation + internal error scopes and turns a captured error into `err`.
fn scoped<T>(
    device: &wgpu::Device,
    f: impl FnOnce() -> T,
    err: impl FnOnce(String) -> Error,
) -> Result<T> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let v = pollster::block_on(validation.pop());
    let i = pollster::block_on(internal.pop());
    match v.or(i) {
        Some(e) => Err(err(e.to_string())),
        None => Ok(value),
    }
}

fn get_or_create<K: std::hash::Hash + Eq + Clone, V>(
    map: &RwLock<HashMap<K, Arc<V>>>,
    key: &K,
    create: impl FnOnce() -> Result<V>,
) -> Result<Arc<V>> {
    if let Some(v) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
        return Ok(v.clone());
    }
    let mut w = map.write().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = w.get(key) {
        return Ok(v.clone());
    }
    let v = Arc::new(create()?);
    w.insert(key.clone(), v.clone());
    Ok(v)
}

impl KernelCache {
    fn module(&self, device: &wgpu::Device, family: Family) -> Result<Arc<wgpu::ShaderModule>> {
        get_or_create(&self.modules, &family, || {
            scoped(
                device,
                || {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(family.name()),
                        source: wgpu::ShaderSource::Wgsl(family.source().into()),
                    })
                },
                |message| Error::Shader {
                    family: family.name().into(),
                    message,
                },
            )
        })
    }

    fn layout(
        &self,
        device: &wgpu::Device,
        bindings: &'static [Access],
    ) -> Arc<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        get_or_create(&self.layouts, &bindings, || {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
                .iter()
                .enumerate()
                .map(|(i, a)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match a {
                            Access::Uniform => wgpu::BufferBindingType::Uniform,
                            Access::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Access::ReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            Ok((bgl, pl))
        })
        .expect("layout creation is infallible")
    }

    /// The pipeline for `kernel` specialised by `constants`, compiled on first use.
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<CachedPipeline>> {
        let key: PipelineKey = (
            kernel.family,
            kernel.entry,
            constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        );
        get_or_create(&self.pipelines, &key, || {
            let module = self.module(device, kernel.family)?;
            let layout = self.layout(device, kernel.bindings);
            let t0 = std::time::Instant::now();
            let pipeline = scoped(
                device,
                || {
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(kernel.entry),
                        layout: Some(&layout.1),
                        module: &module,
                        entry_point: Some(kernel.entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants,
                            // No kernel reads a workgroup value its workgroup has not written
                            // (tiles and patches are staged whole each step, reductions store
                            // every slot first, histograms zero their bins; tile padding is
                            // never read), so wgpu's zeroing is skipped: on GL its polyfill
                            // made llvmpipe take 25-30 s to compile each tiled GEMM pipeline.
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
                },
                |message| Error::Pipeline {
                    family: kernel.family.name().into(),
                    entry: kernel.entry.into(),
                    message,
                },
            )?;
            log::debug!(
                "pipeline {}::{} {constants:?} created in {:.0} ms",
                kernel.family.name(),
                kernel.entry,
                t0.elapsed().as_secs_f64() * 1e3
            );
            Ok(CachedPipeline {
                pipeline,
                layout: layout.0.clone(),
            })
        })
    }

    /// Number of compiled pipelines (for tests of the cache).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl crate::gpu::Gpu {
    /// Builds a family's shader module on this device (errors name the family and the cause).
    /// A family that needs a feature the adapter lacks is an error naming the feature.
    pub fn check_family(&self, family: Family) -> Result<()> {
        if family.needs_subgroups() && !self.adapter().subgroups {
            return Err(Error::Shader {
                family: family.name().into(),
                message: "needs subgroups, which this adapter does not have".into(),
            });
        }
        self.kernels.module(&self.device, family).map(|_| ())
    }
}
