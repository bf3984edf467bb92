//! The gradients of products: Gemm and MatMul (transposes, 1-D operands, batches
//! broadcast on either or both sides), as strided GEMMs that add into the gradients.

use super::reduce;
use crate::error::{DType, Result};
use crate::exec::backward::GradCx;
use crate::gpu::GpuTensor;
use crate::graph::attrs::Binary;
use crate::graph::ir::{Node, Op};
use crate::graph::shape::broadcast_shape;
use crate::ops::elementwise::fill_into;
use crate::ops::grad::{self, Layout, Product, Side, Sum};
use crate::ops::index::expand_into;

/// A matrix in a buffer: element (r, c) at `r * rows + c * cols`.
#[derive(Clone, Copy)]
struct Mat {
    rows: usize,
    cols: usize,
}

impl Mat {
    fn dense(cols: usize) -> Mat {
        Mat {
            rows: cols,
            cols: 1,
        }
    }
    fn t(self) -> Mat {
        Mat {
            rows: self.cols,
            cols: self.rows,
        }
    }
}

/// One product term of a gradient: `c += alpha * l . r` with `l` [m, k] and `r` [k, n].
struct Term<'t> {
    l: (&'t GpuTensor, Mat),
    r: (&'t GpuTensor, Mat),
    m: usize,
    n: usize,
    k: usize,
}

/// Batches of a gradient product: output batches (each operand's stride per batch) and
/// reduced batches (summed into each output).
#[derive(Clone, Copy, Default)]
struct Batches {
    count: usize,
    reduce: usize,
    l: (usize, usize),
    r: (usize, usize),
}

fn record_term(
    cx: &mut GradCx<'_>,
    t: Term<'_>,
    b: Batches,
    alpha: f32,
    c: &GpuTensor,
) -> Result<()> {
    let gpu = cx.gpu();
    let p = Product {
        batches: b.count.max(1),
        reduce: b.reduce.max(1),
        m: t.m,
        n: t.n,
        k: t.k,
        alpha,
        a: Layout {
            batch: b.l.0,
            reduce: b.l.1,
            rows: t.l.1.rows,
            cols: t.l.1.cols,
        },
        b: Layout {
            batch: b.r.0,
            reduce: b.r.1,
            rows: t.r.1.rows,
            cols: t.r.1.cols,
        },
    };
    grad::matmul_acc_into(cx.steps(), gpu, t.l.0, t.r.0, &p, c)
}

/// Gradients of `P = alpha * X' Y'` (`X'` [m, k] = X or its transpose, `Y'` [k, n]) into X
/// and Y in their stored layouts, for the batch layouts given.
#[allow(clippy::too_many_arguments)]
fn product_grads(
    cx: &mut GradCx<'_>,
    n: &Node,
    (x, x_t): (&GpuTensor, bool),
    (y, y_t): (&GpuTensor, bool),
    (m, k, nn): (usize, usize, usize),
    alpha: f32,
    dp: &GpuTensor,
    batches: [Batches; 2],
) -> Result<()> {
    // Views of op(X) [m, k], op(Y) [k, n] and dP [m, n] inside one batch.
    let xv = if x_t {
        Mat::dense(m).t()
    } else {
        Mat::dense(k)
    };
    let yv = if y_t {
        Mat::dense(k).t()
    } else {
        Mat::dense(nn)
    };
    let dv = Mat::dense(nn);
    if let Some(dx) = cx.dx(n, 0)? {
        // dX' = dP Y'^T [m, k]; stored transposed: dX = Y' dP^T [k, m].
        let t = if x_t {
            Term {
                l: (y, yv),
                r: (dp, dv.t()),
                m: k,
                n: m,
                k: nn,
            }
        } else {
            Term {
                l: (dp, dv),
                r: (y, yv.t()),
                m,
                n: k,
                k: nn,
            }
        };
        let [bx, _] = batches;
        let b = if x_t { swap(bx) } else { bx };
        record_term(cx, t, b, alpha, &dx)?;
    }
    if let Some(dy) = cx.dx(n, 1)? {
        // dY' = X'^T dP [k, n]; stored transposed: dY = dP^T X' [n, k].
        let t = if y_t {
            Term {
                l: (dp, dv.t()),
                r: (x, xv),
                m: nn,
                n: k,
                k: m,
            }
        } else {
            Term {
                l: (x, xv.t()),
                r: (dp, dv),
                m: k,
                n: nn,
                k: m,
            }
        };
        let [_, by] = batches;
        let b = if y_t { swap(by) } else { by };
        record_term(cx, t, b, alpha, &dy)?;
    }
    Ok(())
}

/// The batch strides with the operands' roles exchanged.
fn swap(b: Batches) -> Batches {
    Batches {
        l: b.r,
        r: b.l,
        ..b
    }
}

pub(super) fn gemm(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let Op::Gemm {
        alpha,
        beta,
        trans_a,
        trans_b,
    } = n.op
    else {
        unreachable!("table")
    };
    let Some(dp) = cx.dy(n, 0) else {
        return Ok(());
    };
    let (sa, sb) = (cx.shape(&n.inputs[0]), cx.shape(&n.inputs[1]));
    let (m, k) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let nn = if trans_b { sb[0] } else { sb[1] };
    if cx.dx(n, 0)?.is_some() || cx.dx(n, 1)?.is_some() {
        let (a, b) = (cx.value(&n.inputs[0])?, cx.value(&n.inputs[1])?);
        // One batch: the first batch set is for dA (dP and B), the second for dB (A and dP).
        product_grads(
            cx,
            n,
            (&a, trans_a),
            (&b, trans_b),
            (m, k, nn),
            alpha,
            &dp,
            [Batches::default(); 2],
        )?;
    }
    if let Some(dc) = cx.dx(n, 2)? {
        // C broadcasts to [M, N] along leading or trailing dims only (ONNX's unidirectional
        // broadcast), so its gradient is always one sum.
        let c_shape = cx.shape(&n.inputs[2]);
        let sum = Sum::of(&c_shape, dp.shape())
            .ok_or_else(|| cx.err(n, format!("C of shape {c_shape:?} does not broadcast")))?;
        reduce(cx, &dp, sum, beta, &dc)?;
    }
    Ok(())
}

pub(super) fn matmul(cx: &mut GradCx<'_>, n: &Node) -> Result<()> {
    let Some(dp) = cx.dy(n, 0) else {
        return Ok(());
    };
    // A 1-D operand is a matrix of one row (A) or one column (B), as ONNX promotes it; its
    // buffer, and the output's, are the same either way.
    let promote = |s: Vec<usize>, row: bool| match (s.len(), row) {
        (1, true) => vec![1, s[0]],
        (1, false) => vec![s[0], 1],
        _ => s,
    };
    let sa = promote(cx.shape(&n.inputs[0]), true);
    let sb = promote(cx.shape(&n.inputs[1]), false);
    let (m, k, nn) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let (ab, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let Some(batch) = broadcast_shape(ab, bb) else {
        return Err(cx.err(
            n,
            format!("MatMul batches {ab:?} and {bb:?} do not broadcast"),
        ));
    };
    let (ba, bb, out_batch): (usize, usize, usize) = (
        ab.iter().product(),
        bb.iter().product(),
        batch.iter().product(),
    );
    if cx.dx(n, 0)?.is_none() && cx.dx(n, 1)?.is_none() {
        return Ok(());
    }
    let a = cx.value(&n.inputs[0])?.view(&sa, DType::F32)?;
    let b = cx.value(&n.inputs[1])?.view(&sb, DType::F32)?;
    let (mk, kn, mn) = (m * k, k * nn, m * nn);
    // Batch layouts one stride per operand can walk: [for dA: (dP, B) strides], [for dB:
    // (A, dP) strides].
    let batches = if ba == out_batch && bb == out_batch {
        let one = |l, r| Batches {
            count: out_batch,
            reduce: 1,
            l: (l, 0),
            r: (r, 0),
        };
        Some([one(mn, kn), one(mk, mn)])
    } else if ba == out_batch && bb == 1 {
        Some([
            Batches {
                count: out_batch,
                reduce: 1,
                l: (mn, 0),
                r: (0, 0),
            },
            Batches {
                count: 1,
                reduce: out_batch,
                l: (0, mk),
                r: (0, mn),
            },
        ])
    } else if bb == out_batch && ba == 1 {
        Some([
            Batches {
                count: 1,
                reduce: out_batch,
                l: (0, mn),
                r: (0, kn),
            },
            Batches {
                count: out_batch,
                reduce: 1,
                l: (0, 0),
                r: (mn, 0),
            },
        ])
    } else {
        None
    };
    match batches {
        Some(batches) => product_grads(
            cx,
            n,
            (&a, false),
            (&b, false),
            (m, k, nn),
            1.0,
            &dp,
            batches,
        ),
        None => broadcast_matmul_grads(cx, n, &a, &b, &batch, &dp),
    }
}

/// The gradients of a MatMul whose batches broadcast in a way one stride per operand cannot
/// walk (both sides, or a repeated inner batch dim): each operand's gradient over the whole
/// output batch, with the other operand expanded to it, then summed over the dims the
/// operand was broadcast along. `a` and `b` are viewed at their promoted shapes.
fn broadcast_matmul_grads(
    cx: &mut GradCx<'_>,
    n: &Node,
    a: &GpuTensor,
    b: &GpuTensor,
    batch: &[usize],
    dp: &GpuTensor,
) -> Result<()> {
    let gpu = cx.gpu();
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    let (m, k, nn) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let count: usize = batch.iter().product();
    let over_batch = |rows: usize, cols: usize| [batch, &[rows, cols]].concat();
    for (i, mine, other) in [(0, a, b), (1, b, a)] {
        let Some(d) = cx.dx(n, i)? else { continue };
        let d = d.view(mine.shape(), DType::F32)?;
        let s = other.shape();
        let other_full = over_batch(s[s.len() - 2], s[s.len() - 1]);
        let expanded = if s == other_full {
            None
        } else {
            let (slot, t) = cx.scratch(&other_full)?;
            expand_into(cx.steps(), gpu, other, &t)?;
            Some((slot, t))
        };
        let other = expanded.as_ref().map_or(other, |(_, t)| t);
        let s = mine.shape();
        let mine_full = over_batch(s[s.len() - 2], s[s.len() - 1]);
        let full = if s == mine_full {
            None
        } else {
            let (slot, t) = cx.scratch(&mine_full)?;
            fill_into(cx.steps(), gpu, &t, 0.0)?;
            Some((slot, t))
        };
        let into = full.as_ref().map_or(&d, |(_, t)| t);
        let dv = Mat::dense(nn);
        let (t, b) = if i == 0 {
            // dA = dP B^T, batch by batch.
            let t = Term {
                l: (dp, dv),
                r: (other, Mat::dense(nn).t()),
                m,
                n: k,
                k: nn,
            };
            (t, (m * nn, k * nn))
        } else {
            // dB = A^T dP, batch by batch.
            let t = Term {
                l: (other, Mat::dense(k).t()),
                r: (dp, dv),
                m: k,
                n: nn,
                k: m,
            };
            (t, (m * k, m * nn))
        };
        let batches = Batches {
            count,
            reduce: 1,
            l: (b.0, 0),
            r: (b.1, 0),
        };
        record_term(cx, t, batches, 1.0, into)?;
        if let Some((slot, _)) = expanded {
            cx.free(slot);
        }
        if let Some((slot, full)) = full {
            // The sum over the broadcast dims is Add's gradient for an operand of this shape.
            grad::binary_grad_into(
                cx.steps(),
                gpu,
                Binary::Add,
                Side::A,
                mine,
                &full,
                &full,
                &d,
            )?;
            cx.free(slot);
        }
    }
    Ok(())
}
