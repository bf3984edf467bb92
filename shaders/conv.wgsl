// 2-D convolution, NCHW, f32: groups (depthwise included), strides, dilations, asymmetric pads,
// optional bias. Each thread computes COB output channels of one output pixel, sharing the input
// loads when the COB channels lie in one group.
// Grid: x = pixel tile (64 pixels), y = output-channel block, z = batch item.
// A long reduction is split into dispatches over ranges of input channels (software adapters
// cut long loops short); the later ones add to y.
// qconv is the same loop in integers, as an integer runtime (onnxruntime's QLinearConv) runs
// it: the input arrives dequantized (x = r * scale, r an integer code minus its zero point) and
// r is recovered exactly as round(x * (1 / scale)), since x lies within half an ulp of r * scale;
// weights are integer codes; products add up in i32 (exact, so in any order) into `acc`, which
// quant.wgsl's requant turns into the output grid.

override COB: u32 = 4u;

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    groups: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    has_bias: u32,
    ci_begin: u32,   // input channels (within the group) this dispatch reduces over
    ci_end: u32,
    accumulate: u32, // 1: add to y (a later range of a split reduction), 0: write (+ bias)
    x_inv: f32,      // qconv: 1 / the input's scale
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    epi: Epi,        // the fused epilogue (epilogue.wgsl) of conv2d and depthwise3x3
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;   // [cout, cin / groups, kh, kw]
@group(0) @binding(3) var<storage, read> bias: array<f32>; // [cout] (ignored unless has_bias)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@group(0) @binding(2) var<storage, read> wt_codes: array<i32>;  // qconv: [cout, cin / groups, kh, kw]
@group(0) @binding(3) var<storage, read_write> acc_codes: array<i32>;  // qconv: [n, cout, oh, ow]

@compute @workgroup_size(64)
fn conv2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pix = wid.x * 64u + lid;
    let npix = p.oh * p.ow;
    if pix >= npix {
        return;
    }
    let n = wid.z;
    let co0 = wid.y * COB;
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let ksize = cin_g * p.kh * p.kw;
    var acc: array<f32, 4>;
    // COB > 1 is only used when the block's channels share one group.
    let g = min(co0, p.cout - 1u) / cout_g;
    let x_base = (n * p.cin + g * cin_g) * p.h * p.w;
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_l);
    for (var ci = p.ci_begin; ci < p.ci_end; ci++) {
        let xc = x_base + ci * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = iy0 + i32(ky * p.dil_h);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + i32(kx * p.dil_w);
                if ix < 0 || ix >= i32(p.w) {
                    continue;
                }
                let xv = x[xc + u32(iy) * p.w + u32(ix)];
                let kidx = (ci * p.kh + ky) * p.kw + kx;
                for (var k = 0u; k < COB; k++) {
                    let co = min(co0 + k, p.cout - 1u);
                    acc[k] = fma(xv, wt[co * ksize + kidx], acc[k]);
                }
            }
        }
    }
    let eq = epi_encodings();
    for (var k = 0u; k < COB; k++) {
        let co = co0 + k;
        if co < p.cout {
            let at = (n * p.cout + co) * npix + pix;
            var v = acc[k];
            if p.accumulate != 0u {
                v += y[at];
            } else if p.has_bias != 0u {
                v += bias[co];
            }
            y[at] = epilogue(v, at, co, p.epi, eq);
        }
    }
}

@compute @workgroup_size(64)
fn qconv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pix = wid.x * 64u + lid;
    let npix = p.oh * p.ow;
    if pix >= npix {
        return;
    }
    let n = wid.z;
    let co0 = wid.y * COB;
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let ksize = cin_g * p.kh * p.kw;
    var acc: array<i32, 4>;
    let g = min(co0, p.cout - 1u) / cout_g;
    let x_base = (n * p.cin + g * cin_g) * p.h * p.w;
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_l);
    for (var ci = p.ci_begin; ci < p.ci_end; ci++) {
        let xc = x_base + ci * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = iy0 + i32(ky * p.dil_h);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + i32(kx * p.dil_w);
                if ix < 0 || ix >= i32(p.w) {
                    continue;
                }
                let r = i32(round(x[xc + u32(iy) * p.w + u32(ix)] * p.x_inv));
                let kidx = (ci * p.kh + ky) * p.kw + kx;
                for (var k = 0u; k < COB; k++) {
                    let co = min(co0 + k, p.cout - 1u);
                    acc[k] += r * wt_codes[co * ksize + kidx];
                }
            }
        }
    }
    for (var k = 0u; k < COB; k++) {
        let co = co0 + k;
        if co < p.cout {
            let at = (n * p.cout + co) * npix + pix;
            var v = acc[k];
            if p.accumulate != 0u {
                v += acc_codes[at];
            }
            acc_codes[at] = v;
        }
    }
}

