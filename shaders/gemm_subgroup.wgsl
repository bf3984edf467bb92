// The register-blocked GEMM of gemm.wgsl (this file is appended to it) for CPU adapters with
// subgroups: the LANES invocations of a workgroup share one row block, so each loads the A
// values of one k of every LANES and hands them to the others with a subgroup shuffle; A is
// then read once per LANES lanes instead of once per lane. Needs a subgroup of at least LANES
// invocations (the caller checks the adapter's minimum subgroup size). Same products in the
// same order as matmul and matmul_blocked, so the same bits.

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = wid.y * 8u;
    let col0 = (wid.x * LANES + lid) * 4u;
    let a_base = p.a_skip + wid.z * p.a_stride;
    let b_base = p.b_skip + wid.z * p.b_stride;
    let rows = clamped_rows(row0);
    let cols = clamped_cols(col0);
    var acc: Block;
    for (var k0 = p.k_begin; k0 < p.k_end; k0 += LANES) {
        // This lane's k; past the end it loads a valid k whose products are never used.
        let mine = a_col(a_base, rows, min(k0 + lane, p.k_end - 1u));
        let steps = min(LANES, p.k_end - k0);
        for (var t = 0u; t < LANES; t++) {
            let lo = subgroupShuffle(mine[0], t);
            let hi = subgroupShuffle(mine[1], t);
            if t < steps {
                acc = block_fma(acc, lo, hi, b_row(b_base, k0 + t, cols));
            }
        }
    }
    store_block(p.c_skip + wid.z * p.c_stride, row0, col0, acc);
}

@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// Eight k steps from k (B rows at b4[at], b4[at + n4], ...), each lane's A values taken from
// the lane that loaded them; broadcasts from constant lanes, which software adapters turn into
// register moves (a shuffle by a variable lane is a loop over lanes there).
fn eight_steps(acc: Block, mine: array<vec4<f32>, 2>, at: u32, n4: u32) -> Block {
    var r = acc;
    r = block_fma(r, subgroupBroadcast(mine[0], 0u), subgroupBroadcast(mine[1], 0u), b4[at]);
    r = block_fma(r, subgroupBroadcast(mine[0], 1u), subgroupBroadcast(mine[1], 1u), b4[at + n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 2u), subgroupBroadcast(mine[1], 2u), b4[at + 2u * n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 3u), subgroupBroadcast(mine[1], 3u), b4[at + 3u * n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 4u), subgroupBroadcast(mine[1], 4u), b4[at + 4u * n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 5u), subgroupBroadcast(mine[1], 5u), b4[at + 5u * n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 6u), subgroupBroadcast(mine[1], 6u), b4[at + 6u * n4]);
    r = block_fma(r, subgroupBroadcast(mine[0], 7u), subgroupBroadcast(mine[1], 7u), b4[at + 7u * n4]);
    return r;
}

// matmul_subgroup for B not transposed with N a multiple of 4: each lane reads its 4 columns
// of B with one vector load.
@compute @workgroup_size(8)
fn matmul_subgroup_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = wid.y * 8u;
    let col0 = (wid.x * LANES + lid) * 4u;
    let a_base = p.a_skip + wid.z * p.a_stride;
    let b_base = (p.b_skip + wid.z * p.b_stride) / 4u;
    let rows = clamped_rows(row0);
    let col4 = min(col0, p.n - 4u) / 4u;
    let n4 = p.n / 4u;
    var acc: Block;
    let full = p.k_begin + (p.k_end - p.k_begin) / LANES * LANES;
    for (var k0 = p.k_begin; k0 < full; k0 += LANES) {
        let mine = a_col(a_base, rows, k0 + lane);
        acc = eight_steps(acc, mine, b_base + k0 * n4 + col4, n4);
    }
    if full < p.k_end {
        let mine = a_col(a_base, rows, min(full + lane, p.k_end - 1u));
        for (var t = 0u; t < p.k_end - full; t++) {
            let lo = subgroupShuffle(mine[0], t);
            let hi = subgroupShuffle(mine[1], t);
            acc = block_fma(acc, lo, hi, b4[b_base + (full + t) * n4 + col4]);
        }
    }
    store_block(p.c_skip + wid.z * p.c_stride, row0, col0, acc);
}
