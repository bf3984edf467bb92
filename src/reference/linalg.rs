//! CPU linear algebra with nalgebra in f64: the oracle for the GPU SVD and least squares.

use nalgebra::DMatrix;
use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

fn to_na(a: ArrayView2<'_, f32>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]] as f64)
}

fn from_na(m: &DMatrix<f64>) -> Array2<f32> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)] as f32)
}

/// Singular values of `a`, descending.
pub fn singular_values(a: ArrayView2<'_, f32>) -> Vec<f64> {
    let mut s: Vec<f64> = to_na(a).singular_values().iter().copied().collect();
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

/// Thin SVD `(U, s, V)` with `s` descending, `U` `m x k`, `V` `n x k`.
pub fn svd(a: ArrayView2<'_, f32>) -> (Array2<f32>, Vec<f32>, Array2<f32>) {
    let d = to_na(a).svd(true, true);
    let (u, vt) = (d.u.expect("asked for U"), d.v_t.expect("asked for V^T"));
    let mut order: Vec<usize> = (0..d.singular_values.len()).collect();
    order.sort_by(|&x, &y| d.singular_values[y].total_cmp(&d.singular_values[x]));
    let u = DMatrix::from_fn(u.nrows(), order.len(), |i, k| u[(i, order[k])]);
    let v = DMatrix::from_fn(vt.ncols(), order.len(), |i, k| vt[(order[k], i)]);
    (
        from_na(&u),
        order.iter().map(|&k| d.singular_values[k] as f32).collect(),
        from_na(&v),
    )
}

/// `X^T Y` in f64.
pub fn gram(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Array2<f64> {
    let (x, y) = (x.mapv(|v| v as f64), y.mapv(|v| v as f64));
    x.t().dot(&y)
}

/// Solves `(G + ridge * mean(diag G) * I) W = B` by Cholesky in f64.
pub fn ridge_solve(
    g: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    ridge: f32,
) -> Result<Array2<f32>> {
    let k = g.nrows();
    let mut m = to_na(g);
    let add = ridge as f64 * (0..k).map(|i| m[(i, i)]).sum::<f64>() / k.max(1) as f64;
    for i in 0..k {
        m[(i, i)] += add;
    }
    let chol = m.cholesky().ok_or_else(|| {
        Error::invalid(
            "ridge_solve",
            "matrix",
            format!("{k}x{k}"),
            "not positive definite",
        )
    })?;
    Ok(from_na(&chol.solve(&to_na(b))))
}
