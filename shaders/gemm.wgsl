// Batched matrix multiply C[b] = alpha * op(A[b]) * op(B[b]) + bias, f32, tiled in workgroup
// memory. bias_mode: 0 none, 1 per column [N], 2 per row [M], 3 full [M, N].
// op(A) is M x K, op(B) is K x N. TRANS_A: A is stored K x M; TRANS_B: B is stored N x K.
// A batch stride of 0 broadcasts that operand across the batch.
// Tiles of TM x TN x TK (TM = 16 RM, TN = 16 RN: 16, 32 or 64 rows and columns 16 deep, chosen
// by shape; or 128 x 128 x 8 for large products); 256 threads, each computing an RM x RN block
// strided by 16: thread (x, y) owns rows y + 16 i and columns x + 16 j of the tile, so a warp
// reads consecutive columns of the B tile and stores consecutive columns of C.
// Grid: x = column tile, y = row tile, z = batch (within the bound chunk).
// One dispatch covers the inner dimension's range [k_begin, k_end): long reductions are split
// into dispatches (software adapters cut long loops short); after the first, `accumulate` adds
// to C instead of writing alpha * AB + bias. With `sum_items`, one invocation adds the products
// of that many batch items (each over the k range, item by item) into one C.
// CONV (the tiled kernel only): a convolution as an implicit GEMM. B is the input image
// [cin, h, w] of each batch item, read as its columns [cin * kh * kw, oh * ow] (the matrix
// im2col would copy out, zero in the padding) without storing them.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Rows and columns of the tiled kernel's block per thread: 1, 2 or 4 (8 for `matmul_wide`).
override RM: u32 = 4u;
override RN: u32 = 4u;
// The tiled kernel's tile depth: 16, or 8 for 128-wide tiles (both fit the same workgroup
// arrays, whose rows are TM + 1 or TN + 1 long).
override TK: u32 = 16u;
override CONV: bool = false;

// A convolution's geometry, for CONV.
struct Cols {
    cin: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    ow: u32,
}

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
    sum_items: u32, // > 0: C += the sum of this many items' products (z is 0, c_stride 0)
    _pad1: u32,
    cols: Cols,
    epi: Epi,       // the fused epilogue (epilogue.wgsl; its channel is the row)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override TM: u32 = 16u * RM;
override TN: u32 = 16u * RN;

// Rows of the shared tiles padded by one value: the loads below write a column of a tile
// (consecutive threads, consecutive k) for A stored M x K and B stored N x K, which at a row
// stride of 64 would put every thread of a warp on one memory bank.
override SA: u32 = TM + 1u;
override SB: u32 = TN + 1u;
var<workgroup> sa: array<f32, 1040>; // [TK][SA]: 16 x (64 + 1) or 8 x (128 + 1) at most
var<workgroup> sb: array<f32, 1040>; // [TK][SB]
// The next tile's values this thread loads (TM x TK and TN x TK are at most 1024 = 4 x 256).
var<private> ra: array<f32, 4>;
var<private> rb: array<f32, 4>;

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
    if CONV {
        return load_col(base, kk, col);
    }
    if TRANS_B {
        return b[base + col * p.k + kk];
    }
    return b[base + kk * p.n + col];
}

// Row kk = (ci * kh + ky) * kw + kx, column col = oy * ow + ox of the image's columns.
fn load_col(base: u32, kk: u32, col: u32) -> f32 {
    let g = p.cols;
    let kx = kk % g.kw;
    let ky = (kk / g.kw) % g.kh;
    let ci = kk / (g.kw * g.kh);
    let iy = i32((col / g.ow) * g.stride_h + ky * g.dil_h) - i32(g.pad_t);
    let ix = i32((col % g.ow) * g.stride_w + kx * g.dil_w) - i32(g.pad_l);
    if iy < 0 || ix < 0 || iy >= i32(g.h) || ix >= i32(g.w) {
        return 0.0;
    }
    return b[base + (ci * g.h + u32(iy)) * g.w + u32(ix)];
}

// Element e of the A tile: (row, k). Consecutive threads read consecutive addresses of the
// stored layout.
fn a_slot(e: u32) -> vec2<u32> {
    if TRANS_A {
        return vec2(e % TM, e / TM);
    }
    return vec2(e / TK, e % TK);
}

