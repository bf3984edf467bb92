//! Range analyzers over calibration histograms: AIMET's SQNR search ("tf-enhanced") over its
//! fixed-range density, and percentile clipping. Min-max needs no histogram (see `calibrate`).

use crate::graph::attrs::{BinGrid, Outside};
use crate::quant::encoding::QuantKind;

/// A histogram of one tensor (or channel): `bins` equal bins over [lo, hi].
#[derive(Clone, Copy, Debug)]
pub struct Hist<'a> {
    pub counts: &'a [u32],
    pub lo: f32,
    pub hi: f32,
}

/// The calibration scheme.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    /// Observed min and max (AIMET "tf" / min_max).
    MinMax,
    /// AIMET's SQNR search over the histogram with clipping noise weighted by `gamma` (3).
    TfEnhanced { gamma: f32 },
    /// Clip to the given percentile (e.g. 99.99) of the values on both sides.
    Percentile(f32),
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" | "min_max" | "tf" => Ok(Scheme::MinMax),
            "tf-enhanced" | "tf_enhanced" | "sqnr" => Ok(Scheme::TfEnhanced { gamma: 3.0 }),
            // With clipping weighted like rounding (gamma = 1) the SQNR search minimises the
            // histogram's mean squared quantization error.
            "mse" => Ok(Scheme::TfEnhanced { gamma: 1.0 }),
            p if p.starts_with("percentile") => {
                let v = p
                    .trim_start_matches("percentile")
                    .trim_start_matches([':', '=']);
                let v: f32 = if v.is_empty() {
                    99.99
                } else {
                    v.parse().map_err(|_| format!("bad percentile '{v}'"))?
                };
                if !(50.0..=100.0).contains(&v) {
                    return Err(format!("percentile {v} must be in [50, 100]"));
                }
                Ok(Scheme::Percentile(v))
            }
            other => Err(format!(
                "unknown scheme '{other}' (minmax, tf-enhanced, mse, percentile[:P])"
            )),
        }
    }
}

/// Buckets of AIMET's tf-enhanced probability density: 512 over the first data's range and
/// 512 on either side.
pub const PDF_BUCKETS: usize = 1536;

/// Where a PDF's buckets lie: bucket `i` is `[(first + i) * step, (first + i + 1) * step)`:
/// zero is a bucket edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PdfRange {
    pub first: i64,
    pub step: f64,
}

impl PdfRange {
    /// AIMET's range from the first data seen: its (min, max) enlarged three times around the
    /// centre (0.01 wide when constant), cut into `PDF_BUCKETS` buckets aligned on zero. f32
    /// arithmetic where AIMET's is f32.
    pub fn around(min: f32, max: f32) -> PdfRange {
        let max = if min == max { max.max(min + 0.01) } else { max };
        let centre = (max + min) / 2.0;
        let lo = (centre - 3.0 * (centre - min)).max(f32::MIN);
        let hi = (centre + 3.0 * (max - centre)).min(f32::MAX);
        let step = (hi as f64 - lo as f64) / PDF_BUCKETS as f64;
        PdfRange {
            first: (lo as f64 / step).floor() as i64,
            step,
        }
    }

    fn x_left(&self, i: usize) -> f64 {
        self.first as f64 * self.step + i as f64 * self.step
    }

    /// The bins of these buckets for the histogram kernels.
    pub fn grid(&self) -> BinGrid {
        BinGrid::zero_aligned(self.step, self.first)
    }
}

/// A probability density over `PDF_BUCKETS` buckets (values outside the range left out, so
/// the probabilities may sum to less than 1).
#[derive(Clone, Debug)]
pub struct Pdf {
    pub range: PdfRange,
    pub probs: Vec<f64>,
}

impl Pdf {
    /// From bucket counts and the number of values seen (those outside the range included).
    pub fn from_counts(range: PdfRange, counts: &[u32], seen: u64) -> Pdf {
        let n = seen.max(1) as f64;
        Pdf {
            range,
            probs: counts.iter().map(|&c| c as f64 / n).collect(),
        }
    }

    /// The PDF of one tensor or channel seen at once (AIMET's parameter quantizers): the range
    /// from its own finite min/max; `None` when every value is zero (AIMET then starts no PDF).
    pub fn of(values: &[f32]) -> Option<Pdf> {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if lo > hi || (lo == 0.0 && hi == 0.0) {
            return None;
        }
        let range = PdfRange::around(lo, hi);
        let grid = range.grid();
        let mut counts = vec![0u32; PDF_BUCKETS];
        for &v in values.iter().filter(|v| v.is_finite()) {
            if let Some(b) = grid.index(v, PDF_BUCKETS as u32, Outside::Drop) {
                counts[b as usize] += 1;
            }
        }
        Some(Pdf::from_counts(range, &counts, values.len() as u64))
    }

