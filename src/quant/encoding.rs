//! The quantization math, stated once: encodings from ranges, and the grid they describe.
//!
//! * Range fix-up: `min = min(min, 0)`, `max = max(max, 0)`; a range whose step would be
//!   below f32's epsilon is widened to one epsilon per step (AIMET 2.x's rule; its older C++
//!   kernels forced 0.01 instead, which AIMET 2.42's MobileNetV2 encodings show it no longer does).
//! * N = 2^bw - 1 steps (2^bw - 2 for strict symmetric).
//! * Asymmetric: `scale = (max - min) / N`, `offset = round(min / scale)` (<= 0).
//! * Signed symmetric: grid [-2^(bw-1), 2^(bw-1) - 1],
//!   `scale = max(-min / 2^(bw-1), max / (2^(bw-1) - 1))`, `offset = -2^(bw-1)`.
//! * Unsigned symmetric (values all >= 0): `scale = max / N`, `offset = 0`; with negative
//!   values it falls back to signed symmetric.
//! * Strict symmetric: grid [-(2^(bw-1) - 1), 2^(bw-1) - 1],
//!   `scale = max(-min, max) / (2^(bw-1) - 1)`, `offset = -(2^(bw-1) - 1)`.
//! * Fake-quant: `q = clamp(round(x / scale) - offset, 0, N)`, `x_hat = (q + offset) * scale`,
//!   rounding half to even (like ONNX QuantizeLinear; AIMET's C++ kernels round half up: the two
//!   differ only at exact ties). `x / scale` is computed as `x * (1 / scale)` so GPU and CPU agree
//!   bit for bit (WGSL division is not correctly rounded, multiplication is).

use crate::error::{Error, Result};
use crate::graph::attrs::{IntGrid, QuantGrid};

/// AIMET's smallest allowed step size (f32 epsilon).
pub const MIN_SCALE: f64 = f32::EPSILON as f64;

/// The shape of the integer grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantKind {
    /// Offset chosen so that [min, max] maps onto [0, N].
    Asymmetric,
    /// Signed grid [-2^(bw-1), 2^(bw-1) - 1] around zero (weights by default).
    SignedSymmetric,
    /// Grid [0, N] starting at zero, for non-negative tensors.
    UnsignedSymmetric,
    /// Signed grid without its most negative value: [-(2^(bw-1) - 1), 2^(bw-1) - 1].
    StrictSymmetric,
}

/// A quantization encoding: one scale and offset per channel (or one for the tensor).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    /// Bits per value, 2..=16.
    pub bitwidth: u32,
    /// Grid shape.
    pub kind: QuantKind,
    /// Channel axis for per-channel encodings; `None` for per-tensor.
    pub axis: Option<usize>,
    /// Step size per channel (> 0).
    pub scale: Vec<f32>,
    /// Integer offset per channel (<= 0): real value of code q is `(q + offset) * scale`.
    pub offset: Vec<f32>,
}

/// Number of steps N of a grid.
pub fn steps(bitwidth: u32, kind: QuantKind) -> u32 {
    let full = (1u32 << bitwidth) - 1;
    if kind == QuantKind::StrictSymmetric {
        full - 1
    } else {
        full
    }
}

fn check_bitwidth(op: &'static str, bitwidth: u32) -> Result<()> {
    if !(2..=16).contains(&bitwidth) {
        return Err(Error::invalid(
            op,
            "bitwidth",
            bitwidth,
            "must be in 2..=16",
        ));
    }
    Ok(())
}

