//! Index and selection kernels (`shaders/elementwise.wgsl`): Where with three-way
//! broadcasting, Gather and GatherElements with runtime indices (integers carried as f32; an
//! index outside the dim reads 0, never memory outside the tensor), broadcasts (Expand) and
//! tilings (Tile) as strided copies.

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::grid_stride;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::shape::{broadcast_shape, broadcast_strides, strides};
use crate::ops::elementwise::{strided_copy_into, StridedView, MAX_DIMS};

use Access::{Read, ReadWrite, Uniform};

static WHERE: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "where_op",
    bindings: &[Uniform, Read, Read, Read, ReadWrite],
};
static GATHER: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "gather",
    bindings: &[Uniform, Read, Read, ReadWrite],
};
static GATHER_ELEMENTS: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "gather_elements",
    bindings: &[Uniform, Read, Read, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Nd3 {
    n: u32,
    ndim: u32,
    step: u32,
    _pad0: u32,
    dims: [u32; MAX_DIMS],
    sc: [u32; MAX_DIMS],
    sa: [u32; MAX_DIMS],
    sb: [u32; MAX_DIMS],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Gath {
    n: u32,
    step: u32,
    inner: u32,
    nidx: u32,
    dim: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GathEl {
    n: u32,
    ndim: u32,
    step: u32,
    axis: u32,
    xdim: u32,
    _pad: [u32; 3],
    dims: [u32; MAX_DIMS],
    xs: [u32; MAX_DIMS],
}

fn pack(v: &[usize]) -> [u32; MAX_DIMS] {
    let mut out = [0u32; MAX_DIMS];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as u32;
    }
    out
}

fn check(op: &'static str, gpu: &Gpu, rank: usize, tensors: &[(&str, &GpuTensor)]) -> Result<()> {
    if rank > MAX_DIMS {
        return Err(Error::invalid(
            op,
            "rank",
            rank,
            format!("at most {MAX_DIMS} dims"),
        ));
    }
    for (name, t) in tensors {
        t.expect_dtype(op, name, DType::F32)?;
        if t.bytes() > gpu.limits().max_binding {
            return Err(Error::TooLarge {
                op,
                tensor: name.to_string(),
                bytes: t.bytes(),
                limit: gpu.limits().max_binding,
                which: "storage binding",
            });
        }
    }
    Ok(())
}

/// `y = c != 0 ? a : b`, the three broadcast to `y`'s shape (NumPy's rule).
pub fn where_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    c: &GpuTensor,
    a: &GpuTensor,
    b: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "where";
    let out = broadcast_shape(c.shape(), a.shape())
        .and_then(|s| broadcast_shape(&s, b.shape()))
        .ok_or_else(|| Error::ShapeMismatch {
            op: OP,
            tensor: "a, b".into(),
            expected: format!("broadcastable with the condition {:?}", c.shape()),
            got: a.shape().to_vec(),
        })?;
    if out != y.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "y".into(),
            expected: format!("{out:?}"),
            got: y.shape().to_vec(),
        });
    }
    check(
        OP,
        gpu,
        out.len(),
        &[("c", c), ("a", a), ("b", b), ("y", y)],
    )?;
    if y.is_empty() {
        return Ok(());
    }
    let (grid, step) = grid_stride(y.len() as u64, gpu.limits().max_groups)?;
    let params = Nd3 {
        n: y.len() as u32,
        ndim: out.len() as u32,
        step: step as u32,
        dims: pack(&out),
        sc: pack(&broadcast_strides(c.shape(), out.len())),
        sa: pack(&broadcast_strides(a.shape(), out.len())),
        sb: pack(&broadcast_strides(b.shape(), out.len())),
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &WHERE,
        &[],
        &params,
        &[
            Bind::Whole(c),
            Bind::Whole(a),
            Bind::Whole(b),
            Bind::Whole(y),
        ],
        grid,
    )
}

/// Gather along `axis` with runtime indices `idx` (any shape; integers carried as f32, a
/// negative one counting from the end, one outside the dim giving 0): `y` has shape
/// `x[..axis] ++ idx ++ x[axis + 1..]`.
pub fn gather_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    idx: &GpuTensor,
    axis: usize,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "gather";
    let s = x.shape();
    if axis >= s.len() {
        return Err(Error::invalid(
            OP,
            "axis",
            axis,
            format!("x has rank {}", s.len()),
        ));
    }
    let mut want = s[..axis].to_vec();
    want.extend(idx.shape());
    want.extend(&s[axis + 1..]);
    if want != y.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "y".into(),
            expected: format!("{want:?}"),
            got: y.shape().to_vec(),
        });
    }
    check(OP, gpu, 1, &[("x", x), ("indices", idx), ("y", y)])?;
    if y.is_empty() {
        return Ok(());
    }
    let (grid, step) = grid_stride(y.len() as u64, gpu.limits().max_groups)?;
    let params = Gath {
        n: y.len() as u32,
        step: step as u32,
        inner: s[axis + 1..].iter().product::<usize>().max(1) as u32,
        nidx: idx.len().max(1) as u32,
        dim: s[axis] as u32,
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &GATHER,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(idx), Bind::Whole(y)],
        grid,
    )
}

