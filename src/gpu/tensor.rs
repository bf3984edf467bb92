//! GPU tensors: a pooled buffer with a shape and an element type.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{DType, Error, Result};
use crate::gpu::pool::PooledBuffer;
use crate::gpu::Gpu;

/// Element types a [`GpuTensor`] can hold.
pub trait Element: bytemuck::Pod + Default + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}

/// A tensor stored in a GPU buffer (row-major, contiguous, 4-byte elements).
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor({}, {:?})", self.dtype, self.shape)
    }
}

impl GpuTensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the data in bytes.
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }

    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                tensor: "input".into(),
                expected: format!("{} elements", shape.iter().product::<usize>()),
                got: self.shape.clone(),
            });
        }
        Ok(GpuTensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// Elements the underlying buffer can hold (at least [`GpuTensor::len`]).
    pub fn capacity(&self) -> usize {
        (self.buf.raw().size() / 4) as usize
    }

    /// A view of the first `shape.iter().product()` elements of the same buffer, with any dtype.
    pub fn view(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n > self.capacity() {
            return Err(Error::ShapeMismatch {
                op: "view",
                tensor: "buffer".into(),
                expected: format!("at most {} elements", self.capacity()),
                got: shape.to_vec(),
            });
        }
        Ok(GpuTensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// True when both tensors use the same buffer.
    pub fn same_buffer(&self, other: &GpuTensor) -> bool {
        std::sync::Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// Fails unless the tensor holds `T`.
    pub fn expect_dtype(&self, op: &'static str, name: &str, want: DType) -> Result<()> {
        if self.dtype != want {
            return Err(Error::DTypeMismatch {
                op,
                tensor: name.into(),
                expected: want,
                got: self.dtype,
            });
        }
        Ok(())
    }
}

impl Gpu {
    /// An uninitialised tensor (contents unspecified: every op writes all of its output).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let bytes = n as u64 * 4;
        let limits = self.limits();
        if bytes > limits.max_buffer {
            return Err(Error::TooLarge {
                op: "allocate",
                tensor: format!("{dtype}{shape:?}"),
                bytes,
                limit: limits.max_buffer,
                which: "adapter max_buffer_size",
            });
        }
        let (buffer, class) = self.pool.take(&self.device, bytes, limits.max_buffer);
        let buf = Arc::new(PooledBuffer::new(buffer, class, Arc::downgrade(&self.pool)));
        Ok(GpuTensor {
            buf,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads an array (any layout) to a new tensor.
    pub fn upload<T: Element>(&self, data: &ArrayViewD<'_, T>) -> Result<GpuTensor> {
        let t = self.empty(data.shape(), T::DTYPE)?;
        if !t.is_empty() {
            let standard = data.as_standard_layout();
            let slice = standard.as_slice().expect("standard layout is contiguous");
            self.queue
                .write_buffer(t.buf.raw(), 0, bytemuck::cast_slice(slice));
        }
        Ok(t)
    }

    /// Uploads a slice with a given shape.
    pub fn upload_slice<T: Element>(&self, shape: &[usize], data: &[T]) -> Result<GpuTensor> {
        let view =
            ArrayViewD::from_shape(IxDyn(shape), data).map_err(|_| Error::ShapeMismatch {
                op: "upload",
                tensor: "data".into(),
                expected: format!(
                    "{} elements for shape {shape:?}",
                    shape.iter().product::<usize>()
                ),
                got: vec![data.len()],
            })?;
        self.upload(&view)
    }

    /// Reads one tensor back (one submission, one wait).
    pub fn download<T: Element>(&self, t: &GpuTensor) -> Result<ArrayD<T>> {
        let enc = self.encoder();
        let mut out = self.submit_and_read(enc, &[t])?;
        let bytes = out.pop().expect("one tensor read");
        to_array::<T>(t, &bytes)
    }
}

/// Turns read-back bytes into an array of the tensor's shape, checking the dtype.
pub fn to_array<T: Element>(t: &GpuTensor, bytes: &[u8]) -> Result<ArrayD<T>> {
    t.expect_dtype("download", "tensor", T::DTYPE)?;
    let data: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
    Ok(ArrayD::from_shape_vec(IxDyn(t.shape()), data).expect("byte count matches shape"))
}
