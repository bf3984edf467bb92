//! Recording, submitting and reading back: the one module that submits and waits.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::kernels::{Access, CachedPipeline, Kernel};
use crate::gpu::pool::PooledBuffer;
use crate::gpu::{Gpu, GpuTensor};

/// A command encoder plus the buffers its commands use (kept alive, and out of the pool,
/// until it is submitted).
pub struct Encoder {
    pub(crate) inner: wgpu::CommandEncoder,
    keep: Vec<Arc<PooledBuffer>>,
    dispatches: usize,
}

/// A buffer binding: a whole tensor, or a byte range of it.
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    /// The whole tensor.
    Whole(&'a GpuTensor),
    /// `size` bytes from byte `offset` (offset aligned to the adapter's storage alignment).
    Range {
        tensor: &'a GpuTensor,
        offset: u64,
        size: u64,
    },
}

/// One prepared dispatch: pipeline, bind group (with its uniform block) and grid. Made once by
/// [`Gpu::prepare`], recorded any number of times; holds the buffers it binds.
pub struct Step {
    pipeline: Arc<CachedPipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    keep: Vec<Arc<PooledBuffer>>,
    label: &'static str,
}

impl Step {
    /// The kernel's entry point (for profiling and errors).
    pub fn label(&self) -> &'static str {
        self.label
    }
}

/// Anything kernels can be recorded into: an [`Encoder`] (runs when submitted) or a [`Steps`]
/// list (prepared once, replayed by an executor plan).
pub trait Record {
    /// Records one dispatch of `kernel` with a uniform parameter block (binding 0) and the
    /// given storage bindings (1..), specialised by `constants`.
    fn dispatch<P: bytemuck::Pod>(
        &mut self,
        gpu: &Gpu,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<()>;
}

impl Record for Encoder {
    fn dispatch<P: bytemuck::Pod>(
        &mut self,
        gpu: &Gpu,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<()> {
        if let Some(step) = gpu.prepare(kernel, constants, params, binds, groups)? {
            self.run(std::slice::from_ref(&step));
        }
        Ok(())
    }
}

/// Prepared dispatches in order.
#[derive(Default)]
pub struct Steps(pub Vec<Step>);

impl Steps {
    /// Runs each dispatch in a submission of its own and returns the seconds spent per kernel
    /// entry point, slowest first: where a pass's time goes (the total is not the pass's time,
    /// since separate submissions add waits). The dispatches write their outputs as in a real
    /// pass (accumulating ones add again).
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<(String, f64)>> {
        let mut by: std::collections::HashMap<&str, f64> = Default::default();
        for s in &self.0 {
            let t = std::time::Instant::now();
            let mut enc = gpu.encoder();
            enc.run(std::slice::from_ref(s));
            gpu.finish(enc)?;
            *by.entry(s.label()).or_default() += t.elapsed().as_secs_f64();
        }
        let mut out: Vec<(String, f64)> = by.into_iter().map(|(l, t)| (l.to_string(), t)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}

impl Record for Steps {
    fn dispatch<P: bytemuck::Pod>(
        &mut self,
        gpu: &Gpu,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<()> {
        self.0
            .extend(gpu.prepare(kernel, constants, params, binds, groups)?);
        Ok(())
    }
}

impl Encoder {
    /// Number of compute dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Records prepared steps in one compute pass (wgpu orders dispatches within it).
    pub fn run(&mut self, steps: &[Step]) {
        let mut pass = self.inner.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        for step in steps {
            pass.set_pipeline(&step.pipeline.pipeline);
            pass.set_bind_group(0, &step.bind_group, &[]);
            pass.dispatch_workgroups(step.groups[0], step.groups[1], step.groups[2]);
        }
        drop(pass);
        for step in steps {
            self.keep.extend(step.keep.iter().cloned());
        }
        self.dispatches += steps.len();
    }

    /// Records a buffer-to-buffer copy of `bytes` bytes.
    pub fn copy(
        &mut self,
        src: &GpuTensor,
        src_offset: u64,
        dst: &GpuTensor,
        dst_offset: u64,
        bytes: u64,
    ) {
        self.inner.copy_buffer_to_buffer(
            src.buf.raw(),
            src_offset,
            dst.buf.raw(),
            dst_offset,
            bytes,
        );
        self.keep.push(src.buf.clone());
        self.keep.push(dst.buf.clone());
    }
}

impl Gpu {
    /// Prepares one dispatch (`None` for an empty grid): pipeline from the cache, a uniform
    /// buffer holding `params`, and a bind group over `binds`.
    pub fn prepare<P: bytemuck::Pod>(
        &self,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<Option<Step>> {
        debug_assert_eq!(
            kernel.bindings.len(),
            binds.len() + 1,
            "{}: binding count",
            kernel.entry
        );
        debug_assert_eq!(kernel.bindings[0], Access::Uniform);
        if groups.contains(&0) {
            return Ok(None);
        }
        let pipeline = self.kernels.pipeline(&self.device, kernel, constants)?;
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(kernel.entry),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        let mut keep = Vec::with_capacity(binds.len());
        for (i, b) in binds.iter().enumerate() {
            let (tensor, offset, size) = match *b {
                Bind::Whole(t) => (t, 0, t.bytes()),
                Bind::Range {
                    tensor,
                    offset,
                    size,
                } => (tensor, offset, size),
            };
            let resource = wgpu::BufferBinding {
                buffer: tensor.buf.raw(),
                offset,
                size: wgpu::BufferSize::new(size.max(4)),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(resource),
            });
            keep.push(tensor.buf.clone());
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.layout,
            entries: &entries,
        });
        Ok(Some(Step {
            pipeline,
            bind_group,
            groups,
            keep,
            label: kernel.entry,
        }))
    }
}

impl Gpu {
    /// A new encoder to record ops into.
    pub fn encoder(&self) -> Encoder {
        Encoder {
            inner: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("qforge"),
                }),
            keep: Vec::new(),
            dispatches: 0,
        }
    }