    /// The lowest and highest bucket holding data, widened to include 0 and to 0.01 at least.
    fn observed(&self) -> (f32, f32) {
        let r = &self.range;
        let lo = self.probs.iter().position(|&p| p > 0.0).unwrap_or(0);
        let hi = (1..PDF_BUCKETS)
            .rev()
            .find(|&i| self.probs[i] > 0.0)
            .unwrap_or(PDF_BUCKETS - 1);
        let lo = (r.x_left(lo) as f32).min(0.0);
        let hi = (r.x_left(hi) as f32).max(0.0);
        (lo, hi.max(lo + 0.01))
    }

    /// Squared error of representing the density on the grid (delta, offset), clipped buckets
    /// weighted by `gamma` (AIMET's cost: bucket centres, f32 where AIMET's is f32).
    fn cost(&self, bitwidth: u32, delta: f32, offset: i32, gamma: f32) -> f64 {
        let steps = ((1u64 << bitwidth) - 1) as f32;
        let min = delta * offset as f32;
        let max = delta * (offset as f32 + steps);
        let start = self.range.x_left(0) as f32;
        let step = self.range.x_left(1) - self.range.x_left(0);
        let index = |v: f32| {
            (((v - start) as f64 / step).floor() as i64).clamp(0, PDF_BUCKETS as i64 - 1) as usize
        };
        let centre = |i: usize| start as f64 + i as f64 * step + step / 2.0;
        let (lo, hi) = (index(min), index(max));
        let (lo_centre, hi_centre) = (centre(lo) as f32 as f64, centre(hi) as f32 as f64);
        let p = &self.probs;
        let below: f64 = (0..lo)
            .map(|i| p[i] * (centre(i) - lo_centre).powi(2))
            .sum();
        let above: f64 = (hi..PDF_BUCKETS)
            .map(|i| p[i] * (centre(i) - hi_centre).powi(2))
            .sum();
        let rounding: f64 = (lo..hi)
            .map(|i| {
                let v = centre(i) as f32;
                let q = (v / delta - offset as f32).round() as i32;
                let e = (v - delta * (q + offset) as f32) as f64;
                p[i] * e * e
            })
            .sum();
        gamma as f64 * (below + above) + rounding
    }
}

/// AIMET's tf-enhanced search (its C++ `TfEnhancedEncodingAnalyzer`, which aimet-onnx runs):
/// candidate grids over the observed range of the density — 17 step sizes (1/16 .. 17/16 of
/// the min-max step) x 21 offsets clamped to the observed range, plus the min-max grid; or 101
/// step sizes (0.01 .. 1.01) for symmetric grids — and the one with the least rounding plus
/// `gamma`-weighted clipping error wins (the first on ties). Returns (scale, offset). With no
/// density (only zeros seen) the grid is AIMET's [-1, 1].
pub fn tf_enhanced(pdf: Option<&Pdf>, bitwidth: u32, kind: QuantKind, gamma: f32) -> (f32, f32) {
    let full = ((1u64 << bitwidth) - 1) as f32;
    let Some(pdf) = pdf else {
        let delta = 2.0 / full as f64;
        return (delta as f32, (-1.0 / delta).floor() as f32);
    };
    let (lo, hi) = pdf.observed();
    let mut candidates: Vec<(f32, i32)> = Vec::new();
    if kind == QuantKind::Asymmetric {
        let n = full;
        let observed_delta = ((hi as f64 - lo as f64) / n as f64) as f32;
        let observed_offset = (lo / observed_delta).round() as i32;
        let observed_min = (observed_delta * observed_offset as f32).max(f32::MIN);
        let observed_max = (observed_delta * (observed_offset as f32 + n)).min(f32::MAX);
        for k in 1..=17 {
            let f = k as f32 / 16.0;
            for i in 0..=20 {
                let delta = f * observed_delta;
                let offset = (-(n as f64) + n as f64 / 20.0 * i as f64) as i32;
                if let Some(c) = clamp_to_observed(observed_min, observed_max, n, delta, offset) {
                    candidates.push(c);
                }
            }
        }
        candidates.push((observed_delta, observed_offset));
    } else {
        let n = if kind == QuantKind::StrictSymmetric {
            full - 1.0
        } else {
            full
        };
        let (max_delta, offset) = if lo == 0.0 && kind == QuantKind::UnsignedSymmetric {
            (hi / n, 0)
        } else {
            (
                (hi.abs().max(lo.abs()) as f64 / (n as f64 / 2.0)) as f32,
                (-n / 2.0).floor() as i32,
            )
        };
        // AIMET steps an f32 factor by 0.01 in f64: the rounding decides whether 1.01 is reached.
        let mut f = 0.01f64 as f32;
        while f as f64 <= 1.01 {
            candidates.push((f * max_delta, offset));
            f = (f as f64 + 0.01) as f32;
        }
    }
    let mut best = (f64::MAX, -1f32, -1i32);
    for (delta, offset) in candidates {
        let c = pdf.cost(bitwidth, delta, offset, gamma);
        if c < best.0 {
            best = (c, delta, offset);
        }
    }
    (best.1, best.2 as f32)
}

