// The register-blocked GEMM of gemm.wgsl (this file is appended to it) for CPU adapters with
// subgroups: the LANES invocations of a workgroup share their rows, so each loads the A values
// of one k of every LANES and hands them to the others with subgroup broadcasts; A is then read
// once per LANES lanes instead of once per lane. Each invocation holds BLOCKS blocks of 8 x 4
// outputs, so each B vector it loads feeds 32 x BLOCKS FMAs. Needs a subgroup of at least
// LANES invocations (the caller checks the adapter's minimum subgroup size). Same products in
// the same order as matmul and matmul_blocked, so the same bits.
// Grid: x = column block of LANES * 4, y = row block of 8 * BLOCKS, z = batch item.

// Row blocks of 8 per invocation (1 to 4), chosen by M. A pipeline constant, so the unused
// blocks compile away.
override BLOCKS: u32 = 1u;

// Up to four 8 x 4 blocks stacked: rows row0 + 8 i .. row0 + 8 i + 8 in block i.
struct Rows {
    b0: Block, b1: Block, b2: Block, b3: Block,
}

// One k step of every used block, block i's 8 A values in (li, hi).
fn rows_fma(acc: Rows, l0: vec4<f32>, h0: vec4<f32>, l1: vec4<f32>, h1: vec4<f32>, l2: vec4<f32>,
            h2: vec4<f32>, l3: vec4<f32>, h3: vec4<f32>, bv: vec4<f32>) -> Rows {
    var r = acc;
    r.b0 = block_fma(r.b0, l0, h0, bv);
    if BLOCKS > 1u {
        r.b1 = block_fma(r.b1, l1, h1, bv);
    }
    if BLOCKS > 2u {
        r.b2 = block_fma(r.b2, l2, h2, bv);
    }
    if BLOCKS > 3u {
        r.b3 = block_fma(r.b3, l3, h3, bv);
    }
    return r;
}

