//! CPU references of the selection and index ops: Pad of every mode, Where, Gather,
//! GatherElements and ScatterND (integers carried as f32; an index outside its dim reads 0 or
//! skips its update, as the kernels do).

use ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn};

use crate::graph::shape::broadcast_shape;

/// Pad to `shape` with `begin` pads at the start of each dim (negative: cropped), new elements
/// by `mode`: `value` (constant), the nearest element (edge), mirrored about the edge element
/// (reflect), periodic (wrap).
pub fn pad(
    x: &ArrayViewD<'_, f32>,
    begin: &[i64],
    mode: &str,
    value: f32,
    shape: &[usize],
) -> ArrayD<f32> {
    let mut y = ArrayD::from_elem(IxDyn(shape), value);
    for (c, v) in y.indexed_iter_mut() {
        let mut at = Vec::with_capacity(shape.len());
        let mut inside = true;
        for (d, &o) in c.slice().iter().enumerate() {
            let n = x.shape()[d] as i64;
            let mut i = o as i64 - begin[d];
            if i < 0 || i >= n {
                match mode {
                    "edge" => i = i.clamp(0, n - 1),
                    "reflect" => {
                        let period = (2 * n - 2).max(1);
                        let r = i.rem_euclid(period);
                        i = if r >= n { period - r } else { r };
                    }
                    "wrap" => i = i.rem_euclid(n),
                    _ => inside = false,
                }
            }
            at.push(i.max(0) as usize);
        }
        if inside {
            *v = x[IxDyn(&at)];
        }
    }
    y
}

/// ScatterND into `y` in order (`reduction`: none, add, mul, max, min); an index tuple with
/// an entry outside its dim is skipped, as the kernel does.
pub fn scatter_nd(
    y: &mut ArrayD<f32>,
    idx: &ArrayViewD<'_, f32>,
    upd: &ArrayViewD<'_, f32>,
    reduction: &str,
) {
    let k = *idx.shape().last().expect("indices have a last dim");
    let ds = y.shape().to_vec();
    let slice: usize = ds[k..].iter().product();
    let idx = idx.as_standard_layout();
    let upd = upd.as_standard_layout();
    let (iv, uv) = (
        idx.as_slice().expect("standard"),
        upd.as_slice().expect("standard"),
    );
    let st = crate::graph::shape::strides(&ds);
    let yv = y.as_slice_mut().expect("standard");
    for (i, tuple) in iv.chunks(k).enumerate() {
        let mut off = 0usize;
        let mut ok = true;
        for (j, &c) in tuple.iter().enumerate() {
            match index(c, ds[j]) {
                Some(c) => off += c * st[j],
                None => ok = false,
            }
        }
        if !ok {
            continue;
        }
        for t in 0..slice {
            let (v, u) = (yv[off + t], uv[i * slice + t]);
            yv[off + t] = match reduction {
                "add" => v + u,
                "mul" => v * u,
                "max" | "min" if v.is_nan() || u.is_nan() => v + u,
                "max" => v.max(u),
                "min" => v.min(u),
                _ => u,
            };
        }
    }
}

/// `c != 0 ? a : b`, the three broadcast together.
pub fn where_(
    c: &ArrayViewD<'_, f32>,
    a: &ArrayViewD<'_, f32>,
    b: &ArrayViewD<'_, f32>,
) -> ArrayD<f32> {
    let out = broadcast_shape(c.shape(), a.shape())
        .and_then(|s| broadcast_shape(&s, b.shape()))
        .expect("broadcastable");
    let (c, a, b) = (
        c.broadcast(IxDyn(&out)).unwrap(),
        a.broadcast(IxDyn(&out)).unwrap(),
        b.broadcast(IxDyn(&out)).unwrap(),
    );
    ndarray::Zip::from(&c)
        .and(&a)
        .and(&b)
        .map_collect(|&c, &a, &b| if c != 0.0 { a } else { b })
}

/// The index `i` (an integer carried as f32) into a dim of `dim`: negative from the end;
/// `None` outside `[-dim, dim)` (the kernels then give 0).
fn index(i: f32, dim: usize) -> Option<usize> {
    let i = i as i64;
    let i = if i < 0 { i + dim as i64 } else { i };
    (0..dim as i64).contains(&i).then_some(i as usize)
}

/// Gather along `axis` (an index outside the dim gives 0).
pub fn gather(x: &ArrayViewD<'_, f32>, idx: &ArrayViewD<'_, f32>, axis: usize) -> ArrayD<f32> {
    let s = x.shape();
    let mut shape = s[..axis].to_vec();
    shape.extend(idx.shape());
    shape.extend(&s[axis + 1..]);
    let x = x.as_standard_layout();
    let xv = x.as_slice().expect("standard");
    let (dim, inner) = (s[axis], s[axis + 1..].iter().product::<usize>());
    let outer: usize = s[..axis].iter().product();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx.iter() {
            match index(i, dim) {
                Some(k) => {
                    out.extend_from_slice(&xv[(o * dim + k) * inner..(o * dim + k + 1) * inner])
                }
                None => out.extend(std::iter::repeat_n(0.0, inner)),
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("shape")
}

/// GatherElements along `axis` (an index outside the dim gives 0).
pub fn gather_elements(
    x: &ArrayViewD<'_, f32>,
    idx: &ArrayViewD<'_, f32>,
    axis: usize,
) -> ArrayD<f32> {
    let dim = x.shape()[axis];
    let mut y = ArrayD::<f32>::zeros(idx.raw_dim());
    for (c, v) in y.indexed_iter_mut() {
        if let Some(k) = index(idx[&c], dim) {
            let mut at = c.slice().to_vec();
            at[axis] = k;
            *v = x[IxDyn(&at)];
        }
    }
    y
}
