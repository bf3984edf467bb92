//! Calibration statistics on the GPU (`shaders/calib.wgsl`): per-tensor and per-channel
//! min/max, sums, mean/variance and histograms, plus AIMET's running histogram.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{channel_chunks, grid_1d, grid_channels, ChannelChunk, ChannelView, WG};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::{rebin_table, BinGrid, Outside};

use Access::{Read, ReadWrite, Uniform};

static MINMAX_PARTIAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "minmax_partial",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite],
};
static MINMAX_FINAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "minmax_final",
    bindings: &[Uniform, Read, Read, ReadWrite, ReadWrite],
};
static MOMENTS_PARTIAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "moments_partial",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite],
};
static MOMENTS_FINAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "moments_final",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static SUM_PARTIAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "sum_partial",
    bindings: &[Uniform, Read, ReadWrite],
};
static SUM_FINAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "sum_final",
    bindings: &[Uniform, Read, ReadWrite],
};
static HIST_LOCAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "histogram_local",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static HIST_GLOBAL: Kernel = Kernel {
    family: Family::Calib,
    entry: "histogram_global",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static HIST_REBIN: Kernel = Kernel {
    family: Family::Calib,
    entry: "histogram_rebin",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};

/// Default histogram resolution (AIMET's).
pub const DEFAULT_BINS: u32 = 2048;
/// Largest bin count gathered in workgroup memory (16 KiB of u32 counters).
const LOCAL_BINS: u32 = 4096;
/// Elements each workgroup should cover at least before another split is worth it.
const ELEMS_PER_GROUP: u64 = 16384;
/// Most workgroups per channel in one chunk.
const MAX_SPLITS: u64 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ChunkParams {
    outer_n: u32,
    inner_n: u32,
    c_count: u32,
    c0: u32,
    c_stride: u32,
    o_stride: u32,
    skip: u32,
    splits: u32,
    slot_base: u32,
    slots: u32,
    ny: u32,
    bins: u32,
    step_o: u32,
    step_i: u32,
    drop_outside: u32,
    _pad: u32,
}

/// How a reduction over one tensor is split: chunks, workgroups per channel per chunk, slots.
struct Plan {
    view: ChannelView,
    chunks: Vec<ChannelChunk>,
    splits: u64,
    slots: u64,
}

fn plan(op: &'static str, gpu: &Gpu, x: &GpuTensor, axis: Option<usize>) -> Result<Plan> {
    x.expect_dtype(op, "x", DType::F32)?;
    if x.is_empty() {
        return Err(Error::EmptyTensor {
            op,
            tensor: "x".into(),
        });
    }
    if x.len() as u64 > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op,
            tensor: "x".into(),
            bytes: x.bytes(),
            limit: u32::MAX as u64 * 4,
            which: "32-bit element index",
        });
    }
    let view = ChannelView::new(x.shape(), axis, op)?;
    let chunks = channel_chunks(&view, &gpu.limits());
    let per_channel = chunks
        .iter()
        .map(|c| c.outer_n * c.inner_n)
        .max()
        .unwrap_or(1);
    let splits = per_channel
        .div_ceil(ELEMS_PER_GROUP)
        .clamp(1, MAX_SPLITS.min(gpu.limits().max_groups as u64));
    let slots = splits * chunks.len() as u64;
    Ok(Plan {
        view,
        chunks,
        splits,
        slots,
    })
}

impl Plan {
    fn params(&self, chunk: &ChannelChunk, index: usize, ny: u32, bins: u32) -> ChunkParams {
        ChunkParams {
            outer_n: chunk.outer_n as u32,
            inner_n: chunk.inner_n as u32,
            c_count: chunk.c_count as u32,
            c0: chunk.c0 as u32,
            c_stride: self.view.inner as u32,
            o_stride: (self.view.channels * self.view.inner) as u32,
            skip: chunk.skip as u32,
            splits: self.splits as u32,
            slot_base: (index as u64 * self.splits) as u32,
            slots: self.slots as u32,
            ny,
            bins,
            step_o: (self.splits * WG / chunk.inner_n) as u32,
            step_i: (self.splits * WG % chunk.inner_n) as u32,
            drop_outside: 0,
            _pad: 0,
        }
    }