// Eight k steps with B rows q0..q7, the A values of step t taken from lane t: broadcasts from
// constant lanes, which software adapters turn into register moves (a shuffle by a variable
// lane is a loop over lanes there).
fn eight_steps(acc: Rows, a0: array<vec4<f32>, 2>, a1: array<vec4<f32>, 2>, a2: array<vec4<f32>, 2>,
               a3: array<vec4<f32>, 2>, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>,
               q4: vec4<f32>, q5: vec4<f32>, q6: vec4<f32>, q7: vec4<f32>) -> Rows {
    var r = acc;
    r = rows_fma(r, subgroupBroadcast(a0[0], 0u), subgroupBroadcast(a0[1], 0u),
                 subgroupBroadcast(a1[0], 0u), subgroupBroadcast(a1[1], 0u),
                 subgroupBroadcast(a2[0], 0u), subgroupBroadcast(a2[1], 0u),
                 subgroupBroadcast(a3[0], 0u), subgroupBroadcast(a3[1], 0u),
                 q0);
    r = rows_fma(r, subgroupBroadcast(a0[0], 1u), subgroupBroadcast(a0[1], 1u),
                 subgroupBroadcast(a1[0], 1u), subgroupBroadcast(a1[1], 1u),
                 subgroupBroadcast(a2[0], 1u), subgroupBroadcast(a2[1], 1u),
                 subgroupBroadcast(a3[0], 1u), subgroupBroadcast(a3[1], 1u),
                 q1);
    r = rows_fma(r, subgroupBroadcast(a0[0], 2u), subgroupBroadcast(a0[1], 2u),
                 subgroupBroadcast(a1[0], 2u), subgroupBroadcast(a1[1], 2u),
                 subgroupBroadcast(a2[0], 2u), subgroupBroadcast(a2[1], 2u),
                 subgroupBroadcast(a3[0], 2u), subgroupBroadcast(a3[1], 2u),
                 q2);
    r = rows_fma(r, subgroupBroadcast(a0[0], 3u), subgroupBroadcast(a0[1], 3u),
                 subgroupBroadcast(a1[0], 3u), subgroupBroadcast(a1[1], 3u),
                 subgroupBroadcast(a2[0], 3u), subgroupBroadcast(a2[1], 3u),
                 subgroupBroadcast(a3[0], 3u), subgroupBroadcast(a3[1], 3u),
                 q3);
    r = rows_fma(r, subgroupBroadcast(a0[0], 4u), subgroupBroadcast(a0[1], 4u),
                 subgroupBroadcast(a1[0], 4u), subgroupBroadcast(a1[1], 4u),
                 subgroupBroadcast(a2[0], 4u), subgroupBroadcast(a2[1], 4u),
                 subgroupBroadcast(a3[0], 4u), subgroupBroadcast(a3[1], 4u),
                 q4);
    r = rows_fma(r, subgroupBroadcast(a0[0], 5u), subgroupBroadcast(a0[1], 5u),
                 subgroupBroadcast(a1[0], 5u), subgroupBroadcast(a1[1], 5u),
                 subgroupBroadcast(a2[0], 5u), subgroupBroadcast(a2[1], 5u),
                 subgroupBroadcast(a3[0], 5u), subgroupBroadcast(a3[1], 5u),
                 q5);
    r = rows_fma(r, subgroupBroadcast(a0[0], 6u), subgroupBroadcast(a0[1], 6u),
                 subgroupBroadcast(a1[0], 6u), subgroupBroadcast(a1[1], 6u),
                 subgroupBroadcast(a2[0], 6u), subgroupBroadcast(a2[1], 6u),
                 subgroupBroadcast(a3[0], 6u), subgroupBroadcast(a3[1], 6u),
                 q6);
    r = rows_fma(r, subgroupBroadcast(a0[0], 7u), subgroupBroadcast(a0[1], 7u),
                 subgroupBroadcast(a1[0], 7u), subgroupBroadcast(a1[1], 7u),
                 subgroupBroadcast(a2[0], 7u), subgroupBroadcast(a2[1], 7u),
                 subgroupBroadcast(a3[0], 7u), subgroupBroadcast(a3[1], 7u),
                 q7);
    return r;
}

// One k step past the last full eight, its A values taken from lane t (a variable lane: the
// tail runs fewer than LANES steps, so its cost is bounded).
fn lane_step(acc: Rows, a0: array<vec4<f32>, 2>, a1: array<vec4<f32>, 2>, a2: array<vec4<f32>, 2>,
             a3: array<vec4<f32>, 2>, t: u32, bv: vec4<f32>) -> Rows {
    return rows_fma(acc, subgroupShuffle(a0[0], t), subgroupShuffle(a0[1], t),
                    subgroupShuffle(a1[0], t), subgroupShuffle(a1[1], t),
                    subgroupShuffle(a2[0], t), subgroupShuffle(a2[1], t),
                    subgroupShuffle(a3[0], t), subgroupShuffle(a3[1], t), bv);
}

// The first row of this invocation's blocks, and the k range every lane covers in full steps.
fn first_row(wid: vec3<u32>) -> u32 {
    return wid.y * 8u * BLOCKS;
}

fn full_end() -> u32 {
    return p.k_begin + (p.k_end - p.k_begin) / LANES * LANES;
}

