//! Input data: image folders (decode, resize, crop, normalise) and .npy files.

pub mod images;
pub mod npy;
