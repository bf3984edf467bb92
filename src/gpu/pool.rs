//! A pool of storage buffers reused by size class, with a cap on the bytes it keeps idle.
//!
//! A buffer returns to the pool when the last [`Arc<PooledBuffer>`] drops. Tensors hold one
//! reference and every [`crate::gpu::Encoder`] that binds the buffer holds another until it is
//! submitted, so a buffer is never handed out again while unsubmitted work still uses it.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

/// Usage flags of every pooled buffer: bound as storage, copied to and from.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Smallest buffer handed out (bytes). Keeps empty tensors bindable.
const MIN_CLASS: u64 = 256;

/// Rounds a request up to its size class: powers of two up to 4 KiB, then quarter steps of a
/// power of two, so at most 25% of a buffer is slack.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(MIN_CLASS);
    if bytes <= 4096 {
        return bytes.next_power_of_two();
    }
    let top = 1u64 << (63 - bytes.leading_zeros());
    let step = top / 4;
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    idle_bytes: u64,
    /// Bytes on loan now, and the most on loan since the last [`BufferPool::reset_peak`].
    live_bytes: u64,
    peak_bytes: u64,
    hits: u64,
    misses: u64,
}

/// Idle buffers by size class.
pub struct BufferPool {
    cap: u64,
    state: Mutex<PoolState>,
}

/// Pool counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub idle_bytes: u64,
    /// Bytes of the buffers tensors hold now (size classes, so up to 25% above the tensors').
    pub live_bytes: u64,
    /// The most bytes held at once since the last reset.
    pub peak_bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl BufferPool {
    /// A pool that keeps at most `cap` idle bytes.
    pub fn new(cap: u64) -> Self {
        BufferPool {
            cap,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// Takes an idle buffer of the right class or creates one. `max_buffer` bounds the class.
    pub(crate) fn take(
        &self,
        device: &wgpu::Device,
        bytes: u64,
        max_buffer: u64,
    ) -> (wgpu::Buffer, u64) {
        let mut class = size_class(bytes);
        if class > max_buffer {
            class = bytes.max(4).div_ceil(4) * 4;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.live_bytes += class;
            st.peak_bytes = st.peak_bytes.max(st.live_bytes);
            if let Some(buf) = st.free.get_mut(&class).and_then(Vec::pop) {
                st.idle_bytes -= class;
                st.hits += 1;
                return (buf, class);
            }
            st.misses += 1;
        }
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qforge.pooled"),
            size: class,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        (buf, class)
    }

    fn give_back(&self, buf: wgpu::Buffer, class: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live_bytes -= class;
        if st.idle_bytes + class > self.cap {
            drop(st);
            buf.destroy();
            return;
        }
        st.idle_bytes += class;
        st.free.entry(class).or_default().push(buf);
    }

    /// Starts a new peak from the bytes held now.
    pub fn reset_peak(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.peak_bytes = st.live_bytes;
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        PoolStats {
            idle_bytes: st.idle_bytes,
            live_bytes: st.live_bytes,
            peak_bytes: st.peak_bytes,
            hits: st.hits,
            misses: st.misses,
        }
    }
}

/// A buffer on loan from a [`BufferPool`]; goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Weak<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, class: u64, pool: Weak<BufferPool>) -> Self {
        PooledBuffer {
            buffer: Some(buffer),
            class,
            pool,
        }
    }

    /// The wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            match self.pool.upgrade() {
                Some(pool) => pool.give_back(buf, self.class),
                None => buf.destroy(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_slack() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(300), 512);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 5120);
        for bytes in [5000u64, 123_457, 9_999_999, 1 << 30] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) * 4 <= c, "{bytes} -> {c}");
        }
    }
}
