//! Backward kernels (`shaders/grad.wgsl`), record-only. Every kernel ADDS its contribution
//! into the gradient buffer it is given (`dx += ...`): a value read by several nodes sums its
//! gradients for free, and a long reduction splits into dispatches that each add their part
//! (software adapters cut long loops, [`LOOP_BUDGET`]). The caller zeroes gradient buffers.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::{grid_1d, grid_stride, LOOP_BUDGET};
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::attrs::{Binary, Conv2d, Pool2d, Unary};
use crate::graph::shape::{
    broadcast_shape, broadcast_strides, conv_output_shape, pool_output_shape, strides,
};
use crate::ops::conv::{
    depthwise3x3_acc_into, depthwise3x3_weight_grad_into, depthwise3x3_weight_grad_partials,
    im2col_into, im2col_output_shape, ConvKernel,
};
use crate::ops::elementwise::{
    binary_code, check_regions, fill_into, strided_copy_into, unary_code, StridedView, MAX_DIMS,
};
use crate::ops::gemm::{matmul_into, matmul_sum_into, Bias, GemmKernel};

use Access::{Read, ReadWrite, Uniform};

static UNARY: Kernel = Kernel {
    family: Family::Grad,
    entry: "unary_grad",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static UNARY_VEC4: Kernel = Kernel {
    family: Family::Grad,
    entry: "unary_grad_vec4",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static UNARY_IN_PLACE: Kernel = Kernel {
    family: Family::Grad,
    entry: "unary_grad_in_place",
    bindings: &[Uniform, Read, ReadWrite],
};
static UNARY_IN_PLACE_VEC4: Kernel = Kernel {
    family: Family::Grad,
    entry: "unary_grad_in_place_vec4",
    bindings: &[Uniform, Read, ReadWrite],
};
static STRIDED: Kernel = Kernel {
    family: Family::Grad,
    entry: "strided_acc",
    bindings: &[Uniform, Read, ReadWrite],
};
static BROADCAST: Kernel = Kernel {
    family: Family::Grad,
    entry: "broadcast_acc",
    bindings: &[Uniform, Read, ReadWrite],
};
static BROADCAST_ROWS: Kernel = Kernel {
    family: Family::Grad,
    entry: "broadcast_rows_acc",
    bindings: &[Uniform, Read, ReadWrite],
};
static BINARY: Kernel = Kernel {
    family: Family::Grad,
    entry: "binary_grad",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static CONV_INPUT: Kernel = Kernel {
    family: Family::Grad,
    entry: "conv_grad_input",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static CONV_WEIGHT: Kernel = Kernel {
    family: Family::Grad,
    entry: "conv_grad_weight",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static FLIP_TAPS: Kernel = Kernel {
    family: Family::Grad,
    entry: "flip_taps",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static COL2IM: Kernel = Kernel {
    family: Family::Grad,
    entry: "col2im_acc",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static SUM_PARTIAL: Kernel = Kernel {
    family: Family::Grad,
    entry: "sum_partial",
    bindings: &[Uniform, Read, ReadWrite],
};
static SUM_PARTIAL_VEC4: Kernel = Kernel {
    family: Family::Grad,
    entry: "sum_partial_vec4",
    bindings: &[Uniform, Read, ReadWrite],
};
static SUM_FINISH: Kernel = Kernel {
    family: Family::Grad,
    entry: "sum_finish",
    bindings: &[Uniform, Read, ReadWrite],
};
static MATMUL: Kernel = Kernel {
    family: Family::Grad,
    entry: "matmul_acc",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static MAX_POOL: Kernel = Kernel {
    family: Family::Grad,
    entry: "max_pool_grad",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static AVG_POOL: Kernel = Kernel {
    family: Family::Grad,
    entry: "avg_pool_grad",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static SOFTMAX: Kernel = Kernel {
    family: Family::Grad,
    entry: "softmax_grad",
    bindings: &[Uniform, Read, Read, ReadWrite],
};

fn f32s(op: &'static str, tensors: &[(&str, &GpuTensor)]) -> Result<()> {
    for (name, t) in tensors {
        t.expect_dtype(op, name, DType::F32)?;
    }
    Ok(())
}

fn same_len(op: &'static str, name: &str, t: &GpuTensor, want: usize) -> Result<()> {
    if t.len() != want {
        return Err(Error::ShapeMismatch {
            op,
            tensor: name.into(),
            expected: format!("{want} elements"),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

fn fits(op: &'static str, gpu: &Gpu, tensors: &[&GpuTensor]) -> Result<()> {
    let limit = gpu.limits().max_binding;
    for t in tensors {
        if t.bytes() > limit {
            return Err(Error::TooLarge {
                op,
                tensor: format!("{t:?}"),
                bytes: t.bytes(),
                limit,
                which: "storage binding",
            });
        }
    }
    Ok(())
}

/// Workgroups of 64 threads, one thread per item.
fn grid64(gpu: &Gpu, items: usize) -> Result<[u32; 3]> {
    grid_1d((items as u64).div_ceil(64).max(1), gpu.limits().max_groups)
}

/// Ranges of `0..len` of at most `per` items each (at least one range, possibly empty).
fn ranges(len: usize, per: usize) -> Vec<(usize, usize)> {
    let per = per.max(1);
    let mut out: Vec<(usize, usize)> = (0..len.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(len)))
        .collect();
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Flat {
    n: u32,
    step: u32,
    _pad0: [u32; 2],
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
}

/// `dx += dy * f'(v)`: `v` is the activation's input, or its output for Relu and Clip (whose
/// masks the output gives as well, so a Relu fused into a convolution needs no extra buffer).
pub fn unary_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    f: Unary,
    v: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "unary backward";
    f32s(OP, &[("v", v), ("dy", dy), ("dx", dx)])?;
    same_len(OP, "dy", dy, v.len())?;
    same_len(OP, "dx", dx, v.len())?;
    fits(OP, gpu, &[v, dy, dx])?;
    let binds = [Bind::Whole(v), Bind::Whole(dy), Bind::Whole(dx)];
    unary_dispatch(enc, gpu, f, v.len(), [&UNARY, &UNARY_VEC4], &binds)
}

/// Records one of an activation backward's kernels (`[scalar, vec4]`, the vector form where
/// `len` is a multiple of 4) over `len` elements, with `binds` after the parameters.
fn unary_dispatch(
    enc: &mut impl Record,
    gpu: &Gpu,
    f: Unary,
    len: usize,
    [scalar, vec4]: [&'static Kernel; 2],
    binds: &[Bind<'_>],
) -> Result<()> {
    let (op, alpha, beta) = unary_code(f);
    let (kernel, per) = match len % 4 {
        0 => (vec4, 4),
        _ => (scalar, 1),
    };
    let (grid, step) = grid_stride((len / per) as u64, gpu.limits().max_groups)?;
    let params = Flat {
        n: (len / per) as u32,
        step: step as u32,
        alpha,
        beta,
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        kernel,
        &[("UNARY_OP", op as f64)],
        &params,
        binds,
        grid,
    )
}

/// `g = g * f'(v)` in place: the gradient of an activation's output turned into its input's
/// (see [`unary_grad_into`] for `v`), where the input's gradient has no other term yet. The
/// same values as adding into a zeroed buffer, but for the sign of a zero.
pub fn unary_grad_in_place(
    enc: &mut impl Record,
    gpu: &Gpu,
    f: Unary,
    v: &GpuTensor,
    g: &GpuTensor,
) -> Result<()> {
    const OP: &str = "unary backward in place";
    f32s(OP, &[("v", v), ("g", g)])?;
    same_len(OP, "g", g, v.len())?;
    fits(OP, gpu, &[v, g])?;
    let kernels = [&UNARY_IN_PLACE, &UNARY_IN_PLACE_VEC4];
    unary_dispatch(
        enc,
        gpu,
        f,
        v.len(),
        kernels,
        &[Bind::Whole(v), Bind::Whole(g)],
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Nd {
    n: u32,
    ndim: u32,
    step: u32,
    a_off: u32,
    y_off: u32,
    r_count: u32,
    r_begin: u32,
    r_end: u32,
    alpha: f32,
    _pad: [u32; 3],
    dims: [u32; MAX_DIMS],
    s0: [u32; MAX_DIMS],
    s1: [u32; MAX_DIMS],
    s2: [u32; MAX_DIMS],
}

fn pack(v: &[usize]) -> [u32; MAX_DIMS] {
    let mut out = [0u32; MAX_DIMS];
    for (o, &d) in out.iter_mut().zip(v) {
        *o = d as u32;
    }
    out
}

fn rank_ok(op: &'static str, dims: &[usize]) -> Result<()> {
    if dims.len() > MAX_DIMS {
        return Err(Error::invalid(
            op,
            "rank",
            dims.len(),
            format!("at most {MAX_DIMS} dims"),
        ));
    }
    Ok(())
}

/// `y[dst] += x[src]` over the `dims`-shaped region: the backward of transpose, slice,
/// concat, split and pad (each destination element is reached once).
pub fn strided_acc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    src: &StridedView,
    y: &GpuTensor,
    dst: &StridedView,
    dims: &[usize],
) -> Result<()> {
    const OP: &str = "strided backward";
    f32s(OP, &[("x", x), ("y", y)])?;
    rank_ok(OP, dims)?;
    fits(OP, gpu, &[x, y])?;
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    check_regions(OP, x, src, y, dst, dims)?;
    let (grid, step) = grid_stride(n as u64, gpu.limits().max_groups)?;
    let dense = strides(dims);
    let flat = src.strides == dense && dst.strides == dense;
    let params = Nd {
        n: n as u32,
        ndim: if flat { 0 } else { dims.len() as u32 },
        step: step as u32,
        a_off: src.offset as u32,
        y_off: dst.offset as u32,
        dims: pack(dims),
        s0: pack(&src.strides),
        s1: pack(&dst.strides),
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &STRIDED,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid,
    )
}

/// Longest row [`broadcast_acc_into`] spreads one value over in one invocation's loop.
const MAX_BROADCAST_ROW: usize = 4096;

/// `dx += alpha * dy` broadcast from `dy`'s shape (right-aligned, size 1 on the dims it
/// lacks) to `dx`'s: the backward of global average pooling and ReduceMean. Where `dy` holds
/// `dx`'s leading dims and rows are short, each invocation spreads one value over its row.
pub fn broadcast_acc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    dy: &GpuTensor,
    dy_shape: &[usize],
    alpha: f32,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "broadcast backward";
    f32s(OP, &[("dy", dy), ("dx", dx)])?;
    let out = dx.shape();
    rank_ok(OP, out)?;
    fits(OP, gpu, &[dy, dx])?;
    let ok = dy_shape.len() <= out.len()
        && dy_shape.iter().product::<usize>() == dy.len()
        && dy_shape
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&d, &o)| d == o || d == 1);
    if !ok {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "dy".into(),
            expected: format!("broadcastable to {out:?}"),
            got: dy_shape.to_vec(),
        });
    }
    if dx.is_empty() {
        return Ok(());
    }
    // dy as dx's leading dims, broadcast along every trailing one: rows of `inner` elements.
    let padded: Vec<usize> = std::iter::repeat_n(1, out.len() - dy_shape.len())
        .chain(dy_shape.iter().copied())
        .collect();
    let lead = (0..=out.len())
        .find(|&k| padded[k..].iter().all(|&d| d == 1))
        .unwrap_or(out.len());
    let inner: usize = out[lead..].iter().product();
    if padded[..lead] == out[..lead] && inner <= MAX_BROADCAST_ROW {
        let (grid, step) = grid_stride(dy.len() as u64, gpu.limits().max_groups)?;
        let params = Nd {
            n: dy.len() as u32,
            step: step as u32,
            r_count: inner as u32,
            alpha,
            ..Default::default()
        };
        return enc.dispatch(
            gpu,
            &BROADCAST_ROWS,
            &[],
            &params,
            &[Bind::Whole(dy), Bind::Whole(dx)],
            grid,
        );
    }
    let (grid, step) = grid_stride(dx.len() as u64, gpu.limits().max_groups)?;
    let params = Nd {
        n: dx.len() as u32,
        ndim: out.len() as u32,
        step: step as u32,
        alpha,
        dims: pack(out),
        s0: pack(&broadcast_strides(dy_shape, out.len())),
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &BROADCAST,
        &[],
        &params,
        &[Bind::Whole(dy), Bind::Whole(dx)],
        grid,
    )
}

/// Which operand of a binary op a gradient is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// `dx += d(a op b)/d(side) * dy`, summed over the dims `side` was broadcast along, into `dx`
/// of that operand's shape. Max and Min split a tie's gradient evenly between a and b.
#[allow(clippy::too_many_arguments)]
pub fn binary_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    op: Binary,
    side: Side,
    a: &GpuTensor,
    b: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "binary backward";
    f32s(OP, &[("a", a), ("b", b), ("dy", dy), ("dx", dx)])?;
    let out = dy.shape().to_vec();
    if broadcast_shape(a.shape(), b.shape()).as_deref() != Some(&out[..]) {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "dy".into(),
            expected: format!("the broadcast of {:?} and {:?}", a.shape(), b.shape()),
            got: out,
        });
    }
    rank_ok(OP, &out)?;
    fits(OP, gpu, &[a, b, dy, dx])?;
    let mine = if side == Side::A { a } else { b };
    same_len(OP, "dx", dx, mine.len())?;
    let rank = out.len();
    let (sa, sb) = (
        broadcast_strides(a.shape(), rank),
        broadcast_strides(b.shape(), rank),
    );
    let sy = strides(&out);
    let lead = rank - mine.shape().len().min(rank);
    let own = |d: usize| d >= lead && mine.shape()[d - lead] == out[d] && out[d] != 1;
    // The operand's own dims first (in order, so the flat index is its element index), then
    // the dims it was broadcast along.
    let order: Vec<usize> = (0..rank)
        .filter(|&d| own(d))
        .chain((0..rank).filter(|&d| !own(d)))
        .collect();
    let pick = |v: &[usize]| order.iter().map(|&d| v[d]).collect::<Vec<_>>();
    let r_count: usize = (0..rank).filter(|&d| !own(d)).map(|d| out[d]).product();
    let e_count = mine.len();
    if e_count == 0 || dy.is_empty() {
        return Ok(());
    }
    let per = (LOOP_BUDGET as usize / (rank + 1)).max(1);
    for (r_begin, r_end) in ranges(r_count, per) {
        let params = Nd {
            n: e_count as u32,
            ndim: rank as u32,
            r_count: r_count as u32,
            r_begin: r_begin as u32,
            r_end: r_end as u32,
            dims: pack(&pick(&out)),
            s0: pack(&pick(&sy)),
            s1: pack(&pick(&sa)),
            s2: pack(&pick(&sb)),
            ..Default::default()
        };
        enc.dispatch(
            gpu,
            &BINARY,
            &[
                ("BINARY_OP", binary_code(op) as f64),
                ("SIDE", (side == Side::B) as u32 as f64),
            ],
            &params,
            &[
                Bind::Whole(dy),
                Bind::Whole(a),
                Bind::Whole(b),
                Bind::Whole(dx),
            ],
            grid64(gpu, e_count)?,
        )?;
    }
    Ok(())
}

/// A sum of `src` viewed as `[outer, e, inner]` over its outer and inner dims: the gradient
/// of an operand broadcast along them (a bias, a batch of weight products).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sum {
    pub outer: usize,
    pub e: usize,
    pub inner: usize,
}

/// Terms one thread adds in [`sum_acc_into`]'s first pass.
const SUM_CHUNK: usize = 256;

impl Sum {
    /// The partial sums the first pass writes (0: one pass adds straight into the result).
    pub fn partials(&self) -> usize {
        let chunks = (self.outer * self.inner).div_ceil(SUM_CHUNK);
        if chunks <= 1 {
            0
        } else {
            chunks * self.e
        }
    }

    /// The sum that reduces `out` to `operand` (right-aligned) when the operand's own dims
    /// are one contiguous block of `out`'s; `None` otherwise.
    pub fn of(operand: &[usize], out: &[usize]) -> Option<Sum> {
        let lead = out.len().checked_sub(operand.len())?;
        let own: Vec<usize> = (0..out.len())
            .filter(|&d| d >= lead && operand[d - lead] == out[d] && out[d] != 1)
            .collect();
        let broadcast_ok =
            (0..out.len()).all(|d| own.contains(&d) || d < lead || operand[d - lead] == 1);
        if !broadcast_ok {
            return None;
        }
        let (d0, d1) = match (own.first(), own.last()) {
            (Some(&a), Some(&b)) if b + 1 - a == own.len() => (a, b + 1),
            (None, None) => (0, 0),
            _ => return None,
        };
        Some(Sum {
            outer: out[..d0].iter().product(),
            e: out[d0..d1].iter().product(),
            inner: out[d1..].iter().product(),
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RedParams {
    e: u32,
    inner: u32,
    r: u32,
    chunk: u32,
    chunks: u32,
    direct: u32,
    alpha: f32,
    _pad: u32,
}

/// `dx += alpha * sum` of `src` over the outer and inner dims of `s`, through `partials`
/// (of [`Sum::partials`] elements, when that is not 0).
pub fn sum_acc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    src: &GpuTensor,
    s: Sum,
    alpha: f32,
    partials: Option<&GpuTensor>,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "sum backward";
    f32s(OP, &[("src", src), ("dx", dx)])?;
    fits(OP, gpu, &[src, dx])?;
    same_len(OP, "src", src, s.outer * s.e * s.inner)?;
    same_len(OP, "dx", dx, s.e)?;
    if s.e == 0 {
        return Ok(());
    }
    let r = s.outer * s.inner;
    let chunks = r.div_ceil(SUM_CHUNK).max(1);
    let partial = if s.inner % 4 == 0 {
        &SUM_PARTIAL_VEC4
    } else {
        &SUM_PARTIAL
    };
    let p = RedParams {
        e: s.e as u32,
        inner: s.inner.max(1) as u32,
        r: r as u32,
        chunk: SUM_CHUNK as u32,
        chunks: chunks as u32,
        direct: (chunks == 1) as u32,
        alpha,
        _pad: 0,
    };
    if chunks == 1 {
        return enc.dispatch(
            gpu,
            partial,
            &[],
            &p,
            &[Bind::Whole(src), Bind::Whole(dx)],
            grid64(gpu, s.e)?,
        );
    }
    let part = partials.ok_or_else(|| {
        Error::invalid(
            OP,
            "partials",
            "none",
            format!("{} floats needed", s.partials()),
        )
    })?;
    same_len(OP, "partials", part, s.partials())?;
    if chunks > LOOP_BUDGET as usize {
        return Err(Error::invalid(OP, "terms", r, "too many for two passes"));
    }
    enc.dispatch(
        gpu,
        partial,
        &[],
        &p,
        &[Bind::Whole(src), Bind::Whole(part)],
        grid64(gpu, s.e * chunks)?,
    )?;
    enc.dispatch(
        gpu,
        &SUM_FINISH,
        &[],
        &p,
        &[Bind::Whole(part), Bind::Whole(dx)],
        grid64(gpu, s.e)?,
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    begin: u32,
    end: u32,
    _pad: [u32; 2],
}

fn conv_params(
    x_shape: &[usize],
    w_shape: &[usize],
    a: &Conv2d,
    dy: &GpuTensor,
) -> Result<ConvParams> {
    let y = conv_output_shape(x_shape, w_shape, a)?;
    if dy.shape() != y {
        return Err(Error::ShapeMismatch {
            op: "conv backward",
            tensor: "dy".into(),
            expected: format!("{y:?}"),
            got: dy.shape().to_vec(),
        });
    }
    Ok(ConvParams {
        n: x_shape[0] as u32,
        cin: x_shape[1] as u32,
        h: x_shape[2] as u32,
        w: x_shape[3] as u32,
        cout: w_shape[0] as u32,
        oh: y[2] as u32,
        ow: y[3] as u32,
        groups: a.groups as u32,
        kh: w_shape[2] as u32,
        kw: w_shape[3] as u32,
        stride_h: a.strides[0] as u32,
        stride_w: a.strides[1] as u32,
        pad_t: a.pads[0] as u32,
        pad_l: a.pads[1] as u32,
        dil_h: a.dilations[0] as u32,
        dil_w: a.dilations[1] as u32,
        ..Default::default()
    })
}

/// The strides of `a` as the pipeline constants of the kernels that divide by them.
fn stride_constants(a: &Conv2d) -> [(&'static str, f64); 2] {
    [
        ("STRIDE_H", a.strides[0] as f64),
        ("STRIDE_W", a.strides[1] as f64),
    ]
}

/// `dx += conv2d_input_grad(w, dy)`: for every input element, the products of the output
/// gradients and weights of the taps that read it (any groups, strides, dilations, pads).
pub fn conv_grad_input_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    w: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (input)";
    f32s(OP, &[("w", w), ("dy", dy), ("dx", dx)])?;
    fits(OP, gpu, &[w, dy, dx])?;
    let p = conv_params(dx.shape(), w.shape(), a, dy)?;
    let cout_g = w.shape()[0] / a.groups;
    let per = LOOP_BUDGET as usize / (w.shape()[2] * w.shape()[3]).max(1);
    for (begin, end) in ranges(cout_g, per) {
        let params = ConvParams {
            begin: begin as u32,
            end: end as u32,
            ..p
        };
        enc.dispatch(
            gpu,
            &CONV_INPUT,
            &stride_constants(a),
            &params,
            &[Bind::Whole(w), Bind::Whole(dy), Bind::Whole(dx)],
            grid64(gpu, dx.len())?,
        )?;
    }
    Ok(())
}

/// `dw += conv2d_weight_grad(x, dy)`: for every weight, the sum over output positions of
/// output gradient times the input it multiplied.
pub fn conv_grad_weight_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    dw: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (weight)";
    f32s(OP, &[("x", x), ("dy", dy), ("dw", dw)])?;
    fits(OP, gpu, &[x, dy, dw])?;
    let p = conv_params(x.shape(), dw.shape(), a, dy)?;
    let positions = (p.n * p.oh * p.ow) as usize;
    for (begin, end) in ranges(positions, LOOP_BUDGET as usize / 2) {
        let params = ConvParams {
            begin: begin as u32,
            end: end as u32,
            ..p
        };
        enc.dispatch(
            gpu,
            &CONV_WEIGHT,
            &[],
            &params,
            &[Bind::Whole(x), Bind::Whole(dy), Bind::Whole(dw)],
            grid64(gpu, dw.len())?,
        )?;
    }
    Ok(())
}

/// How a convolution's input gradient (and, for [`ConvGrad::Gemm`], its weight gradient) is
/// computed: the one place that decides; [`WeightGrad`] decides the weight gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvGrad {
    /// The direct kernels (any groups); one thread per input element or weight.
    Direct,
    /// Dense convolutions (groups 1) as GEMMs through column matrices, with the GEMM kernel
    /// the adapter picks: column gradients `W^T dy` then col2im for the input; `dy col^T`
    /// per batch item, summed, for the weight.
    Gemm,
    /// Depthwise 3x3 convolutions (multiplier 1, dilation 1, any strides) on CPU adapters:
    /// the input gradient is the stride-1 forward convolution of `dy` (upsampled by the
    /// strides) with the flipped kernel, run by the adapter's depthwise forward kernel
    /// ([`conv_grad_input_flipped_into`]).
    Flipped,
}

/// The convolution whose forward is the input gradient of a depthwise `a` (multiplier 1,
/// dilation 1, pads below the kernel size) with weights `w`: the same kernel flipped, stride 1,
/// over `dy` upsampled by the strides (its values `stride` apart, zeros between; `dy` itself
/// at stride 1). Returns the convolution and the upsampled shape. Upsampled rows are widened
/// to a multiple of 4 values (more zeros) where that lets the depthwise kernel load vectors.
pub fn flipped_conv(x: &[usize], w: &[usize], a: &Conv2d) -> Option<(Conv2d, [usize; 4])> {
    let depthwise = x.len() == 4 && w.len() == 4 && a.groups == x[1] && w[0] == x[1] && w[1] == 1;
    if !depthwise || a.dilations != [1, 1] {
        return None;
    }
    let (kh, kw) = (w[2], w[3]);
    let k = [kh, kw, kh, kw];
    if (0..4).any(|i| a.pads[i] >= k[i]) {
        return None;
    }
    let [n, c, oh, ow] = conv_output_shape(x, w, a).ok()?;
    let (uh, mut uw) = ((oh - 1) * a.strides[0] + 1, (ow - 1) * a.strides[1] + 1);
    let (top, left) = (kh - 1 - a.pads[0], kw - 1 - a.pads[1]);
    // The output is x's size: u + pads - k + 1 = x; the bottom and right pads are >= 0 since
    // (o - 1) * stride <= x + pad_begin + pad_end - k and pad_end < k.
    let bottom = x[2] + a.pads[0] - uh;
    let mut right = x[3] + a.pads[1] - uw;
    let widen = uw.next_multiple_of(4) - uw;
    if a.strides[1] > 1 && left == 1 && right >= widen {
        uw += widen;
        right -= widen;
    }
    let f = Conv2d {
        strides: [1, 1],
        pads: [top, left, bottom, right],
        ..*a
    };
    Some((f, [n, c, uh, uw]))
}

impl ConvGrad {
    /// The form for a convolution of `x` with `w`: GEMMs for dense convolutions whose column
    /// matrices fit one storage binding, the flipped forward for the depthwise convolutions
    /// the CPU adapters' depthwise kernel runs, the direct kernels otherwise.
    pub fn pick(gpu: &Gpu, x: &[usize], w: &[usize], a: &Conv2d) -> ConvGrad {
        let limit = gpu.limits().max_binding;
        let fits = |s: &[usize]| (s.iter().product::<usize>() as u64) * 4 <= limit;
        if let Some((f, u)) = flipped_conv(x, w, a) {
            if gpu.cpu_kernels() && ConvKernel::Depthwise3x3.supports(&u, w, &f) {
                return ConvGrad::Flipped;
            }
        }
        match ConvGrad::scratch(x, w, a) {
            Ok([col, prod, _]) if a.groups == 1 && fits(&col) && fits(&prod) => ConvGrad::Gemm,
            _ => ConvGrad::Direct,
        }
    }

    /// The scratch shapes of the GEMM form: the columns `[n, cin * kh * kw, oh * ow]` (for
    /// either gradient; `[0]`: none, a pointwise convolution's columns are its input), the
    /// per-item weight products `[n, cout, cin * kh * kw]` and the partial sums over the batch
    /// (`[0]`: none needed; neither for [`WeightGrad::GemmSum`]).
    pub fn scratch(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[Vec<usize>; 3]> {
        let col = im2col_output_shape(x, w, a)?;
        let [n, k, _] = col;
        let sum = Sum {
            outer: n,
            e: w[0] * k,
            inner: 1,
        };
        Ok([
            match pointwise(w, a) {
                true => vec![0],
                false => col.to_vec(),
            },
            vec![n, w[0], k],
            vec![sum.partials()],
        ])
    }
}

/// How a convolution's weight gradient is computed: the one place that decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightGrad {
    /// [`conv_grad_weight_into`]: one thread per weight, looping over every output position.
    Direct,
    /// [`conv_grad_weight_gemm_into`], where [`ConvGrad::pick`] takes the GEMM form, on GPUs:
    /// a product per batch item (parallel over the batch), then their sum.
    Gemm,
    /// [`conv_grad_weight_sum_into`], where [`ConvGrad::pick`] takes the GEMM form, on CPU
    /// adapters: one GEMM that adds the batch items' products in its invocations (no per-item
    /// products in memory, no sum pass; a CPU adapter's few threads are busy without
    /// spreading the batch over them).
    GemmSum,
    /// [`conv_grad_weight_depthwise_into`]: depthwise 3x3 convolutions the depthwise forward
    /// kernel computes, summed per block of outputs, then over the blocks. On every adapter:
    /// the direct form has only 9 threads per channel to spread a whole batch's positions over.
    Depthwise,
}

impl WeightGrad {
    /// The form for a convolution of `x` with `w`.
    pub fn pick(gpu: &Gpu, x: &[usize], w: &[usize], a: &Conv2d) -> WeightGrad {
        let limit = gpu.limits().max_binding;
        if x.len() == 4 && w.len() == 4 && ConvKernel::Depthwise3x3.supports(x, w, a) {
            if let Ok(s) = depthwise3x3_weight_grad_partials(x, w, a) {
                if (s[0] * s[1]) as u64 * 4 <= limit {
                    return WeightGrad::Depthwise;
                }
            }
        }
        match ConvGrad::pick(gpu, x, w, a) {
            ConvGrad::Gemm if gpu.cpu_kernels() => WeightGrad::GemmSum,
            ConvGrad::Gemm => WeightGrad::Gemm,
            _ => WeightGrad::Direct,
        }
    }

    /// The scratch shapes of the depthwise form: the block sums and the partial sums of their
    /// sum (`[0]`: none needed).
    pub fn depthwise_scratch(x: &[usize], w: &[usize], a: &Conv2d) -> Result<[Vec<usize>; 2]> {
        let [rows, e] = depthwise3x3_weight_grad_partials(x, w, a)?;
        let sum = Sum {
            outer: rows,
            e,
            inner: 1,
        };
        Ok([vec![rows, e], vec![sum.partials()]])
    }
}

/// `dw += conv2d_weight_grad(x, dy)` for [`WeightGrad::Depthwise`]: the block sums into
/// `blocks`, then their sum through `partials` (see [`WeightGrad::depthwise_scratch`]).
#[allow(clippy::too_many_arguments)]
pub fn conv_grad_weight_depthwise_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    blocks: &GpuTensor,
    partials: Option<&GpuTensor>,
    dw: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (weight, depthwise)";
    f32s(OP, &[("x", x), ("dy", dy), ("blocks", blocks), ("dw", dw)])?;
    conv_params(x.shape(), dw.shape(), a, dy)?;
    depthwise3x3_weight_grad_into(enc, gpu, x, dy, dw.shape(), a, blocks)?;
    let [rows, e] = depthwise3x3_weight_grad_partials(x.shape(), dw.shape(), a)?;
    let sum = Sum {
        outer: rows,
        e,
        inner: 1,
    };
    sum_acc_into(enc, gpu, blocks, sum, 1.0, partials, dw)
}

/// [`conv_grad_input_into`] for the 3x3 convolutions [`flipped_conv`] takes: the kernel
/// flipped into `wf` (`w`'s shape); at strides above 1, `dy` upsampled into `u` (of
/// flipped_conv's shape; `None` at stride 1); the depthwise forward kernel's convolution of
/// `dy` or `u` with `wf`, added into `dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv_grad_input_flipped_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    w: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    wf: &GpuTensor,
    u: Option<&GpuTensor>,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (input, flipped)";
    f32s(OP, &[("w", w), ("dy", dy), ("wf", wf), ("dx", dx)])?;
    let p = conv_params(dx.shape(), w.shape(), a, dy)?;
    let (f, us) = flipped_conv(dx.shape(), w.shape(), a).ok_or_else(|| {
        Error::invalid(
            OP,
            "convolution",
            format!("{a:?}"),
            "needs a depthwise 3x3 convolution of dilation 1 with pads below the kernel",
        )
    })?;
    same_len(OP, "wf", wf, w.len())?;
    let wf = wf.view(w.shape(), DType::F32)?;
    enc.dispatch(
        gpu,
        &FLIP_TAPS,
        &[],
        &p,
        &[Bind::Whole(w), Bind::Whole(w), Bind::Whole(&wf)],
        grid64(gpu, w.len())?,
    )?;
    let src = if a.strides == [1, 1] {
        dy.clone()
    } else {
        let u = u.ok_or_else(|| {
            Error::invalid(OP, "u", "none", format!("{us:?} needed at strides > 1"))
        })?;
        same_len(OP, "u", u, us.iter().product())?;
        let u = u.view(&us, DType::F32)?;
        fill_into(enc, gpu, &u, 0.0)?;
        let ds = dy.shape();
        let [_, c, uh, uw] = us;
        let to = StridedView {
            offset: 0,
            strides: vec![c * uh * uw, uh * uw, a.strides[0] * uw, a.strides[1]],
        };
        let from = StridedView {
            offset: 0,
            strides: strides(ds),
        };
        strided_copy_into(enc, gpu, dy, &from, &u, &to, ds)?;
        u
    };
    depthwise3x3_acc_into(enc, gpu, &src, &wf, &f, dx)
}

/// Whether a convolution with weights of shape `w` is pointwise: 1x1, stride 1, no padding,
/// one group (its im2col columns are its input, and col2im an add).
fn pointwise(w: &[usize], a: &Conv2d) -> bool {
    w.len() == 4 && w[2..] == [1, 1] && a.strides == [1, 1] && a.pads == [0; 4] && a.groups == 1
}

/// [`conv_grad_input_into`] as a GEMM into the columns `colg` then col2im (groups 1); for a
/// pointwise convolution the GEMM adds into `dx` directly (`colg` `None`).
pub fn conv_grad_input_gemm_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    w: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    colg: Option<&GpuTensor>,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (input)";
    f32s(OP, &[("w", w), ("dy", dy), ("dx", dx)])?;
    fits(OP, gpu, &[w, dy, dx])?;
    let p = conv_params(dx.shape(), w.shape(), a, dy)?;
    let [n, k, npix] = im2col_output_shape(dx.shape(), w.shape(), a)?;
    let cout = w.shape()[0];
    let (wv, dyv) = (
        w.view(&[cout, k], DType::F32)?,
        dy.view(&[n, cout, npix], DType::F32)?,
    );
    if pointwise(w.shape(), a) {
        // The columns are the input itself: the product adds straight into dx.
        let dxv = dx.view(&[n, k, npix], DType::F32)?;
        return matmul_into(
            enc,
            gpu,
            &wv,
            &dyv,
            true,
            false,
            1.0,
            Bias::Accumulate,
            &dxv,
        );
    }
    let colg = colg.ok_or_else(|| {
        Error::invalid(
            OP,
            "colg",
            "none",
            "a convolution that is not pointwise needs it",
        )
    })?;
    f32s(OP, &[("colg", colg)])?;
    fits(OP, gpu, &[colg])?;
    let cv = colg.view(&[n, k, npix], DType::F32)?;
    matmul_into(enc, gpu, &wv, &dyv, true, false, 1.0, Bias::None, &cv)?;
    enc.dispatch(
        gpu,
        &COL2IM,
        &stride_constants(a),
        &p,
        // Binding 2 (the direct kernel's dy) is not read by col2im.
        &[Bind::Whole(&cv), Bind::Whole(&cv), Bind::Whole(dx)],
        grid64(gpu, dx.len())?,
    )
}

/// [`conv_grad_weight_into`] as a GEMM per batch item through the columns `col` into
/// `prod`, summed over the batch (groups 1) through `partials` (see [`ConvGrad::scratch`]).
#[allow(clippy::too_many_arguments)]
pub fn conv_grad_weight_gemm_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    col: Option<&GpuTensor>,
    prod: &GpuTensor,
    partials: Option<&GpuTensor>,
    dw: &GpuTensor,
) -> Result<()> {
    const OP: &str = "conv backward (weight)";
    f32s(OP, &[("prod", prod)])?;
    let (cv, dyv) = weight_grad_operands(enc, gpu, x, dy, a, col, dw)?;
    let [n, cout, k] = [dyv.shape()[0], dw.shape()[0], cv.shape()[1]];
    let pv = prod.view(&[n, cout, k], DType::F32)?;
    matmul_into(enc, gpu, &dyv, &cv, false, true, 1.0, Bias::None, &pv)?;
    let sum = Sum {
        outer: n,
        e: cout * k,
        inner: 1,
    };
    sum_acc_into(enc, gpu, &pv, sum, 1.0, partials, dw)
}

/// [`conv_grad_weight_into`] (groups 1) as one GEMM through the columns `col` that adds every
/// batch item's `dy col^T` into `dw` (see [`WeightGrad::GemmSum`]).
pub fn conv_grad_weight_sum_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    col: Option<&GpuTensor>,
    dw: &GpuTensor,
) -> Result<()> {
    let (cv, dyv) = weight_grad_operands(enc, gpu, x, dy, a, col, dw)?;
    let dwv = dw.view(&[dw.shape()[0], cv.shape()[1]], DType::F32)?;
    let kernel = GemmKernel::pick(gpu, dwv.shape()[0], dwv.shape()[1]);
    matmul_sum_into(enc, gpu, kernel, &dyv, &cv, false, true, 1.0, &dwv)
}

/// The GEMM forms' operands of a weight gradient: the columns `[n, K, npix]` (im2col into
/// `col`, or the input itself for a pointwise convolution) and `dy` as `[n, cout, npix]`.
fn weight_grad_operands(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Conv2d,
    col: Option<&GpuTensor>,
    dw: &GpuTensor,
) -> Result<(GpuTensor, GpuTensor)> {
    const OP: &str = "conv backward (weight)";
    f32s(OP, &[("x", x), ("dy", dy), ("dw", dw)])?;
    conv_params(x.shape(), dw.shape(), a, dy)?;
    let [n, _, npix] = im2col_output_shape(x.shape(), dw.shape(), a)?;
    let cv = columns(enc, gpu, OP, x, dw.shape(), a, col)?;
    Ok((cv, dy.view(&[n, dw.shape()[0], npix], DType::F32)?))
}

/// The columns `[n, K, npix]` of a convolution of `x` with weights of shape `w`: a pointwise
/// convolution's input itself, otherwise im2col recorded into `col` (which it needs).
fn columns(
    enc: &mut impl Record,
    gpu: &Gpu,
    op: &'static str,
    x: &GpuTensor,
    w: &[usize],
    a: &Conv2d,
    col: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let shape = im2col_output_shape(x.shape(), w, a)?;
    if pointwise(w, a) {
        return x.view(&shape, DType::F32);
    }
    let col = col.ok_or_else(|| {
        Error::invalid(
            op,
            "col",
            "none",
            "a convolution that is not pointwise needs it",
        )
    })?;
    f32s(op, &[("col", col)])?;
    let cv = col.view(&shape, DType::F32)?;
    im2col_into(enc, gpu, x, w, a, &cv)?;
    Ok(cv)
}

/// How an operand of [`matmul_acc_into`] is laid out: element strides per output batch,
/// per reduced batch, and along its two matrix dims (rows, columns of the product's view).
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    pub batch: usize,
    pub reduce: usize,
    pub rows: usize,
    pub cols: usize,
}

/// A product `c[bt, i, j] += alpha * sum_r sum_k a[bt, r, i, k] * b[bt, r, k, j]` with
/// `a` of rows `m` and columns `k`, `b` of rows `k` and columns `n`, through strides.
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub batches: usize,
    pub reduce: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: Layout,
    pub b: Layout,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct MmParams {
    batches: u32,
    m: u32,
    n: u32,
    k_begin: u32,
    k_end: u32,
    r_end: u32,
    a_batch: u32,
    a_reduce: u32,
    a_m: u32,
    a_k: u32,
    b_batch: u32,
    b_reduce: u32,
    b_k: u32,
    b_n: u32,
    alpha: f32,
    r_begin: u32,
}

/// Records `c += p` (`c` contiguous `[batches, m, n]`): the gradients of Gemm and MatMul,
/// any transposes and broadcast batches expressed as strides.
pub fn matmul_acc_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    b: &GpuTensor,
    p: &Product,
    c: &GpuTensor,
) -> Result<()> {
    const OP: &str = "matmul backward";
    f32s(OP, &[("a", a), ("b", b), ("c", c)])?;
    fits(OP, gpu, &[a, b, c])?;
    same_len(OP, "c", c, p.batches * p.m * p.n)?;
    let last = |l: &Layout, rows: usize, cols: usize| {
        (p.batches.max(1) - 1) * l.batch
            + (p.reduce.max(1) - 1) * l.reduce
            + (rows.max(1) - 1) * l.rows
            + (cols.max(1) - 1) * l.cols
    };
    if last(&p.a, p.m, p.k) >= a.len().max(1) || last(&p.b, p.k, p.n) >= b.len().max(1) {
        return Err(Error::invalid(
            OP,
            "layout",
            format!("{p:?}"),
            "reaches past the end of an operand",
        ));
    }
    if c.is_empty() {
        return Ok(());
    }
    let k_per = (LOOP_BUDGET as usize / p.reduce.max(1)).max(1);
    let r_per = if p.reduce > LOOP_BUDGET as usize {
        LOOP_BUDGET as usize
    } else {
        p.reduce
    };
    for (r_begin, r_end) in ranges(p.reduce, r_per) {
        let k_per = if r_end - r_begin < p.reduce { 1 } else { k_per };
        for (k_begin, k_end) in ranges(p.k, k_per) {
            let params = MmParams {
                batches: p.batches as u32,
                m: p.m as u32,
                n: p.n as u32,
                k_begin: k_begin as u32,
                k_end: k_end as u32,
                r_begin: r_begin as u32,
                r_end: r_end as u32,
                a_batch: p.a.batch as u32,
                a_reduce: p.a.reduce as u32,
                a_m: p.a.rows as u32,
                a_k: p.a.cols as u32,
                b_batch: p.b.batch as u32,
                b_reduce: p.b.reduce as u32,
                b_k: p.b.rows as u32,
                b_n: p.b.cols as u32,
                alpha: p.alpha,
            };
            enc.dispatch(
                gpu,
                &MATMUL,
                &[],
                &params,
                &[Bind::Whole(a), Bind::Whole(b), Bind::Whole(c)],
                grid64(gpu, c.len())?,
            )?;
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    nc: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    count_include_pad: u32,
    pad_b: u32,
    pad_r: u32,
}

/// `dx += pool2d_grad(x, dy)`. Max pooling routes each window's gradient to its maximum (the
/// first in scan order among equal values, as the forward keeps it); average pooling spreads
/// it over the window with the forward's count (`count_include_pad`).
pub fn pool_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    dy: &GpuTensor,
    a: &Pool2d,
    max: bool,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "pool backward";
    f32s(OP, &[("x", x), ("dy", dy), ("dx", dx)])?;
    fits(OP, gpu, &[x, dy, dx])?;
    same_len(OP, "dx", dx, x.len())?;
    let y = pool_output_shape(x.shape(), a)?;
    if dy.shape() != y {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "dy".into(),
            expected: format!("{y:?}"),
            got: dy.shape().to_vec(),
        });
    }
    let s = x.shape();
    let windows = a.kernel[0].div_ceil(a.strides[0]) * a.kernel[1].div_ceil(a.strides[1]);
    if max && windows * a.kernel[0] * a.kernel[1] > LOOP_BUDGET as usize {
        return Err(Error::invalid(
            OP,
            "window",
            format!("{:?}", a.kernel),
            "too large for one pass",
        ));
    }
    let params = PoolParams {
        nc: (s[0] * s[1]) as u32,
        h: s[2] as u32,
        w: s[3] as u32,
        oh: y[2] as u32,
        ow: y[3] as u32,
        kh: a.kernel[0] as u32,
        kw: a.kernel[1] as u32,
        stride_h: a.strides[0] as u32,
        stride_w: a.strides[1] as u32,
        pad_t: a.pads[0] as u32,
        pad_l: a.pads[1] as u32,
        dil_h: a.dilations[0] as u32,
        dil_w: a.dilations[1] as u32,
        count_include_pad: a.count_include_pad as u32,
        pad_b: a.pads[2] as u32,
        pad_r: a.pads[3] as u32,
    };
    enc.dispatch(
        gpu,
        if max { &MAX_POOL } else { &AVG_POOL },
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(dy), Bind::Whole(dx)],
        grid64(gpu, x.len())?,
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Rows {
    rows: u32,
    len: u32,
    inner: u32,
    _pad: u32,
}

/// `dx += y * (dy - sum(dy * y))` along an axis of `len` elements with stride `inner` (`y`
/// is the softmax's output).
pub fn softmax_grad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    y: &GpuTensor,
    dy: &GpuTensor,
    len: usize,
    inner: usize,
    dx: &GpuTensor,
) -> Result<()> {
    const OP: &str = "softmax backward";
    f32s(OP, &[("y", y), ("dy", dy), ("dx", dx)])?;
    fits(OP, gpu, &[y, dy, dx])?;
    same_len(OP, "dy", dy, y.len())?;
    same_len(OP, "dx", dx, y.len())?;
    if len == 0 || inner == 0 || y.len() % (len * inner) != 0 {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "y".into(),
            expected: format!("a multiple of {len} x {inner}"),
            got: y.shape().to_vec(),
        });
    }
    if 2 * len > LOOP_BUDGET as usize {
        return Err(Error::invalid(
            OP,
            "axis length",
            len,
            format!("at most {}", LOOP_BUDGET / 2),
        ));
    }
    let rows = y.len() / len;
    let params = Rows {
        rows: rows as u32,
        len: len as u32,
        inner: inner as u32,
        _pad: 0,
    };
    enc.dispatch(
        gpu,
        &SOFTMAX,
        &[],
        &params,
        &[Bind::Whole(y), Bind::Whole(dy), Bind::Whole(dx)],
        grid64(gpu, rows)?,
    )
}
