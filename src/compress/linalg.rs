//! GPU linear algebra drivers: batched SVD (Jacobi sweeps until every matrix has converged)
//! and least squares through the normal equations (Gram accumulation on the GPU, batched
//! Cholesky solves). They submit and read back, so they sit here, above the ops.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::gpu::launch::LOOP_BUDGET;
use crate::gpu::{to_array, Gpu, GpuTensor};
use crate::ops::gemm::{matmul_sum_into, GemmKernel};
use crate::ops::linalg::{cholesky_solve, jacobi_round, jacobi_rounds, JacobiBatch};

/// Controls of [`svd_batched`].
#[derive(Clone, Copy, Debug)]
pub struct SvdOptions {
    /// Sweeps at most (each visits every column pair once).
    pub max_sweeps: usize,
    /// A pair rotates while |a_p . a_q| > tolerance |a_p| |a_q|; `None`: 8 eps sqrt(rows),
    /// the level f32 dot products of that length resolve.
    pub tolerance: Option<f32>,
    /// Which kernel runs the sweeps; `None` picks by batch shape.
    pub strategy: Option<SvdStrategy>,
}

/// How the Jacobi sweeps are spread over the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvdStrategy {
    /// One workgroup per matrix, threads take whole column pairs, many rounds per dispatch:
    /// for batches of many matrices (every layer of a model).
    PerMatrix,
    /// One workgroup per column pair, one round per dispatch: for a few large matrices.
    PerPair,
}

impl SvdStrategy {
    /// PerMatrix when the batch alone gives the GPU enough workgroups, the matrices are
    /// small, or the adapter is a CPU (where fewer, longer dispatches win: 1.7-2.9x on
    /// lavapipe); PerPair otherwise.
    pub fn pick(batch: usize, max_n: usize, software: bool) -> SvdStrategy {
        if software || batch >= 8 || max_n <= 64 {
            SvdStrategy::PerMatrix
        } else {
            SvdStrategy::PerPair
        }
    }
}

impl Default for SvdOptions {
    fn default() -> Self {
        SvdOptions {
            max_sweeps: 40,
            tolerance: None,
            strategy: None,
        }
    }
}

/// A thin SVD `A = U diag(s) V^T` with `s` sorted descending; for an `m x n` matrix, `U` is
/// `m x k` and `V` is `n x k`, `k = min(m, n)`. Columns of `U` for zero singular values are 0.
#[derive(Clone, Debug)]
pub struct Svd {
    pub u: Array2<f32>,
    pub s: Vec<f32>,
    pub v: Array2<f32>,
    /// Sweeps run for the batch this matrix was in.
    pub sweeps: usize,
    /// Whether the last sweep made no rotation in this matrix.
    pub converged: bool,
}

impl Svd {
    /// `U[:, :r] diag(s[:r]) V[:, :r]^T`.
    pub fn reconstruct(&self, r: usize) -> Array2<f32> {
        let r = r.min(self.s.len());
        let us = Array2::from_shape_fn((self.u.nrows(), r), |(i, j)| self.u[[i, j]] * self.s[j]);
        us.dot(&self.v.slice(ndarray::s![.., ..r]).t())
    }
}

