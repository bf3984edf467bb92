//! [`Params`]: named parameter handles. Every constant a plan binds as it is (weights,
//! biases) is uploaded once into a store and shared by every plan compiled against it, so a
//! parameter can be replaced on the GPU — new quantized weights, an optimizer step — and
//! every plan sees it on its next run, without recompiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::ArrayViewD;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::ir::Const;

/// Parameters by name, on the GPU.
pub struct Params {
    gpu: Arc<Gpu>,
    map: Mutex<HashMap<String, GpuTensor>>,
}

impl Params {
    /// An empty store.
    pub fn new(gpu: Arc<Gpu>) -> Params {
        Params {
            gpu,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The handle of `name`, uploading `value` the first time it is asked for.
    pub fn get_or_upload(&self, name: &str, value: &Const) -> Result<GpuTensor> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(name) {
            return Ok(t.clone());
        }
        let t = self.gpu.upload(&value.to_f32().view())?;
        map.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The handle of `name`, if a plan bound it or it was set.
    pub fn get(&self, name: &str) -> Option<GpuTensor> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names of every parameter in the store.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Replaces the value of `name` on the GPU (uploaded when no plan bound it yet). The
    /// shape must match the existing handle's: plans bound its buffer.
    pub fn set(&self, name: &str, value: &ArrayViewD<'_, f32>) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(t) if t.shape() != value.shape() => Err(Error::ShapeMismatch {
                op: "set parameter",
                tensor: name.to_string(),
                expected: format!("{:?}", t.shape()),
                got: value.shape().to_vec(),
            }),
            Some(t) => {
                let standard = value.as_standard_layout();
                self.gpu.queue.write_buffer(
                    t.buf.raw(),
                    0,
                    bytemuck::cast_slice(standard.as_slice().expect("standard layout")),
                );
                Ok(())
            }
            None => {
                let t = self.gpu.upload(value)?;
                map.insert(name.to_string(), t);
                Ok(())
            }
        }
    }
}
