//! Quantization: the encoding math (calibration, simulation and export build on it).

pub mod adaround;
pub mod amp;
pub mod analysis;
pub mod analyzers;
pub mod bias_correction;
pub mod calibrate;
pub mod config;
pub mod dfq;
pub mod encoding;
pub mod export;
pub mod integer;
pub mod params;
pub mod placement;
pub mod prefix;
pub mod qat;
pub mod qdq;
pub mod seq_mse;
pub mod sim;

pub use config::{PlacementStyle, QuantConfig};
pub use encoding::{steps, Encoding, QuantKind};
pub use placement::{place, Placement, Quantizer};
