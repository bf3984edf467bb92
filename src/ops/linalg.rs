//! Dense linear algebra kernels: one round of batched Jacobi SVD (`shaders/svd.wgsl`), Gram
//! accumulation and batched Cholesky solves (`shaders/lstsq.wgsl`). The drivers that iterate
//! sweeps and read results back live in the compression layer (`compress::linalg`).

use crate::error::{DType, Error, Result};
use crate::gpu::kernels::{Access, Family, Kernel};
use crate::gpu::launch::LOOP_BUDGET;
use crate::gpu::{Bind, Gpu, GpuTensor, Record};

const WG: u64 = 256;

use Access::{Read, ReadWrite, Uniform};

static JACOBI: Kernel = Kernel {
    family: Family::Svd,
    entry: "jacobi_round",
    bindings: &[Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite],
};
static JACOBI_ROUNDS: Kernel = Kernel {
    family: Family::Svd,
    entry: "jacobi_rounds",
    bindings: &[Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite],
};
static RIDGE: Kernel = Kernel {
    family: Family::Lstsq,
    entry: "add_ridge",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
};
static COLUMNS: Kernel = Kernel {
    family: Family::Lstsq,
    entry: "cholesky_columns",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
};
static SUBSTITUTE: Kernel = Kernel {
    family: Family::Lstsq,
    entry: "substitute",
    bindings: &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct JacobiParams {
    batch: u32,
    round: u32,
    tol: f32,
    _pad: u32,
}

/// The matrices of one batched Jacobi SVD on the GPU.
pub struct JacobiBatch<'a> {
    /// `[batch, 4]` u32: (m, n, offset of A's columns in `a`, offset of V's columns in `v`).
    pub desc: &'a GpuTensor,
    /// `[batch]` u32: rotations in the previous sweep (0 = converged, skipped).
    pub live: &'a GpuTensor,
    /// Every A column by column (m >= n), overwritten by U * sigma.
    pub a: &'a GpuTensor,
    /// Every V column by column (start from identity).
    pub v: &'a GpuTensor,
    /// `[batch]` u32: rotations counted in this sweep (start from zero).
    pub rotations: &'a GpuTensor,
    /// Largest n in the batch.
    pub max_n: usize,
}

impl JacobiBatch<'_> {
    /// Checks dtypes, sizes and the tolerance; returns the batch size.
    fn check(&self, op: &'static str, tol: f32) -> Result<usize> {
        let batch = self.live.len();
        for (name, t, dt) in [
            ("desc", self.desc, DType::U32),
            ("live", self.live, DType::U32),
            ("a", self.a, DType::F32),
            ("v", self.v, DType::F32),
            ("rotations", self.rotations, DType::U32),
        ] {
            t.expect_dtype(op, name, dt)?;
        }
        if self.desc.len() != batch * 4 || self.rotations.len() != batch {
            return Err(Error::ShapeMismatch {
                op,
                tensor: "desc".into(),
                expected: format!("[{batch}, 4] and rotations [{batch}]"),
                got: self.desc.shape().to_vec(),
            });
        }
        if !(tol > 0.0 && tol.is_finite()) {
            return Err(Error::invalid(
                op,
                "tolerance",
                tol,
                "must be positive and finite",
            ));
        }
        Ok(batch)
    }

    fn binds(&self) -> [Bind<'_>; 5] {
        [
            Bind::Whole(self.desc),
            Bind::Whole(self.live),
            Bind::Whole(self.a),
            Bind::Whole(self.v),
            Bind::Whole(self.rotations),
        ]
    }
}

