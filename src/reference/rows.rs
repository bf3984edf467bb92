//! CPU references of the row ops: reductions, ArgMax/ArgMin, LogSoftmax, Hardmax, TopK,
//! CumSum and the normalizations, in f64 over lanes of an axis (NaN propagates through the
//! reductions; ties and NaN in ArgMax/TopK as the kernels order them).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};

use crate::graph::attrs::Reduce;

/// `x` with `axes` moved last and flattened into rows: (rows as vectors, the kept dims).
fn rows(x: &ArrayViewD<'_, f32>, axes: &[usize]) -> (Vec<Vec<f64>>, Vec<usize>) {
    let s = x.shape();
    let mut perm: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
    let kept: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    perm.extend(axes.iter().copied());
    let t = x.view().permuted_axes(IxDyn(&perm));
    let t = t.as_standard_layout();
    let len: usize = axes.iter().map(|&a| s[a]).product();
    let v: Vec<f64> = t.iter().map(|&v| v as f64).collect();
    let rows = if len == 0 {
        vec![Vec::new(); kept.iter().product()]
    } else {
        v.chunks(len).map(<[f64]>::to_vec).collect()
    };
    (rows, kept)
}

/// The inverse of [`rows`] for outputs of the input's shape.
fn unrows(out: Vec<f64>, shape: &[usize], axes: &[usize]) -> ArrayD<f32> {
    let mut perm: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    perm.extend(axes.iter().copied());
    let t_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let t = ArrayD::from_shape_vec(IxDyn(&t_shape), out.iter().map(|&v| v as f32).collect())
        .expect("shape");
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    t.permuted_axes(IxDyn(&inv)).as_standard_layout().to_owned()
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// One row reduced by `op`.
pub fn reduce_row(op: Reduce, r: &[f64]) -> f64 {
    if r.is_empty() {
        return op.empty() as f64;
    }
    let sum = |f: &dyn Fn(f64) -> f64| r.iter().map(|&v| f(v)).sum::<f64>();
    match op {
        Reduce::Sum => sum(&|v| v),
        Reduce::Max => r.iter().copied().fold(f64::NEG_INFINITY, nan_max),
        Reduce::Min => r.iter().copied().fold(f64::INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }),
        Reduce::Prod => r.iter().product(),
        Reduce::L1 => sum(&|v| v.abs()),
        Reduce::L2 => sum(&|v| v * v).sqrt(),
        Reduce::LogSum => sum(&|v| v).ln(),
        Reduce::SumSquare => sum(&|v| v * v),
        Reduce::LogSumExp => {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, nan_max);
            if m.is_infinite() || m.is_nan() {
                m
            } else {
                m + sum(&|v| (v - m).exp()).ln()
            }
        }
    }
}

/// A reduction over `axes` (sorted, distinct), reduced dims dropped or kept as 1.
pub fn reduce(
    x: &ArrayViewD<'_, f32>,
    op: Reduce,
    axes: &[usize],
    out_shape: &[usize],
) -> ArrayD<f32> {
    let (rows, _) = rows(x, axes);
    let v: Vec<f32> = rows.iter().map(|r| reduce_row(op, r) as f32).collect();
    ArrayD::from_shape_vec(IxDyn(out_shape), v).expect("shape")
}

/// Is (v, i) ahead of (w, j) in ArgMax's (or, `min`, ArgMin's) order: NaN first (the first
/// NaN), then the extreme value, equal values by index (the last with `last`)?
fn arg_better(v: f64, i: usize, w: f64, j: usize, min: bool, last: bool) -> bool {
    if w.is_nan() {
        return v.is_nan() && i < j;
    }
    if v.is_nan() {
        return true;
    }
    if v == w {
        return if last { i > j } else { i < j };
    }
    if min {
        v < w
    } else {
        v > w
    }
}

