//! Shape rules shared by shape inference, the kernels and the CPU reference: output sizes of
//! convolutions, pools and matrix products, broadcasting, axes, slices and resize scales.

use crate::error::{Error, Result};
use crate::graph::attrs::{Conv2d, Pool2d};
use crate::graph::ir::{Graph, Node};

/// Output size of one spatial dim.
pub fn out_dim(
    input: usize,
    kernel: usize,
    stride: usize,
    pad_begin: usize,
    pad_end: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel.checked_sub(1)?) + 1;
    let padded = input + pad_begin + pad_end;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// The output shape `[n, cout, oh, ow]` of a convolution, checking every constraint.
pub fn conv_output_shape(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[usize; 4]> {
    const OP: &str = "Conv";
    let ([n, cin, h, wd], [cout, cin_g, kh, kw]) = (x, w) else {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "input / weight".into(),
            expected: "4-D NCHW input and [cout, cin/groups, kh, kw] weight".into(),
            got: x.to_vec(),
        });
    };
    if a.groups == 0 || cin % a.groups != 0 || cout % a.groups != 0 || cin / a.groups != *cin_g {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "weight".into(),
            expected: format!(
                "[cout divisible by {g}, {} = cin / groups, kh, kw] for input channels {cin}",
                cin / a.groups.max(1),
                g = a.groups
            ),
            got: w.to_vec(),
        });
    }
    let oh = out_dim(*h, *kh, a.strides[0], a.pads[0], a.pads[2], a.dilations[0]);
    let ow = out_dim(*wd, *kw, a.strides[1], a.pads[1], a.pads[3], a.dilations[1]);
    match (oh, ow) {
        (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok([*n, *cout, oh, ow]),
        _ => Err(Error::invalid(
            OP,
            "kernel/stride/pads",
            format!("{a:?}"),
            format!("no output for a {h}x{wd} input and a {kh}x{kw} kernel"),
        )),
    }
}

/// Output shape of a transposed convolution (weight `[cin, cout / groups, kh, kw]`).
pub fn conv_transpose_output_shape(
    x: &[usize],
    w: &[usize],
    a: &Conv2d,
    output_padding: [usize; 2],
) -> Result<[usize; 4]> {
    const OP: &str = "ConvTranspose";
    let ([n, cin, h, wd], [wcin, cout_g, kh, kw]) = (x, w) else {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "input / weight".into(),
            expected: "4-D NCHW input and [cin, cout/groups, kh, kw] weight".into(),
            got: x.to_vec(),
        });
    };
    if a.groups == 0 || cin != wcin || cin % a.groups != 0 || *h == 0 || *wd == 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "weight".into(),
            expected: format!("[{cin}, cout/groups, kh, kw] with groups dividing {cin}"),
            got: w.to_vec(),
        });
    }
    let dim = |i: usize, k: usize, s: usize, p0: usize, p1: usize, d: usize, op: usize| {
        ((i - 1) * s + d * (k.max(1) - 1) + op + 1)
            .checked_sub(p0 + p1)
            .filter(|&v| v > 0)
    };
    match (
        dim(
            *h,
            *kh,
            a.strides[0],
            a.pads[0],
            a.pads[2],
            a.dilations[0],
            output_padding[0],
        ),
        dim(
            *wd,
            *kw,
            a.strides[1],
            a.pads[1],
            a.pads[3],
            a.dilations[1],
            output_padding[1],
        ),
    ) {
        (Some(oh), Some(ow)) => Ok([*n, cout_g * a.groups, oh, ow]),
        _ => Err(Error::invalid(
            OP,
            "pads",
            format!("{:?}", a.pads),
            "larger than the output",
        )),
    }
}

fn pooled(
    input: usize,
    k: usize,
    s: usize,
    p0: usize,
    p1: usize,
    d: usize,
    ceil: bool,
) -> Option<usize> {
    let span = d * k.checked_sub(1)? + 1;
    let padded = input + p0 + p1;
    if padded < span || s == 0 {
        return None;
    }
    let num = padded - span;
    let mut out = if ceil {
        num.div_ceil(s) + 1
    } else {
        num / s + 1
    };
    // The last window must start inside the input or the left padding.
    if ceil && (out - 1) * s >= input + p0 {
        out -= 1;
    }
    Some(out)
}

