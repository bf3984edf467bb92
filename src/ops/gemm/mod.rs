//! Batched matrix multiply (`shaders/gemm.wgsl`): the kernels and which one runs (`kernel`),
//! the products and their dispatches here.

mod kernel;

use crate::error::{DType, Error, Result};
use crate::gpu::launch::LOOP_BUDGET;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};
use crate::graph::shape::matmul_output_shape;
use crate::ops::epilogue::{EpiParams, Epilogue};

pub(crate) use kernel::prefers_wide;
pub use kernel::GemmKernel;

use kernel::{row_blocks, SUBGROUP_VEC4};
/// The product's shape `[n, M, oh * ow]` for [`conv_gemm_into`]'s `w` `[M, K]`, `x`
/// `[n, cin, h, w]` and `c` `[n, M, oh * ow]`, which must agree with `g`; only the tiled kernel
/// reads columns. (The shader reads only inside the image, whatever the geometry.)
fn conv_output(w: &GpuTensor, x: &GpuTensor, c: &GpuTensor, g: Cols) -> Result<Vec<usize>> {
    const OP: &str = "matmul";
    let mismatch = |tensor: &str, expected: String, got: &[usize]| Error::ShapeMismatch {
        op: OP,
        tensor: tensor.into(),
        expected,
        got: got.to_vec(),
    };
    let (xs, ws, cs) = (x.shape(), w.shape(), c.shape());
    if xs.len() != 4 || xs[1..] != [g.cin, g.h, g.w].map(|d| d as usize) {
        let want = format!("[n, {}, {}, {}]", g.cin, g.h, g.w);
        return Err(mismatch("x", want, xs));
    }
    if ws.len() != 2 || ws[1] != g.k() {
        return Err(mismatch("w", format!("[cout, {}]", g.k()), ws));
    }
    let steps = [g.kh, g.kw, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.ow];
    if steps.contains(&0) {
        return Err(Error::invalid(
            OP,
            "convolution columns",
            format!("{g:?}"),
            "kernel, strides, dilations and output width of at least 1",
        ));
    }
    match cs {
        [n, m, npix] if *n == xs[0] && *m == ws[0] && npix % g.ow as usize == 0 => Ok(cs.to_vec()),
        _ => Err(mismatch(
            "c",
            format!("[{}, {}, oh * {}]", xs[0], ws[0], g.ow),
            cs,
        )),
    }
}

/// What is added to every product matrix.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    None,
    /// `[N]`: one value per column.
    PerColumn(&'a GpuTensor),
    /// `[M]`: one value per row.
    PerRow(&'a GpuTensor),
    /// `[M, N]`, shared by every batch item.
    Full(&'a GpuTensor),
    /// C's own values: `C += alpha * A B` (a gradient added into its buffer). One f32 add per
    /// output, as a separate add of the product would make.
    Accumulate,
}

/// Inner-dimension elements one dispatch reduces over: a multiple of every tile depth that keeps
/// an invocation's loop within [`LOOP_BUDGET`] (longer reductions came back silently wrong on
/// llvmpipe from K of about 50,000).
const K_PER_DISPATCH: usize = LOOP_BUDGET as usize;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    a_skip: u32,
    b_skip: u32,
    c_skip: u32,
    bias_mode: u32,
    alpha: f32,
    k_begin: u32,
    k_end: u32,
    accumulate: u32,
    sum_items: u32,
    _pad: u32,
    cols: Cols,
    epi: EpiParams,
}

/// A convolution's geometry for the tiled kernel's implicit GEMM (`CONV` in gemm.wgsl): B is
/// its input `[n, cin, h, w]`, read as the columns `[n, cin * kh * kw, oh * ow]` that im2col
/// would copy out (zero in the padding), so no column matrix is stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Cols {
    pub cin: u32,
    pub h: u32,
    pub w: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_t: u32,
    pub pad_l: u32,
    pub dil_h: u32,
    pub dil_w: u32,
    /// Output columns: the product's N is `oh * ow`.
    pub ow: u32,
}

impl Cols {
    /// Rows of the column matrix: the product's K.
    fn k(&self) -> usize {
        (self.cin * self.kh * self.kw) as usize
    }

    /// Elements of one batch item of the input.
    fn image(&self) -> usize {
        (self.cin * self.h * self.w) as usize
    }
}

