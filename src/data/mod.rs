//! Input data: image folders (decode, resize, crop, normalise) and .npy files.

pub mod idx;
pub mod images;
pub mod npy;
