//! GEMMs whose weight is larger than one storage binding (VGG-19's 25088 x 4096 fully
//! connected layer): the weight is bound a block of rows at a time from its one parameter
//! buffer (so a simulation's rewritten weights are read as they are), each block's product
//! goes to scratch, and the blocks are assembled: rows of a transposed weight are columns of
//! the output (copied into place), rows of a plain one are a range of the inner dimension
//! (partial products summed).

use crate::error::{DType, Result};
use crate::exec::lower::Lowering;
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::attrs::Binary;
use crate::graph::ir::{Graph, Node, Op};
use crate::ops::elementwise::{self as ew, StridedView};
use crate::ops::epilogue::Epilogue;
use crate::ops::gemm::{self, Bias, GemmKernel};

/// Whether `b` (a 2-D weight) needs splitting on this adapter.
pub(crate) fn too_big(gpu: &Gpu, b_elems: usize) -> bool {
    let l = gpu.limits();
    b_elems as u64 * 4 + l.offset_align > l.max_binding
}

/// True for a Gemm or MatMul whose constant B needs splitting (it takes no fused epilogue).
pub(crate) fn splits(gpu: &Gpu, g: &Graph, n: &Node) -> bool {
    matches!(n.op, Op::Gemm { .. } | Op::MatMul)
        && n.inputs
            .get(1)
            .and_then(|b| g.consts.get(b))
            .is_some_and(|c| c.shape().len() == 2 && too_big(gpu, c.shape().iter().product()))
}

/// `y = alpha * op(a) * op(b)` for a 2-D `b` larger than one binding (`a` 2-D, `y` `[m, n]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    cx: &mut Lowering<'_>,
    n: &Node,
    a: &GpuTensor,
    b: &GpuTensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    y: &GpuTensor,
) -> Result<()> {
    let gpu = cx.gpu();
    let l = gpu.limits();
    let (bs, ys) = (b.shape().to_vec(), y.shape().to_vec());
    let (m, cols) = (ys[0], ys[1]);
    let row = bs[1];
    // Rows of B per block: what fits one binding with room for its alignment.
    let per = l.rows_per_binding(row);
    if trans_b {
        // B is [n, k]: a block of rows is a block of C's columns.
        let k = row;
        let mut n0 = 0;
        while n0 < cols {
            let nb = per.min(cols - n0);
            let piece = cx.scratch(&[m, nb], DType::F32)?;
            let kernel = GemmKernel::pick(gpu, m, nb);
            gemm::matmul_b_at(
                cx.steps(),
                gpu,
                kernel,
                a,
                &b.view(&[nb, k], DType::F32)?,
                (n0 * k) as u64,
                trans_a,
                true,
                alpha,
                Bias::None,
                &Epilogue::NONE,
                &piece.tensor,
            )?;
            ew::strided_copy_into(
                cx.steps(),
                gpu,
                &piece.tensor,
                &super::dense(&[m, nb]),
                y,
                &StridedView {
                    offset: n0,
                    strides: vec![cols, 1],
                },
                &[m, nb],
            )?;
            cx.free(piece);
            n0 += nb;
        }
        return Ok(());
    }
    if trans_a {
        return Err(cx.err(n, "a transposed A with a weight larger than one binding"));
    }
    // B is [k, n]: a block of rows is a range of the inner dimension; A's matching columns are
    // copied out and the partial products summed.
    let k = bs[0];
    let mut acc: Option<crate::exec::lower::Scratch> = None;
    let mut k0 = 0;
    while k0 < k {
        let kb = per.min(k - k0);
        let ap = cx.scratch(&[m, kb], DType::F32)?;
        ew::strided_copy_into(
            cx.steps(),
            gpu,
            a,
            &StridedView {
                offset: k0,
                strides: vec![k, 1],
            },
            &ap.tensor,
            &super::dense(&[m, kb]),
            &[m, kb],
        )?;
        let last = k0 + kb == k;
        let part = cx.scratch(&[m, cols], DType::F32)?;
        let kernel = GemmKernel::pick(gpu, m, cols);
        gemm::matmul_b_at(
            cx.steps(),
            gpu,
            kernel,
            &ap.tensor,
            &b.view(&[kb, cols], DType::F32)?,
            (k0 * cols) as u64,
            false,
            false,
            alpha,
            Bias::None,
            &Epilogue::NONE,
            &part.tensor,
        )?;
        cx.free(ap);
        match acc.take() {
            None if last => {
                let d = super::dense(&[m, cols]);
                ew::strided_copy_into(cx.steps(), gpu, &part.tensor, &d, y, &d, &[m, cols])?;
                cx.free(part);
            }
            None => acc = Some(part),
            Some(prev) if last => {
                ew::binary_into(cx.steps(), gpu, Binary::Add, &prev.tensor, &part.tensor, y)?;
                cx.free(prev);
                cx.free(part);
            }
            Some(prev) => {
                let sum = cx.scratch(&[m, cols], DType::F32)?;
                ew::binary_into(
                    cx.steps(),
                    gpu,
                    Binary::Add,
                    &prev.tensor,
                    &part.tensor,
                    &sum.tensor,
                )?;
                cx.free(prev);
                cx.free(part);
                acc = Some(sum);
            }
        }
        k0 += kb;
    }
    Ok(())
}