/// GatherElements along `axis`: `y` (of `idx`'s shape, same rank as `x`) at coordinates c is
/// `x` at c with coordinate `axis` replaced by `idx` there (negative from the end; outside the
/// dim: 0).
pub fn gather_elements_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    idx: &GpuTensor,
    axis: usize,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "gather_elements";
    let (s, is) = (x.shape(), idx.shape());
    if s.len() != is.len() || axis >= s.len() || y.shape() != is {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "indices".into(),
            expected: format!("the rank of x {s:?} (and y of its shape), axis {axis} in it"),
            got: is.to_vec(),
        });
    }
    check(OP, gpu, s.len(), &[("x", x), ("indices", idx), ("y", y)])?;
    if y.is_empty() {
        return Ok(());
    }
    let (grid, step) = grid_stride(y.len() as u64, gpu.limits().max_groups)?;
    let params = GathEl {
        n: y.len() as u32,
        ndim: s.len() as u32,
        step: step as u32,
        axis: axis as u32,
        xdim: s[axis] as u32,
        dims: pack(is),
        xs: pack(&strides(s)),
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &GATHER_ELEMENTS,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(idx), Bind::Whole(y)],
        grid,
    )
}

/// `y = x` broadcast to `y`'s shape (Expand).
pub fn expand_into(enc: &mut impl Record, gpu: &Gpu, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
    let out = y.shape().to_vec();
    if broadcast_shape(x.shape(), &out).as_deref() != Some(&out[..]) {
        return Err(Error::ShapeMismatch {
            op: "expand",
            tensor: "x".into(),
            expected: format!("broadcastable to {out:?}"),
            got: x.shape().to_vec(),
        });
    }
    let src = StridedView {
        offset: 0,
        strides: broadcast_strides(x.shape(), out.len()),
    };
    let dst = StridedView {
        offset: 0,
        strides: strides(&out),
    };
    strided_copy_into(enc, gpu, x, &src, y, &dst, &out)
}

/// `y = x` repeated `reps[d]` times along each dim (Tile), as one strided copy whose
/// iteration splits each repeated dim into (repeat, dim).
pub fn tile_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    reps: &[usize],
    y: &GpuTensor,
) -> Result<()> {
    let s = x.shape();
    let want: Vec<usize> = s.iter().zip(reps).map(|(&d, &r)| d * r).collect();
    if reps.len() != s.len() || want != y.shape() {
        return Err(Error::ShapeMismatch {
            op: "tile",
            tensor: "y".into(),
            expected: format!("{s:?} repeated {reps:?}"),
            got: y.shape().to_vec(),
        });
    }
    if y.is_empty() {
        return Ok(());
    }
    let (xs, ys) = (strides(s), strides(y.shape()));
    let (mut dims, mut src, mut dst) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..s.len() {
        if reps[d] > 1 {
            dims.push(reps[d]);
            src.push(0);
            dst.push(s[d] * ys[d]);
        }
        dims.push(s[d]);
        src.push(xs[d]);
        dst.push(ys[d]);
    }
    if dims.len() > MAX_DIMS {
        return Err(Error::invalid(
            "tile",
            "repeats",
            format!("{reps:?}"),
            format!("more than {MAX_DIMS} dims and repeats in all"),
        ));
    }
    strided_copy_into(
        enc,
        gpu,
        x,
        &StridedView {
            offset: 0,
            strides: src,
        },
        y,
        &StridedView {
            offset: 0,
            strides: dst,
        },
        &dims,
    )
}

static PAD: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "pad_any",
    bindings: &[Uniform, Read, ReadWrite],
};
static SCATTER_ND: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "scatter_nd",
    bindings: &[Uniform, Read, Read, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PadP {
    n: u32,
    ndim: u32,
    step: u32,
    mode: u32,
    value: f32,
    _pad: [u32; 3],
    dims: [u32; MAX_DIMS],
    in_dims: [u32; MAX_DIMS],
    begin: [i32; MAX_DIMS],
    xs: [u32; MAX_DIMS],
}

/// Pad's modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Edge,
    Reflect,
    Wrap,
}