// Element e of the B tile: (k, column).
fn b_slot(e: u32) -> vec2<u32> {
    if TRANS_B {
        return vec2(e % TK, e / TK);
    }
    return vec2(e / TN, e % TN);
}

// Loads this thread's share of the tiles at depth k0 into registers. The four slots are
// written out, not looped over: llvmpipe's loop limiter counts every iteration of a loop nest
// (`LOOP_BUDGET`), and a loop here would double the iterations per k of 8-deep tiles.
fn fetch(a_base: u32, b_base: u32, row0: u32, col0: u32, k0: u32, lid: u32) {
    fetch_slot(0u, a_base, b_base, row0, col0, k0, lid);
    fetch_slot(1u, a_base, b_base, row0, col0, k0, lid);
    fetch_slot(2u, a_base, b_base, row0, col0, k0, lid);
    fetch_slot(3u, a_base, b_base, row0, col0, k0, lid);
}

fn fetch_slot(t: u32, a_base: u32, b_base: u32, row0: u32, col0: u32, k0: u32, lid: u32) {
    let e = lid + t * 256u;
    if e < TM * TK {
        let s = a_slot(e);
        ra[t] = load_a(a_base, row0 + s.x, k0 + s.y);
    }
    if e < TN * TK {
        let s = b_slot(e);
        rb[t] = load_b(b_base, k0 + s.x, col0 + s.y);
    }
}

// Writes the fetched values into the workgroup's tiles (slots written out as in `fetch`).
fn stage(lid: u32) {
    stage_slot(0u, lid);
    stage_slot(1u, lid);
    stage_slot(2u, lid);
    stage_slot(3u, lid);
}

fn stage_slot(t: u32, lid: u32) {
    let e = lid + t * 256u;
    if e < TM * TK {
        let s = a_slot(e);
        sa[s.y * SA + s.x] = ra[t];
    }
    if e < TN * TK {
        let s = b_slot(e);
        sb[s.x * SB + s.y] = rb[t];
    }
}

// Puts the fetched tile at k0 into workgroup memory (once every thread is done with the
// previous one), then issues the next tile's loads, which the FMAs on this one hide.
fn advance(a_base: u32, b_base: u32, row0: u32, col0: u32, k0: u32, lid: u32) {
    workgroupBarrier();
    stage(lid);
    workgroupBarrier();
    if k0 + TK < p.k_end {
        fetch(a_base, b_base, row0, col0, k0 + TK, lid);
    }
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let c_base = p.c_skip + wid.z * p.c_stride;
    var acc: array<f32, 16>;
    for (var it = 0u; it < items(); it++) {
        let a_base = p.a_skip + (wid.z + it) * p.a_stride;
        let b_base = p.b_skip + (wid.z + it) * p.b_stride;
        fetch(a_base, b_base, row0, col0, p.k_begin, lid);
        for (var k0 = p.k_begin; k0 < p.k_end; k0 += TK) {
            advance(a_base, b_base, row0, col0, k0, lid);
            for (var kk = 0u; kk < TK; kk++) {
                var av: array<f32, 4>;
                var bv: array<f32, 4>;
                for (var i = 0u; i < RM; i++) {
                    av[i] = sa[kk * SA + lid3.y + 16u * i];
                }
                for (var j = 0u; j < RN; j++) {
                    bv[j] = sb[kk * SB + lid3.x + 16u * j];
                }
                for (var i = 0u; i < RM; i++) {
                    for (var j = 0u; j < RN; j++) {
                        acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                    }
                }
            }
        }
    }
    let eq = epi_encodings();
    for (var i = 0u; i < RM; i++) {
        for (var j = 0u; j < RN; j++) {
            store(c_base, row0 + lid3.y + 16u * i, col0 + lid3.x + 16u * j, acc[i * 4u + j], eq);
        }
    }
}

