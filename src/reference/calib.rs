//! CPU reference of the calibration statistics.

use ndarray::ArrayViewD;

use crate::error::{Error, Result};
use crate::graph::attrs::{rebin_table, BinGrid, Outside};
use crate::reference::{channel_of, view};

/// Per-channel (min, max).
type Ranges = Vec<(f32, f32)>;

/// Per-channel (min, max) of finite values and the count of non-finite ones.
pub fn min_max(x: &ArrayViewD<'_, f32>, axis: Option<usize>) -> Result<(Ranges, Vec<u32>)> {
    if x.is_empty() {
        return Err(Error::EmptyTensor {
            op: "min_max",
            tensor: "x".into(),
        });
    }
    let v = view(x.shape(), axis, "min_max")?;
    let mut out = vec![(f32::INFINITY, f32::NEG_INFINITY); v.channels];
    let mut bad = vec![0u32; v.channels];
    for (i, &e) in x.as_standard_layout().iter().enumerate() {
        let c = channel_of(&v, i);
        if e.is_finite() {
            out[c].0 = out[c].0.min(e);
            out[c].1 = out[c].1.max(e);
        } else {
            bad[c] += 1;
        }
    }
    Ok((out, bad))
}

/// Per-channel (count, mean, variance) of finite values, two-pass in f64.
pub fn moments(x: &ArrayViewD<'_, f32>, axis: Option<usize>) -> Result<Vec<(u64, f64, f64)>> {
    if x.is_empty() {
        return Err(Error::EmptyTensor {
            op: "moments",
            tensor: "x".into(),
        });
    }
    let v = view(x.shape(), axis, "moments")?;
    let c = v.channels;
    let data = x.as_standard_layout();
    let (mut n, mut sum) = (vec![0u64; c], vec![0f64; c]);
    for (i, &e) in data.iter().enumerate() {
        if e.is_finite() {
            n[channel_of(&v, i)] += 1;
            sum[channel_of(&v, i)] += e as f64;
        }
    }
    let mean: Vec<f64> = sum
        .iter()
        .zip(&n)
        .map(|(s, &k)| if k == 0 { 0.0 } else { s / k as f64 })
        .collect();
    let mut m2 = vec![0f64; c];
    for (i, &e) in data.iter().enumerate() {
        if e.is_finite() {
            let ch = channel_of(&v, i);
            m2[ch] += (e as f64 - mean[ch]).powi(2);
        }
    }
    Ok((0..c)
        .map(|ch| {
            (
                n[ch],
                mean[ch],
                if n[ch] == 0 {
                    0.0
                } else {
                    m2[ch] / n[ch] as f64
                },
            )
        })
        .collect())
}

/// Per-channel sums in f64.
pub fn channel_sum(x: &ArrayViewD<'_, f32>, axis: Option<usize>) -> Result<Vec<f64>> {
    let v = view(x.shape(), axis, "channel_sum")?;
    let mut out = vec![0f64; v.channels];
    for (i, &e) in x.as_standard_layout().iter().enumerate() {
        out[channel_of(&v, i)] += e as f64;
    }
    Ok(out)
}

/// Per-channel histograms `[channels][bins]` of finite values on the given grids.
pub fn histogram(
    x: &ArrayViewD<'_, f32>,
    axis: Option<usize>,
    grids: &[BinGrid],
    bins: u32,
    outside: Outside,
) -> Result<Vec<Vec<u32>>> {
    let v = view(x.shape(), axis, "histogram")?;
    let mut out = vec![vec![0u32; bins as usize]; v.channels];
    for (i, &e) in x.as_standard_layout().iter().enumerate() {
        if e.is_finite() {
            let c = channel_of(&v, i);
            if let Some(b) = grids[c].index(e, bins, outside) {
                out[c][b as usize] += 1;
            }
        }
    }
    Ok(out)
}

/// Re-bins one channel's counts from `old` to `new` range (AIMET's split rule).
pub fn rebin(counts: &[u32], old: (f32, f32), new: (f32, f32)) -> Vec<u32> {
    let bins = counts.len() as u32;
    let (dest, frac) = rebin_table(old, new, bins);
    let mut out = vec![0u32; counts.len()];
    for (i, &count) in counts.iter().enumerate() {
        let split = ((frac[i] * count as f32).round_ties_even().max(0.0) as u32).min(count);
        out[dest[i][0] as usize] += split;
        out[dest[i][1] as usize] += count - split;
    }
    out
}

/// AIMET-style running histogram over a sequence of batches: per-channel ranges and counts.
pub fn running_histogram(
    batches: &[ArrayViewD<'_, f32>],
    axis: Option<usize>,
    bins: u32,
) -> Result<(Ranges, Vec<Vec<u32>>)> {
    let mut ranges: Vec<(f32, f32)> = Vec::new();
    let mut counts: Vec<Vec<u32>> = Vec::new();
    for x in batches {
        let (mm, _) = min_max(x, axis)?;
        let new: Vec<(f32, f32)> = mm
            .iter()
            .enumerate()
            .map(|(c, &(lo, hi))| {
                let (lo, hi) = if lo == hi {
                    (lo - 0.5, hi + 0.5)
                } else {
                    (lo, hi)
                };
                match ranges.get(c) {
                    Some(&(a, b)) => (lo.min(a), hi.max(b)),
                    None => (lo, hi),
                }
            })
            .collect();
        if counts.is_empty() {
            counts = vec![vec![0; bins as usize]; new.len()];
        } else if new != ranges {
            counts = counts
                .iter()
                .zip(ranges.iter().zip(&new))
                .map(|(h, (&o, &n))| rebin(h, o, n))
                .collect();
        }
        let grids: Vec<BinGrid> = new
            .iter()
            .map(|&(lo, hi)| BinGrid::over(lo, hi, bins))
            .collect();
        let h = histogram(x, axis, &grids, bins, Outside::Edge)?;
        for (acc, add) in counts.iter_mut().zip(h) {
            acc.iter_mut().zip(add).for_each(|(a, b)| *a += b);
        }
        ranges = new;
    }
    Ok((ranges, counts))
}
