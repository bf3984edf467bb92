//! .npy files with typed errors: the header is checked against the file's length before
//! anything is allocated. [`read`] and [`write`] are float32; [`read_any`] and [`write_any`]
//! carry the element types models take and return ([`Npy`]).

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

/// An .npy array in its file's element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Npy {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

impl Npy {
    /// NumPy's name of the element type (`float32`, `int64`, `bool` …).
    pub fn dtype(&self) -> &'static str {
        match self {
            Npy::F32(_) => "float32",
            Npy::F64(_) => "float64",
            Npy::I64(_) => "int64",
            Npy::I32(_) => "int32",
            Npy::I8(_) => "int8",
            Npy::U8(_) => "uint8",
            Npy::Bool(_) => "bool",
        }
    }

    /// The .npy `descr` of the element type (`'<f4'`, `'<i8'`, `'|b1'` …).
    pub fn descr(&self) -> &'static str {
        match self {
            Npy::F32(_) => "<f4",
            Npy::F64(_) => "<f8",
            Npy::I64(_) => "<i8",
            Npy::I32(_) => "<i4",
            Npy::I8(_) => "|i1",
            Npy::U8(_) => "|u1",
            Npy::Bool(_) => "|b1",
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Npy::F32(a) => a.shape(),
            Npy::F64(a) => a.shape(),
            Npy::I64(a) => a.shape(),
            Npy::I32(a) => a.shape(),
            Npy::I8(a) => a.shape(),
            Npy::U8(a) => a.shape(),
            Npy::Bool(a) => a.shape(),
        }
    }

    /// Every value as f64 (exact for every type here).
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Npy::F32(a) => a.mapv(f64::from),
            Npy::F64(a) => a.clone(),
            Npy::I64(a) => a.mapv(|v| v as f64),
            Npy::I32(a) => a.mapv(f64::from),
            Npy::I8(a) => a.mapv(f64::from),
            Npy::U8(a) => a.mapv(f64::from),
            Npy::Bool(a) => a.mapv(|v| f64::from(u8::from(v))),
        }
    }
}

/// Reads an f32 .npy file (C or Fortran order).
pub fn read(path: &Path) -> Result<ArrayD<f32>> {
    match read_any(path)? {
        Npy::F32(a) => Ok(a),
        other => Err(Error::Io {
            action: "reading .npy",
            path: path.display().to_string(),
            message: format!(
                "element type '{}' (qforge reads little-endian float32, '<f4')",
                other.descr()
            ),
        }),
    }
}

/// Reads an .npy file of float32, float64, int64, int32, int8, uint8 or bool (C or Fortran
/// order, little-endian).
pub fn read_any(path: &Path) -> Result<Npy> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        action: "reading .npy",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&bytes, &path.display().to_string())
}

/// An .npy file's bytes as [`read_any`] reads them; `origin` names them in errors.
pub fn parse(bytes: &[u8], origin: &str) -> Result<Npy> {
    let bad = |message: String| Error::Io {
        action: "reading .npy",
        path: origin.to_string(),
        message,
    };
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
    let width = match h.descr.as_str() {
        "<f4" | "<i4" => 4,
        "<f8" | "<i8" => 8,
        "|i1" | "|u1" | "|b1" | "i1" | "u1" | "b1" => 1,
        other => {
            return Err(bad(format!(
                "element type '{other}' (qforge reads little-endian float32 '<f4', float64 \
                 '<f8', int64 '<i8', int32 '<i4', int8, uint8 and bool)"
            )))
        }
    };
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    let need = n
        .checked_mul(width)
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    if bytes.len() - end != need {
        return Err(bad(format!(
            "the header declares shape {:?} ({need} bytes of data); the file holds {}",
            h.shape,
            bytes.len() - end
        )));
    }
    let data = &bytes[end..];
    fn shaped<T>(
        shape: &[usize],
        fortran: bool,
        v: Vec<T>,
    ) -> std::result::Result<ArrayD<T>, String> {
        let a = if fortran {
            ArrayD::from_shape_vec(IxDyn(shape).f(), v)
        } else {
            ArrayD::from_shape_vec(IxDyn(shape), v)
        };
        a.map_err(|e| e.to_string())
    }
    macro_rules! arr {
        ($v:expr) => {
            shaped(&h.shape, h.fortran, $v).map_err(bad)?
        };
    }
    macro_rules! le {
        ($t:ty, $w:literal) => {
            data.chunks_exact($w)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("width")))
                .collect::<Vec<$t>>()
        };
    }
    Ok(match h.descr.trim_start_matches(['<', '|']) {
        "f4" => Npy::F32(arr!(le!(f32, 4))),
        "f8" => Npy::F64(arr!(le!(f64, 8))),
        "i8" => Npy::I64(arr!(le!(i64, 8))),
        "i4" => Npy::I32(arr!(le!(i32, 4))),
        "i1" => Npy::I8(arr!(data.iter().map(|&b| b as i8).collect())),
        "u1" => Npy::U8(arr!(data.to_vec())),
        _ => {
            if let Some(b) = data.iter().find(|&&b| b > 1) {
                return Err(bad(format!("bool data holds the byte {b}")));
            }
            Npy::Bool(arr!(data.iter().map(|&b| b == 1).collect()))
        }
    })
}

/// Writes an .npy file of any [`Npy`] type atomically.
pub fn write_any(path: &Path, a: &Npy) -> Result<()> {
    crate::files::write_atomic(path, &encode(path, a)?)
}

/// The bytes of an .npy file holding `a` (`path` names it in errors).
pub fn encode(path: &Path, a: &Npy) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let r = match a {
        Npy::F32(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::F64(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::I64(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::I32(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::I8(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::U8(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
        Npy::Bool(a) => ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes),
    };
    r.map_err(|e| Error::Io {
        action: "encoding .npy",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(bytes)
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
