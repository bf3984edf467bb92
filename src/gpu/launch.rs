//! Launch helpers: workgroup grids within the per-dimension limit, and plans that split a
//! tensor into chunks no larger than the adapter's storage-binding limit.

use crate::error::{Error, Result};
use crate::gpu::GpuLimits;

/// Loop iterations one invocation may run inside one outermost loop: llvmpipe (lavapipe, the
/// software adapter) silently ends a loop nest after a fixed number of iterations in total
/// (its loop limiter; wrong results appeared from about 32,500), so kernels with long nested
/// loops split their work into dispatches that stay under this budget, with a 2x margin.
pub const LOOP_BUDGET: u64 = 16384;

/// Threads per workgroup of the 1-D kernels.
pub const WG: u64 = 256;

/// A grid of `groups` workgroups, folded into 2-D when it exceeds the per-dimension limit.
/// Kernels recover the linear index as `wid.x + wid.y * num_workgroups.x`.
pub fn grid_1d(groups: u64, max: u32) -> Result<[u32; 3]> {
    let max = max as u64;
    if groups <= max {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(max);
    if y > max {
        return Err(Error::invalid(
            "dispatch",
            "workgroups",
            groups,
            format!("more than {max}^2"),
        ));
    }
    Ok([max as u32, y as u32, 1])
}

/// Elements each thread of a grid-stride kernel handles (at least).
pub const ELEMS_PER_THREAD: u64 = 8;

/// A grid for a grid-stride loop over `n` elements: about [`ELEMS_PER_THREAD`] per thread.
/// Returns the grid and the stride (threads in the grid).
pub fn grid_stride(n: u64, max: u32) -> Result<([u32; 3], u64)> {
    let grid = grid_1d(n.div_ceil(WG * ELEMS_PER_THREAD).max(1), max)?;
    Ok((grid, grid[0] as u64 * grid[1] as u64 * WG))
}

/// A grid with `x` workgroups per channel for `channels` channels: channel = y + z * ny.
/// Returns the grid and `ny`.
pub fn grid_channels(x: u32, channels: u64, max: u32) -> Result<([u32; 3], u32)> {
    let max64 = max as u64;
    let ny = channels.min(max64);
    let nz = channels.div_ceil(ny.max(1));
    if nz > max64 || x > max {
        return Err(Error::invalid(
            "dispatch",
            "channels",
            channels,
            format!("more than {max}^2"),
        ));
    }
    Ok(([x, ny as u32, nz as u32], ny as u32))
}

/// Largest element count per binding, a multiple of the offset alignment, with `reserve`
/// elements of head room for an unaligned start.
fn max_elems(limits: &GpuLimits, reserve: u64) -> u64 {
    let align_e = (limits.offset_align / 4).max(1);
    let max_e = limits.max_binding / 4;
    ((max_e.saturating_sub(reserve)) / align_e * align_e).max(align_e)
}

/// One piece of a flat elementwise launch: elements `[start, start + len)`, bound from byte
/// `start * 4` (always aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearChunk {
    pub start: u64,
    pub len: u64,
}

/// Splits `n` elements into aligned chunks that each fit one binding.
pub fn linear_chunks(n: u64, limits: &GpuLimits) -> Vec<LinearChunk> {
    let step = max_elems(limits, 0);
    (0..n.div_ceil(step))
        .map(|i| LinearChunk {
            start: i * step,
            len: step.min(n - i * step),
        })
        .collect()
}

/// A tensor seen as `[outer, channels, inner]` around a channel axis (per-tensor: one channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelView {
    pub outer: u64,
    pub channels: u64,
    pub inner: u64,
}

impl ChannelView {
    /// The view of `shape` around `axis` (`None`: the whole tensor is one channel).
    pub fn new(shape: &[usize], axis: Option<usize>, op: &'static str) -> Result<ChannelView> {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        match axis {
            None => Ok(ChannelView {
                outer: 1,
                channels: 1,
                inner: n,
            }),
            Some(a) if a < shape.len() => Ok(ChannelView {
                outer: shape[..a].iter().map(|&d| d as u64).product(),
                channels: shape[a] as u64,
                inner: shape[a + 1..].iter().map(|&d| d as u64).product(),
            }),
            Some(a) => Err(Error::invalid(
                op,
                "axis",
                a,
                format!("tensor has {} dims", shape.len()),
            )),
        }
    }

    /// Total elements.
    pub fn len(&self) -> u64 {
        self.outer * self.channels * self.inner
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flat index of (o, c, i).
    pub fn index(&self, o: u64, c: u64, i: u64) -> u64 {
        (o * self.channels + c) * self.inner + i
    }
}