/// SVDs of many matrices at once on the GPU (one-sided Jacobi, every matrix of a group in the
/// same dispatches). Matrices wider than tall are transposed on the way in and out.
pub fn svd_batched(gpu: &Gpu, mats: &[ArrayView2<'_, f32>], opts: &SvdOptions) -> Result<Vec<Svd>> {
    const OP: &str = "svd";
    if opts.max_sweeps == 0 {
        return Err(Error::invalid(OP, "max_sweeps", 0, "must be at least 1"));
    }
    let mut tall: Vec<(bool, Array2<f32>)> = Vec::with_capacity(mats.len());
    for (i, a) in mats.iter().enumerate() {
        if a.is_empty() {
            return Err(Error::EmptyTensor {
                op: OP,
                tensor: format!("matrix {i} {:?}", a.shape()),
            });
        }
        let bad = a.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::NonFinite {
                op: OP,
                tensor: format!("matrix {i}"),
                count: bad as u64,
            });
        }
        let wide = a.nrows() < a.ncols();
        tall.push((wide, if wide { a.t().to_owned() } else { a.to_owned() }));
    }
    // Groups of consecutive matrices whose A and V each fit one storage binding.
    let limit = gpu.limits().max_binding / 4;
    let mut out = Vec::with_capacity(mats.len());
    let mut start = 0;
    while start < tall.len() {
        let (mut end, mut na, mut nv) = (start, 0u64, 0u64);
        while end < tall.len() {
            let (m, n) = tall[end].1.dim();
            let (ea, ev) = ((m * n) as u64, (n * n) as u64);
            if end > start && (na + ea > limit || nv + ev > limit) {
                break;
            }
            if ea > limit || ev > limit {
                return Err(Error::TooLarge {
                    op: OP,
                    tensor: format!("matrix {end} {m}x{n}"),
                    bytes: ea.max(ev) * 4,
                    limit: limit * 4,
                    which: "storage binding",
                });
            }
            na += ea;
            nv += ev;
            end += 1;
        }
        out.extend(svd_group(gpu, &tall[start..end], opts)?);
        start = end;
    }
    Ok(out)
}

