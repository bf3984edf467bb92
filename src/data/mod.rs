//! Input data: image folders (decode, resize, crop, normalise), .npy and .npz files and
//! (Fashion-)MNIST IDX files.

pub mod augment;
pub mod idx;
pub mod images;
pub mod npy;
pub mod npz;
pub mod rng;
pub mod split;

use std::path::Path;

use ndarray::{ArrayD, Axis};

use crate::error::{Error, Result};

/// Samples from a folder of images (ImageNet preprocessing), IDX images (Fashion-MNIST
/// normalisation) or an .npy batch; at most `limit` of them. Refuses NaN and Inf values.
pub fn load(path: &Path, limit: Option<usize>) -> Result<ArrayD<f32>> {
    Ok(load_named(path, limit)?.1)
}

/// [`load`] with a name per sample: the image's file name for a folder, `#i` (its row) for
/// an .npy or IDX file.
pub fn load_named(path: &Path, limit: Option<usize>) -> Result<(Vec<String>, ArrayD<f32>)> {
    let (names, x) = if path.is_dir() {
        let (files, x) = images::load_dir(path, &images::Preprocess::imagenet())?;
        (Some(images::file_names(&files)), x)
    } else if idx::is_idx(path) {
        (
            None,
            idx::read_images(path, limit, idx::FASHION_MNIST_MEAN, idx::FASHION_MNIST_STD)?,
        )
    } else {
        (None, npy::read(path)?)
    };
    let x = match limit {
        Some(n) if n < x.len_of(Axis(0)) => x.slice_axis(Axis(0), (0..n).into()).to_owned(),
        _ => x,
    };
    let bad = x.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::NonFinite {
            op: "loading data",
            tensor: path.display().to_string(),
            count: bad as u64,
        });
    }
    if x.ndim() == 0 || x.len_of(Axis(0)) == 0 {
        return Err(Error::EmptyTensor {
            op: "loading data",
            tensor: path.display().to_string(),
        });
    }
    let n = x.len_of(Axis(0));
    let names = names.map_or_else(
        || (0..n).map(|i| format!("#{i}")).collect(),
        |v: Vec<String>| v[..n].to_vec(),
    );
    Ok((names, x))
}