/// One piece of a per-channel reduction: outer rows `o0..o0+outer_n`, channels
/// `c0..c0+c_count`, inner elements `i0..i0+inner_n`, bound as bytes
/// `[bind_start * 4, (bind_start + bind_len) * 4)`; `skip` = first element - `bind_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelChunk {
    pub o0: u64,
    pub outer_n: u64,
    pub c0: u64,
    pub c_count: u64,
    pub i0: u64,
    pub inner_n: u64,
    pub bind_start: u64,
    pub bind_len: u64,
    pub skip: u64,
}

/// Splits a channel view into chunks that each fit one binding: whole outer rows when a row
/// fits, else channel ranges of one row, else inner ranges of one channel.
pub fn channel_chunks(v: &ChannelView, limits: &GpuLimits) -> Vec<ChannelChunk> {
    let align_e = (limits.offset_align / 4).max(1);
    let cap = max_elems(limits, align_e);
    let row = v.channels * v.inner;
    let mut out = Vec::new();
    let mut push = |o0: u64, outer_n: u64, c0: u64, c_count: u64, i0: u64, inner_n: u64| {
        let first = v.index(o0, c0, i0);
        let last = v.index(o0 + outer_n - 1, c0 + c_count - 1, i0 + inner_n - 1);
        let bind_start = first / align_e * align_e;
        out.push(ChannelChunk {
            o0,
            outer_n,
            c0,
            c_count,
            i0,
            inner_n,
            bind_start,
            bind_len: last + 1 - bind_start,
            skip: first - bind_start,
        });
    };
    if v.is_empty() {
        return out;
    }
    if row <= cap {
        let rows = (cap / row).max(1);
        let mut o = 0;
        while o < v.outer {
            let n = rows.min(v.outer - o);
            push(o, n, 0, v.channels, 0, v.inner);
            o += n;
        }
    } else if v.inner <= cap {
        let per = (cap / v.inner).max(1);
        for o in 0..v.outer {
            let mut c = 0;
            while c < v.channels {
                let n = per.min(v.channels - c);
                push(o, 1, c, n, 0, v.inner);
                c += n;
            }
        }
    } else {
        for o in 0..v.outer {
            for c in 0..v.channels {
                let mut i = 0;
                while i < v.inner {
                    let n = cap.min(v.inner - i);
                    push(o, 1, c, 1, i, n);
                    i += n;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_binding: u64) -> GpuLimits {
        GpuLimits {
            max_binding,
            max_buffer: 1 << 40,
            max_groups: 65535,
            offset_align: 256,
            storage_buffers: 8,
        }
    }

    #[test]
    fn grids_fold_past_the_dimension_limit() {
        assert_eq!(grid_1d(10, 65535).unwrap(), [10, 1, 1]);
        assert_eq!(grid_1d(65536, 65535).unwrap(), [65535, 2, 1]);
        assert_eq!(
            grid_channels(4, 70000, 65535).unwrap(),
            ([4, 65535, 2], 65535)
        );
    }

    #[test]
    fn channel_chunks_cover_every_element_once() {
        let shapes = [
            (3u64, 5u64, 7u64),
            (1, 1, 5000),
            (4, 300, 1),
            (2, 3, 1000),
            (1, 7, 333),
        ];
        for (outer, channels, inner) in shapes {
            for max_binding in [1024u64, 4096, 1 << 20] {
                let v = ChannelView {
                    outer,
                    channels,
                    inner,
                };
                let mut seen = vec![0u8; v.len() as usize];
                for ch in channel_chunks(&v, &limits(max_binding)) {
                    assert_eq!(ch.bind_start % 64, 0);
                    assert!(ch.bind_len * 4 <= max_binding, "{ch:?}");
                    for o in 0..ch.outer_n {
                        for c in 0..ch.c_count {
                            for i in 0..ch.inner_n {
                                let idx = v.index(ch.o0 + o, ch.c0 + c, ch.i0 + i);
                                assert!(idx >= ch.bind_start && idx < ch.bind_start + ch.bind_len);
                                seen[idx as usize] += 1;
                            }
                        }
                    }
                }
                assert!(
                    seen.iter().all(|&s| s == 1),
                    "{outer}x{channels}x{inner} @ {max_binding}"
                );
            }
        }
    }

    #[test]
    fn linear_chunks_are_aligned_and_cover() {
        let c = linear_chunks(1000, &limits(1024));
        assert_eq!(c.iter().map(|c| c.len).sum::<u64>(), 1000);
        assert!(c.iter().all(|c| c.start % 64 == 0 && c.len * 4 <= 1024));
    }
}