impl PadMode {
    /// The mode of ONNX's attribute value.
    pub fn parse(s: &str) -> Option<PadMode> {
        Some(match s {
            "constant" => PadMode::Constant,
            "edge" => PadMode::Edge,
            "reflect" => PadMode::Reflect,
            "wrap" => PadMode::Wrap,
            _ => return None,
        })
    }
}

/// `y` = `x` padded by `begin` at the start of each dim (negative: cropped) to `y`'s shape,
/// new elements by `mode` (`value` for constant).
pub fn pad_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    x: &GpuTensor,
    begin: &[i64],
    mode: PadMode,
    value: f32,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "pad";
    let (s, ys) = (x.shape(), y.shape());
    if begin.len() != s.len() || ys.len() != s.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "y".into(),
            expected: format!("the rank of x {s:?}, one begin pad per dim"),
            got: ys.to_vec(),
        });
    }
    if mode != PadMode::Constant && x.is_empty() && !y.is_empty() {
        return Err(Error::EmptyTensor {
            op: OP,
            tensor: "x (edge, reflect and wrap need elements)".into(),
        });
    }
    check(OP, gpu, s.len(), &[("x", x), ("y", y)])?;
    if y.is_empty() {
        return Ok(());
    }
    if x.is_empty() {
        // Constant mode reads nothing of an empty x (and a zero-sized binding is invalid).
        return crate::ops::elementwise::fill_into(enc, gpu, y, value);
    }
    let (grid, step) = grid_stride(y.len() as u64, gpu.limits().max_groups)?;
    let mut b = [0i32; MAX_DIMS];
    for (o, &v) in b.iter_mut().zip(begin) {
        *o = v as i32;
    }
    let params = PadP {
        n: y.len() as u32,
        ndim: s.len() as u32,
        step: step as u32,
        mode: match mode {
            PadMode::Constant => 0,
            PadMode::Edge => 1,
            PadMode::Reflect => 2,
            PadMode::Wrap => 3,
        },
        value,
        dims: pack(ys),
        in_dims: pack(s),
        begin: b,
        xs: pack(&strides(s)),
        ..Default::default()
    };
    enc.dispatch(
        gpu,
        &PAD,
        &[],
        &params,
        &[Bind::Whole(x), Bind::Whole(y)],
        grid,
    )
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ScatP {
    slice: u32,
    nidx: u32,
    k: u32,
    mode: u32,
    step: u32,
    from: u32,
    _pad: [u32; 2],
    dims: [u32; MAX_DIMS],
    xs: [u32; MAX_DIMS],
}

/// How ScatterND combines an update with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterMode {
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

/// ScatterND into `y` (holding the data): for each index tuple `indices[i]` (the last dim of
/// `indices` long, `k`), the slice of `y` it names combined with `updates[i]`, in order.
pub fn scatter_nd_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    indices: &GpuTensor,
    updates: &GpuTensor,
    mode: ScatterMode,
    y: &GpuTensor,
) -> Result<()> {
    const OP: &str = "scatter_nd";
    let (ds, is) = (y.shape(), indices.shape());
    let k = *is.last().unwrap_or(&0);
    let nidx: usize = is[..is.len().saturating_sub(1)].iter().product();
    let slice: usize = ds[k.min(ds.len())..].iter().product();
    let mut want = is[..is.len().saturating_sub(1)].to_vec();
    want.extend(&ds[k.min(ds.len())..]);
    if is.is_empty() || k == 0 || k > ds.len() || updates.shape() != want {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "updates".into(),
            expected: format!("{want:?} (indices {is:?} into data {ds:?})"),
            got: updates.shape().to_vec(),
        });
    }
    check(
        OP,
        gpu,
        k,
        &[("indices", indices), ("updates", updates), ("y", y)],
    )?;
    if nidx == 0 || slice == 0 {
        return Ok(());
    }
    let (grid, step) = grid_stride(slice as u64, gpu.limits().max_groups)?;
    let per_thread = slice.div_ceil(step as usize) as u64;
    let chunk = (crate::gpu::launch::LOOP_BUDGET / (per_thread * (k as u64 + 1))).max(1) as usize;
    let xs = strides(ds);
    let mut from = 0;
    while from < nidx {
        let to = (from + chunk).min(nidx);
        let params = ScatP {
            slice: slice as u32,
            nidx: to as u32,
            k: k as u32,
            mode: mode as u32,
            step: step as u32,
            from: from as u32,
            dims: pack(&ds[..k]),
            xs: pack(&xs[..k]),
            ..Default::default()
        };
        enc.dispatch(
            gpu,
            &SCATTER_ND,
            &[],
            &params,
            &[Bind::Whole(indices), Bind::Whole(updates), Bind::Whole(y)],
            grid,
        )?;
        from = to;
    }
    Ok(())
}
