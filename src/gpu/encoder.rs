//! Recording, submitting and reading back: the one module that submits and waits.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::kernels::{Access, Kernel};
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
    Range { tensor: &'a GpuTensor, offset: u64, size: u64 },
}

impl<'a> Bind<'a> {
    fn tensor(&self) -> &'a GpuTensor {
        match *self {
            Bind::Whole(t) | Bind::Range { tensor: t, .. } => t,
        }
    }
}

impl Encoder {
    /// Number of compute dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Records one compute dispatch of `kernel` with a uniform parameter block (binding 0) and
    /// the given storage bindings (1..), specialised by `constants`.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        gpu: &Gpu,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
        params: &P,
        binds: &[Bind<'_>],
        groups: [u32; 3],
    ) -> Result<()> {
        debug_assert_eq!(kernel.bindings.len(), binds.len() + 1, "{}: binding count", kernel.entry);
        debug_assert_eq!(kernel.bindings[0], Access::Uniform);
        if groups.contains(&0) {
            return Ok(());
        }
        let pipeline = gpu.kernels.pipeline(&gpu.device, kernel, constants)?;
        let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.entry),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in binds.iter().enumerate() {
            let resource = match *b {
                Bind::Whole(t) => wgpu::BufferBinding {
                    buffer: t.buf.raw(),
                    offset: 0,
                    size: wgpu::BufferSize::new(t.bytes().max(4)),
                },
                Bind::Range { tensor, offset, size } => {
                    wgpu::BufferBinding { buffer: tensor.buf.raw(), offset, size: wgpu::BufferSize::new(size.max(4)) }
                }
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: wgpu::BindingResource::Buffer(resource) });
            self.keep.push(b.tensor().buf.clone());
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.layout,
            entries: &entries,
        });
        let mut pass = self.inner.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.entry), timestamp_writes: None });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        drop(pass);
        self.dispatches += 1;
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `bytes` bytes.
    pub fn copy(&mut self, src: &GpuTensor, src_offset: u64, dst: &GpuTensor, dst_offset: u64, bytes: u64) {
        self.inner.copy_buffer_to_buffer(src.buf.raw(), src_offset, dst.buf.raw(), dst_offset, bytes);
        self.keep.push(src.buf.clone());
        self.keep.push(dst.buf.clone());
    }
}

impl Gpu {
    /// A new encoder to record ops into.
    pub fn encoder(&self) -> Encoder {
        Encoder {
            inner: self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("qforge") }),
            keep: Vec::new(),
            dispatches: 0,
        }
    }

    fn take_uncaptured(&self, during: &str) -> Result<()> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(Error::Gpu { during: during.into(), message }),
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
            .map_err(|e| Error::Gpu { during: "wait".into(), message: e.to_string() })?;
        self.take_uncaptured("wait")
    }

    /// Records copies of `tensors` into staging buffers in `enc`, submits once, waits once, and
    /// returns each tensor's bytes.
    pub fn submit_and_read(&self, mut enc: Encoder, tensors: &[&GpuTensor]) -> Result<Vec<Vec<u8>>> {
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
                    enc.inner.copy_buffer_to_buffer(t.buf.raw(), 0, &buf, 0, t.bytes());
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
            .map_err(|e| Error::Gpu { during: "readback wait".into(), message: e.to_string() })?;
        for (i, r) in rx.iter() {
            r.map_err(|e| Error::Readback { tensor: format!("{:?}", tensors[i]), message: e.to_string() })?;
        }
        let mut out = Vec::with_capacity(tensors.len());
        for (t, buf) in tensors.iter().zip(&staging) {
            let view = buf
                .get_mapped_range(..)
                .map_err(|e| Error::Readback { tensor: format!("{t:?}"), message: e.to_string() })?;
            out.push(view[..t.bytes() as usize].to_vec());
            drop(view);
            buf.unmap();
        }
        self.take_uncaptured("readback")?;
        Ok(out)
    }
}