/// (scale, offset) for one channel's observed range.
fn scale_offset(min: f64, max: f64, bitwidth: u32, kind: QuantKind) -> (f32, f32) {
    let mut min = min.min(0.0);
    let mut max = max.max(0.0);
    let n = steps(bitwidth, kind) as f64;
    if (max - min) / n < MIN_SCALE {
        // AIMET's adjustment: one minimum step per grid step, split around zero if symmetric.
        if kind == QuantKind::Asymmetric || (kind == QuantKind::UnsignedSymmetric && min >= 0.0) {
            max += n * MIN_SCALE;
        } else {
            max += (n / 2.0).floor() * MIN_SCALE;
            min -= (n / 2.0).ceil() * MIN_SCALE;
        }
    }
    let half = (1u64 << (bitwidth - 1)) as f64;
    let kind = if kind == QuantKind::UnsignedSymmetric && min < 0.0 {
        QuantKind::SignedSymmetric
    } else {
        kind
    };
    match kind {
        QuantKind::Asymmetric => {
            let scale = ((max - min) / n) as f32;
            let offset = (min / scale as f64).round_ties_even() as f32;
            (scale, offset)
        }
        QuantKind::SignedSymmetric => {
            (((-min / half).max(max / (half - 1.0))) as f32, -half as f32)
        }
        QuantKind::UnsignedSymmetric => ((max / n) as f32, 0.0),
        QuantKind::StrictSymmetric => (
            ((-min).max(max) / (half - 1.0)) as f32,
            -(half - 1.0) as f32,
        ),
    }
}

impl Encoding {
    /// Computes an encoding from per-channel ranges (one entry per channel; one for per-tensor).
    pub fn from_ranges(
        min: &[f32],
        max: &[f32],
        bitwidth: u32,
        kind: QuantKind,
        axis: Option<usize>,
    ) -> Result<Encoding> {
        const OP: &str = "encoding";
        check_bitwidth(OP, bitwidth)?;
        if min.len() != max.len() || min.is_empty() {
            return Err(Error::invalid(
                OP,
                "ranges",
                format!("{} mins, {} maxes", min.len(), max.len()),
                "need one min and one max per channel",
            ));
        }
        if axis.is_none() && min.len() != 1 {
            return Err(Error::invalid(
                OP,
                "ranges",
                min.len(),
                "a per-tensor encoding has one range",
            ));
        }
        let mut scale = Vec::with_capacity(min.len());
        let mut offset = Vec::with_capacity(min.len());
        for (c, (&lo, &hi)) in min.iter().zip(max).enumerate() {
            if !lo.is_finite() || !hi.is_finite() || lo > hi {
                return Err(Error::invalid(
                    OP,
                    "range",
                    format!("channel {c}: [{lo}, {hi}]"),
                    "must be finite with min <= max",
                ));
            }
            let (s, o) = scale_offset(lo as f64, hi as f64, bitwidth, kind);
            scale.push(s);
            offset.push(o);
        }
        let e = Encoding {
            bitwidth,
            kind,
            axis,
            scale,
            offset,
        };
        e.validate(OP)?;
        Ok(e)
    }

    /// Number of steps N.
    pub fn steps(&self) -> u32 {
        steps(self.bitwidth, self.kind)
    }

    /// Number of channels (1 for per-tensor).
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// The smallest and largest representable value of channel `c`.
    pub fn grid_range(&self, c: usize) -> (f32, f32) {
        let s = self.scale[c];
        let o = self.offset[c];
        (o * s, (o + self.steps() as f32) * s)
    }

    /// Checks bitwidth, scales (finite, > 0, invertible) and offsets (integers in [-N, 0]).
    pub fn validate(&self, op: &'static str) -> Result<()> {
        check_bitwidth(op, self.bitwidth)?;
        self.raw_grid().validate(op)
    }

    fn raw_grid(&self) -> QuantGrid {
        QuantGrid {
            axis: self.axis,
            scale: self.scale.clone(),
            offset: self.offset.clone(),
            steps: self.steps(),
            signed_codes: self.signed_codes(),
        }
    }

    /// The grid the kernels apply (validated).
    pub fn grid(&self) -> Result<QuantGrid> {
        check_bitwidth("encoding", self.bitwidth)?;
        let g = self.raw_grid();
        g.validate("encoding")?;
        Ok(g)
    }

