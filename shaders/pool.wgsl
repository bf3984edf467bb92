// Pooling, NCHW: max and average windows, and global average over H x W.
// Window grid: one thread per output element, 1-D grid-stride.

struct Params {
    nc: u32,        // batch * channels
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_t: u32,
    pad_l: u32,
    dil_h: u32,
    dil_w: u32,
    count_include_pad: u32,
    pad_b: u32,     // bottom/right pads bound the window for count_include_pad
    pad_r: u32,
    step: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(256)
fn max_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let total = p.nc * p.oh * p.ow;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < total; i += p.step) {
        let ox = i % p.ow;
        let oy = (i / p.ow) % p.oh;
        let base = (i / (p.ow * p.oh)) * p.h * p.w;
        var m = bitcast<f32>(0xff800000u);
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_t);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_l);
                if ix >= 0 && ix < i32(p.w) {
                    let v = x[base + u32(iy) * p.w + u32(ix)];
                    // A NaN in the window is the result (max() may drop it).
                    m = select(select(max(m, v), v, is_nan(v)), m, is_nan(m));
                }
            }
        }
        y[i] = m;
    }
}

@compute @workgroup_size(256)
fn avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let total = p.nc * p.oh * p.ow;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < total; i += p.step) {
        let ox = i % p.ow;
        let oy = (i / p.ow) % p.oh;
        let base = (i / (p.ow * p.oh)) * p.h * p.w;
        var s = 0.0;
        var cnt = 0u;
        var cnt_pad = 0u;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = i32(oy * p.stride_h + ky * p.dil_h) - i32(p.pad_t);
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = i32(ox * p.stride_w + kx * p.dil_w) - i32(p.pad_l);
                let inside_pad = iy < i32(p.h + p.pad_b) && ix < i32(p.w + p.pad_r);
                if inside_pad {
                    cnt_pad += 1u;
                }
                if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                    s += x[base + u32(iy) * p.w + u32(ix)];
                    cnt += 1u;
                }
            }
        }
        let d = select(cnt, cnt_pad, p.count_include_pad != 0u);
        y[i] = s / f32(max(d, 1u));
    }
}

var<workgroup> sh: array<f32, 256>;

// One thread per (n, c) plane, its h * w values added in order: planes up to
// GAP_SERIAL_MAX values (the spatial sizes of classifier heads), on every adapter, where a
// workgroup's barrier tree would cost more than the sum (on CPU adapters each barrier switches
// coroutines). 1-D grid-stride over planes.
@compute @workgroup_size(256)
fn global_avg_pool_serial(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let hw = p.h * p.w;
    for (var plane = (wid.x + wid.y * nwg.x) * 256u + lid; plane < p.nc; plane += p.step) {
        var s = 0.0;
        for (var i = 0u; i < hw; i++) {
            s += x[plane * hw + i];
        }
        y[plane] = s / f32(hw);
    }
}

// One workgroup per (n, c) plane: mean over h * w. Grid folded: plane = x + y * nwg.x.
@compute @workgroup_size(256)
fn global_avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let plane = wid.x + wid.y * nwg.x;
    if plane >= p.nc {
        return;
    }
    let hw = p.h * p.w;
    var s = 0.0;
    for (var i = lid; i < hw; i += 256u) {
        s += x[plane * hw + i];
    }
    sh[lid] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            sh[lid] += sh[lid + k];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        y[plane] = sh[0] / f32(hw);
    }
}

// Resize of the spatial dims (NCHW), ONNX semantics. Uses the window Params as:
// kh = mode (0 nearest, 1 linear, 2 cubic), kw = coordinate transform (0 half_pixel,
// 1 asymmetric, 2 align_corners, 3 pytorch_half_pixel, 4 half_pixel_symmetric), stride_h =
// nearest mode (0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil), stride_w =
// exclude_outside, pad_t = antialias; in rs: the scales, cubic_coeff_a, and for
// tf_crop_and_resize (kw = 5) the region of interest and the extrapolation value.
@group(0) @binding(3) var<storage, read> rs: array<f32>; // (scale_h, scale_w, cubic_coeff_a,
                                                         //  roi h0, h1, w0, w1, extrapolation)

