//! Plain CPU implementations of every kernel: the oracle for tests and the baseline in
//! benches. Obviously correct, never clever; f64 accumulation where order matters.

pub mod calib;
pub mod gemm;
pub mod grad;
pub mod graph;
pub mod index;
pub mod integer;
pub mod linalg;
pub mod nn;
pub mod quant;
pub mod rows;

use crate::error::{Error, Result};

/// A tensor's channels along an axis: `channels` of them, `inner` elements per run.
pub(crate) struct Channels {
    pub channels: usize,
    inner: usize,
}

/// The channels of `shape` along `axis` (`None`: the whole tensor is one channel).
pub(crate) fn view(shape: &[usize], axis: Option<usize>, op: &'static str) -> Result<Channels> {
    match axis {
        None => Ok(Channels {
            channels: 1,
            inner: shape.iter().product(),
        }),
        Some(a) if a < shape.len() => Ok(Channels {
            channels: shape[a],
            inner: shape[a + 1..].iter().product(),
        }),
        Some(a) => Err(Error::invalid(
            op,
            "axis",
            a,
            format!("tensor has {} dims", shape.len()),
        )),
    }
}

/// The channel of flat (standard-layout) element `i`.
pub(crate) fn channel_of(v: &Channels, i: usize) -> usize {
    (i / v.inner.max(1)) % v.channels.max(1)
}