    fn take_uncaptured(&self, during: &str) -> Result<()> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(Error::Gpu {
                during: during.into(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Submits recorded work without waiting for it.
    pub fn submit(&self, enc: Encoder) -> Result<()> {
        self.queue.submit([enc.inner.finish()]);
        self.take_uncaptured("submit")
    }

    /// Submits and waits until the GPU has finished all submitted work.
    pub fn finish(&self, enc: Encoder) -> Result<()> {
        self.submit(enc)?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                during: "wait".into(),
                message: e.to_string(),
            })?;
        self.take_uncaptured("wait")
    }

    /// Records copies of `tensors` into staging buffers in `enc`, submits once, waits once, and
    /// returns each tensor's bytes.
    pub fn submit_and_read(
        &self,
        mut enc: Encoder,
        tensors: &[&GpuTensor],
    ) -> Result<Vec<Vec<u8>>> {
        let staging: Vec<wgpu::Buffer> = tensors
            .iter()
            .map(|t| {
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("qforge.readback"),
                    size: t.bytes().max(4),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if t.bytes() > 0 {
                    enc.inner
                        .copy_buffer_to_buffer(t.buf.raw(), 0, &buf, 0, t.bytes());
                }
                buf
            })
            .collect();
        self.submit(enc)?;
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, buf) in staging.iter().enumerate() {
            let tx = tx.clone();
            buf.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                during: "readback wait".into(),
                message: e.to_string(),
            })?;
        for (i, r) in rx.iter() {
            r.map_err(|e| Error::Readback {
                tensor: format!("{:?}", tensors[i]),
                message: e.to_string(),
            })?;
        }
        let mut out = Vec::with_capacity(tensors.len());
        for (t, buf) in tensors.iter().zip(&staging) {
            let view = buf.get_mapped_range(..).map_err(|e| Error::Readback {
                tensor: format!("{t:?}"),
                message: e.to_string(),
            })?;
            out.push(view[..t.bytes() as usize].to_vec());
            drop(view);
            buf.unmap();
        }
        self.take_uncaptured("readback")?;
        Ok(out)
    }
}