// The source coordinate of output o along spatial axis `axis` (0: rows, 1: columns).
fn source_coord(o: u32, out_len: u32, in_len: u32, axis: u32) -> f32 {
    let o_f = f32(o);
    let scale = rs[axis];
    switch p.kw {
        case 1u: { return o_f / scale; }
        case 2u: {
            if out_len <= 1u {
                return 0.0;
            }
            // ONNX's length_resized is in_len * scale, unrounded (out_len when the model
            // gives sizes).
            return o_f * f32(in_len - 1u) / (f32(in_len) * scale - 1.0);
        }
        case 3u: {
            if out_len <= 1u {
                return 0.0;
            }
            return (o_f + 0.5) / scale - 0.5;
        }
        case 5u: {
            let r0 = rs[3u + 2u * axis];
            let r1 = rs[4u + 2u * axis];
            if out_len <= 1u {
                return 0.5 * (r0 + r1) * f32(in_len - 1u);
            }
            return r0 * f32(in_len - 1u) + o_f * (r1 - r0) * f32(in_len - 1u) / f32(out_len - 1u);
        }
        case 4u: {
            // half_pixel_symmetric: half_pixel shifted so that the output is centred on the
            // input when the output length was rounded.
            let adj = f32(out_len) / (f32(in_len) * scale);
            let offset = f32(in_len) * 0.5 * (1.0 - adj);
            return offset + (o_f + 0.5) / scale - 0.5;
        }
        default: { return (o_f + 0.5) / scale - 0.5; }
    }
}

fn nearest(c: f32, len: u32) -> u32 {
    var r: f32;
    switch p.stride_h {
        case 1u: { r = select(round(c), ceil(c), fract(c) == 0.5); }
        case 2u: { r = floor(c); }
        case 3u: { r = ceil(c); }
        default: { r = select(round(c), floor(c), fract(c) == 0.5); }
    }
    return u32(clamp(r, 0.0, f32(len - 1u)));
}

// The filter form (cubic, or linear with antialias), as ONNX's reference computes it: for a
// source coordinate c = c0 + r (c0 an integer, r in (0, 1]: an integral c takes r = 1), taps at
// c0 + i for i in [i0, 2 - i0) weigh f((i - r) * s), where f is the cubic convolution kernel
// (support 2, coefficient A) or the triangle (support 1), s = the scale when antialiasing a
// downscale (the filter stretched over 1 / s inputs) and 1 otherwise, i0 = floor(-support / s)
// + 1. Taps outside the input read the edge value, or weigh 0 with exclude_outside; the
// weights are normalised to sum 1 with antialias or exclude_outside.
fn filter_weight(t: f32) -> f32 {
    let a = abs(t);
    if p.kh == 2u {
        let A = rs[2];
        if a <= 1.0 {
            return ((A + 2.0) * a - (A + 3.0)) * a * a + 1.0;
        }
        if a < 2.0 {
            return ((A * a - 5.0 * A) * a + 8.0 * A) * a - 4.0 * A;
        }
        return 0.0;
    }
    return max(0.0, 1.0 - a);
}

// The taps of one axis: (first tap index c0 + i0 as i32, tap count, r, s).
fn filter_taps(c: f32, scale: f32) -> vec4<f32> {
    let s = select(1.0, scale, p.pad_t != 0u && scale < 1.0);
    let support = select(1.0, 2.0, p.kh == 2u);
    var c0 = floor(c);
    var r = c - c0;
    if r == 0.0 {
        c0 -= 1.0;
        r = 1.0;
    }
    let i0 = floor(-support / s) + 1.0;
    return vec4(c0 + i0, 2.0 - 2.0 * i0, r - i0, s);
}

fn filtered(base: u32, sy: f32, sx: f32) -> f32 {
    let ty = filter_taps(sy, rs[0]);
    let tx = filter_taps(sx, rs[1]);
    let exclude = p.stride_w != 0u;
    var acc = 0.0;
    var wsum_y = 0.0;
    for (var i = 0; i < i32(ty.y); i++) {
        let iy = i32(ty.x) + i;
        var wy = filter_weight((f32(i) - ty.z) * ty.w);
        if exclude && (iy < 0 || iy >= i32(p.h)) {
            wy = 0.0;
        }
        wsum_y += wy;
        let row = base + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
        var line = 0.0;
        for (var j = 0; j < i32(tx.y); j++) {
            let ix = i32(tx.x) + j;
            var wx = filter_weight((f32(j) - tx.z) * tx.w);
            if exclude && (ix < 0 || ix >= i32(p.w)) {
                wx = 0.0;
            }
            line += wx * x[row + u32(clamp(ix, 0, i32(p.w) - 1))];
        }
        acc += wy * line;
    }
    if p.pad_t != 0u || exclude {
        var wsum_x = 0.0;
        for (var j = 0; j < i32(tx.y); j++) {
            let ix = i32(tx.x) + j;
            let out = exclude && (ix < 0 || ix >= i32(p.w));
            wsum_x += select(filter_weight((f32(j) - tx.z) * tx.w), 0.0, out);
        }
        acc /= wsum_y * wsum_x;
    }
    return acc;
}

