// Depthwise 3x3 kernels for CPU adapters (appended to conv.wgsl: its Params and bindings).

// Depthwise 3x3 convolution (one input channel per output channel, dilation 1, horizontal
// stride 1 or 2) for CPU adapters, where every storage load is a per-lane loop: each
// invocation computes a block of DW_ROWS x 8 outputs of one channel. It loads the 3 x 3
// weights once and each input row segment the block needs once (10 values at stride 1, 17 at
// stride 2), forms the shifted windows by swizzles, and adds the segment into every output row
// whose kernel covers it. `depthwise3x3_vec4` (rows a multiple of 4 values, left pad 1) loads
// the segments as 4 or 5 aligned vectors. Out-of-range inputs read as 0. Same products, in the
// same (ky, kx) order with fma from 0, as conv2d: padded taps add fma(0, w, acc) = acc.
// Grid: x = groups of 64 invocations over channels * ceil(oh / DW_ROWS) * ceil(ow / 8)
// (channels flattened in, so that small maps fill the workgroups), y = 1, z = batch item.

const DW_ROWS: u32 = 4u;

@group(0) @binding(1) var<storage, read> xv: array<vec4<f32>>;  // depthwise3x3_vec4's x

/// The 4 values from x's vector `q` of row `iy` (0 outside the image).
fn xv_at(base4: u32, iy: i32, q: i32) -> vec4<f32> {
    let w4 = i32(p.w / 4u);
    let inside = iy >= 0 && iy < i32(p.h) && q >= 0 && q < w4;
    let cy = u32(clamp(iy, 0, i32(p.h) - 1));
    let cq = u32(clamp(q, 0, w4 - 1));
    return select(vec4(0.0), xv[base4 + cy * u32(w4) + cq], inside);
}

/// What 8 adjacent outputs read from one input row under each kernel column kx: outputs 0-3
/// in `a[kx]`, 4-7 in `b[kx]`.
struct DwWindow {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
}

/// The window from the 10 inputs ix0..ix0+9 of a row (stride 1) in a, b and e.
fn dw_window1(a: vec4<f32>, b: vec4<f32>, e: vec2<f32>) -> DwWindow {
    return DwWindow(a, vec4(a.yzw, b.x), vec4(a.zw, b.xy), b, vec4(b.yzw, e.x), vec4(b.zw, e));
}

/// The window from the 17 inputs ix0..ix0+16 of a row (stride 2): even ones in e0, e1, odd
/// ones in o0, o1, and the last.
fn dw_window2(e0: vec4<f32>, o0: vec4<f32>, e1: vec4<f32>, o1: vec4<f32>, last: f32) -> DwWindow {
    return DwWindow(e0, o0, vec4(e0.yzw, e1.x), e1, o1, vec4(e1.yzw, last));
}

fn dw_window(base: u32, iy: i32, ix0: i32) -> DwWindow {
    if p.stride_w == 1u {
        return dw_window1(x4(base, iy, ix0, 1), x4(base, iy, ix0 + 4, 1),
                          vec2(x_at(base, iy, ix0 + 8), x_at(base, iy, ix0 + 9)));
    }
    return dw_window2(x4(base, iy, ix0, 2), x4(base, iy, ix0 + 1, 2), x4(base, iy, ix0 + 8, 2),
                      x4(base, iy, ix0 + 9, 2), x_at(base, iy, ix0 + 16));
}

/// `dw_window` from aligned vectors: ix0 = ox0 * stride - 1 with ox0 a multiple of 8, so the
/// segment starts at the last value of vector q - 1.
fn dw_window_vec4(base4: u32, iy: i32, ox0: u32) -> DwWindow {
    let q = i32(ox0 * p.stride_w / 4u);
    let v0 = xv_at(base4, iy, q - 1);
    let v1 = xv_at(base4, iy, q);
    let v2 = xv_at(base4, iy, q + 1);
    let v3 = xv_at(base4, iy, q + 2);
    if p.stride_w == 1u {
        return dw_window1(vec4(v0.w, v1.xyz), vec4(v1.w, v2.xyz), vec2(v2.w, v3.x));
    }
    let v4 = xv_at(base4, iy, q + 3);
    return dw_window2(vec4(v0.w, v1.y, v1.w, v2.y), vec4(v1.xz, v2.xz),
                      vec4(v2.w, v3.y, v3.w, v4.y), vec4(v3.xz, v4.xz), v4.w);
}

