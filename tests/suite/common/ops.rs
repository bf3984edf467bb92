//! Checks shared by the ONNX op tests: seeded values over an op's whole domain, and a
//! one-node model run on the GPU against the CPU reference.

use ndarray::{ArrayD, IxDyn};
use rand::Rng;

use super::build::{self, Model};
use super::{assert_bits_eq, assert_close, Tol};

pub fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Values over a float op's whole domain: ordinary ones, zeros of both signs, ±inf, NaN,
/// subnormals and huge ones.
pub fn floats(rng: &mut super::TestRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..16) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::INFINITY,
            3 => f32::NEG_INFINITY,
            4 => f32::NAN,
            5 => 1e-40,
            6 => -3e38,
            7 => rng.random_range(-4i32..4) as f32,
            _ => rng.random_range(-10.0..10.0),
        })
        .collect()
}

/// Integers (as f32) in `lo..hi`.
pub fn integers(rng: &mut super::TestRng, n: usize, lo: i32, hi: i32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi) as f32).collect()
}

pub fn dims(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// Runs `m` on the GPU and the CPU reference; asserts the outputs' bits agree, a zero's sign
/// and subnormal results aside (WGSL lets drivers ignore the sign of zero and flush
/// subnormals in float arithmetic: a subnormal result compares as 0).
pub fn same_bits(what: &str, m: &Model, inputs: &[(&str, ArrayD<f32>)]) -> Vec<ArrayD<f32>> {
    let gpu = super::gpu().expect("checked by the caller");
    let got = build::run(&gpu, &m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = build::reference(&m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what} output {k}");
        let unsign = |a: &ArrayD<f32>| -> Vec<f32> {
            a.iter()
                .map(|&v| if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v })
                .collect()
        };
        assert_bits_eq(&format!("{what} output {k}"), &unsign(g), &unsign(w));
    }
    got
}

/// Runs `m` on the GPU and the CPU reference; asserts the outputs agree within `tol` (NaN
/// where the reference has NaN, infinities equal).
pub fn close(what: &str, m: &Model, inputs: &[(&str, ArrayD<f32>)], tol: Tol) -> Vec<ArrayD<f32>> {
    let gpu = super::gpu().expect("checked by the caller");
    let got = build::run(&gpu, &m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = build::reference(&m.bytes(), inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "{what} output {k}");
        let f = |a: &ArrayD<f32>| a.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(&format!("{what} output {k}"), &f(g), &f(w), tol);
    }
    got
}

/// Ordinary values with ties (small integers) and, with `special`, NaN and infinities.
pub fn values_with_ties(rng: &mut super::TestRng, n: usize, special: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 if special => f32::NAN,
            1 if special => f32::INFINITY,
            2 if special => f32::NEG_INFINITY,
            3..=8 => rng.random_range(-3i32..3) as f32,
            _ => rng.random_range(-5.0..5.0),
        })
        .collect()
}