// The tiled kernel with 128 x 128 x 8 tiles (RM = RN = 8, TK = 8): `matmul` with its 8 x 8
// block's products written out on vectors. The loops `matmul` runs over RM and RN are not
// unrolled at 8 on llvmpipe, whose loop limiter (`LOOP_BUDGET`) counts their iterations too.
// acc[2 i] holds columns x + 16 j of row y + 16 i for j = 0..3, acc[2 i + 1] for j = 4..7.
@compute @workgroup_size(16, 16)
fn matmul_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let c_base = p.c_skip + wid.z * p.c_stride;
    var acc: array<vec4<f32>, 16>;
    for (var it = 0u; it < items(); it++) {
        let a_base = p.a_skip + (wid.z + it) * p.a_stride;
        let b_base = p.b_skip + (wid.z + it) * p.b_stride;
        fetch(a_base, b_base, row0, col0, p.k_begin, lid);
        for (var k0 = p.k_begin; k0 < p.k_end; k0 += TK) {
            advance(a_base, b_base, row0, col0, k0, lid);
            for (var kk = 0u; kk < TK; kk++) {
                let ar = kk * SA + lid3.y;
                let br = kk * SB + lid3.x;
                let a0 = vec4(sa[ar], sa[ar + 16u], sa[ar + 32u], sa[ar + 48u]);
                let a1 = vec4(sa[ar + 64u], sa[ar + 80u], sa[ar + 96u], sa[ar + 112u]);
                let b0 = vec4(sb[br], sb[br + 16u], sb[br + 32u], sb[br + 48u]);
                let b1 = vec4(sb[br + 64u], sb[br + 80u], sb[br + 96u], sb[br + 112u]);
                acc[0] = fma(vec4(a0.x), b0, acc[0]);
                acc[1] = fma(vec4(a0.x), b1, acc[1]);
                acc[2] = fma(vec4(a0.y), b0, acc[2]);
                acc[3] = fma(vec4(a0.y), b1, acc[3]);
                acc[4] = fma(vec4(a0.z), b0, acc[4]);
                acc[5] = fma(vec4(a0.z), b1, acc[5]);
                acc[6] = fma(vec4(a0.w), b0, acc[6]);
                acc[7] = fma(vec4(a0.w), b1, acc[7]);
                acc[8] = fma(vec4(a1.x), b0, acc[8]);
                acc[9] = fma(vec4(a1.x), b1, acc[9]);
                acc[10] = fma(vec4(a1.y), b0, acc[10]);
                acc[11] = fma(vec4(a1.y), b1, acc[11]);
                acc[12] = fma(vec4(a1.z), b0, acc[12]);
                acc[13] = fma(vec4(a1.z), b1, acc[13]);
                acc[14] = fma(vec4(a1.w), b0, acc[14]);
                acc[15] = fma(vec4(a1.w), b1, acc[15]);
            }
        }
    }
    let eq = epi_encodings();
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + lid3.y + 16u * i;
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * i + h];
            let col = col0 + lid3.x + 64u * h;
            store(c_base, row, col, v.x, eq);
            store(c_base, row, col + 16u, v.y, eq);
            store(c_base, row, col + 32u, v.z, eq);
            store(c_base, row, col + 48u, v.w, eq);
        }
    }
}

// Batch items whose products one invocation adds (1 unless `sum_items`).
fn items() -> u32 {
    return max(p.sum_items, 1u);
}

// Writes alpha * v (+ bias, or + the C of an earlier k range), then the epilogue, at (row,
// col) when in range.
fn store(c_base: u32, row: u32, col: u32, acc: f32, eq: EpiQ) {
    if row >= p.m || col >= p.n {
        return;
    }
    var v = p.alpha * acc;
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
    let at = c_base + row * p.n + col;
    c[at] = epilogue(v, at, row, p.epi, eq);
}

// Register-blocked form for CPU adapters (llvmpipe, WARP, SwiftShader), where every storage or
// workgroup-memory load is a per-lane scalar loop and a barrier switches coroutines: no
// workgroup memory, no barrier, and 8 x 4 outputs per invocation held in named vectors (private
// arrays indexed in loops would live in memory there), so each loaded value feeds 4 or 8 FMAs.
// Row and column indices are clamped so that every load is in range; `store` drops the
// clamped duplicates. Each output adds its products in k order with fma from 0, as `matmul`
// does, so both give the same bits.
// Grid: x = column block of LANES * 4 (LANES * 8 for matmul_blocked), y = row block of 8, z =
// batch item.
const LANES: u32 = 8u;

fn a_at(base: u32, row: u32, kk: u32) -> f32 {
    if TRANS_A {
        return a[base + kk * p.m + row];
    }
    return a[base + row * p.k + kk];
}

fn b_at(base: u32, kk: u32, col: u32) -> f32 {
    if TRANS_B {
        return b[base + col * p.k + kk];
    }
    return b[base + kk * p.n + col];
}

