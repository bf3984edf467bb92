//! NumPy's .npz files (`np.savez`, `np.savez_compressed`): a zip archive of .npy arrays, read
//! through its central directory (ZIP64 included, as NumPy writes it), stored or deflated
//! entries, each checked against its CRC-32; written as `np.savez` writes them.

use std::io::Read;
use std::path::Path;

use crate::data::npy::{self, Npy};
use crate::error::{Error, Result};

/// Whether `path` names an .npz file (by its extension).
pub fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The arrays of an .npz file, by name (the entry's name without `.npy`), in archive order.
pub fn read(path: &Path) -> Result<Vec<(String, Npy)>> {
    let bad = |message: String| Error::Io {
        action: "reading .npz",
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let entries = directory(&bytes).map_err(&bad)?;
    if entries.is_empty() {
        return Err(bad("the archive holds no arrays".into()));
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let data = contents(&bytes, &e).map_err(|m| bad(format!("entry '{}': {m}", e.name)))?;
        let origin = format!("{}:{}", path.display(), e.name);
        let a = npy::parse(&data, &origin)?;
        let name = e.name.strip_suffix(".npy").unwrap_or(&e.name).to_string();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("the array '{name}' is in the archive twice")));
        }
        out.push((name, a));
    }
    Ok(out)
}

/// Writes `arrays` (name, array) as an .npz file atomically, as `np.savez` does (stored
/// entries `NAME.npy`; archives past 4 GiB are refused).
pub fn write(path: &Path, arrays: &[(String, Npy)]) -> Result<()> {
    let mut out: Vec<u8> = Vec::new();
    let mut dir: Vec<u8> = Vec::new();
    let too_big = || Error::Io {
        action: "writing .npz",
        path: path.display().to_string(),
        message: "the archive would pass 4 GiB (qforge writes no ZIP64)".into(),
    };
    let u32_of = |v: usize| u32::try_from(v).map_err(|_| too_big());
    for (name, a) in arrays {
        let data = npy::encode(path, a)?;
        let file = format!("{name}.npy");
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        let (at, size) = (u32_of(out.len())?, u32_of(data.len())?);
        let name_len = u16::try_from(file.len()).map_err(|_| too_big())?;
        // Version 2.0, no flags, stored, no time: the fields both headers share.
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes());
        common.extend_from_slice(&[0, 0, 0x21, 0]);
        common.extend_from_slice(&crc.sum().to_le_bytes());
        common.extend_from_slice(&size.to_le_bytes());
        common.extend_from_slice(&size.to_le_bytes());
        common.extend_from_slice(&name_len.to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&common);
        out.extend_from_slice(file.as_bytes());
        out.extend_from_slice(&data);
        dir.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        dir.extend_from_slice(&20u16.to_le_bytes());
        dir.extend_from_slice(&common);
        dir.extend_from_slice(&[0; 6]);
        dir.extend_from_slice(&[0, 0, 0x80, 0x01]);
        dir.extend_from_slice(&at.to_le_bytes());
        dir.extend_from_slice(file.as_bytes());
    }
    let count = u16::try_from(arrays.len()).map_err(|_| too_big())?;
    let (start, len) = (u32_of(out.len())?, u32_of(dir.len())?);
    out.extend_from_slice(&dir);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    u32_of(out.len())?;
    crate::files::write_atomic(path, &out)
}

/// One entry of the central directory.
struct Entry {
    name: String,
    method: u16,
    crc: u32,
    packed: u64,
    size: u64,
    local: u64,
}

fn u16_at(b: &[u8], at: usize) -> std::result::Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn u32_at(b: &[u8], at: usize) -> std::result::Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn u64_at(b: &[u8], at: usize) -> std::result::Result<u64, String> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn offset(v: u64) -> std::result::Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("offset {v} is out of range"))
}

