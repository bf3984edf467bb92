//! Quantization: the encoding math (calibration, simulation and export build on it).

pub mod encoding;

pub use encoding::{steps, Encoding, QuantKind};
