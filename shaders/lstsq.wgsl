// Least squares through the normal equations: batched Cholesky solves (the Gram matrices are
// GEMMs, ops::gemm).

// Batched Cholesky solves, split into dispatches that each run a bounded number of loop
// iterations per invocation (llvmpipe stops any loop nest after 65535 iterations in total).
// The host records add_ridge, then cholesky_columns over blocks of columns, then substitute
// over blocks of rows (forward, then backward).

struct SolveParams {
    systems: u32,
    // add_ridge: ridge relative to the mean diagonal; others: unused.
    ridge: f32,
    // First and one-past-last column (cholesky_columns) or row step (substitute).
    start: u32,
    end: u32,
    // substitute: 0 = forward (L z = b), 1 = backward (L^T x = z).
    backward: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> sp: SolveParams;
// (n, right-hand sides, offset of the n x n matrix, offset of the n x rhs block) per system.
@group(0) @binding(1) var<storage, read> sdesc: array<vec4<u32>>;
// Symmetric positive (semi-)definite matrices, row-major; their lower triangle is overwritten
// by the Cholesky factor L.
@group(0) @binding(2) var<storage, read_write> sa: array<f32>;
// Right-hand sides, row-major; overwritten by the solutions.
@group(0) @binding(3) var<storage, read_write> sb: array<f32>;
// Per system: 0 when solved, 1 + the column whose pivot was not positive otherwise.
@group(0) @binding(4) var<storage, read_write> status: array<u32>;

const SW: u32 = 256u;
var<workgroup> w_sum: array<f32, 256>;

fn system(sys: u32) -> vec4<u32> {
    if sys < sp.systems {
        return sdesc[sys];
    }
    return vec4<u32>(0u, 0u, 0u, 0u);
}

// A[i][i] += ridge * mean(diag A); workgroup x = system.
@compute @workgroup_size(256)
fn add_ridge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = system(wid.x);
    let n = d.x;
    var tr = 0.0;
    for (var i = lid; i < n; i += SW) {
        tr += sa[d.z + i * n + i];
    }
    w_sum[lid] = tr;
    workgroupBarrier();
    for (var k = SW / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            w_sum[lid] += w_sum[lid + k];
        }
        workgroupBarrier();
    }
    let add = sp.ridge * w_sum[0] / f32(max(n, 1u));
    for (var i = lid; i < n; i += SW) {
        sa[d.z + i * n + i] += add;
    }
}

// Columns [start, end) of L, left-looking: l[j][j] = sqrt(a[j][j] - sum_k l[j][k]^2), then
// l[i][j] = (a[i][j] - sum_{k<j} l[i][k] l[j][k]) / l[j][j] for rows i > j in parallel.
@compute @workgroup_size(256)
fn cholesky_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sys = wid.x;
    let d = system(sys);
    let n = d.x;
    let a0 = d.z;
    for (var j = sp.start; j < sp.end; j++) {
        if lid == 0u && j < n {
            var s = sa[a0 + j * n + j];
            for (var k = 0u; k < j; k++) {
                let l = sa[a0 + j * n + k];
                s -= l * l;
            }
            if !(s > 0.0) {
                if status[sys] == 0u {
                    status[sys] = j + 1u;
                }
                s = 1e-30;
            }
            sa[a0 + j * n + j] = sqrt(s);
        }
        storageBarrier();
        workgroupBarrier();
        if j < n {
            let dj = sa[a0 + j * n + j];
            for (var i = j + 1u + lid; i < n; i += SW) {
                var s = sa[a0 + i * n + j];
                for (var k = 0u; k < j; k++) {
                    s -= sa[a0 + i * n + k] * sa[a0 + j * n + k];
                }
                sa[a0 + i * n + j] = s / dj;
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
}

// Rows [start, end) of the substitution, counted in solve order (backward: row n-1-step),
// one right-hand side per thread.
@compute @workgroup_size(256)
fn substitute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = system(wid.x);
    let n = d.x;
    let rhs = d.y;
    let a0 = d.z;
    let b0 = d.w;
    for (var step = sp.start; step < min(sp.end, n); step++) {
        for (var c = lid; c < rhs; c += SW) {
            if sp.backward == 0u {
                let i = step;
                var s = sb[b0 + i * rhs + c];
                for (var k = 0u; k < i; k++) {
                    s -= sa[a0 + i * n + k] * sb[b0 + k * rhs + c];
                }
                sb[b0 + i * rhs + c] = s / sa[a0 + i * n + i];
            } else {
                let i = n - 1u - step;
                var s = sb[b0 + i * rhs + c];
                for (var k = i + 1u; k < n; k++) {
                    s -= sa[a0 + k * n + i] * sb[b0 + k * rhs + c];
                }
                sb[b0 + i * rhs + c] = s / sa[a0 + i * n + i];
            }
        }
    }
}