/// The central directory's entries.
fn directory(b: &[u8]) -> std::result::Result<Vec<Entry>, String> {
    const END: u32 = 0x0605_4b50;
    // The end record is 22 bytes plus a comment of at most 65,535.
    let lowest = b.len().saturating_sub(22 + 65_535);
    let end = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(b, i) == Ok(END))
        .ok_or("not a zip archive (no end-of-directory record)")?;
    let mut count = u64::from(u16_at(b, end + 10)?);
    let mut start = u64::from(u32_at(b, end + 16)?);
    if count == 0xFFFF || start == 0xFFFF_FFFF {
        // ZIP64: a locator just before the end record points at the ZIP64 end record.
        let loc = end.checked_sub(20).ok_or("truncated ZIP64 locator")?;
        if u32_at(b, loc)? != 0x0706_4b50 {
            return Err("a ZIP64 archive without its locator".into());
        }
        let z = offset(u64_at(b, loc + 8)?)?;
        if u32_at(b, z)? != 0x0606_4b50 {
            return Err("a ZIP64 locator that points at no ZIP64 end record".into());
        }
        count = u64_at(b, z + 32)?;
        start = u64_at(b, z + 48)?;
    }
    let mut at = offset(start)?;
    let mut out = Vec::new();
    for _ in 0..count {
        if u32_at(b, at)? != 0x0201_4b50 {
            return Err(format!("no directory entry at byte {at}"));
        }
        let flags = u16_at(b, at + 8)?;
        let method = u16_at(b, at + 10)?;
        let crc = u32_at(b, at + 16)?;
        let mut packed = u64::from(u32_at(b, at + 20)?);
        let mut size = u64::from(u32_at(b, at + 24)?);
        let name_len = usize::from(u16_at(b, at + 28)?);
        let extra_len = usize::from(u16_at(b, at + 30)?);
        let comment_len = usize::from(u16_at(b, at + 32)?);
        let mut local = u64::from(u32_at(b, at + 42)?);
        let name = b
            .get(at + 46..at + 46 + name_len)
            .ok_or("truncated entry name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        if flags & 1 != 0 {
            return Err(format!("entry '{name}' is encrypted"));
        }
        // The ZIP64 extra field holds, in this order, each size or offset that is 0xFFFFFFFF.
        let mut e = at + 46 + name_len;
        let extra_end = e + extra_len;
        while e + 4 <= extra_end {
            let (id, len) = (u16_at(b, e)?, usize::from(u16_at(b, e + 2)?));
            if id == 1 {
                let mut f = e + 4;
                for v in [&mut size, &mut packed, &mut local] {
                    if *v == 0xFFFF_FFFF {
                        *v = u64_at(b, f)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        out.push(Entry {
            name,
            method,
            crc,
            packed,
            size,
            local,
        });
        at = extra_end + comment_len;
    }
    Ok(out)
}

/// An entry's uncompressed bytes, checked against its size and CRC-32.
fn contents(b: &[u8], e: &Entry) -> std::result::Result<Vec<u8>, String> {
    let at = offset(e.local)?;
    if u32_at(b, at)? != 0x0403_4b50 {
        return Err(format!("no local header at byte {at}"));
    }
    let start = at + 30 + usize::from(u16_at(b, at + 26)?) + usize::from(u16_at(b, at + 28)?);
    let packed = b
        .get(start..offset(e.packed)?.saturating_add(start))
        .ok_or("the entry runs past the end of the file")?;
    let data = match e.method {
        0 => packed.to_vec(),
        8 => {
            let mut v = Vec::with_capacity(offset(e.size)?.min(1 << 30));
            flate2::read::DeflateDecoder::new(packed)
                .take(e.size + 1)
                .read_to_end(&mut v)
                .map_err(|err| format!("deflate: {err}"))?;
            v
        }
        m => {
            return Err(format!(
                "compression method {m} (qforge reads stored and deflated entries)"
            ))
        }
    };
    if data.len() as u64 != e.size {
        return Err(format!(
            "{} bytes, the directory says {}",
            data.len(),
            e.size
        ));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&data);
    if crc.sum() != e.crc {
        return Err("CRC-32 mismatch: the archive is damaged".into());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn golden(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/npz")
            .join(name)
    }

    /// NumPy's two forms (tests/golden/npz, written by `np.savez` with ZIP64 headers and by
    /// `np.savez_compressed` with deflate) and qforge's own writer read back the same arrays.
    #[test]
    fn npz_files_of_numpy_and_qforge_read_back() {
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), (0..6).map(|v| v as f32).collect()).unwrap();
        let ids = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1i64, 2]).unwrap();
        let want = vec![
            ("x".to_string(), Npy::F32(x)),
            ("ids".to_string(), Npy::I64(ids)),
        ];
        let dir = std::env::temp_dir().join(format!("qforge-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("ours.npz");
        write(&ours, &want).unwrap();
        for p in [
            golden("savez.npz"),
            golden("savez_compressed.npz"),
            ours.clone(),
        ] {
            assert_eq!(read(&p).unwrap(), want, "{}", p.display());
        }
        // A flipped data byte fails the CRC; a cut archive and a non-archive are refused.
        let mut bytes = std::fs::read(&ours).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
        let damaged = dir.join("damaged.npz");
        std::fs::write(&damaged, &bytes).unwrap();
        let e = read(&damaged).unwrap_err().to_string();
        assert!(e.contains("CRC-32") || e.contains("header"), "{e}");
        let cut = dir.join("cut.npz");
        std::fs::write(&cut, &std::fs::read(&ours).unwrap()[..100]).unwrap();
        let e = read(&cut).unwrap_err().to_string();
        assert!(e.contains("no end-of-directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
