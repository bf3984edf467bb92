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
        Preprocess { size: 224, resize: 256, mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225], channels: 3 }
    }

    fn check(&self) -> Result<()> {
        if self.size == 0 || self.resize < self.size {
            return Err(Error::invalid("preprocess", "size", format!("crop {} after resize {}", self.size, self.resize), "need 0 < crop <= resize"));
        }
        if !matches!(self.channels, 1 | 3) || self.mean.len() != self.channels || self.std.len() != self.channels || self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(Error::invalid("preprocess", "mean/std", format!("{:?}/{:?}", self.mean, self.std), format!("need {} values each, std non-zero", self.channels)));
        }
        Ok(())
    }
}

/// The image files of a folder (by extension), sorted by name.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Io { action: "listing images in", path: dir.display().to_string(), message: e.to_string() })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")))
        .collect();
    files.sort();
    Ok(files)
}

/// One image as a `[channels, size, size]` tensor.
pub fn load(path: &Path, p: &Preprocess) -> Result<ArrayD<f32>> {
    p.check()?;
    let img = image::open(path).map_err(|e| Error::Io { action: "decoding image", path: path.display().to_string(), message: e.to_string() })?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::Io { action: "decoding image", path: path.display().to_string(), message: "empty image".into() });
    }
    let scale = p.resize as f64 / w.min(h) as f64;
    let (rw, rh) = (((w as f64 * scale).round() as u32).max(p.size), ((h as f64 * scale).round() as u32).max(p.size));
    let resized = img.resize_exact(rw, rh, FilterType::Triangle);
    let (left, top) = ((rw - p.size) / 2, (rh - p.size) / 2);
    let crop = resized.crop_imm(left, top, p.size, p.size);
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
    Ok(out.into_dyn().index_axis_move(ndarray::Axis(0), 0))
}

/// Loads a folder as one `[n, channels, size, size]` batch. Unreadable files are skipped with a
/// warning naming each; no readable image is an error.
pub fn load_dir(dir: &Path, p: &Preprocess) -> Result<(Vec<PathBuf>, ArrayD<f32>)> {
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for f in list(dir)? {
        match load(&f, p) {
            Ok(t) => {
                names.push(f);
                tensors.push(t);
            }
            Err(e) => log::warn!("skipping {}: {e}", f.display()),
        }
    }
    if tensors.is_empty() {
        return Err(Error::Io { action: "loading images from", path: dir.display().to_string(), message: "no readable .jpg/.jpeg/.png image".into() });
    }
    let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
    Ok((names, ndarray::stack(ndarray::Axis(0), &views).expect("equal shapes")))
}
