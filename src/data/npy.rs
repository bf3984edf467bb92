//! .npy files (f32) with typed errors.

use std::path::Path;

use ndarray::ArrayD;

use crate::error::{Error, Result};

/// Reads an f32 .npy file.
pub fn read(path: &Path) -> Result<ArrayD<f32>> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io { action: "opening", path: path.display().to_string(), message: e.to_string() })?;
    ndarray_npy::ReadNpyExt::read_npy(std::io::BufReader::new(file)).map_err(|e| Error::Io { action: "reading .npy (f32, C or Fortran order)", path: path.display().to_string(), message: e.to_string() })
}

/// Writes an f32 .npy file atomically.
pub fn write(path: &Path, a: &ArrayD<f32>) -> Result<()> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes).map_err(|e| Error::Io { action: "encoding .npy", path: path.display().to_string(), message: e.to_string() })?;
    crate::graph::export::write_atomic(path, &bytes)
}
