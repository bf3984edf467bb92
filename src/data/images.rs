//! Image folders as model inputs: decode (JPEG, PNG), resize the shorter side, centre-crop,
//! scale to [0, 1], normalise per channel, lay out as NCHW f32.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use ndarray::{Array4, ArrayD};

use crate::error::{Error, Result};

/// How images become tensors.
#[derive(Clone, Debug)]
pub struct Preprocess {
    /// Side of the square centre crop.
    pub size: u32,
    /// Shorter side after resizing (before the crop).
    pub resize: u32,
    /// Per-channel mean and std applied after scaling to [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// 1 (grayscale) or 3 (RGB) channels.
    pub channels: usize,
}

impl Preprocess {
    /// ImageNet's: resize to 256, crop 224, ImageNet mean/std, RGB.
    pub fn imagenet() -> Self {
        Preprocess {
            size: 224,
            resize: 256,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            channels: 3,
        }
    }

    fn check(&self) -> Result<()> {
        if self.size == 0 || self.resize < self.size {
            return Err(Error::invalid(
                "preprocess",
                "size",
                format!("crop {} after resize {}", self.size, self.resize),
                "need 0 < crop <= resize",
            ));
        }
        let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        if !matches!(self.channels, 1 | 3)
            || self.mean.len() != self.channels
            || self.std.len() != self.channels
        {
            return Err(Error::invalid(
                "preprocess",
                "--mean/--std",
                format!("{} / {}", list(&self.mean), list(&self.std)),
                "need 1 (grayscale) or 3 (RGB) values each, comma separated, as many means as stds",
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|&s| s == 0.0 || !s.is_finite())
        {
            return Err(Error::invalid(
                "preprocess",
                "--mean/--std",
                format!("{} / {}", list(&self.mean), list(&self.std)),
                "means must be finite, stds finite and non-zero",
            ));
        }
        Ok(())
    }
}

/// The file names of `files` (as sample names).
pub fn file_names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The image files of a folder (by extension), sorted by name.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Io {
        action: "listing images in",
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        action: "reading image",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if bytes.starts_with(&[0xff, 0xd8])
        && !bytes
            .iter()
            .rposition(|&b| b != 0)
            .is_some_and(|i| i >= 1 && bytes[i - 1..=i] == [0xff, 0xd9])
    {
        return Err(Error::Io {
            action: "decoding image",
            path: path.display().to_string(),
            message: "truncated JPEG (no end-of-image marker)".into(),
        });
    }
    let img = image::load_from_memory(&bytes).map_err(|e| Error::Io {
        action: "decoding image",
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Io {
            action: "decoding image",
            path: path.display().to_string(),
            message: "empty image".into(),
        });
    }
    Ok(img)
}

/// A `[channels, size, size]` tensor of a square image already at its size.
fn to_tensor(crop: &image::DynamicImage, p: &Preprocess) -> ArrayD<f32> {
    let s = p.size as usize;
    let mut out = Array4::<f32>::zeros((1, p.channels, s, s));
    if p.channels == 1 {
        let g = crop.to_luma8();
        for (x, y, px) in g.enumerate_pixels() {
            out[[0, 0, y as usize, x as usize]] = (px[0] as f32 / 255.0 - p.mean[0]) / p.std[0];
        }
    } else {
        let rgb = crop.to_rgb8();
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                out[[0, c, y as usize, x as usize]] = (px[c] as f32 / 255.0 - p.mean[c]) / p.std[c];
            }
        }
    }
    out.into_dyn().index_axis_move(ndarray::Axis(0), 0)
}

/// The centre crop: the shorter side resized to `p.resize`, the centre `p.size` square.
fn centre_crop(img: &image::DynamicImage, p: &Preprocess) -> image::DynamicImage {
    let (w, h) = (img.width(), img.height());
    let scale = p.resize as f64 / w.min(h) as f64;
    let (rw, rh) = (
        ((w as f64 * scale).round() as u32).max(p.size),
        ((h as f64 * scale).round() as u32).max(p.size),
    );
    let resized = img.resize_exact(rw, rh, FilterType::Triangle);
    let (left, top) = ((rw - p.size) / 2, (rh - p.size) / 2);
    resized.crop_imm(left, top, p.size, p.size)
}

/// One image as a `[channels, size, size]` tensor (its centre crop).
pub fn load(path: &Path, p: &Preprocess) -> Result<ArrayD<f32>> {
    p.check()?;
    Ok(to_tensor(&centre_crop(&decode(path)?, p), p))
}

/// `per_image` crops of every image in `dir` (sorted by name) as one batch, with a label per
/// crop. With `centre`, each image's first crop is its centre crop; the others are random
/// squares covering 35-100% of the shorter side at random positions, resized to `p.size`
/// and flipped horizontally half the time. The same `seed` gives the same crops everywhere.
pub fn crops(
    dir: &Path,
    per_image: usize,
    seed: u64,
    centre: bool,
    p: &Preprocess,
) -> Result<(Vec<String>, ArrayD<f32>)> {
    p.check()?;
    let mut rng = crate::data::rng::Rng::new(seed);
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for f in list(dir)? {
        let img = decode(&f)?;
        let (w, h) = (img.width(), img.height());
        let label = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for k in 0..per_image {
            let crop = if k == 0 && centre {
                centre_crop(&img, p)
            } else {
                let side = ((w.min(h) as f64 * (0.35 + 0.65 * rng.unit())) as u32).max(1);
                let (x0, y0) = (
                    rng.below((w - side + 1) as u64) as u32,
                    rng.below((h - side + 1) as u64) as u32,
                );
                let c = img.crop_imm(x0, y0, side, side).resize_exact(
                    p.size,
                    p.size,
                    FilterType::Triangle,
                );
                if rng.unit() < 0.5 {
                    c.fliph()
                } else {
                    c
                }
            };
            names.push(format!("{label}#{k}"));
            tensors.push(to_tensor(&crop, p));
        }
    }
    if tensors.is_empty() {
        return Err(Error::Io {
            action: "cropping images from",
            path: dir.display().to_string(),
            message: "no .jpg/.jpeg/.png image".into(),
        });
    }
    let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
    Ok((
        names,
        ndarray::stack(ndarray::Axis(0), &views).expect("equal shapes"),
    ))
}

/// Loads a folder as one `[n, channels, size, size]` batch. Unreadable files are skipped with a
/// warning naming each; no readable image is an error.
pub fn load_dir(dir: &Path, p: &Preprocess) -> Result<(Vec<PathBuf>, ArrayD<f32>)> {
    p.check()?;
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    let mut first_error = None;
    for f in list(dir)? {
        match load(&f, p) {
            Ok(t) => {
                names.push(f);
                tensors.push(t);
            }
            Err(e) => {
                log::warn!("skipping {}: {e}", f.display());
                first_error.get_or_insert(e);
            }
        }
    }
    if tensors.is_empty() {
        return Err(first_error.unwrap_or_else(|| Error::Io {
            action: "loading images from",
            path: dir.display().to_string(),
            message: "no .jpg/.jpeg/.png image in the folder".into(),
        }));
    }
    let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
    Ok((
        names,
        ndarray::stack(ndarray::Axis(0), &views).expect("equal shapes"),
    ))
}