// Rows row0..row0 + 8 of op(A) at kk, clamped into range, as two vectors.
fn a_col(base: u32, r: array<u32, 8>, kk: u32) -> array<vec4<f32>, 2> {
    return array(
        vec4(a_at(base, r[0], kk), a_at(base, r[1], kk), a_at(base, r[2], kk), a_at(base, r[3], kk)),
        vec4(a_at(base, r[4], kk), a_at(base, r[5], kk), a_at(base, r[6], kk), a_at(base, r[7], kk)),
    );
}

fn b_row(base: u32, kk: u32, c: vec4<u32>) -> vec4<f32> {
    return vec4(b_at(base, kk, c.x), b_at(base, kk, c.y), b_at(base, kk, c.z), b_at(base, kk, c.w));
}

fn clamped_rows(row0: u32) -> array<u32, 8> {
    let top = p.m - 1u;
    return array(min(row0, top), min(row0 + 1u, top), min(row0 + 2u, top), min(row0 + 3u, top),
                 min(row0 + 4u, top), min(row0 + 5u, top), min(row0 + 6u, top), min(row0 + 7u, top));
}

fn clamped_cols(col0: u32) -> vec4<u32> {
    return min(vec4(col0) + vec4(0u, 1u, 2u, 3u), vec4(p.n - 1u));
}

fn store_row(c_base: u32, row: u32, col0: u32, v: vec4<f32>, eq: EpiQ) {
    store(c_base, row, col0, v.x, eq);
    store(c_base, row, col0 + 1u, v.y, eq);
    store(c_base, row, col0 + 2u, v.z, eq);
    store(c_base, row, col0 + 3u, v.w, eq);
}

// The 8 x 4 block's accumulators, one vector per row.
struct Block {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
}

fn block_fma(acc: Block, lo: vec4<f32>, hi: vec4<f32>, bv: vec4<f32>) -> Block {
    return Block(fma(vec4(lo.x), bv, acc.r0), fma(vec4(lo.y), bv, acc.r1),
                 fma(vec4(lo.z), bv, acc.r2), fma(vec4(lo.w), bv, acc.r3),
                 fma(vec4(hi.x), bv, acc.r4), fma(vec4(hi.y), bv, acc.r5),
                 fma(vec4(hi.z), bv, acc.r6), fma(vec4(hi.w), bv, acc.r7));
}

fn store_block(c_base: u32, row0: u32, col0: u32, acc: Block, eq: EpiQ) {
    store_row(c_base, row0, col0, acc.r0, eq);
    store_row(c_base, row0 + 1u, col0, acc.r1, eq);
    store_row(c_base, row0 + 2u, col0, acc.r2, eq);
    store_row(c_base, row0 + 3u, col0, acc.r3, eq);
    store_row(c_base, row0 + 4u, col0, acc.r4, eq);
    store_row(c_base, row0 + 5u, col0, acc.r5, eq);
    store_row(c_base, row0 + 6u, col0, acc.r6, eq);
    store_row(c_base, row0 + 7u, col0, acc.r7, eq);
}

// matmul_blocked holds two 8 x 4 blocks side by side (8 x 8 outputs): each A column it loads
// feeds 64 FMAs, each B row 8.
@compute @workgroup_size(8)
fn matmul_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wid.y * 8u;
    let col0 = (wid.x * LANES + lid) * 8u;
    let rows = clamped_rows(row0);
    let left = clamped_cols(col0);
    let right = clamped_cols(col0 + 4u);
    var l: Block;
    var r: Block;
    for (var it = 0u; it < items(); it++) {
        let a_base = p.a_skip + (wid.z + it) * p.a_stride;
        let b_base = p.b_skip + (wid.z + it) * p.b_stride;
        for (var kk = p.k_begin; kk < p.k_end; kk++) {
            let av = a_col(a_base, rows, kk);
            l = block_fma(l, av[0], av[1], b_row(b_base, kk, left));
            r = block_fma(r, av[0], av[1], b_row(b_base, kk, right));
        }
    }
    let c_base = p.c_skip + wid.z * p.c_stride;
    let eq = epi_encodings();
    store_block(c_base, row0, col0, l, eq);
    store_block(c_base, row0, col0 + 4u, r, eq);
}
