// Batched matrix multiply C[b] = alpha * op(A[b]) * op(B[b]) + bias, f32, tiled in workgroup
// memory. bias_mode: 0 none, 1 per column [N], 2 per row [M], 3 full [M, N].
// op(A) is M x K, op(B) is K x N. TRANS_A: A is stored K x M; TRANS_B: B is stored N x K.
// A batch stride of 0 broadcasts that operand across the batch.
// Tile 64 x 64 x 16; 256 threads, each computing a 4 x 4 block.
// Grid: x = column tile, y = row tile, z = batch (within the bound chunk).
// One dispatch covers the inner dimension's range [k_begin, k_end): long reductions are split
// into dispatches (software adapters cut long loops short); after the first, `accumulate` adds
// to C instead of writing alpha * AB + bias.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_stride: u32,  // elements between batch items of A (0 = shared)
    b_stride: u32,
    c_stride: u32,
    a_skip: u32,    // element offset of batch item 0 within the bound ranges
    b_skip: u32,
    c_skip: u32,
    bias_mode: u32,
    alpha: f32,
    k_begin: u32,
    k_end: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> sa: array<f32, 1024>; // [TK][TM]
var<workgroup> sb: array<f32, 1024>; // [TK][TN]

fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if row >= p.m || kk >= p.k {
        return 0.0;
    }
    if TRANS_A {
        return a[base + kk * p.m + row];
    }
    return a[base + row * p.k + kk];
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if kk >= p.k || col >= p.n {
        return 0.0;
    }
    if TRANS_B {
        return b[base + col * p.k + kk];
    }
    return b[base + kk * p.n + col];
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let a_base = p.a_skip + wid.z * p.a_stride;
    let b_base = p.b_skip + wid.z * p.b_stride;
    let c_base = p.c_skip + wid.z * p.c_stride;
    var acc: array<f32, 16>;
    for (var k0 = p.k_begin; k0 < p.k_end; k0 += TK) {
        for (var t = 0u; t < 4u; t++) {
            let e = lid + t * 256u;
            // Consecutive threads read consecutive addresses of the stored layout.
            var ar: u32;
            var ak: u32;
            if TRANS_A {
                ak = e / TM;
                ar = e % TM;
            } else {
                ar = e / TK;
                ak = e % TK;
            }
            sa[ak * TM + ar] = load_a(a_base, row0 + ar, k0 + ak);
            var bk: u32;
            var bc: u32;
            if TRANS_B {
                bc = e / TK;
                bk = e % TK;
            } else {
                bk = e / TN;
                bc = e % TN;
            }
            sb[bk * TN + bc] = load_b(b_base, k0 + bk, col0 + bc);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = sa[kk * TM + lid3.y * 4u + i];
                bv[i] = sb[kk * TN + lid3.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid3.y * 4u + i;
        if row >= p.m {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid3.x * 4u + j;
            if col < p.n {
                var v = p.alpha * acc[i * 4u + j];
                if p.accumulate != 0u {
                    v += c[c_base + row * p.n + col];
                } else {
                    switch p.bias_mode {
                        case 1u: { v += bias[col]; }
                        case 2u: { v += bias[row]; }
                        case 3u: { v += bias[row * p.n + col]; }
                        default: {}
                    }
                }
                c[c_base + row * p.n + col] = v;
            }
        }
    }
}
