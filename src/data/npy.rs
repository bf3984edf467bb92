//! .npy files (f32) with typed errors: the header is checked against the file's length before
//! anything is allocated.

use std::path::Path;

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::error::{Error, Result};

/// The header fields qforge reads: element type, memory order, shape.
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

/// The value of `key` in a Python dict literal (`{'descr': '<f4', 'fortran_order': False, ...}`).
fn field<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = dict[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let descr = field(text, "descr")
        .ok_or("no 'descr'")?
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let fortran = match field(text, "fortran_order").ok_or("no 'fortran_order'")? {
        "True" => true,
        "False" => false,
        other => return Err(format!("fortran_order = {other}")),
    };
    let shape = field(text, "shape").ok_or("no 'shape'")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or(format!("shape {shape} is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("shape dim '{d}' is not a size"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        descr,
        fortran,
        shape,
    })
}

/// Reads an f32 .npy file (C or Fortran order).
pub fn read(path: &Path) -> Result<ArrayD<f32>> {
    let bad = |message: String| Error::Io {
        action: "reading .npy",
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file (no \\x93NUMPY magic)".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "the header claims {len} bytes; the file holds {}",
                bytes.len()
            ))
        })?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad("the header is not text".into()))?;
    let h = parse_header(text).map_err(|m| bad(format!("bad header: {m}")))?;
    if h.descr != "<f4" {
        return Err(bad(format!(
            "element type '{}' (qforge reads little-endian float32, '<f4')",
            h.descr
        )));
    }
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    let need = n
        .checked_mul(4)
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    if bytes.len() - end != need {
        return Err(bad(format!(
            "the header declares shape {:?} ({need} bytes of data); the file holds {}",
            h.shape,
            bytes.len() - end
        )));
    }
    let data: Vec<f32> = bytes[end..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let shape = IxDyn(&h.shape);
    let a = if h.fortran {
        ArrayD::from_shape_vec(shape.f(), data)
    } else {
        ArrayD::from_shape_vec(shape, data)
    };
    a.map_err(|e| bad(e.to_string()))
}

/// Writes an f32 .npy file atomically.
pub fn write(path: &Path, a: &ArrayD<f32>) -> Result<()> {
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes).map_err(|e| Error::Io {
        action: "encoding .npy",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    crate::files::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_parse() {
        let h =
            parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }").unwrap();
        assert_eq!(
            (h.descr.as_str(), h.fortran, h.shape),
            ("<f4", false, vec![2, 3])
        );
        assert_eq!(
            parse_header("{'descr': '<f4', 'fortran_order': True, 'shape': (5,), }")
                .unwrap()
                .shape,
            vec![5]
        );
        assert_eq!(
            parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<usize>::new()
        );
        assert!(parse_header("{'descr': '<f4', 'shape': (5,)}").is_err());
        assert!(parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}").is_err());
    }
}