// Transposed convolution: one output element per thread, gathering the inputs that scatter
// into it. Weight layout [cin, cout / groups, kh, kw]. Grid: x = pixel tile, y = output
// channel, z = batch item.
@compute @workgroup_size(64)
fn conv_transpose2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pix = wid.x * 64u + lid;
    let npix = p.oh * p.ow;
    if pix >= npix {
        return;
    }
    let n = wid.z;
    let co = wid.y;
    let oy = i32(pix / p.ow);
    let ox = i32(pix % p.ow);
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let g = co / cout_g;
    let col = co % cout_g;
    var acc = 0.0;
    for (var ci = g * cin_g + p.ci_begin; ci < g * cin_g + p.ci_end; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = oy + i32(p.pad_t) - i32(ky * p.dil_h);
            if ty < 0 || ty % i32(p.stride_h) != 0 || ty / i32(p.stride_h) >= i32(p.h) {
                continue;
            }
            let iy = u32(ty / i32(p.stride_h));
            for (var kx = 0u; kx < p.kw; kx++) {
                let tx = ox + i32(p.pad_l) - i32(kx * p.dil_w);
                if tx < 0 || tx % i32(p.stride_w) != 0 || tx / i32(p.stride_w) >= i32(p.w) {
                    continue;
                }
                let ix = u32(tx / i32(p.stride_w));
                acc = fma(x[((n * p.cin + ci) * p.h + iy) * p.w + ix], wt[((ci * cout_g + col) * p.kh + ky) * p.kw + kx], acc);
            }
        }
    }
    let at = (n * p.cout + co) * npix + pix;
    if p.accumulate != 0u {
        acc += y[at];
    } else if p.has_bias != 0u {
        acc += bias[co];
    }
    y[at] = acc;
}

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

fn x_at(base: u32, iy: i32, ix: i32) -> f32 {
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let cy = u32(clamp(iy, 0, i32(p.h) - 1));
    let cx = u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[base + cy * p.w + cx], inside);
}

fn x4(base: u32, iy: i32, ix: i32, step: i32) -> vec4<f32> {
    return vec4(x_at(base, iy, ix), x_at(base, iy, ix + step), x_at(base, iy, ix + 2 * step),
                x_at(base, iy, ix + 3 * step));
}

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
    let strips = (p.ow + 7u) / 8u;
    if item >= p.cout * ((p.oh + DW_ROWS - 1u) / DW_ROWS) * strips {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base = (n * p.cin + blk.x) * p.h * p.w;
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    let ix0 = i32(blk.z * p.stride_w) - i32(p.pad_l);
    let k = dw_weights(blk.x);
    var acc: DwAcc;
    for (var j = 0u; j < (DW_ROWS - 1u) * p.stride_h + 3u; j++) {
        acc = dw_row(acc, dw_window(base, iy0 + i32(j), ix0), j, k);
    }
    dw_store(acc, n, blk.x, blk.y, blk.z);
}

@compute @workgroup_size(64)
fn depthwise3x3_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let item = wid.x * 64u + lid;
    let strips = (p.ow + 7u) / 8u;
    if item >= p.cout * ((p.oh + DW_ROWS - 1u) / DW_ROWS) * strips {
        return;
    }
    let blk = dw_block(item);
    let n = wid.z;
    let base4 = (n * p.cin + blk.x) * p.h * p.w / 4u;
    let iy0 = i32(blk.y * p.stride_h) - i32(p.pad_t);
    let k = dw_weights(blk.x);
    var acc: DwAcc;
    for (var j = 0u; j < (DW_ROWS - 1u) * p.stride_h + 3u; j++) {
        acc = dw_row(acc, dw_window_vec4(base4, iy0 + i32(j), blk.z), j, k);
    }
    dw_store(acc, n, blk.x, blk.y, blk.z);
}

// The columns of a convolution as a matrix, per batch item: col[n][k][pix] with
// k = (ci * kh + ky) * kw + kx over all input channels (groups = 1) and pix = oy * ow + ox;
// inputs outside the image are 0. Then y[n] = W[cout, k] * col[n] is a GEMM that adds the
// products in conv2d's (ci, ky, kx) order; a padded tap adds fma(w, 0, acc) = acc.
// Grid: x = pixel tile (64 pixels), y = k, z = batch item.
@group(0) @binding(2) var<storage, read_write> col: array<f32>;

@compute @workgroup_size(64)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pix = wid.x * 64u + lid;
    let npix = p.oh * p.ow;
    if pix >= npix {
        return;
    }
    let k = wid.y;
    let n = wid.z;
    let kx = k % p.kw;
    let ky = k / p.kw % p.kh;
    let ci = k / (p.kw * p.kh);
    let iy = i32(pix / p.ow * p.stride_h) - i32(p.pad_t) + i32(ky * p.dil_h);
    let ix = i32(pix % p.ow * p.stride_w) - i32(p.pad_l) + i32(kx * p.dil_w);
    col[(n * p.cin * p.kh * p.kw + k) * npix + pix] = x_at((n * p.cin + ci) * p.h * p.w, iy, ix);
}