/// `C[b] = op(A[b]) * op(B[b])` with `op` a transpose when `trans_a` / `trans_b` is set.
/// A 2-D operand (or a batch of 1) is shared by every batch item. Returns `[batch, M, N]`
/// (or `[M, N]` when both operands are 2-D).
pub fn matmul(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    b: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
) -> Result<GpuTensor> {
    let c = gpu.empty(
        &matmul_output_shape(a.shape(), b.shape(), trans_a, trans_b)?,
        DType::F32,
    )?;
    matmul_into(enc, gpu, a, b, trans_a, trans_b, 1.0, Bias::None, &c)?;
    Ok(c)
}

/// `C = alpha * op(A) * op(B) + bias` into a preallocated `c` of [`matmul_output_shape`], with
/// the kernel [`GemmKernel::pick`] chooses for the adapter.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    a: &GpuTensor,
    b: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: Bias<'_>,
    c: &GpuTensor,
) -> Result<()> {
    let shape = matmul_output_shape(a.shape(), b.shape(), trans_a, trans_b)?;
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let kernel = GemmKernel::pick(gpu, m, n);
    let epi = &Epilogue::NONE;
    matmul_with(
        enc, gpu, kernel, a, b, trans_a, trans_b, alpha, bias, epi, c,
    )
}

/// [`matmul_into`] with a given kernel (tests and benches compare them; it must be one of
/// [`GemmKernel::available`]) and an epilogue (its channel is the row of C; a residual has
/// C's shape).
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: GemmKernel,
    a: &GpuTensor,
    b: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: Bias<'_>,
    epi: &Epilogue<'_>,
    c: &GpuTensor,
) -> Result<()> {
    matmul_b_at(
        enc, gpu, kernel, a, b, 0, trans_a, trans_b, alpha, bias, epi, c,
    )
}

/// [`matmul_with`] with B read from element `b_offset` of its buffer: `b` is a view of the
/// piece's shape (`[rows, k]` of a weight stored `[n, k]` and split by rows), so a weight
/// larger than one storage binding is multiplied a block of columns of C at a time.
#[allow(clippy::too_many_arguments)]
pub fn matmul_b_at(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: GemmKernel,
    a: &GpuTensor,
    b: &GpuTensor,
    b_offset: u64,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: Bias<'_>,
    epi: &Epilogue<'_>,
    c: &GpuTensor,
) -> Result<()> {
    record(
        enc, gpu, kernel, a, b, b_offset, trans_a, trans_b, alpha, bias, epi, c, false, None,
    )
}

/// `C[b] = W * cols(X[b]) + bias` with a tiled kernel (`Tiled` or `TiledWide`) reading the
/// columns of the convolution `cols` describes straight from `x` `[n, cin, h, w]` (an implicit
/// GEMM): `w` is `[M, cin * kh * kw]`, `c` `[n, M, oh * ow]`. It adds the products in k order
/// as [`matmul_with`] does on the columns im2col stores, so both give the same bits.
#[allow(clippy::too_many_arguments)]
pub fn conv_gemm_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: GemmKernel,
    w: &GpuTensor,
    x: &GpuTensor,
    cols: Cols,
    bias: Bias<'_>,
    epi: &Epilogue<'_>,
    c: &GpuTensor,
) -> Result<()> {
    let (sum, conv) = (false, Some(cols));
    record(
        enc, gpu, kernel, w, x, 0, false, false, 1.0, bias, epi, c, sum, conv,
    )
}

/// `C += alpha * sum_b op(A[b]) * op(B[b])` into `c` of `[M, N]` (any shape of that many
/// elements), with the kernel [`GemmKernel::pick`] chooses: a batch of products summed in
/// the GEMM itself (each invocation adds item after item into its registers), so no per-item
/// products are stored and summed afterwards. Weight gradients use it with the batch folded
/// into the reduction.
#[allow(clippy::too_many_arguments)]
pub fn matmul_sum_into(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: GemmKernel,
    a: &GpuTensor,
    b: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    c: &GpuTensor,
) -> Result<()> {
    let epi = &Epilogue::NONE;
    record(
        enc,
        gpu,
        kernel,
        a,
        b,
        0,
        trans_a,
        trans_b,
        alpha,
        Bias::Accumulate,
        epi,
        c,
        true,
        None,
    )
}