    /// Records the partial stage: for each chunk, bindings `pre ++ [x chunk] ++ post`.
    /// A chunk with more channels than one grid holds is dispatched in channel groups.
    /// `hist`: the histogram kernels' bins and what they do outside the range.
    #[allow(clippy::too_many_arguments)]
    fn partials(
        &self,
        enc: &mut impl Record,
        gpu: &Gpu,
        kernel: &Kernel,
        x: &GpuTensor,
        pre: &[&GpuTensor],
        post: &[&GpuTensor],
        hist: Option<(u32, Outside)>,
    ) -> Result<()> {
        let (bins, outside) = hist.unwrap_or((0, Outside::Edge));
        let max = gpu.limits().max_groups as u64;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let mut binds: Vec<Bind> = pre.iter().map(|t| Bind::Whole(t)).collect();
            binds.push(Bind::Range {
                tensor: x,
                offset: chunk.bind_start * 4,
                size: chunk.bind_len * 4,
            });
            binds.extend(post.iter().map(|t| Bind::Whole(t)));
            for sub in (0..chunk.c_count).step_by((max * max) as usize) {
                let count = (max * max).min(chunk.c_count - sub);
                let (grid, ny) = grid_channels(self.splits as u32, count, max as u32)?;
                let mut params = self.params(chunk, i, ny, bins);
                params.drop_outside = (outside == Outside::Drop) as u32;
                params.c0 += sub as u32;
                params.c_count = count as u32;
                params.skip += (sub * self.view.inner) as u32;
                enc.dispatch(gpu, kernel, &[], &params, &binds, grid)?;
            }
        }
        Ok(())
    }

    /// Records the final stage: one workgroup per channel over all slots.
    fn finals(
        &self,
        enc: &mut impl Record,
        gpu: &Gpu,
        kernel: &Kernel,
        tensors: &[&GpuTensor],
    ) -> Result<()> {
        let max = gpu.limits().max_groups as u64;
        let binds: Vec<Bind> = tensors.iter().map(|t| Bind::Whole(t)).collect();
        for c0 in (0..self.view.channels).step_by((max * max) as usize) {
            let count = (max * max).min(self.view.channels - c0);
            let (grid, ny) = grid_channels(1, count, max as u32)?;
            let params = ChunkParams {
                c0: c0 as u32,
                c_count: count as u32,
                slots: self.slots as u32,
                ny,
                ..Default::default()
            };
            enc.dispatch(gpu, kernel, &[], &params, &binds, grid)?;
        }
        Ok(())
    }

    fn slot_count(&self) -> usize {
        (self.view.channels * self.slots) as usize
    }
}

/// Per-channel min and max of the finite values, and the count of non-finite ones.
#[derive(Debug)]
pub struct MinMax {
    /// `[channels, 2]`: (min, max) of finite values; (+inf, -inf) for a channel with none.
    pub range: GpuTensor,
    /// `[channels]` u32: NaN and +-Inf values seen (left out of the range).
    pub non_finite: GpuTensor,
}

/// Min/max per tensor (`axis = None`) or per channel along `axis`.
pub fn min_max(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    axis: Option<usize>,
) -> Result<MinMax> {
    let plan = plan("min_max", gpu, x, axis)?;
    let n = plan.slot_count();
    let identity: Vec<[f32; 2]> = vec![[f32::INFINITY, f32::NEG_INFINITY]; n];
    let part = gpu.upload_slice(&[n, 2], bytemuck::cast_slice::<[f32; 2], f32>(&identity))?;
    let bad = gpu.upload_slice(&[n], &vec![0u32; n])?;
    plan.partials(enc, gpu, &MINMAX_PARTIAL, x, &[], &[&part, &bad], None)?;
    let c = plan.view.channels as usize;
    let range = gpu.empty(&[c, 2], DType::F32)?;
    let non_finite = gpu.empty(&[c], DType::U32)?;
    plan.finals(enc, gpu, &MINMAX_FINAL, &[&part, &bad, &range, &non_finite])?;
    Ok(MinMax { range, non_finite })
}

/// Per-channel `[channels, 4]` = (count, mean, M2, sum) of the finite values; the variance is
/// `M2 / count`. Partials combine with Chan's parallel formula.
pub fn moments(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    axis: Option<usize>,
) -> Result<GpuTensor> {
    let plan = plan("moments", gpu, x, axis)?;
    let n = plan.slot_count();
    let part = gpu.upload_slice(&[n, 2], &vec![0f32; 2 * n])?;
    let counts = gpu.upload_slice(&[n], &vec![0u32; n])?;
    plan.partials(enc, gpu, &MOMENTS_PARTIAL, x, &[], &[&part, &counts], None)?;
    let out = gpu.empty(&[plan.view.channels as usize, 4], DType::F32)?;
    plan.finals(enc, gpu, &MOMENTS_FINAL, &[&part, &counts, &out])?;
    Ok(out)
}

