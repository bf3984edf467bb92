//! Lowerings of the GEMMs: Gemm (bias per column or full, alpha and beta, a C computed at
//! run time added after the product) and MatMul (1-D operands, broadcasting batches), with
//! the epilogue a fusion brings; weights larger than one binding go to `split`.

use ndarray::IxDyn;

use super::{output_of, split, EpilogueTensors};
use crate::error::{DType, Result};
use crate::exec::fuse::Fusion;
use crate::exec::lower::{Lowering, Scratch};
use crate::gpu::GpuTensor;
use crate::graph::attrs::Binary;
use crate::graph::ir::{Node, Op};
use crate::graph::shape::matmul_output_shape;
use crate::ops::elementwise as ew;
use crate::ops::epilogue::Epilogue;
use crate::ops::gemm::{self, Bias, GemmKernel};

pub(super) fn gemm(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    gemm_with(cx, n, None)
}

/// `y = product + beta * c` (c broadcast), freeing the product's scratch `t`.
fn add_beta_c(
    cx: &mut Lowering<'_>,
    t: Scratch,
    c: &GpuTensor,
    beta: f32,
    y: &GpuTensor,
) -> Result<()> {
    let gpu = cx.gpu();
    let scaled = if beta == 1.0 {
        None
    } else {
        let s = cx.scratch(c.shape(), DType::F32)?;
        let k = cx.upload(&[1], &[beta])?;
        ew::binary_into(cx.steps(), gpu, Binary::Mul, c, &k, &s.tensor)?;
        Some(s)
    };
    let c2 = scaled.as_ref().map_or(c, |s| &s.tensor);
    ew::binary_into(cx.steps(), gpu, Binary::Add, &t.tensor, c2, y)?;
    cx.free(t);
    if let Some(s) = scaled {
        cx.free(s);
    }
    Ok(())
}

pub(super) fn gemm_with(cx: &mut Lowering<'_>, n: &Node, f: Option<&Fusion>) -> Result<()> {
    let gpu = cx.gpu();
    let Op::Gemm {
        alpha,
        beta,
        trans_a,
        trans_b,
    } = n.op
    else {
        unreachable!("table")
    };
    let (a, b) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let computed_c = n
        .inputs
        .get(2)
        .is_some_and(|c| !c.is_empty() && cx.constant(c).is_none());
    if f.is_none() && split::too_big(gpu, b.len()) {
        // A weight larger than one binding: the product block by block, then beta * C.
        let y = cx.output(n, 0)?;
        let Some(c) = n.inputs.get(2).filter(|c| !c.is_empty()) else {
            return split::gemm(cx, n, &a, &b, trans_a, trans_b, alpha, &y);
        };
        let t = cx.scratch(y.shape(), DType::F32)?;
        split::gemm(cx, n, &a, &b, trans_a, trans_b, alpha, &t.tensor)?;
        let c = cx.input(c)?;
        return add_beta_c(cx, t, &c, beta, &y);
    }
    if let Some(c) = n.inputs.get(2).filter(|_| computed_c) {
        // A runtime C: the product, then beta * C added with broadcasting.
        if f.is_some() {
            return Err(cx.err(n, "a runtime C with a fused epilogue"));
        }
        let c = cx.input(c)?;
        let y = cx.output(n, 0)?;
        let t = cx.scratch(y.shape(), DType::F32)?;
        let kernel = GemmKernel::pick(gpu, y.shape()[0], y.shape()[1]);
        gemm::matmul_with(
            cx.steps(),
            gpu,
            kernel,
            &a,
            &b,
            trans_a,
            trans_b,
            alpha,
            Bias::None,
            &Epilogue::NONE,
            &t.tensor,
        )?;
        return add_beta_c(cx, t, &c, beta, &y);
    }
    let epi = EpilogueTensors::of(cx, f)?;
    let y = output_of(cx, n, f)?;
    let (m, cols) = (y.shape()[0], y.shape()[1]);
    let bias_t = match n.inputs.get(2).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let v = cx.constant(c).ok_or_else(|| {
                cx.err(n, "a runtime C input is not supported (constant bias only)")
            })?;
            let per_column = v.shape().iter().rev().skip(1).all(|&d| d == 1)
                && v.shape().last().copied().unwrap_or(1) == cols;
            Some(if per_column && beta == 1.0 {
                // The bias as it is: a parameter handle.
                (true, cx.input(c)?.view(&[cols], DType::F32)?)
            } else {
                let full = v
                    .broadcast(IxDyn(&[m, cols]))
                    .ok_or_else(|| cx.err(n, "C does not broadcast"))?
                    .mapv(|e| e * beta);
                if per_column {
                    (
                        true,
                        cx.upload(
                            &[cols],
                            &full.iter().take(cols).copied().collect::<Vec<f32>>(),
                        )?,
                    )
                } else {
                    (
                        false,
                        cx.upload(
                            &[m, cols],
                            full.as_standard_layout().as_slice().expect("contiguous"),
                        )?,
                    )
                }
            })
        }
    };
    let bias = match &bias_t {
        None => Bias::None,
        Some((true, t)) => Bias::PerColumn(t),
        Some((false, t)) => Bias::Full(t),
    };
    let kernel = GemmKernel::pick(gpu, m, cols);
    let e = epi.epilogue();
    gemm::matmul_with(
        cx.steps(),
        gpu,
        kernel,
        &a,
        &b,
        trans_a,
        trans_b,
        alpha,
        bias,
        &e,
        &y,
    )
}