/// The dispatches of [`matmul_b_at`], with `sum` of [`matmul_sum_into`] and with `conv` of
/// [`conv_gemm_into`].
#[allow(clippy::too_many_arguments)]
fn record(
    enc: &mut impl Record,
    gpu: &Gpu,
    kernel: GemmKernel,
    a: &GpuTensor,
    b: &GpuTensor,
    b_offset: u64,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: Bias<'_>,
    epi: &Epilogue<'_>,
    c: &GpuTensor,
    sum: bool,
    conv: Option<Cols>,
) -> Result<()> {
    const OP: &str = "matmul";
    if b_offset > 0 && (b.shape().len() != 2 || b_offset + b.len() as u64 > b.capacity() as u64) {
        return Err(Error::invalid(
            OP,
            "b offset",
            b_offset,
            format!("a 2-D piece {:?} inside B's buffer", b.shape()),
        ));
    }
    if !GemmKernel::available(gpu).contains(&kernel) {
        return Err(Error::invalid(
            OP,
            "kernel",
            format!("{kernel:?}"),
            "not available on this adapter",
        ));
    }
    let shape = match conv {
        None => matmul_output_shape(a.shape(), b.shape(), trans_a, trans_b)?,
        Some(_) if !matches!(kernel, GemmKernel::Tiled | GemmKernel::TiledWide) => {
            return Err(Error::invalid(
                OP,
                "kernel",
                format!("{kernel:?}"),
                "only the tiled kernels read a convolution's columns",
            ))
        }
        Some(g) => conv_output(a, b, c, g)?,
    };
    for (name, t) in [("a", a), ("b", b), ("c", c)] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let c_len = match sum {
        true => m * n,
        false => shape.iter().product::<usize>(),
    };
    if c.shape().iter().product::<usize>() != c_len {
        let want = match sum {
            true => vec![m, n],
            false => shape.clone(),
        };
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "c".into(),
            expected: format!("{want:?}"),
            got: c.shape().to_vec(),
        });
    }
    let k = if trans_a {
        a.shape()[a.shape().len() - 2]
    } else {
        a.shape()[a.shape().len() - 1]
    };
    let batch = if shape.len() == 3 { shape[0] } else { 1 };
    let (ba, bb) = (
        if a.shape().len() == 3 {
            a.shape()[0]
        } else {
            1
        },
        if b.shape().len() == 3 || conv.is_some() {
            b.shape()[0]
        } else {
            1
        },
    );
    // Elements of one batch item of B as stored.
    let b_item = conv.map_or(k * n, |g| g.image());
    let (bias_mode, bias_t, bias_len) = match bias {
        Bias::None | Bias::Accumulate => (0, a, 0),
        Bias::PerColumn(t) => (1, t, n),
        Bias::PerRow(t) => (2, t, m),
        Bias::Full(t) => (3, t, m * n),
    };
    if bias_mode != 0 && bias_t.len() != bias_len {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "bias".into(),
            expected: format!("{bias_len} elements"),
            got: bias_t.shape().to_vec(),
        });
    }
    epi.check(OP, gpu, c.len(), m)?;
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    if k == 0 {
        return Err(Error::EmptyTensor {
            op: OP,
            tensor: "a (inner dimension 0)".into(),
        });
    }
    let limits = gpu.limits();
    let (sa, sb, sc) = ((m * k) as u64, b_item as u64, (m * n) as u64);
    let stride = |shared: bool, s: u64| if shared { 0 } else { s };
    let (sa, sb, sc) = (stride(ba == 1, sa), stride(bb == 1, sb), stride(sum, sc));
    let item_max = (m * k).max(b_item).max(m * n) as u64 * 4;
    let align_e = (limits.offset_align / 4).max(1);
    if item_max + limits.offset_align > limits.max_binding
        || (m * k).max(b_item).max(m * n) as u64 > u32::MAX as u64
    {
        return Err(Error::TooLarge {
            op: OP,
            tensor: "one matrix of a, b or c".into(),
            bytes: item_max,
            limit: limits.max_binding,
            which: "storage binding (matrices are split by batch only)",
        });
    }
    // Batch items per dispatch: bounded by the grid's z limit and by the binding size.
    let per_binding = |s: u64| {
        (limits.max_binding / 4 - align_e)
            .checked_div(s)
            .unwrap_or(u64::MAX)
    };
    let step = per_binding(sa)
        .min(per_binding(sb))
        .min(per_binding(sc))
        .min(limits.max_groups as u64)
        .min(match sum {
            // Summed items run one after another in an invocation's loop.
            true => (K_PER_DISPATCH / k) as u64,
            false => u64::MAX,
        })
        .max(1);
    let subgroup = kernel == GemmKernel::Subgroup;
    // B read as vectors of 4 (its items then start on a multiple of 4: `align_e` is one too).
    let vec4 = subgroup && !trans_b && n % 4 == 0 && b_offset % 4 == 0;
    let blocks = if subgroup { row_blocks(m as u64) } else { 1 };
    let max_groups = limits.max_groups as u64;
    let mut grid_xy = kernel.grid(m as u64, n as u64, max_groups);
    grid_xy[1] = grid_xy[1].div_ceil(blocks);
    if grid_xy.iter().any(|&g| g > max_groups) {
        return Err(Error::invalid(
            OP,
            "matrix size",
            format!("{m}x{n}"),
            "more row or column tiles than one dispatch allows",
        ));
    }
    let mut constants = vec![
        ("TRANS_A", trans_a as u32 as f64),
        ("TRANS_B", trans_b as u32 as f64),
    ];
    if conv.is_some() {
        constants.push(("CONV", 1.0));
    }
    if subgroup {
        constants.push(("BLOCKS", blocks as f64));
    }
    constants.extend(kernel.tile_constants(m as u64, n as u64, max_groups));
    let last_constants: Vec<_> = constants.iter().copied().chain(epi.constants()).collect();
    let mut b0 = 0u64;
    while b0 < batch as u64 {
        let nb = step.min(batch as u64 - b0);
        // A shared operand (stride 0) is bound whole; others from the aligned start of item b0.
        #[allow(clippy::too_many_arguments)]
        fn bind(
            t: &GpuTensor,
            b0: u64,
            nb: u64,
            align_e: u64,
            s: u64,
            item: u64,
            base: u64,
        ) -> (Bind<'_>, u32) {
            let first = base + b0 * s;
            let start = first / align_e * align_e;
            let len = if s == 0 {
                first - start + item
            } else {
                first - start + nb * s
            };
            (
                Bind::Range {
                    tensor: t,
                    offset: start * 4,
                    size: len * 4,
                },
                (first - start) as u32,
            )
        }
        let (ab, a_skip) = bind(a, b0, nb, align_e, sa, (m * k) as u64, 0);
        let (bbind, b_skip) = bind(b, b0, nb, align_e, sb, b_item as u64, b_offset);
        let (cbind, c_skip) = bind(c, b0, nb, align_e, sc, (m * n) as u64, 0);
        let residual = epi
            .residual
            .map(|r| bind(r, b0, nb, align_e, sc, (m * n) as u64, 0).0);
        let [eb0, eb1, eb2, eb3] = epi.binds(residual, bias_t);
        for k_begin in (0..k).step_by(K_PER_DISPATCH) {
            let k_end = (k_begin + K_PER_DISPATCH).min(k);
            let accumulate =
                (k_begin > 0 || (sum && b0 > 0) || matches!(bias, Bias::Accumulate)) as u32;
            let params = Params {
                m: m as u32,
                n: n as u32,
                k: k as u32,
                a_stride: sa as u32,
                b_stride: sb as u32,
                c_stride: sc as u32,
                a_skip,
                b_skip,
                c_skip,
                bias_mode,
                alpha,
                k_begin: k_begin as u32,
                k_end: k_end as u32,
                accumulate,
                sum_items: if sum { nb as u32 } else { 0 },
                _pad: 0,
                cols: conv.unwrap_or_default(),
                epi: epi.params(),
            };
            let last = k_end == k && (!sum || b0 + nb == batch as u64);
            debug_assert!(!vec4 || b_skip % 4 == 0);
            enc.dispatch(
                gpu,
                if vec4 {
                    &SUBGROUP_VEC4
                } else {
                    kernel.kernel()
                },
                if last { &last_constants } else { &constants },
                &params,
                &[ab, bbind, Bind::Whole(bias_t), cbind, eb0, eb1, eb2, eb3],
                [
                    grid_xy[0] as u32,
                    grid_xy[1] as u32,
                    if sum { 1 } else { nb as u32 },
                ],
            )?;
        }
        b0 += nb;
    }
    Ok(())
}