/// Per-channel sums `[channels]` (NaN and Inf included).
pub fn channel_sum(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    axis: Option<usize>,
) -> Result<GpuTensor> {
    let plan = plan("channel_sum", gpu, x, axis)?;
    let n = plan.slot_count();
    let part = gpu.upload_slice(&[n], &vec![0f32; n])?;
    plan.partials(enc, gpu, &SUM_PARTIAL, x, &[], &[&part], None)?;
    let out = gpu.empty(&[plan.view.channels as usize], DType::F32)?;
    plan.finals(enc, gpu, &SUM_FINAL, &[&part, &out])?;
    Ok(out)
}

fn check_bins(op: &'static str, bins: u32) -> Result<()> {
    if bins == 0 || bins > 1 << 20 {
        return Err(Error::invalid(op, "bins", bins, "must be in 1..=1048576"));
    }
    Ok(())
}

fn check_ranges(op: &'static str, ranges: &[(f32, f32)], channels: u64) -> Result<()> {
    if ranges.len() as u64 != channels {
        return Err(Error::invalid(
            op,
            "ranges",
            ranges.len(),
            format!("need one range per channel ({channels})"),
        ));
    }
    for (c, &(lo, hi)) in ranges.iter().enumerate() {
        if !(lo.is_finite()
            && hi.is_finite()
            && lo < hi
            && BinGrid::over(lo, hi, 1).inv_width.is_finite())
        {
            return Err(Error::invalid(
                op,
                "range",
                format!("channel {c}: [{lo}, {hi}]"),
                "must be finite with lo < hi",
            ));
        }
    }
    Ok(())
}

/// Adds the histogram of `x` (per tensor or per channel, one grid per channel) to `counts`
/// (`[channels, bins]` u32), or to a new zeroed histogram when `counts` is `None`. Values
/// outside the bins go where `outside` says; non-finite values are left out.
#[allow(clippy::too_many_arguments)]
pub fn histogram(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    axis: Option<usize>,
    grids: &[BinGrid],
    bins: u32,
    outside: Outside,
    counts: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    const OP: &str = "histogram";
    check_bins(OP, bins)?;
    let plan = plan(OP, gpu, x, axis)?;
    if grids.len() as u64 != plan.view.channels {
        return Err(Error::invalid(
            OP,
            "grids",
            grids.len(),
            format!("need one grid per channel ({})", plan.view.channels),
        ));
    }
    for (c, g) in grids.iter().enumerate() {
        g.check(OP, c)?;
    }
    let c = plan.view.channels as usize;
    let counts = match counts {
        Some(t) => {
            t.expect_dtype(OP, "counts", DType::U32)?;
            if t.shape() != [c, bins as usize] {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    tensor: "counts".into(),
                    expected: format!("[{c}, {bins}]"),
                    got: t.shape().to_vec(),
                });
            }
            t.clone()
        }
        None => gpu.upload_slice(&[c, bins as usize], &vec![0u32; c * bins as usize])?,
    };
    let table: Vec<f32> = grids
        .iter()
        .flat_map(|g| [g.origin, g.inv_width, g.shift, 0.0])
        .collect();
    let table = gpu.upload_slice(&[c, 4], &table)?;
    let kernel = if bins <= LOCAL_BINS {
        &HIST_LOCAL
    } else {
        &HIST_GLOBAL
    };
    plan.partials(
        enc,
        gpu,
        kernel,
        x,
        &[&table],
        &[&counts],
        Some((bins, outside)),
    )?;
    Ok(counts)
}

/// Re-bins `counts` (`[channels, bins]`) from `old` to `new` per-channel ranges on the GPU.
pub fn rebin(
    enc: &mut impl Record,
    gpu: &Gpu,
    counts: &GpuTensor,
    old: &[(f32, f32)],
    new: &[(f32, f32)],
) -> Result<GpuTensor> {
    const OP: &str = "histogram_rebin";
    counts.expect_dtype(OP, "counts", DType::U32)?;
    let [c, bins] = counts.shape() else {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "counts".into(),
            expected: "[channels, bins]".into(),
            got: counts.shape().to_vec(),
        });
    };
    let (c, bins) = (*c, *bins as u32);
    check_bins(OP, bins)?;
    check_ranges(OP, old, c as u64)?;
    check_ranges(OP, new, c as u64)?;
    let mut dest = Vec::with_capacity(c * bins as usize);
    let mut frac = Vec::with_capacity(c * bins as usize);
    for (o, n) in old.iter().zip(new) {
        let (d, f) = rebin_table(*o, *n, bins);
        dest.extend(d);
        frac.extend(f);
    }
    let dest = gpu.upload_slice(
        &[c, bins as usize, 2],
        bytemuck::cast_slice::<[u32; 2], u32>(&dest),
    )?;
    let frac = gpu.upload_slice(&[c, bins as usize], &frac)?;
    let out = gpu.upload_slice(&[c, bins as usize], &vec![0u32; c * bins as usize])?;
    let params = ChunkParams {
        c_count: c as u32,
        bins,
        ..Default::default()
    };
    let grid = grid_1d(
        (c as u64 * bins as u64).div_ceil(WG),
        gpu.limits().max_groups,
    )?;
    enc.dispatch(
        gpu,
        &HIST_REBIN,
        &[],
        &params,
        &[
            Bind::Whole(&dest),
            Bind::Whole(&frac),
            Bind::Whole(counts),
            Bind::Whole(&out),
        ],
        grid,
    )?;
    Ok(out)
}

