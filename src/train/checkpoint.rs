//! Checkpoints: trained parameters with their optimizer state and where training stood, in
//! one file written atomically (a crash or interrupt leaves the previous checkpoint whole).
//!
//! Format: the 8 bytes `QFCKPT01`, a little-endian u64 header length, a JSON header
//! (`{"step", "epoch", "tensors": [{"name", "shape", "offset"}]}`, offsets in floats), then the
//! tensors' f32 values, little-endian.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files::write_atomic;

const MAGIC: &[u8; 8] = b"QFCKPT01";

/// What a checkpoint holds.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Parameter values and optimizer state by name (`Trainer::state`).
    pub tensors: Vec<(String, ArrayD<f32>)>,
}

/// Writes `c` to `path` atomically.
pub fn save(path: &Path, c: &Checkpoint) -> Result<()> {
    let mut offset = 0usize;
    let entries: Vec<Value> = c
        .tensors
        .iter()
        .map(|(n, a)| {
            let e = json!({"name": n, "shape": a.shape(), "offset": offset});
            offset += a.len();
            e
        })
        .collect();
    let header = json!({"step": c.step, "epoch": c.epoch, "tensors": entries}).to_string();
    let mut bytes = Vec::with_capacity(16 + header.len() + offset * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for (_, a) in &c.tensors {
        for v in a.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        action: "reading checkpoint",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let bad = |why: &str| Error::Io {
        action: "reading checkpoint",
        path: path.display().to_string(),
        message: format!("not a qforge checkpoint: {why}"),
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("no QFCKPT01 header"));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let body = 16usize
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("header runs past the end"))?;
    let header: Value =
        serde_json::from_slice(&bytes[16..body]).map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[body..];
    let num = |k: &str| header[k].as_u64().ok_or_else(|| bad(&format!("no '{k}'")));
    let mut tensors = Vec::new();
    for t in header["tensors"]
        .as_array()
        .ok_or_else(|| bad("no tensors"))?
    {
        let name = t["name"]
            .as_str()
            .ok_or_else(|| bad("tensor without a name"))?;
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .ok_or_else(|| bad("tensor without a shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("bad shape"))?;
        let offset = t["offset"].as_u64().ok_or_else(|| bad("bad offset"))? as usize;
        let n: usize = shape.iter().product();
        let (start, end) = (offset * 4, (offset + n) * 4);
        if end > data.len() {
            return Err(bad(&format!("tensor '{name}' runs past the end")));
        }
        let values: Vec<f32> = data[start..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let a = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| bad(&e.to_string()))?;
        tensors.push((name.to_string(), a));
    }
    Ok(Checkpoint {
        step: num("step")?,
        epoch: num("epoch")?,
        tensors,
    })
}
