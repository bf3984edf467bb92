//! Shared test helpers: the GPU (or a loud skip), seeded data, tolerance presets.
#![allow(dead_code)]

use std::sync::Arc;

use qforge::gpu::Gpu;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shared GPU, or `None` with a loud message. With `QFORGE_REQUIRE_GPU=1` a missing
/// adapter fails the test instead.
pub fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::shared() {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("QFORGE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("QFORGE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("SKIPPED (no GPU adapter): {e}");
            None
        }
    }
}

/// A fresh (unshared) GPU context, so a test can lower its limits.
pub fn own_gpu() -> Option<Gpu> {
    gpu()?;
    Some(Gpu::new().expect("a second device on the same adapter"))
}

/// Seeded generator for one test.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values spread over [lo, hi), with a sprinkling of exact zeros and exact grid ties.
pub fn values(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => 0.0,
            1 => lo,
            2 => hi,
            _ => rng.random_range(lo..hi),
        })
        .collect()
}

/// A random shape of 1..=4 dims with odd sizes and size-1 dims, at most `max_elems` elements.
pub fn shape(rng: &mut StdRng, max_elems: usize) -> Vec<usize> {
    loop {
        let dims = rng.random_range(1..=4);
        let s: Vec<usize> = (0..dims)
            .map(|_| match rng.random_range(0..4) {
                0 => 1,
                1 => rng.random_range(2..8),
                2 => rng.random_range(8..40),
                _ => rng.random_range(40..300),
            })
            .collect();
        if s.iter().product::<usize>() <= max_elems {
            return s;
        }
    }
}

/// Absolute + relative tolerance.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    /// Sums of up to ~1e6 f32 terms in a different order than the f64 reference.
    pub const SUM: Tol = Tol { abs: 1e-3, rel: 1e-4 };
    /// f32 dot products of length up to a few thousand.
    pub const GEMM: Tol = Tol { abs: 1e-4, rel: 1e-4 };
    /// Single-pass f32 statistics (Welford / Chan) against two-pass f64.
    pub const STATS: Tol = Tol { abs: 1e-5, rel: 1e-4 };
}

/// Asserts |a - b| <= abs + rel * |b| element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol.abs + tol.rel * w.abs() || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{what}[{i}]: got {g}, want {w} (tol {tol:?})");
    }
}

/// Bitwise equality of f32 slices (NaN equals NaN).
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{what}[{i}]: got {g:e}, want {w:e}");
    }
}