/// A histogram that grows with the data, as AIMET v2's histogram observer: the first batch
/// sets the range to its finite min/max (widened by 0.5 each side when constant); later
/// batches widen the range to the union, re-binning the counts so far; every batch is
/// binned over the current range. Non-finite values are counted and left out.
pub struct RunningHistogram {
    bins: u32,
    axis: Option<usize>,
    ranges: Vec<(f32, f32)>,
    counts: Option<GpuTensor>,
    non_finite: u64,
}

impl RunningHistogram {
    /// An empty histogram with `bins` bins per channel (`axis = None`: per tensor).
    pub fn new(bins: u32, axis: Option<usize>) -> Result<Self> {
        check_bins("running_histogram", bins)?;
        Ok(RunningHistogram {
            bins,
            axis,
            ranges: Vec::new(),
            counts: None,
            non_finite: 0,
        })
    }

    /// Adds a batch whose per-channel (min, max) of finite values and non-finite counts are
    /// already known (e.g. read back together for many tensors): records the re-binning and
    /// the batch's histogram into `enc`.
    pub fn update_known(
        &mut self,
        enc: &mut impl Record,
        gpu: &Gpu,
        x: &GpuTensor,
        range: &[(f32, f32)],
        bad: &[u32],
    ) -> Result<()> {
        const OP: &str = "running_histogram";
        self.non_finite += bad.iter().map(|&b| b as u64).sum::<u64>();
        if !self.ranges.is_empty() && self.ranges.len() != range.len() {
            return Err(Error::invalid(
                OP,
                "channels",
                range.len(),
                format!("earlier batches had {}", self.ranges.len()),
            ));
        }
        let mut new_ranges = Vec::with_capacity(range.len());
        for (c, &(lo, hi)) in range.iter().enumerate() {
            let (mut lo, mut hi) = (lo, hi);
            if lo > hi {
                return Err(Error::NonFinite {
                    op: OP,
                    tensor: format!("channel {c} of x (no finite value)"),
                    count: bad.get(c).copied().unwrap_or(0) as u64,
                });
            }
            if lo == hi {
                lo -= 0.5;
                hi += 0.5;
            }
            if let Some(&(a, b)) = self.ranges.get(c) {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            new_ranges.push((lo, hi));
        }
        let counts = match self.counts.take() {
            Some(old) if new_ranges != self.ranges => {
                rebin(enc, gpu, &old, &self.ranges, &new_ranges)?
            }
            Some(old) => old,
            None => gpu.upload_slice(
                &[new_ranges.len(), self.bins as usize],
                &vec![0u32; new_ranges.len() * self.bins as usize],
            )?,
        };
        let grids: Vec<BinGrid> = new_ranges
            .iter()
            .map(|&(lo, hi)| BinGrid::over(lo, hi, self.bins))
            .collect();
        let counts = histogram(
            enc,
            gpu,
            x,
            self.axis,
            &grids,
            self.bins,
            Outside::Edge,
            Some(&counts),
        )?;
        self.ranges = new_ranges;
        self.counts = Some(counts);
        Ok(())
    }

    /// Per-channel (lo, hi) of the histogram so far (empty before the first update).
    pub fn ranges(&self) -> &[(f32, f32)] {
        &self.ranges
    }

    /// The counts `[channels, bins]` on the GPU, if any batch was added.
    pub fn counts(&self) -> Option<&GpuTensor> {
        self.counts.as_ref()
    }

    /// Non-finite values seen and left out.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// The channel axis (`None`: per tensor).
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }

    /// Bins per channel.
    pub fn bins(&self) -> u32 {
        self.bins
    }
}