pub(super) fn matmul(cx: &mut Lowering<'_>, n: &Node) -> Result<()> {
    matmul_with(cx, n, None)
}

pub(super) fn matmul_with(cx: &mut Lowering<'_>, n: &Node, f: Option<&Fusion>) -> Result<()> {
    let gpu = cx.gpu();
    let (a, b) = (cx.input(&n.inputs[0])?, cx.input(&n.inputs[1])?);
    let epi = EpilogueTensors::of(cx, f)?;
    let y = output_of(cx, n, f)?;
    // A 1-D A is a row, a 1-D B a column (their dim is not in the output).
    let (mut a, mut b) = (a, b);
    if a.shape().len() == 1 {
        a = a.view(&[1, a.shape()[0]], DType::F32)?;
    }
    if b.shape().len() == 1 {
        b = b.view(&[b.shape()[0], 1], DType::F32)?;
    }
    let (mut sa, mut sb) = (a.shape().to_vec(), b.shape().to_vec());
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let special =
        bb.iter().product::<usize>() == 1 || ba == bb || ba.iter().product::<usize>() == 1;
    let mut scratch = Vec::new();
    if !special {
        // Batch dims that broadcast otherwise: both operands expanded to the common batch.
        let batch = crate::graph::shape::broadcast_shape(ba, bb)
            .ok_or_else(|| cx.err(n, "batch dims do not broadcast"))?;
        for (t, s) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
            let mut full = batch.clone();
            full.extend(&s[s.len() - 2..]);
            let e = cx.scratch(&full, DType::F32)?;
            let src = t.view(s, DType::F32)?;
            crate::ops::index::expand_into(cx.steps(), gpu, &src, &e.tensor)?;
            *t = e.tensor.clone();
            *s = full;
            scratch.push(e);
        }
    }
    let (m, k, cols) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let batch_a: usize = sa[..sa.len() - 2].iter().product();
    let batch_b: usize = sb[..sb.len() - 2].iter().product();
    if batch_b == 1 && f.is_none() && scratch.is_empty() && split::too_big(gpu, b.len()) {
        // A 2-D weight larger than one binding, every row of A against it.
        let av = a.view(&[batch_a * m, k], DType::F32)?;
        let bv = b.view(&[k, cols], DType::F32)?;
        let yv = y.view(&[batch_a * m, cols], DType::F32)?;
        return split::gemm(cx, n, &av, &bv, false, false, 1.0, &yv);
    }
    let (av, bv) = if batch_b == 1 {
        (
            a.view(&[batch_a * m, k], DType::F32)?,
            b.view(&[k, cols], DType::F32)?,
        )
    } else if sa[..sa.len() - 2] == sb[..sb.len() - 2] {
        (
            a.view(&[batch_a, m, k], DType::F32)?,
            b.view(&[batch_b, k, cols], DType::F32)?,
        )
    } else if batch_a == 1 {
        (
            a.view(&[1, m, k], DType::F32)?,
            b.view(&[batch_b, k, cols], DType::F32)?,
        )
    } else {
        return Err(cx.err(
            n,
            format!("batch dims of {sa:?} and {sb:?} broadcast in a way qforge does not run"),
        ));
    };
    let shape = matmul_output_shape(av.shape(), bv.shape(), false, false)?;
    let yv = y.view(&shape, DType::F32)?;
    let residual = match &epi.residual {
        Some(r) => Some(r.view(&shape, DType::F32)?),
        None => None,
    };
    let kernel = GemmKernel::pick(gpu, shape[shape.len() - 2], shape[shape.len() - 1]);
    let e = Epilogue {
        residual: residual.as_ref(),
        ..epi.epilogue()
    };
    let steps = cx.steps();
    gemm::matmul_with(
        steps,
        gpu,
        kernel,
        &av,
        &bv,
        false,
        false,
        1.0,
        Bias::None,
        &e,
        &yv,
    )?;
    for s in scratch {
        cx.free(s);
    }
    Ok(())
}