/// A candidate grid cut to the observed range, or `None` when it covers more than the range
/// on both sides or nothing of it.
fn clamp_to_observed(
    observed_min: f32,
    observed_max: f32,
    n: f32,
    delta: f32,
    offset: i32,
) -> Option<(f32, i32)> {
    let min = (delta * offset as f32).max(f32::MIN);
    let max = (delta * (offset as f32 + n)).min(f32::MAX);
    if min < observed_min && max > observed_max {
        return None;
    }
    let (min, max) = (observed_min.max(min), observed_max.min(max));
    if min == max {
        return None;
    }
    let delta = ((max as f64 - min as f64) / n as f64) as f32;
    Some((delta, (min / delta).round() as i32))
}

/// The values at the lower and upper `p`-th percentiles of the histogram (bin edges).
pub fn percentile(h: &Hist<'_>, p: f32) -> (f32, f32) {
    let total: u64 = h.counts.iter().map(|&c| c as u64).sum();
    let step = (h.hi - h.lo) / h.counts.len() as f32;
    let cut = ((1.0 - p as f64 / 100.0) * total as f64).floor() as u64;
    let mut acc = 0u64;
    let lo_bin = h.counts.iter().position(|&c| {
        acc += c as u64;
        acc > cut
    });
    acc = 0;
    let hi_bin = h.counts.iter().rposition(|&c| {
        acc += c as u64;
        acc > cut
    });
    let lo = lo_bin.map_or(h.lo, |b| h.lo + step * b as f32);
    let hi = hi_bin.map_or(h.hi, |b| h.lo + step * (b + 1) as f32);
    (lo, hi)
}

#[cfg(test)]
// The expected values are aimet-onnx's outputs as it prints them (f32 values in f64 digits).
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    /// (scale, offset) that aimet-onnx 2.42's own analyzer gives on the same values.
    #[test]
    fn search_gives_aimets_grids() {
        let bulk: Vec<f32> = (0..100_000).map(|i| i as f32 / 50_000.0 - 1.0).collect();
        let outliers: Vec<f32> = bulk.iter().copied().chain([20.0; 3]).collect();
        let pdf = Pdf::of(&outliers);
        assert_eq!(
            tf_enhanced(pdf.as_ref(), 8, QuantKind::Asymmetric, 3.0),
            (0.08235294371843338, -12.0)
        );
        assert_eq!(
            tf_enhanced(pdf.as_ref(), 8, QuantKind::SignedSymmetric, 3.0),
            (0.1441304236650467, -128.0)
        );
        assert_eq!(
            tf_enhanced(pdf.as_ref(), 4, QuantKind::Asymmetric, 3.0),
            (0.26249998807907104, -4.0)
        );
        let w: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0 - 0.5).collect();
        assert_eq!(
            tf_enhanced(Pdf::of(&w).as_ref(), 8, QuantKind::StrictSymmetric, 3.0),
            (0.003912468906491995, -127.0)
        );
        let positive: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        assert_eq!(
            tf_enhanced(
                Pdf::of(&positive).as_ref(),
                8,
                QuantKind::UnsignedSymmetric,
                3.0
            ),
            (0.0019607830327004194, 0.0)
        );
    }

    #[test]
    fn pdf_range_is_aimets_and_zeros_get_aimets_default() {
        // (min, max) = (-1, 3): 512 buckets of 4/512 over it, 512 more on either side.
        let r = PdfRange::around(-1.0, 3.0);
        assert_eq!((r.first, r.step), (-640, 4.0 / 512.0));
        // The first bucket starts at the whole number of steps at or below min - (max - min).
        let r = PdfRange::around(-1.1760424, 2.64);
        assert_eq!(r.first, -670, "{r:?}");
        // Zero starts a bucket; values outside the buckets are left out.
        let g = r.grid();
        assert_eq!(g.index(0.0, PDF_BUCKETS as u32, Outside::Drop), Some(670));
        assert_eq!(g.index(-1e-9, PDF_BUCKETS as u32, Outside::Drop), Some(669));
        assert_eq!(g.index(100.0, PDF_BUCKETS as u32, Outside::Drop), None);
        assert!(Pdf::of(&[0.0; 10]).is_none());
        let (s, o) = tf_enhanced(None, 8, QuantKind::Asymmetric, 3.0);
        assert_eq!((s, o), ((2.0f64 / 255.0) as f32, -128.0));
        // A constant tensor gets a density 0.01 wide (AIMET's grid for it).
        assert_eq!(
            tf_enhanced(Pdf::of(&[2.0; 2]).as_ref(), 8, QuantKind::Asymmetric, 3.0),
            (0.007843129336833954, 0.0)
        );
    }

    #[test]
    fn percentiles_trim_the_tails() {
        let counts: Vec<u32> = (0..100)
            .map(|i| if i == 0 || i == 99 { 1 } else { 100 })
            .collect();
        let h = Hist {
            counts: &counts,
            lo: 0.0,
            hi: 100.0,
        };
        let (lo, hi) = percentile(&h, 99.9);
        assert_eq!((lo, hi), (1.0, 99.0));
        assert_eq!(percentile(&h, 100.0), (0.0, 100.0));
        assert!("percentile:99.9".parse::<Scheme>().unwrap() == Scheme::Percentile(99.9));
        assert!("bogus".parse::<Scheme>().is_err());
    }
}
