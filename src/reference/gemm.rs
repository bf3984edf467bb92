//! CPU reference of batched matmul (f64 accumulation).

use ndarray::{Array3, ArrayView3};

/// `C[b] = op(A[b]) * op(B[b])`; a batch of 1 broadcasts.
pub fn matmul(
    a: &ArrayView3<'_, f32>,
    b: &ArrayView3<'_, f32>,
    trans_a: bool,
    trans_b: bool,
) -> Array3<f32> {
    let batch = a.shape()[0].max(b.shape()[0]);
    let (m, k) = if trans_a {
        (a.shape()[2], a.shape()[1])
    } else {
        (a.shape()[1], a.shape()[2])
    };
    let n = if trans_b { b.shape()[1] } else { b.shape()[2] };
    let mut c = Array3::<f32>::zeros((batch, m, n));
    for bi in 0..batch {
        let a = a.index_axis(ndarray::Axis(0), if a.shape()[0] == 1 { 0 } else { bi });
        let b = b.index_axis(ndarray::Axis(0), if b.shape()[0] == 1 { 0 } else { bi });
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for p in 0..k {
                    let av = if trans_a { a[[p, i]] } else { a[[i, p]] };
                    let bv = if trans_b { b[[j, p]] } else { b[[p, j]] };
                    acc += av as f64 * bv as f64;
                }
                c[[bi, i, j]] = acc as f32;
            }
        }
    }
    c
}