fn store_rows(wid: vec3<u32>, col0: u32, acc: Rows) {
    let c_base = p.c_skip + wid.z * p.c_stride;
    let row0 = first_row(wid);
    let eq = epi_encodings();
    store_block(c_base, row0, col0, acc.b0, eq);
    if BLOCKS > 1u {
        store_block(c_base, row0 + 8u, col0, acc.b1, eq);
    }
    if BLOCKS > 2u {
        store_block(c_base, row0 + 16u, col0, acc.b2, eq);
    }
    if BLOCKS > 3u {
        store_block(c_base, row0 + 24u, col0, acc.b3, eq);
    }
}

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = first_row(wid);
    let col0 = (wid.x * LANES + lid) * 4u;
    let cols = clamped_cols(col0);
    var acc: Rows;
    let full = full_end();
    for (var it = 0u; it < items(); it++) {
        let a_base = p.a_skip + (wid.z + it) * p.a_stride;
        let b_base = p.b_skip + (wid.z + it) * p.b_stride;
        for (var k0 = p.k_begin; k0 < full; k0 += LANES) {
            let kk = k0 + lane;
            acc = eight_steps(acc, a_col(a_base, clamped_rows(row0), kk),
                              a_col(a_base, clamped_rows(row0 + 8u), kk),
                              a_col(a_base, clamped_rows(row0 + 16u), kk),
                              a_col(a_base, clamped_rows(row0 + 24u), kk),
                              b_row(b_base, k0, cols), b_row(b_base, k0 + 1u, cols),
                              b_row(b_base, k0 + 2u, cols), b_row(b_base, k0 + 3u, cols),
                              b_row(b_base, k0 + 4u, cols), b_row(b_base, k0 + 5u, cols),
                              b_row(b_base, k0 + 6u, cols), b_row(b_base, k0 + 7u, cols));
        }
        if full < p.k_end {
            // This lane's k; past the end it loads a valid k whose products are never used.
            let kk = min(full + lane, p.k_end - 1u);
            let a0 = a_col(a_base, clamped_rows(row0), kk);
            let a1 = a_col(a_base, clamped_rows(row0 + 8u), kk);
            let a2 = a_col(a_base, clamped_rows(row0 + 16u), kk);
            let a3 = a_col(a_base, clamped_rows(row0 + 24u), kk);
            for (var t = 0u; t < p.k_end - full; t++) {
                acc = lane_step(acc, a0, a1, a2, a3, t, b_row(b_base, full + t, cols));
            }
        }
    }
    store_rows(wid, col0, acc);
}

@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// matmul_subgroup for B not transposed with N a multiple of 4: each lane reads its 4 columns
// of B with one vector load.
@compute @workgroup_size(8)
fn matmul_subgroup_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = first_row(wid);
    let col0 = (wid.x * LANES + lid) * 4u;
    let col4 = min(col0, p.n - 4u) / 4u;
    let n4 = p.n / 4u;
    var acc: Rows;
    let full = full_end();
    for (var it = 0u; it < items(); it++) {
        let a_base = p.a_skip + (wid.z + it) * p.a_stride;
        let b_base = (p.b_skip + (wid.z + it) * p.b_stride) / 4u;
        for (var k0 = p.k_begin; k0 < full; k0 += LANES) {
            let kk = k0 + lane;
            let at = b_base + k0 * n4 + col4;
            acc = eight_steps(acc, a_col(a_base, clamped_rows(row0), kk),
                              a_col(a_base, clamped_rows(row0 + 8u), kk),
                              a_col(a_base, clamped_rows(row0 + 16u), kk),
                              a_col(a_base, clamped_rows(row0 + 24u), kk),
                              b4[at], b4[at + n4], b4[at + 2u * n4], b4[at + 3u * n4],
                              b4[at + 4u * n4], b4[at + 5u * n4], b4[at + 6u * n4], b4[at + 7u * n4]);
        }
        if full < p.k_end {
            let kk = min(full + lane, p.k_end - 1u);
            let a0 = a_col(a_base, clamped_rows(row0), kk);
            let a1 = a_col(a_base, clamped_rows(row0 + 8u), kk);
            let a2 = a_col(a_base, clamped_rows(row0 + 16u), kk);
            let a3 = a_col(a_base, clamped_rows(row0 + 24u), kk);
            for (var t = 0u; t < p.k_end - full; t++) {
                acc = lane_step(acc, a0, a1, a2, a3, t, b4[b_base + (full + t) * n4 + col4]);
            }
        }
    }
    store_rows(wid, col0, acc);
}
