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

// x at (iy, ix) of the plane starting at `base`, 0 outside the image; x4: 4 of them, `step` apart.
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
