//! Plain CPU implementations of every kernel: the oracle for tests and the baseline in
//! benches. Obviously correct, never clever; f64 accumulation where order matters.

pub mod calib;
pub mod gemm;
pub mod graph;
pub mod integer;
pub mod linalg;
pub mod nn;
pub mod quant;

use crate::error::Result;
use crate::gpu::launch::ChannelView;

/// The channel of flat element `i` under a channel view.
pub(crate) fn channel_of(view: &ChannelView, i: usize) -> usize {
    (i / view.inner.max(1) as usize) % view.channels as usize
}

/// The channel view of `shape` around `axis`.
pub(crate) fn view(shape: &[usize], axis: Option<usize>, op: &'static str) -> Result<ChannelView> {
    ChannelView::new(shape, axis, op)
}