    /// The integer grid of a per-tensor encoding: `r = q + offset` for `q` in `[0, N]`.
    pub fn int_grid(&self) -> IntGrid {
        IntGrid {
            scale: self.scale[0],
            lo: self.offset[0],
            hi: self.offset[0] + self.steps() as f32,
        }
    }

    /// Whether codes are reported on the signed grid (q + offset) rather than [0, N].
    pub fn signed_codes(&self) -> bool {
        matches!(
            self.kind,
            QuantKind::SignedSymmetric | QuantKind::StrictSymmetric
        ) && self.offset.iter().all(|&o| o < 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_makes_zero_exact() {
        let e = Encoding::from_ranges(&[-1.0], &[3.0], 8, QuantKind::Asymmetric, None).unwrap();
        let (lo, hi) = e.grid_range(0);
        assert!(lo <= 0.0 && hi >= 0.0);
        assert_eq!(e.offset[0], (-1.0f64 / e.scale[0] as f64).round() as f32);
        assert!((e.scale[0] - 4.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn signed_symmetric_uses_the_full_signed_grid() {
        let e =
            Encoding::from_ranges(&[-2.0], &[1.0], 8, QuantKind::SignedSymmetric, None).unwrap();
        assert_eq!(e.offset[0], -128.0);
        assert_eq!(e.scale[0], (2.0f64 / 128.0) as f32);
        let e =
            Encoding::from_ranges(&[-1.0], &[2.0], 8, QuantKind::SignedSymmetric, None).unwrap();
        assert_eq!(e.scale[0], (2.0f64 / 127.0) as f32);
    }

    #[test]
    fn strict_and_unsigned_symmetric() {
        let e =
            Encoding::from_ranges(&[-1.0], &[2.0], 4, QuantKind::StrictSymmetric, None).unwrap();
        assert_eq!((e.steps(), e.offset[0]), (14, -7.0));
        let e =
            Encoding::from_ranges(&[0.5], &[2.0], 8, QuantKind::UnsignedSymmetric, None).unwrap();
        assert_eq!((e.offset[0], e.scale[0]), (0.0, (2.0f64 / 255.0) as f32));
        let e =
            Encoding::from_ranges(&[-0.5], &[2.0], 8, QuantKind::UnsignedSymmetric, None).unwrap();
        assert_eq!(e.offset[0], -128.0);
    }

    #[test]
    fn tiny_and_zero_ranges_get_the_minimum_range() {
        let e = Encoding::from_ranges(&[0.0], &[0.0], 8, QuantKind::Asymmetric, None).unwrap();
        assert!((e.scale[0] as f64 - MIN_SCALE).abs() < 1e-12);
        let e = Encoding::from_ranges(&[-1e-4], &[-1e-5], 8, QuantKind::Asymmetric, None).unwrap();
        assert!(e.grid_range(0).0 < 0.0 && e.grid_range(0).1 >= 0.0);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(Encoding::from_ranges(&[0.0], &[1.0], 1, QuantKind::Asymmetric, None).is_err());
        assert!(Encoding::from_ranges(&[0.0], &[1.0], 17, QuantKind::Asymmetric, None).is_err());
        assert!(
            Encoding::from_ranges(&[f32::NAN], &[1.0], 8, QuantKind::Asymmetric, None).is_err()
        );
        assert!(Encoding::from_ranges(&[2.0], &[1.0], 8, QuantKind::Asymmetric, None).is_err());
        let bad = Encoding {
            bitwidth: 8,
            kind: QuantKind::Asymmetric,
            axis: None,
            scale: vec![0.0],
            offset: vec![0.0],
        };
        assert!(bad.validate("test").is_err());
        let bad = Encoding {
            bitwidth: 8,
            kind: QuantKind::Asymmetric,
            axis: None,
            scale: vec![1.0],
            offset: vec![0.5],
        };
        assert!(bad.validate("test").is_err());
    }
}
