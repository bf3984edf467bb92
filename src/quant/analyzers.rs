//! Range analyzers over calibration histograms: AIMET's SQNR search ("tf-enhanced") and
//! percentile clipping. Min-max needs no histogram (see `calibrate`).

use crate::quant::encoding::MIN_SCALE;

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
                let v = p.trim_start_matches("percentile").trim_start_matches([':', '=']);
                let v: f32 = if v.is_empty() { 99.99 } else { v.parse().map_err(|_| format!("bad percentile '{v}'"))? };
                if !(50.0..=100.0).contains(&v) {
                    return Err(format!("percentile {v} must be in [50, 100]"));
                }
                Ok(Scheme::Percentile(v))
            }
            other => Err(format!("unknown scheme '{other}' (minmax, tf-enhanced, mse, percentile[:P])")),
        }
    }
}

fn midpoints(h: &Hist<'_>) -> Vec<f32> {
    let bins = h.counts.len();
    let step = (h.hi - h.lo) / bins as f32;
    let e0 = h.lo;
    let e1 = step + h.lo;
    let delta = e1 - e0;
    (0..bins).map(|i| (e0 + delta / 2.0) + delta * i as f32).collect()
}

/// Squared error of quantizing the histogram's bin midpoints with (delta, offset); clipped
/// bins weigh `gamma` times.
fn noise(mid: &[f32], counts: &[u32], delta: f32, offset: f32, n: f32, gamma: f32) -> f64 {
    let mut total = 0f64;
    for (&m, &c) in mid.iter().zip(counts) {
        if c == 0 {
            continue;
        }
        let q = (m / delta - offset).round_ties_even();
        let clipped = !(0.0..=n).contains(&q);
        let qdq = (q.clamp(0.0, n) + offset) * delta;
        let e = ((qdq - m) as f64).powi(2) * c as f64;
        total += if clipped { e * gamma as f64 } else { e };
    }
    total
}

/// AIMET's SQNR search: candidate step sizes (17 asymmetric with 21 offsets, or 101
/// symmetric) chosen to minimise quantization noise plus `gamma`-weighted clipping noise over
/// the histogram. Returns the encoding's (min, max).
pub fn tf_enhanced(h: &Hist<'_>, num_steps: u32, symmetric: bool, gamma: f32) -> (f32, f32) {
    let n = num_steps as f32;
    let eps = MIN_SCALE as f32;
    let lo = h.lo.min(0.0);
    let hi = h.hi.max(0.0).max(lo + eps * n);
    let mid = midpoints(h);
    let mut best = (f64::INFINITY, 0f32, 0f32);
    let mut consider = |delta: f32, offset: f32| {
        let e = noise(&mid, h.counts, delta, offset, n, gamma);
        if e < best.0 {
            best = (e, delta, offset);
        }
    };
    if symmetric {
        let max_delta = 2.0 * hi.max(-lo) / n;
        let offset = (-(num_steps as i64)).div_euclid(2) as f32;
        for k in 1..=101 {
            consider((max_delta * k as f32 / 100.0).max(eps), offset);
        }
    } else {
        let max_delta = (hi - lo) / n;
        let observed_offset = (lo / max_delta).round_ties_even();
        let observed_min = max_delta * observed_offset;
        let observed_max = observed_min + max_delta * n;
        let num_offsets = (num_steps as usize + 2).min(21);
        let offset_step = n / (num_offsets - 2) as f32;
        let mut offsets: Vec<f32> = Vec::new();
        let mut v = -n;
        while v < offset_step {
            offsets.push(v.round_ties_even());
            v += offset_step;
        }
        offsets.push(observed_offset);
        for k in 1..=17 {
            let delta = max_delta * k as f32 / 16.0;
            for &o in &offsets {
                let test_min = (delta * o).max(observed_min);
                let test_max = (test_min + delta * n).min(observed_max);
                let d = ((test_max - test_min) / n).max(eps);
                consider(d, (test_min / d).round_ties_even());
            }
        }
    }
    let (_, delta, offset) = best;
    let min = offset * delta;
    (min, min + n * delta)
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
mod tests {
    use super::*;

    #[test]
    fn sqnr_search_clips_outliers_and_keeps_the_bulk() {
        // A bulk in [-1, 1] and a single far outlier at 50.
        let mut counts = vec![0u32; 2048];
        for c in counts.iter_mut().take(42) {
            *c = 100_000;
        }
        counts[2047] = 1;
        let h = Hist { counts: &counts, lo: -1.0, hi: 50.0 };
        let (lo, hi) = tf_enhanced(&h, 255, false, 3.0);
        assert!(lo <= -0.9 && hi < 25.0, "outlier clipped: ({lo}, {hi})");
        let (slo, shi) = tf_enhanced(&h, 255, true, 3.0);
        assert!(shi < 25.0 && slo < 0.0, "({slo}, {shi})");
    }

    #[test]
    fn percentiles_trim_the_tails() {
        let counts: Vec<u32> = (0..100).map(|i| if i == 0 || i == 99 { 1 } else { 100 }).collect();
        let h = Hist { counts: &counts, lo: 0.0, hi: 100.0 };
        let (lo, hi) = percentile(&h, 99.9);
        assert_eq!((lo, hi), (1.0, 99.0));
        assert_eq!(percentile(&h, 100.0), (0.0, 100.0));
        assert!("percentile:99.9".parse::<Scheme>().unwrap() == Scheme::Percentile(99.9));
        assert!("bogus".parse::<Scheme>().is_err());
    }
}