/// ArgMax / ArgMin along `axis` (indices as f32).
pub fn arg(
    x: &ArrayViewD<'_, f32>,
    axis: usize,
    min: bool,
    last: bool,
    out_shape: &[usize],
) -> ArrayD<f32> {
    let (rows, _) = rows(x, &[axis]);
    let v: Vec<f32> = rows
        .iter()
        .map(|r| {
            let mut best = 0;
            for i in 1..r.len() {
                if arg_better(r[i], i, r[best], best, min, last) {
                    best = i;
                }
            }
            best as f32
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(out_shape), v).expect("shape")
}

/// LogSoftmax (`log`) or Hardmax along `axis`, or over the input coerced to 2-D at `axis`
/// (`legacy`).
pub fn softmax_like(x: &ArrayViewD<'_, f32>, axis: usize, legacy: bool, log: bool) -> ArrayD<f32> {
    let s = x.shape().to_vec();
    let axes: Vec<usize> = if legacy {
        (axis..s.len()).collect()
    } else {
        vec![axis]
    };
    let (rows, _) = rows(x, &axes);
    let out: Vec<f64> = rows
        .iter()
        .flat_map(|r| {
            if log {
                let m = r.iter().copied().fold(f64::NEG_INFINITY, nan_max);
                let l = r.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
                r.iter().map(|&v| v - m - l).collect::<Vec<_>>()
            } else {
                let mut best = 0;
                for i in 1..r.len() {
                    if arg_better(r[i], i, r[best], best, false, false) {
                        best = i;
                    }
                }
                (0..r.len()).map(|i| (i == best) as u8 as f64).collect()
            }
        })
        .collect();
    unrows(out, &s, &axes)
}

/// TopK along `axis`: (values, indices as f32), largest first (or smallest), equal values by
/// index, NaN the largest.
pub fn topk(
    x: &ArrayViewD<'_, f32>,
    axis: usize,
    k: usize,
    largest: bool,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let mut s = x.shape().to_vec();
    let (rows, _) = rows(x, &[axis]);
    let (mut vals, mut idx) = (Vec::new(), Vec::new());
    for r in &rows {
        let mut order: Vec<usize> = (0..r.len()).collect();
        order.sort_by(|&i, &j| {
            let (a, b) = (r[i], r[j]);
            let key = |v: f64| if v.is_nan() { f64::INFINITY } else { v };
            let c = match (a.is_nan(), b.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => key(a).partial_cmp(&key(b)).expect("no NaN"),
            };
            let c = if largest { c.reverse() } else { c };
            c.then(i.cmp(&j))
        });
        for &i in order.iter().take(k) {
            vals.push(r[i]);
            idx.push(i as f64);
        }
    }
    s[axis] = k;
    (unrows(vals, &s, &[axis]), unrows(idx, &s, &[axis]))
}

/// CumSum along `axis` (in f32, in order, as the kernel adds).
pub fn cumsum(x: &ArrayViewD<'_, f32>, axis: usize, exclusive: bool, reverse: bool) -> ArrayD<f32> {
    let mut y = x.to_owned();
    for mut lane in y.lanes_mut(Axis(axis)) {
        let n = lane.len();
        let mut s = 0f32;
        for t in 0..n {
            let i = if reverse { n - 1 - t } else { t };
            let v = lane[i];
            if exclusive {
                lane[i] = s;
                s += v;
            } else {
                s += v;
                lane[i] = s;
            }
        }
    }
    y
}

/// Each row of `axes` normalized: `(x - mean) / sqrt(var + eps)`, or with `std_eps` `(x -
/// mean) / (sqrt(var) + eps)`; with each row's (mean, 1 / deviation).
pub fn normalize(
    x: &ArrayViewD<'_, f32>,
    axes: &[usize],
    eps: f32,
    std_eps: bool,
) -> (ArrayD<f32>, Vec<(f64, f64)>) {
    let (rows, _) = rows(x, axes);
    let mut stats = Vec::with_capacity(rows.len());
    let out: Vec<f64> = rows
        .iter()
        .flat_map(|r| {
            let n = r.len().max(1) as f64;
            let mean = r.iter().sum::<f64>() / n;
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let inv = if std_eps {
                1.0 / (var.sqrt() + eps as f64)
            } else {
                1.0 / (var + eps as f64).sqrt()
            };
            stats.push((mean, inv));
            r.iter().map(move |&v| (v - mean) * inv).collect::<Vec<_>>()
        })
        .collect();
    (unrows(out, x.shape(), axes), stats)
}