/// One output row's 8 accumulators: outputs 0-3 in lo, 4-7 in hi.
struct DwPair {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

/// One block's accumulators, row r in r<r>.
struct DwAcc {
    r0: DwPair,
    r1: DwPair,
    r2: DwPair,
    r3: DwPair,
}

/// `acc` plus kernel row `ky` (weights `k`) over window `v`, if ky is a row of the kernel
/// (`ky` is the same for every invocation).
fn dw_tap(acc: DwPair, v: DwWindow, ky: i32, k: array<vec3<f32>, 3>) -> DwPair {
    if ky < 0 || ky > 2 {
        return acc;
    }
    let w = select(select(k[2], k[1], ky == 1), k[0], ky == 0);
    var lo = fma(vec4(w.x), v.a0, acc.lo);
    lo = fma(vec4(w.y), v.a1, lo);
    lo = fma(vec4(w.z), v.a2, lo);
    var hi = fma(vec4(w.x), v.b0, acc.hi);
    hi = fma(vec4(w.y), v.b1, hi);
    hi = fma(vec4(w.z), v.b2, hi);
    return DwPair(lo, hi);
}

/// `acc` plus input row j of the block (rows come in increasing order, so each output's kernel
/// rows come in order) in the output rows that read it.
fn dw_row(acc: DwAcc, v: DwWindow, j: u32, k: array<vec3<f32>, 3>) -> DwAcc {
    let s = i32(p.stride_h);
    return DwAcc(dw_tap(acc.r0, v, i32(j), k), dw_tap(acc.r1, v, i32(j) - s, k),
                 dw_tap(acc.r2, v, i32(j) - 2 * s, k), dw_tap(acc.r3, v, i32(j) - 3 * s, k));
}

fn dw_store_row(r: DwPair, n: u32, c: u32, oy: u32, ox0: u32, eq: EpiQ) {
    if oy >= p.oh {
        return;
    }
    let out = array(r.lo, r.hi);
    for (var j = 0u; j < 8u; j++) {
        let ox = ox0 + j;
        if ox < p.ow {
            let at = ((n * p.cout + c) * p.oh + oy) * p.ow + ox;
            var v = out[j / 4u][j % 4u];
            if p.accumulate != 0u {
                v += y[at];
            } else if p.has_bias != 0u {
                v += bias[c];
            }
            y[at] = epilogue(v, at, c, p.epi, eq);
        }
    }
}

/// Blocks of DW_ROWS x 8 outputs per channel.
fn dw_blocks() -> u32 {
    return ((p.oh + DW_ROWS - 1u) / DW_ROWS) * ((p.ow + 7u) / 8u);
}

/// Input rows a block reads.
fn dw_rows_in() -> u32 {
    return (DW_ROWS - 1u) * p.stride_h + 3u;
}

/// The block of invocation `item` of batch item n: (channel, first output row, first column).
fn dw_block(item: u32) -> vec3<u32> {
    let strips = (p.ow + 7u) / 8u;
    let bands = (p.oh + DW_ROWS - 1u) / DW_ROWS;
    return vec3(item / (bands * strips), item / strips % bands * DW_ROWS, item % strips * 8u);
}

fn dw_weights(c: u32) -> array<vec3<f32>, 3> {
    return array(vec3(wt[c * 9u], wt[c * 9u + 1u], wt[c * 9u + 2u]),
                 vec3(wt[c * 9u + 3u], wt[c * 9u + 4u], wt[c * 9u + 5u]),
                 vec3(wt[c * 9u + 6u], wt[c * 9u + 7u], wt[c * 9u + 8u]));
}

fn dw_store(acc: DwAcc, n: u32, c: u32, oy0: u32, ox0: u32) {
    let eq = epi_encodings();
    dw_store_row(acc.r0, n, c, oy0, ox0, eq);
    dw_store_row(acc.r1, n, c, oy0 + 1u, ox0, eq);
    dw_store_row(acc.r2, n, c, oy0 + 2u, ox0, eq);
    dw_store_row(acc.r3, n, c, oy0 + 3u, ox0, eq);
}

@compute @workgroup_size(64)
fn depthwise3x3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item = wid.x * 64u + lid;
    if item >= p.cout * dw_blocks() {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base = (n * p.cin + blk.x) * p.h * p.w;
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(blk.z * p.stride_w) - i32(p.pad_l);
    let k = dw_weights(blk.x);
    var acc: DwAcc;
    for (var j = 0u; j < dw_rows_in(); j++) {
        acc = dw_row(acc, dw_window(base, iy0 + i32(j), ix0), j, k);
    }
    dw_store(acc, n, blk.x, blk.y, blk.z);
}

@compute @workgroup_size(64)
fn depthwise3x3_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let item = wid.x * 64u + lid;
    if item >= p.cout * dw_blocks() {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base4 = (n * p.cin + blk.x) * p.h * p.w / 4u;
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    let k = dw_weights(blk.x);
    var acc: DwAcc;
    for (var j = 0u; j < dw_rows_in(); j++) {
        acc = dw_row(acc, dw_window_vec4(base4, iy0 + i32(j), blk.z), j, k);
    }
    dw_store(acc, n, blk.x, blk.y, blk.z);
}

// The weight gradient of the same convolutions, in partial sums: each invocation takes one
// block of DW_ROWS x 8 outputs as above, reads their output gradients once and each input row
// segment once, and writes the 9 taps' sums over the block, sum(dy * x), to
// part[((n * blocks + block) * cout + c) * 9 + ky * 3 + kx]; the sum over batch and blocks
// follows (grad.rs). Outputs past the map's edges read dy = 0. `depthwise3x3_wgrad_vec4`
// loads x as depthwise3x3_vec4 does and dy as vectors of 4 (ow a multiple of 4).
// Grid: as depthwise3x3.

@group(0) @binding(2) var<storage, read> dy: array<f32>;        // [n, cout, oh, ow]
@group(0) @binding(2) var<storage, read> dyv: array<vec4<f32>>; // the same, as vectors
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

/// One block's 9 tap sums, kernel row ky in t<ky>.
struct DwTaps {
    t0: vec3<f32>,
    t1: vec3<f32>,
    t2: vec3<f32>,
}

/// `g` plus one output row's products with window `v` under kernel row ky (if ky is one).
fn dw_wtap(g: DwTaps, v: DwWindow, d: DwPair, ky: i32) -> DwTaps {
    if ky < 0 || ky > 2 {
        return g;
    }
    let s = vec3(dot(d.lo, v.a0) + dot(d.hi, v.b0), dot(d.lo, v.a1) + dot(d.hi, v.b1),
                 dot(d.lo, v.a2) + dot(d.hi, v.b2));
    return DwTaps(g.t0 + select(vec3(0.0), s, ky == 0), g.t1 + select(vec3(0.0), s, ky == 1),
                  g.t2 + select(vec3(0.0), s, ky == 2));
}

/// `g` plus input row j of the block under every output row that reads it.
fn dw_wrow(g: DwTaps, v: DwWindow, j: u32, d: DwAcc) -> DwTaps {
    let s = i32(p.stride_h);
    var t = dw_wtap(g, v, d.r0, i32(j));
    t = dw_wtap(t, v, d.r1, i32(j) - s);
    t = dw_wtap(t, v, d.r2, i32(j) - 2 * s);
    return dw_wtap(t, v, d.r3, i32(j) - 3 * s);
}

fn dy_at(plane: u32, oy: u32, ox: u32) -> f32 {
    let inside = oy < p.oh && ox < p.ow;
    return select(0.0, dy[plane + min(oy, p.oh - 1u) * p.ow + min(ox, p.ow - 1u)], inside);
}

fn dy_row(plane: u32, oy: u32, ox0: u32) -> DwPair {
    return DwPair(vec4(dy_at(plane, oy, ox0), dy_at(plane, oy, ox0 + 1u), dy_at(plane, oy, ox0 + 2u),
                       dy_at(plane, oy, ox0 + 3u)),
                  vec4(dy_at(plane, oy, ox0 + 4u), dy_at(plane, oy, ox0 + 5u), dy_at(plane, oy, ox0 + 6u),
                       dy_at(plane, oy, ox0 + 7u)));
}

fn dyv_at(plane4: u32, oy: u32, q: u32) -> vec4<f32> {
    let ow4 = p.ow / 4u;
    let inside = oy < p.oh && q < ow4;
    return select(vec4(0.0), dyv[plane4 + min(oy, p.oh - 1u) * ow4 + min(q, ow4 - 1u)], inside);
}

fn dyv_row(plane4: u32, oy: u32, ox0: u32) -> DwPair {
    return DwPair(dyv_at(plane4, oy, ox0 / 4u), dyv_at(plane4, oy, ox0 / 4u + 1u));
}

fn dw_write_taps(g: DwTaps, item: u32, n: u32, c: u32) {
    let at = ((n * dw_blocks() + item % dw_blocks()) * p.cout + c) * 9u;
    part[at] = g.t0.x;
    part[at + 1u] = g.t0.y;
    part[at + 2u] = g.t0.z;
    part[at + 3u] = g.t1.x;
    part[at + 4u] = g.t1.y;
    part[at + 5u] = g.t1.z;
    part[at + 6u] = g.t2.x;
    part[at + 7u] = g.t2.y;
    part[at + 8u] = g.t2.z;
}

@compute @workgroup_size(64)
fn depthwise3x3_wgrad(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let item = wid.x * 64u + lid;
    if item >= p.cout * dw_blocks() {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base = (n * p.cin + blk.x) * p.h * p.w;
    let plane = (n * p.cout + blk.x) * p.oh * p.ow;
    let d = DwAcc(dy_row(plane, blk.y, blk.z), dy_row(plane, blk.y + 1u, blk.z),
                  dy_row(plane, blk.y + 2u, blk.z), dy_row(plane, blk.y + 3u, blk.z));
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(blk.z * p.stride_w) - i32(p.pad_l);
    var g: DwTaps;
    for (var j = 0u; j < dw_rows_in(); j++) {
        g = dw_wrow(g, dw_window(base, iy0 + i32(j), ix0), j, d);
    }
    dw_write_taps(g, item, n, blk.x);
}

@compute @workgroup_size(64)
fn depthwise3x3_wgrad_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let item = wid.x * 64u + lid;
    if item >= p.cout * dw_blocks() {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base4 = (n * p.cin + blk.x) * p.h * p.w / 4u;
    let plane4 = (n * p.cout + blk.x) * p.oh * p.ow / 4u;
    let d = DwAcc(dyv_row(plane4, blk.y, blk.z), dyv_row(plane4, blk.y + 1u, blk.z),
                  dyv_row(plane4, blk.y + 2u, blk.z), dyv_row(plane4, blk.y + 3u, blk.z));
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    var g: DwTaps;
    for (var j = 0u; j < dw_rows_in(); j++) {
        g = dw_wrow(g, dw_window_vec4(base4, iy0 + i32(j), blk.z), j, d);
    }
    dw_write_taps(g, item, n, blk.x);
}

// Depthwise convolution for GPUs (one input channel per output channel, any kernel, stride,
// dilation and pads whose input patch fits DW_PATCH): each workgroup computes a 16 x 16 tile of
// one channel's outputs from the input patch it covers (the tile's receptive field, halo
// included), loaded once into workgroup memory by the whole workgroup, so each input value is
// read from storage once per tile instead of once per tap. Each output adds its taps in conv2d's
// (ky, kx) order with fma from 0 and skips the padded ones as conv2d does, so both give the same
// bits. Grid: x = output tiles of the map (row-major), y = channel, z = batch item.

const DW_TILE: u32 = 16u;
const DW_PATCH: u32 = 2304u; // 48 x 48 values: 9 KiB
var<workgroup> dw_patch: array<f32, 2304>;

@compute @workgroup_size(16, 16)
fn depthwise_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_id) lid3: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let tiles_x = (p.ow + DW_TILE - 1u) / DW_TILE;
    let oy0 = wid.x / tiles_x * DW_TILE;
    let ox0 = wid.x % tiles_x * DW_TILE;
    let c = wid.y;
    let n = wid.z;
    // The patch: rows iy0 .. iy0 + ph, columns ix0 .. ix0 + pw of the channel's image.
    let iy0 = i32(oy0 * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(ox0 * p.stride_w) - i32(p.pad_l);
    let ph = (DW_TILE - 1u) * p.stride_h + (p.kh - 1u) * p.dil_h + 1u;
    let pw = (DW_TILE - 1u) * p.stride_w + (p.kw - 1u) * p.dil_w + 1u;
    let base = (n * p.cin + c) * p.h * p.w;
    for (var e = lid; e < ph * pw; e += 256u) {
        dw_patch[e] = x_at(base, iy0 + i32(e / pw), ix0 + i32(e % pw));
    }
    workgroupBarrier();
    let oy = oy0 + lid3.y;
    let ox = ox0 + lid3.x;
    if oy >= p.oh || ox >= p.ow {
        return;
    }
    var acc = 0.0;
    let ty0 = lid3.y * p.stride_h;
    let tx0 = lid3.x * p.stride_w;
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = ty0 + ky * p.dil_h;
        let iy = iy0 + i32(ty);
        if iy < 0 || iy >= i32(p.h) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let tx = tx0 + kx * p.dil_w;
            let ix = ix0 + i32(tx);
            if ix < 0 || ix >= i32(p.w) {
                continue;
            }
            acc = fma(dw_patch[ty * pw + tx], wt[(c * p.kh + ky) * p.kw + kx], acc);
        }
    }
    let at = (n * p.cout + c) * p.oh * p.ow + oy * p.ow + ox;
    var v = acc;
    if p.accumulate != 0u {
        v += y[at];
    } else if p.has_bias != 0u {
        v += bias[c];
    }
    y[at] = epilogue(v, at, c, p.epi, epi_encodings());
}