fn svd_group(gpu: &Gpu, mats: &[(bool, Array2<f32>)], opts: &SvdOptions) -> Result<Vec<Svd>> {
    let (mut desc, mut a, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for (_, m) in mats {
        let (rows, cols) = m.dim();
        desc.extend([rows as u32, cols as u32, a.len() as u32, v.len() as u32]);
        a.extend(m.t().iter().copied());
        v.extend((0..cols * cols).map(|i| if i / cols == i % cols { 1.0f32 } else { 0.0 }));
    }
    let batch = mats.len();
    let max_m = mats.iter().map(|(_, m)| m.nrows()).max().unwrap_or(1);
    let max_n = mats.iter().map(|(_, m)| m.ncols()).max().unwrap_or(1);
    let tol = opts
        .tolerance
        .unwrap_or(8.0 * f32::EPSILON * (max_m as f32).sqrt());
    let desc_t = gpu.upload_slice(&[batch, 4], &desc)?;
    let a_t = gpu.upload_slice(&[a.len()], &a)?;
    let v_t = gpu.upload_slice(&[v.len()], &v)?;
    let mut live = gpu.upload_slice(&[batch], &vec![1u32; batch])?;
    let rounds = (max_n + (max_n & 1)).saturating_sub(1);
    let strategy =
        opts.strategy
            .unwrap_or(SvdStrategy::pick(batch, max_n, gpu.adapter().is_software()));
    let (mut sweeps, mut counts) = (0, vec![1u32; batch]);
    while sweeps < opts.max_sweeps && counts.iter().any(|&c| c > 0) {
        let rotations = gpu.upload_slice(&[batch], &vec![0u32; batch])?;
        let b = JacobiBatch {
            desc: &desc_t,
            live: &live,
            a: &a_t,
            v: &v_t,
            rotations: &rotations,
            max_n,
        };
        let mut enc = gpu.encoder();
        match strategy {
            SvdStrategy::PerPair => {
                for r in 0..rounds {
                    jacobi_round(&mut enc, gpu, &b, r, tol)?;
                }
            }
            SvdStrategy::PerMatrix => {
                let per_round =
                    (max_n as u64 + 1).div_ceil(2).div_ceil(256) * (2 * max_m + max_n) as u64 + 1;
                let step = (LOOP_BUDGET / per_round).max(1) as usize;
                for r in (0..rounds).step_by(step) {
                    jacobi_rounds(&mut enc, gpu, &b, r, (r + step).min(rounds), tol)?;
                }
            }
        }
        let bytes = gpu.submit_and_read(enc, &[&rotations])?;
        counts = bytemuck::pod_collect_to_vec(&bytes[0]);
        live = rotations;
        sweeps += 1;
    }
    let bytes = gpu.submit_and_read(gpu.encoder(), &[&a_t, &v_t])?;
    let (a, v): (Vec<f32>, Vec<f32>) = (
        bytemuck::pod_collect_to_vec(&bytes[0]),
        bytemuck::pod_collect_to_vec(&bytes[1]),
    );
    Ok(mats
        .iter()
        .enumerate()
        .map(|(i, (wide, m))| {
            let (rows, cols) = m.dim();
            let (ao, vo) = (desc[i * 4 + 2] as usize, desc[i * 4 + 3] as usize);
            let col = |j: usize| &a[ao + j * rows..ao + (j + 1) * rows];
            let norms: Vec<f64> = (0..cols)
                .map(|j| {
                    col(j)
                        .iter()
                        .map(|&x| x as f64 * x as f64)
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let mut order: Vec<usize> = (0..cols).collect();
            order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
            let u = Array2::from_shape_fn((rows, cols), |(r, k)| {
                let j = order[k];
                if norms[j] > 0.0 {
                    (col(j)[r] as f64 / norms[j]) as f32
                } else {
                    0.0
                }
            });
            let vm = Array2::from_shape_fn((cols, cols), |(r, k)| v[vo + order[k] * cols + r]);
            let s: Vec<f32> = order.iter().map(|&j| norms[j] as f32).collect();
            let (u, v) = if *wide { (vm, u) } else { (u, vm) };
            Svd {
                u,
                s,
                v,
                sweeps,
                converged: counts[i] == 0,
            }
        })
        .collect())
}

/// Normal equations `G = X^T X`, `B = X^T Y` accumulated on the GPU over chunks of samples.
pub struct NormalEquations {
    gram: GpuTensor,
    rhs: GpuTensor,
    samples: usize,
}

impl NormalEquations {
    /// Empty equations for `k` features and `o` outputs.
    pub fn new(gpu: &Gpu, k: usize, o: usize) -> Result<NormalEquations> {
        if k == 0 || o == 0 {
            return Err(Error::invalid(
                "lstsq",
                "size",
                format!("{k} features, {o} outputs"),
                "both must be at least 1",
            ));
        }
        Ok(NormalEquations {
            gram: gpu.upload_slice(&[k, k], &vec![0f32; k * k])?,
            rhs: gpu.upload_slice(&[k, o], &vec![0f32; k * o])?,
            samples: 0,
        })
    }

    /// Equations from a Gram matrix and right-hand side computed elsewhere.
    pub fn from_parts(gpu: &Gpu, gram: &Array2<f32>, rhs: &Array2<f32>) -> Result<NormalEquations> {
        let k = gram.nrows();
        if gram.ncols() != k || rhs.nrows() != k || k == 0 || rhs.ncols() == 0 {
            return Err(Error::ShapeMismatch {
                op: "lstsq",
                tensor: "normal equations".into(),
                expected: format!("[{k}, {k}] and [{k}, outputs]"),
                got: rhs.shape().to_vec(),
            });
        }
        Ok(NormalEquations {
            gram: gpu.upload(&gram.view().into_dyn())?,
            rhs: gpu.upload(&rhs.view().into_dyn())?,
            samples: 0,
        })
    }

    /// Adds samples: `x` `[s, k]` features, `y` `[s, o]` targets (one submission).
    pub fn add(&mut self, gpu: &Gpu, x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<()> {
        if x.nrows() != y.nrows() {
            return Err(Error::ShapeMismatch {
                op: "lstsq",
                tensor: "targets".into(),
                expected: format!("{} rows like the features", x.nrows()),
                got: y.shape().to_vec(),
            });
        }
        // `G += x^T x` and `B += x^T y` are GEMMs summing over the samples; each upload is as
        // many samples as one storage binding holds.
        let (k, o) = (x.ncols(), y.ncols());
        let rows = gpu.limits().rows_per_binding(k.max(o));
        let (gram_kernel, rhs_kernel) = (GemmKernel::pick(gpu, k, k), GemmKernel::pick(gpu, k, o));
        let mut enc = gpu.encoder();
        let mut start = 0;
        while start < x.nrows() {
            let end = (start + rows).min(x.nrows());
            let xt = gpu.upload(&x.slice(ndarray::s![start..end, ..]).into_dyn())?;
            let yt = gpu.upload(&y.slice(ndarray::s![start..end, ..]).into_dyn())?;
            matmul_sum_into(
                &mut enc,
                gpu,
                gram_kernel,
                &xt,
                &xt,
                true,
                false,
                1.0,
                &self.gram,
            )?;
            matmul_sum_into(
                &mut enc, gpu, rhs_kernel, &xt, &yt, true, false, 1.0, &self.rhs,
            )?;
            start = end;
        }
        gpu.submit(enc)?;
        self.samples += x.nrows();
        Ok(())
    }

    /// Samples added so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// `(G, B)` read back (for tests and the CPU reference).
    pub fn read(&self, gpu: &Gpu) -> Result<(Array2<f32>, Array2<f32>)> {
        let bytes = gpu.submit_and_read(gpu.encoder(), &[&self.gram, &self.rhs])?;
        let two = |t: &GpuTensor, b: &[u8]| -> Result<Array2<f32>> {
            Ok(to_array::<f32>(t, b)?.into_dimensionality().expect("2-D"))
        };
        Ok((two(&self.gram, &bytes[0])?, two(&self.rhs, &bytes[1])?))
    }
}

/// Solves every system `(G + ridge * mean(diag G) * I) W = B` in one dispatch; returns each
/// `W` (`k x o`). A system whose factorisation fails even with the ridge is a typed error
/// naming it.
pub fn solve_batched(
    gpu: &Gpu,
    systems: &[&NormalEquations],
    ridge: f32,
) -> Result<Vec<Array2<f32>>> {
    solve_each(gpu, systems, ridge)?.into_iter().collect()
}

/// [`solve_batched`] with a result per system: one that fails leaves the others solved.
pub fn solve_each(
    gpu: &Gpu,
    systems: &[&NormalEquations],
    ridge: f32,
) -> Result<Vec<Result<Array2<f32>>>> {
    if systems.is_empty() {
        return Ok(Vec::new());
    }
    let (mut desc, mut sizes, mut na, mut nb) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for s in systems {
        let (k, o) = (s.rhs.shape()[0], s.rhs.shape()[1]);
        sizes.push((k, o));
        desc.extend([k as u32, o as u32, na as u32, nb as u32]);
        na += k * k;
        nb += k * o;
    }
    let limit = gpu.limits().max_binding as usize / 4;
    if na > limit || nb > limit {
        return Err(Error::TooLarge {
            op: "lstsq",
            tensor: format!("{} systems", systems.len()),
            bytes: na.max(nb) as u64 * 4,
            limit: limit as u64 * 4,
            which: "storage binding",
        });
    }
    let desc_t = gpu.upload_slice(&[systems.len(), 4], &desc)?;
    let a = gpu.empty(&[na], crate::DType::F32)?;
    let b = gpu.empty(&[nb], crate::DType::F32)?;
    let status = gpu.upload_slice(&[systems.len()], &vec![0u32; systems.len()])?;
    let mut enc = gpu.encoder();
    for (i, s) in systems.iter().enumerate() {
        enc.copy(&s.gram, 0, &a, desc[i * 4 + 2] as u64 * 4, s.gram.bytes());
        enc.copy(&s.rhs, 0, &b, desc[i * 4 + 3] as u64 * 4, s.rhs.bytes());
    }
    cholesky_solve(&mut enc, gpu, &desc_t, &sizes, &a, &b, &status, ridge)?;
    let bytes = gpu.submit_and_read(enc, &[&b, &status])?;
    let (w, st): (Vec<f32>, Vec<u32>) = (
        bytemuck::pod_collect_to_vec(&bytes[0]),
        bytemuck::pod_collect_to_vec(&bytes[1]),
    );
    Ok(systems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (k, o, off) = (desc[i * 4] as usize, desc[i * 4 + 1] as usize, desc[i * 4 + 3] as usize);
            if st[i] != 0 {
                return Err(Error::invalid("lstsq", "system", i, format!("not positive definite at column {} even with ridge {ridge} ({} samples for {k} features)", st[i] - 1, s.samples)));
            }
            let sol = Array2::from_shape_vec((k, o), w[off..off + k * o].to_vec()).expect("k x o");
            match sol.iter().any(|v| !v.is_finite()) {
                true => Err(Error::NonFinite { op: "lstsq", tensor: format!("solution of system {i}"), count: sol.iter().filter(|v| !v.is_finite()).count() as u64 }),
                false => Ok(sol),
            }
        })
        .collect())
}
