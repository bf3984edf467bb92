// Batched one-sided (Hestenes) Jacobi SVD of many tall matrices at once.
//
// Matrix b is m x n (m >= n), stored column by column at a[desc.z + j * m]; V (n x n) is stored
// column by column at v[desc.w + j * n]. One dispatch runs one round of the parallel
// round-robin ordering: workgroup (x, y) orthogonalises pair x of matrix y. The n' - 1 rounds
// of a sweep (n' = n rounded up to even) visit every column pair once. When the sweep ends the
// columns of A are U * sigma; the host reads them back and takes the norms.

struct Params {
    batch: u32,
    round: u32,
    tol: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// (m, n, column offset in a, column offset in v) per matrix.
@group(0) @binding(1) var<storage, read> desc: array<vec4<u32>>;
// Rotations each matrix made in the previous sweep: 0 means it has converged; skip it.
@group(0) @binding(2) var<storage, read> live: array<u32>;
@group(0) @binding(3) var<storage, read_write> a: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// Rotations made in this sweep, per matrix.
@group(0) @binding(5) var<storage, read_write> rotations: array<atomic<u32>>;

const WG: u32 = 64u;
var<workgroup> s_al: array<f32, 64>;
var<workgroup> s_be: array<f32, 64>;
var<workgroup> s_ga: array<f32, 64>;

// (c, s) of the rotation that makes columns with squared norms al, be and dot product ga
// orthogonal (the smaller of the two angles).
fn givens(al: f32, be: f32, ga: f32) -> vec2<f32> {
    let zeta = (be - al) / (2.0 * ga);
    var t = 1.0 / (abs(zeta) + sqrt(1.0 + zeta * zeta));
    if zeta < 0.0 {
        t = -t;
    }
    let c = 1.0 / sqrt(1.0 + t * t);
    return vec2<f32>(c, c * t);
}

// Rotates columns starting at p0 and q0 of a (rows first, first + step, ... below len).
fn rotate_a(p0: u32, q0: u32, len: u32, first: u32, step: u32, cs: vec2<f32>) {
    for (var i = first; i < len; i += step) {
        let x = a[p0 + i];
        let y = a[q0 + i];
        a[p0 + i] = cs.x * x - cs.y * y;
        a[q0 + i] = cs.y * x + cs.x * y;
    }
}

// The same rotation of two columns of v.
fn rotate_v(p0: u32, q0: u32, len: u32, first: u32, step: u32, cs: vec2<f32>) {
    for (var i = first; i < len; i += step) {
        let x = v[p0 + i];
        let y = v[q0 + i];
        v[p0 + i] = cs.x * x - cs.y * y;
        v[q0 + i] = cs.y * x + cs.x * y;
    }
}

@compute @workgroup_size(64)
fn jacobi_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let mat = wid.y;
    var live_pair = mat < p.batch;
    var d = vec4<u32>(0u, 0u, 0u, 0u);
    if live_pair {
        d = desc[mat];
        live_pair = live[mat] != 0u;
    }
    let m = d.x;
    let n = d.y;
    let np = n + (n & 1u);
    // Circle method: column np-1 stays put, the others turn by one each round.
    let r = p.round;
    var cp = 0u;
    var cq = 0u;
    if np >= 2u && r < np - 1u && wid.x < np / 2u {
        let k = np - 1u;
        if wid.x == 0u {
            cp = r;
            cq = k;
        } else {
            cp = (r + wid.x) % k;
            cq = (r + k - wid.x) % k;
        }
    } else {
        live_pair = false;
    }
    if cp > cq {
        let t = cp;
        cp = cq;
        cq = t;
    }
    if cq >= n {
        live_pair = false;
    }
    let ap = d.z + cp * m;
    let aq = d.z + cq * m;
    var al = 0.0;
    var be = 0.0;
    var ga = 0.0;
    if live_pair {
        for (var i = lid; i < m; i += WG) {
            let x = a[ap + i];
            let y = a[aq + i];
            al += x * x;
            be += y * y;
            ga += x * y;
        }
    }
    s_al[lid] = al;
    s_be[lid] = be;
    s_ga[lid] = ga;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if lid < k {
            s_al[lid] += s_al[lid + k];
            s_be[lid] += s_be[lid + k];
            s_ga[lid] += s_ga[lid + k];
        }
        workgroupBarrier();
    }
    al = s_al[0];
    be = s_be[0];
    ga = s_ga[0];
    // Rotate only when the pair is measurably non-orthogonal (relative to the column norms).
    if !live_pair || al <= 0.0 || be <= 0.0 || abs(ga) <= p.tol * sqrt(al) * sqrt(be) {
        return;
    }
    let cs = givens(al, be, ga);
    rotate_a(ap, aq, m, lid, WG, cs);
    rotate_v(d.w + cp * n, d.w + cq * n, n, lid, WG, cs);
    if lid == 0u {
        atomicAdd(&rotations[mat], 1u);
    }
}

// Rounds [p.round, p.round_end) of every matrix's sweep in one dispatch: workgroup x =
// matrix x, each thread orthogonalises whole pairs (dot products and rotations over all
// rows), with a barrier between rounds. Used when the batch has at least as many matrices as
// the GPU has cores to fill; jacobi_round spreads one round of a few large matrices instead.
struct RoundsParams {
    batch: u32,
    round: u32,
    tol: f32,
    round_end: u32,
}

@group(0) @binding(0) var<uniform> q: RoundsParams;

@compute @workgroup_size(256)
fn jacobi_rounds(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let mat = wid.x + wid.y * 65535u;
    var d = vec4<u32>(0u, 0u, 0u, 0u);
    var on = false;
    if mat < q.batch {
        d = desc[mat];
        on = live[mat] != 0u;
    }
    let m = d.x;
    let n = d.y;
    let np = n + (n & 1u);
    var rotated = 0u;
    for (var r = q.round; r < q.round_end; r++) {
        if on && np >= 2u && r < np - 1u {
            let k = np - 1u;
            for (var pair = lid; pair < np / 2u; pair += 256u) {
                var cp = r;
                var cq = k;
                if pair > 0u {
                    cp = (r + pair) % k;
                    cq = (r + k - pair) % k;
                }
                if cp > cq {
                    let t = cp;
                    cp = cq;
                    cq = t;
                }
                if cq >= n {
                    continue;
                }
                let ap = d.z + cp * m;
                let aq = d.z + cq * m;
                var al = 0.0;
                var be = 0.0;
                var ga = 0.0;
                for (var i = 0u; i < m; i++) {
                    let x = a[ap + i];
                    let y = a[aq + i];
                    al += x * x;
                    be += y * y;
                    ga += x * y;
                }
                if al <= 0.0 || be <= 0.0 || abs(ga) <= q.tol * sqrt(al) * sqrt(be) {
                    continue;
                }
                let cs = givens(al, be, ga);
                rotate_a(ap, aq, m, 0u, 1u, cs);
                rotate_v(d.w + cp * n, d.w + cq * n, n, 0u, 1u, cs);
                rotated += 1u;
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    if rotated > 0u {
        atomicAdd(&rotations[mat], rotated);
    }
}