@compute @workgroup_size(256)
fn resize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let total = p.nc * p.oh * p.ow;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < total; i += p.step) {
        let ox = i % p.ow;
        let oy = (i / p.ow) % p.oh;
        let base = (i / (p.ow * p.oh)) * p.h * p.w;
        let sy = source_coord(oy, p.oh, p.h, 0u);
        let sx = source_coord(ox, p.ow, p.w, 1u);
        let outside = sy < 0.0 || sy > f32(p.h - 1u) || sx < 0.0 || sx > f32(p.w - 1u);
        if p.kw == 5u && outside {
            y[i] = rs[7];
        } else if p.kh == 0u {
            y[i] = x[base + nearest(sy, p.h) * p.w + nearest(sx, p.w)];
        } else if p.kh == 2u || p.pad_t != 0u {
            y[i] = filtered(base, sy, sx);
        } else {
            let cy = clamp(sy, 0.0, f32(p.h - 1u));
            let cx = clamp(sx, 0.0, f32(p.w - 1u));
            let y0 = u32(floor(cy));
            let x0 = u32(floor(cx));
            let y1 = min(y0 + 1u, p.h - 1u);
            let x1 = min(x0 + 1u, p.w - 1u);
            let fy = cy - f32(y0);
            let fx = cx - f32(x0);
            let top = mix(x[base + y0 * p.w + x0], x[base + y0 * p.w + x1], fx);
            let bot = mix(x[base + y1 * p.w + x0], x[base + y1 * p.w + x1], fx);
            y[i] = mix(top, bot, fy);
        }
    }
}

// Backward of resize: dx (y here) += the adjoint of the forward's taps applied to dy (x here),
// one thread per input element. For each axis, `ranges` holds per input index the outputs
// [begin, end) whose taps may include it (host-computed with slack); the weights come from the
// forward's own coordinate functions, so each output's taps are exactly the forward's.
@group(0) @binding(4) var<storage, read> ranges: array<u32>;  // [2 h] rows, then [2 w] columns

fn resize_tap(o: u32, i: u32, out_len: u32, in_len: u32, axis: u32) -> f32 {
    let s = source_coord(o, out_len, in_len, axis);
    if p.kh == 0u {
        return select(0.0, 1.0, nearest(s, in_len) == i);
    }
    let c = clamp(s, 0.0, f32(in_len - 1u));
    let i0 = u32(floor(c));
    let i1 = min(i0 + 1u, in_len - 1u);
    let f = c - f32(i0);
    var w = 0.0;
    if i0 == i {
        w += 1.0 - f;
    }
    if i1 == i {
        w += f;
    }
    return w;
}

@compute @workgroup_size(256)
fn resize_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let total = p.nc * p.h * p.w;
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < total; i += p.step) {
        let ix = i % p.w;
        let iy = (i / p.w) % p.h;
        let base = (i / (p.w * p.h)) * p.oh * p.ow;
        var acc = 0.0;
        for (var oy = ranges[2u * iy]; oy < ranges[2u * iy + 1u]; oy++) {
            let wy = resize_tap(oy, iy, p.oh, p.h, 0u);
            if wy == 0.0 {
                continue;
            }
            let col = 2u * p.h + 2u * ix;
            for (var ox = ranges[col]; ox < ranges[col + 1u]; ox++) {
                acc += wy * resize_tap(ox, ix, p.ow, p.w, 1u) * x[base + oy * p.ow + ox];
            }
        }
        y[i] += acc;
    }
}

// Local response normalization across channels: one thread per element (grid-stride), the
// window's squares summed in channel order; (bias + alpha / size * sum) >= bias > 0 for
// ONNX's defaults, where WGSL's pow is defined.
struct LrnParams {
    n: u32,
    channels: u32,
    inner: u32,
    lo: u32,          // channels before c in the window: (size - 1) / 2
    hi: u32,          // channels after c: ceil((size - 1) / 2)
    step: u32,
    alpha_over_size: f32,
    beta: f32,
    bias: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> lp: LrnParams;

@compute @workgroup_size(256)
fn lrn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < lp.n; i += lp.step) {
        let c = (i / lp.inner) % lp.channels;
        let base = i - c * lp.inner;
        let first = select(0u, c - lp.lo, c >= lp.lo);
        let last = min(lp.channels - 1u, c + lp.hi);
        var sum = 0.0;
        for (var k = first; k <= last; k++) {
            let v = x[base + k * lp.inner];
            sum += v * v;
        }
        y[i] = x[i] / pow(lp.bias + lp.alpha_over_size * sum, lp.beta);
    }
}
