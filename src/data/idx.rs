//! The IDX format of (Fashion-)MNIST, plain or gzipped: images as `[n, 1, rows, cols]` f32
//! normalised as `(pixel / 255 - mean) / std`, labels as class indices.

use std::io::Read;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Fashion-MNIST's pixel mean and std (after scaling to [0, 1]).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
pub const FASHION_MNIST_STD: f32 = 0.3530;

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Io {
        action: "reading IDX file",
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, want_dims: u8) -> Result<Vec<usize>> {
    let bad = |m: String| Error::Io {
        action: "parsing IDX file",
        path: path.display().to_string(),
        message: m,
    };
    if bytes.len() < 4
        || bytes[0] != 0
        || bytes[1] != 0
        || bytes[2] != 0x08
        || bytes[3] != want_dims
    {
        return Err(bad(format!(
            "expected an IDX file of unsigned bytes with {want_dims} dims"
        )));
    }
    let dims: Vec<usize> = (0..want_dims as usize)
        .map(|i| {
            bytes
                .get(4 + 4 * i..8 + 4 * i)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad("truncated header".into()))?;
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_add(4 + 4 * want_dims as usize));
    match need {
        Some(need) if bytes.len() >= need => {}
        Some(need) => {
            return Err(bad(format!(
                "holds {} bytes, the header promises {need}",
                bytes.len()
            )))
        }
        None => return Err(bad(format!("the header's dims {dims:?} overflow"))),
    }
    Ok(dims)
}

/// Reads up to `limit` images as `[n, 1, rows, cols]`.
pub fn read_images(path: &Path, limit: Option<usize>, mean: f32, std: f32) -> Result<ArrayD<f32>> {
    let bytes = read_all(path)?;
    let dims = header(&bytes, path, 3)?;
    let n = limit.map_or(dims[0], |l| l.min(dims[0]));
    let px = dims[1] * dims[2];
    let data: Vec<f32> = bytes[16..16 + n * px]
        .iter()
        .map(|&b| (b as f32 / 255.0 - mean) / std)
        .collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&[n, 1, dims[1], dims[2]]), data).expect("sizes checked"))
}

/// Reads up to `limit` labels.
pub fn read_labels(path: &Path, limit: Option<usize>) -> Result<Vec<usize>> {
    let bytes = read_all(path)?;
    let dims = header(&bytes, path, 1)?;
    let n = limit.map_or(dims[0], |l| l.min(dims[0]));
    Ok(bytes[8..8 + n].iter().map(|&b| b as usize).collect())
}

/// True for files named like IDX data (`*-ubyte`, `*-ubyte.gz`).
pub fn is_idx(path: &Path) -> bool {
    path.file_name()
        .and_then(|f| f.to_str())
        .is_some_and(|f| f.ends_with("-ubyte") || f.ends_with("-ubyte.gz"))
}