/// Records one round of the parallel Jacobi ordering (a sweep is `max_n' - 1` rounds, `n'`
/// = n rounded up to even). A pair rotates when |a_p . a_q| > `tol` |a_p| |a_q|.
pub fn jacobi_round(
    enc: &mut impl Record,
    gpu: &Gpu,
    b: &JacobiBatch<'_>,
    round: usize,
    tol: f32,
) -> Result<()> {
    const OP: &str = "jacobi_round";
    let batch = b.check(OP, tol)?;
    let pairs = (b.max_n as u64).div_ceil(2);
    let max = gpu.limits().max_groups as u64;
    if pairs > max || batch as u64 > max {
        return Err(Error::invalid(
            OP,
            "batch",
            format!("{batch} matrices, {pairs} pairs"),
            format!("at most {max} each per dispatch"),
        ));
    }
    let params = JacobiParams {
        batch: batch as u32,
        round: round as u32,
        tol,
        _pad: 0,
    };
    enc.dispatch(
        gpu,
        &JACOBI,
        &[],
        &params,
        &b.binds(),
        [pairs as u32, batch as u32, 1],
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RoundsParams {
    batch: u32,
    round: u32,
    tol: f32,
    round_end: u32,
}

/// Records rounds `[start, end)` of every matrix's sweep in one dispatch, one workgroup per
/// matrix (threads take whole column pairs). Callers keep `(end - start)` times the
/// per-thread work of a round (`ceil(pairs / 256) * (2 m + n)` loop iterations) within
/// [`LOOP_BUDGET`].
pub fn jacobi_rounds(
    enc: &mut impl Record,
    gpu: &Gpu,
    b: &JacobiBatch<'_>,
    start: usize,
    end: usize,
    tol: f32,
) -> Result<()> {
    const OP: &str = "jacobi_rounds";
    let batch = b.check(OP, tol)?;
    let params = RoundsParams {
        batch: batch as u32,
        round: start as u32,
        tol,
        round_end: end as u32,
    };
    let groups = crate::gpu::launch::grid_1d(batch as u64, 65535)?;
    enc.dispatch(gpu, &JACOBI_ROUNDS, &[], &params, &b.binds(), groups)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SolveParams {
    systems: u32,
    ridge: f32,
    start: u32,
    end: u32,
    backward: u32,
    _pad: [u32; 3],
}

/// Consecutive blocks `[start, end)` of `0..n` whose summed `cost(i)` stays within the loop
/// budget (at least one item per block).
fn blocks(n: usize, cost: impl Fn(usize) -> u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0u64);
    for i in 0..n {
        let c = cost(i) + 1;
        if i > start && used + c > LOOP_BUDGET {
            out.push((start, i));
            start = i;
            used = 0;
        }
        used += c;
    }
    if start < n {
        out.push((start, n));
    }
    out
}

/// Records batched Cholesky solves of `(A + ridge * mean(diag A) * I) X = B`. `desc` `[s, 4]`
/// u32 holds (n, right-hand sides, offset of A, offset of B) per system; `a`'s lower triangle
/// is overwritten by the factors, `b` by the solutions, and `status[s]` (start from zero)
/// becomes 1 + the column of the first pivot that was not positive.
#[allow(clippy::too_many_arguments)]
pub fn cholesky_solve(
    enc: &mut impl Record,
    gpu: &Gpu,
    desc: &GpuTensor,
    sizes: &[(usize, usize)],
    a: &GpuTensor,
    b: &GpuTensor,
    status: &GpuTensor,
    ridge: f32,
) -> Result<()> {
    const OP: &str = "cholesky_solve";
    for (name, t, dt) in [
        ("desc", desc, DType::U32),
        ("a", a, DType::F32),
        ("b", b, DType::F32),
        ("status", status, DType::U32),
    ] {
        t.expect_dtype(OP, name, dt)?;
    }
    let systems = status.len();
    if desc.len() != systems * 4 || sizes.len() != systems {
        return Err(Error::ShapeMismatch {
            op: OP,
            tensor: "desc".into(),
            expected: format!("[{systems}, 4] and {systems} sizes"),
            got: desc.shape().to_vec(),
        });
    }
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(Error::invalid(
            OP,
            "ridge",
            ridge,
            "must be >= 0 and finite",
        ));
    }
    if systems as u64 > gpu.limits().max_groups as u64 {
        return Err(Error::invalid(
            OP,
            "systems",
            systems,
            "more than one dispatch allows",
        ));
    }
    let n = sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let rhs = sizes.iter().map(|s| s.1).max().unwrap_or(0) as u64;
    let binds = [
        Bind::Whole(desc),
        Bind::Whole(a),
        Bind::Whole(b),
        Bind::Whole(status),
    ];
    let groups = [systems as u32, 1, 1];
    let p = |start: usize, end: usize, backward: u32| SolveParams {
        systems: systems as u32,
        ridge,
        start: start as u32,
        end: end as u32,
        backward,
        _pad: [0; 3],
    };
    enc.dispatch(gpu, &RIDGE, &[], &p(0, 0, 0), &binds, groups)?;
    let rows = (n as u64).div_ceil(WG);
    for (s, e) in blocks(n, |j| j as u64 * (1 + rows) + rows) {
        enc.dispatch(gpu, &COLUMNS, &[], &p(s, e, 0), &binds, groups)?;
    }
    for backward in [0, 1] {
        for (s, e) in blocks(n, |_| rhs.div_ceil(WG) * (n as u64 + 1)) {
            enc.dispatch(gpu, &SUBSTITUTE, &[], &p(s, e, backward), &binds, groups)?;
        }
    }
    Ok(())
}