/// Output shape of a window pooling.
pub fn pool_output_shape(x: &[usize], a: &Pool2d) -> Result<[usize; 4]> {
    let [n, c, h, w] = x else {
        return Err(Error::ShapeMismatch {
            op: "Pool",
            tensor: "x".into(),
            expected: "4-D NCHW".into(),
            got: x.to_vec(),
        });
    };
    let oh = pooled(
        *h,
        a.kernel[0],
        a.strides[0],
        a.pads[0],
        a.pads[2],
        a.dilations[0],
        a.ceil_mode,
    );
    let ow = pooled(
        *w,
        a.kernel[1],
        a.strides[1],
        a.pads[1],
        a.pads[3],
        a.dilations[1],
        a.ceil_mode,
    );
    match (oh, ow) {
        (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok([*n, *c, oh, ow]),
        _ => Err(Error::invalid(
            "Pool",
            "kernel/stride/pads",
            format!("{a:?}"),
            format!("no output for a {h}x{w} input"),
        )),
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The NumPy broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// The output shape of a (batched) matrix product, or why the operands do not fit together.
pub fn matmul_output_shape(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Result<Vec<usize>> {
    const OP: &str = "matmul";
    let split = |s: &[usize], name: &str| match *s {
        [r, c] => Ok((1, r, c)),
        [bt, r, c] => Ok((bt, r, c)),
        _ => Err(Error::ShapeMismatch {
            op: OP,
            tensor: name.into(),
            expected: "[rows, cols] or [batch, rows, cols]".into(),
            got: s.to_vec(),
        }),
    };
    let ((ba, ra, ca), (bb, rb, cb)) = (split(a, "a")?, split(b, "b")?);
    let (m, k) = if trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if trans_b { (cb, rb) } else { (rb, cb) };
    if k != kb {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "b".into(),
            expected: format!("inner dimension {k} (from a {a:?}, trans_a={trans_a})"),
            got: b.to_vec(),
        });
    }
    if ba != bb && ba != 1 && bb != 1 {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "b".into(),
            expected: format!("batch {ba} or 1"),
            got: b.to_vec(),
        });
    }
    Ok(if a.len() == 2 && b.len() == 2 {
        vec![m, n]
    } else {
        vec![ba.max(bb), m, n]
    })
}

/// Normalises a possibly negative axis for a rank (`rank_extra` = 1 for Unsqueeze-like ops).
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

/// One axis of a slice: first index, element count, step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisSlice {
    pub start: usize,
    pub len: usize,
    pub step: i64,
}

/// ONNX Slice semantics (clamping, negative indices and steps) per axis of `shape`.
pub fn slice_spec(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> std::result::Result<Vec<AxisSlice>, String> {
    let mut spec: Vec<AxisSlice> = shape
        .iter()
        .map(|&d| AxisSlice {
            start: 0,
            len: d,
            step: 1,
        })
        .collect();
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if starts.len() != ends.len()
        || axes.len() != starts.len()
        || steps.is_some_and(|s| s.len() != starts.len())
    {
        return Err("starts, ends, axes and steps must have equal lengths".into());
    }
    for (k, &ax) in axes.iter().enumerate() {
        let d = norm_axis(ax, shape.len()).ok_or(format!("axis {ax} out of range"))?;
        let dim = shape[d] as i64;
        let step = steps.map_or(1, |s| s[k]);
        if step == 0 {
            return Err("slice step 0".into());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let fix = |v: i64| if v < 0 { v + dim } else { v };
        let (start, end) = if step > 0 {
            (clamp(fix(starts[k]), 0, dim), clamp(fix(ends[k]), 0, dim))
        } else {
            (
                clamp(fix(starts[k]), -1, dim - 1),
                clamp(fix(ends[k]), -1, dim - 1),
            )
        };
        let ceil_div = |a: i64, b: i64| (a + b - 1) / b;
        let len = if step > 0 {
            ceil_div((end - start).max(0), step)
        } else {
            ceil_div((start - end).max(0), -step)
        };
        spec[d] = AxisSlice {
            start: start.max(0) as usize,
            len: len as usize,
            step,
        };
    }
    Ok(spec)
}

/// Resize's (h, w) scales: the constant scales input, or output / input when sizes were given.
pub fn resize_scales(g: &Graph, node: &Node, x: &[usize], y: &[usize]) -> [f32; 2] {
    let given = node
        .inputs
        .get(2)
        .filter(|n| !n.is_empty())
        .and_then(|n| g.consts.get(n))
        .map(|c| c.to_f32().iter().copied().collect::<Vec<f32>>())
        .filter(|v| v.len() == 4);
    match given {
        Some(v) => [v[2], v[3]],
        None => [y[2] as f32 / x[2] as f32, y[3] as f32 / x[3] as f32],
    }
}

/// A Resize's region of interest (input 1, `[starts.., ends..]` of every dim, as fractions of
/// the input) when it is a constant of `rank * 2` values; `None` otherwise.
pub fn resize_roi(
    consts: &std::collections::BTreeMap<String, crate::graph::ir::Const>,
    node: &Node,
    rank: usize,
) -> Option<Vec<f32>> {
    node.inputs
        .get(1)
        .filter(|n| !n.is_empty())
        .and_then(|n| consts.get(n))
        .map(|c| c.to_f32().iter().copied().collect::<Vec<f32>>())
        .filter(|v| v.len() == 2 * rank)
}

/// The (start, end) of the region of interest of the two spatial dims of a 4-D Resize, for
/// tf_crop_and_resize: `[h0, h1, w0, w1]` (the whole input when the model gives none).
pub fn resize_spatial_roi(g: &Graph, node: &Node) -> [f32; 4] {
    match resize_roi(&g.consts, node, 4) {
        Some(r) => [r[2], r[6], r[3], r[7]],
        None => [0.0, 1.0, 0.0, 1.0],
    }
}

/// Strides of `shape` (right-aligned to `rank` dims, NumPy broadcasting) with 0 on the dims
/// it lacks or has size 1 in.
pub fn broadcast_strides(shape: &[usize], rank: usize) -> Vec<usize> {
    let st = strides(shape);
    let lead = rank - shape.len();
    (0..rank)
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                st[i - lead]
            }
        })
        .collect()
}
