// Backward kernels: each one ADDS its contribution into a gradient buffer (dx += ...), so a
// value read by several nodes sums its gradients without extra passes, and a long reduction
// splits into dispatches over ranges that each add their part (llvmpipe ends long loop nests).
// activation.wgsl is prepended (the forward activations the derivatives are written against).

override UNARY_OP: u32 = 0u;
override BINARY_OP: u32 = 0u;
// conv_grad_input and col2im_acc: the convolution's strides as constants, so that the
// division by a stride compiles to a shift (or nothing) where it is a power of two.
override STRIDE_H: u32 = 1u;
override STRIDE_W: u32 = 1u;
override SIDE: u32 = 0u;        // binary_grad: 0 = gradient of a, 1 = of b

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// ---- elementwise: unary derivatives --------------------------------------------------------

struct Flat {
    n: u32,
    step: u32,
    _pad0: u32,
    _pad1: u32,
    alpha: f32,
    beta: f32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> f: Flat;
@group(0) @binding(1) var<storage, read> un_v: array<f32>;   // x (or y for Relu and Clip)
@group(0) @binding(2) var<storage, read> un_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> un_dx: array<f32>;

// d activation(op, x) / dx at v; for Relu and Clip v may be the output (same mask).
// Kinks take the derivative of the side PyTorch takes: Relu 0 at 0, Clip 0 at the bounds,
// HardSigmoid 0 at its ends, HardSwish x / 3 + 0.5 on [-3, 3].
fn derivative(op: u32, v: f32, alpha: f32, beta: f32) -> f32 {
    switch op {
        case 0u: { return select(0.0, 1.0, v > 0.0); }
        case 1u: { return select(0.0, 1.0, v > alpha && v < beta); }
        case 2u: { return select(1.0, alpha, v < 0.0); }
        case 3u: { let s = sigmoid(v); return s * (1.0 - s); }
        case 4u: { let t = alpha * v + beta; return select(0.0, alpha, t > 0.0 && t < 1.0); }
        case 5u: { return select(select(v / 3.0 + 0.5, 1.0, v > 3.0), 0.0, v < -3.0); }
        case 6u: { let t = tanh_real(v); return 1.0 - t * t; }
        case 7u: { return 1.1283791670955126 * exp(-v * v); }
        case 8u: {
            return 0.5 * (1.0 + erf_approx(v * 0.70710678118654752))
                + v * 0.3989422804014327 * exp(-0.5 * v * v);
        }
        case 9u: { return exp(v); }
        case 10u: { return 0.5 / sqrt(v); }
        case 11u: { return -1.0; }
        case 12u: { return sign(v); }
        case 13u, 14u, 15u, 16u: { return 0.0; }
        case 17u: { return -1.0 / (v * v); }
        case 18u: { return 1.0 / v; }
        case 19u: { return sigmoid(v); }
        case 20u: { let d = 1.0 + abs(v); return 1.0 / (d * d); }
        case 21u: { return select(1.0, alpha * exp(v), v < 0.0); }
        case 22u: { return beta * select(1.0, alpha * exp(v), v <= 0.0); }
        case 23u: { return select(1.0, exp(v / alpha), v < 0.0); }
        case 24u: {
            let t = tanh_real(softplus(v));
            return t + v * (1.0 - t * t) * sigmoid(v);
        }
        case 25u: { return select(0.0, 1.0, abs(v) > beta); }
        case 26u: { return select(0.0, 1.0, v > alpha); }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(256)
fn unary_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < f.n; i += f.step) {
        un_dx[i] += un_dy[i] * derivative(UNARY_OP, un_v[i], f.alpha, f.beta);
    }
}

// unary_grad over vectors of 4 (f.n counts vectors): a quarter of the loads and stores, each a
// per-lane loop on CPU adapters.
@group(0) @binding(1) var<storage, read> un_v4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> un_dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> un_dx4: array<vec4<f32>>;

// The derivative of each of four values.
fn derivative4(v: vec4<f32>) -> vec4<f32> {
    return vec4(derivative(UNARY_OP, v.x, f.alpha, f.beta),
                derivative(UNARY_OP, v.y, f.alpha, f.beta),
                derivative(UNARY_OP, v.z, f.alpha, f.beta),
                derivative(UNARY_OP, v.w, f.alpha, f.beta));
}

@compute @workgroup_size(256)
fn unary_grad_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < f.n; i += f.step) {
        un_dx4[i] += un_dy4[i] * derivative4(un_v4[i]);
    }
}

// unary_grad in place: the output's gradient becomes the input's, g = g * f'(v) (the input's
// gradient had no other term yet, so this is what adding into zeros gives, but for the sign of
// a zero), with no buffer and no zero fill of its own.
@group(0) @binding(2) var<storage, read_write> un_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_g4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_grad_in_place(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < f.n; i += f.step) {
        un_g[i] = un_g[i] * derivative(UNARY_OP, un_v[i], f.alpha, f.beta);
    }
}

@compute @workgroup_size(256)
fn unary_grad_in_place_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < f.n; i += f.step) {
        un_g4[i] = un_g4[i] * derivative4(un_v4[i]);
    }
}

// ---- shapes of up to 8 dims with three stride sets --------------------------------------------

struct Nd {
    n: u32,          // iteration elements of this dispatch (or outputs, for binary_grad)
    ndim: u32,
    step: u32,
    a_off: u32,      // strided_acc: source offset
    y_off: u32,      // strided_acc: destination offset
    r_count: u32,    // binary_grad: reduced positions per output element
    r_begin: u32,    // binary_grad: this dispatch's range of them
    r_end: u32,
    alpha: f32,      // broadcast_acc: factor
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    dims: array<vec4<u32>, 2>,
    s0: array<vec4<u32>, 2>,
    s1: array<vec4<u32>, 2>,
    s2: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> q: Nd;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d / 4u][d % 4u];
}

// Flat index i of the iteration shape as offsets into the three strided layouts.
fn offsets3(i: u32) -> vec3<u32> {
    var rem = i;
    var o = vec3<u32>(0u, 0u, 0u);
    for (var d = i32(q.ndim) - 1; d >= 0; d--) {
        let dim = at(q.dims, u32(d));
        let c = rem % dim;
        rem /= dim;
        o += c * vec3<u32>(at(q.s0, u32(d)), at(q.s1, u32(d)), at(q.s2, u32(d)));
    }
    return o;
}

@group(0) @binding(1) var<storage, read> st_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_dst: array<f32>;

// dst[y_off + o.s1] += src[a_off + o.s0]: the backward of transpose, slice, concat, split and
// pad (every destination element is written by one iteration element).
@compute @workgroup_size(256)
fn strided_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    // ndim 0: both regions are dense in the iteration order (a view's or a scratch's gradient),
    // so the offsets need no per-dim division.
    if q.ndim == 0u {
        for (var i = first_index(wid, nwg, lid); i < q.n; i += q.step) {
            st_dst[q.y_off + i] += st_src[q.a_off + i];
        }
        return;
    }
    for (var i = first_index(wid, nwg, lid); i < q.n; i += q.step) {
        let o = offsets3(i);
        st_dst[q.y_off + o.y] += st_src[q.a_off + o.x];
    }
}

// dst[i] += alpha * src[o.s0] over dst's shape (s0 = 0 on the dims src lacks): the backward of
// global average pooling and ReduceMean (a gradient spread back over the reduced dims).
@compute @workgroup_size(256)
fn broadcast_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < q.n; i += q.step) {
        st_dst[i] += q.alpha * st_src[offsets3(i).x];
    }
}

// dst[r * r_count + j] += alpha * src[r] for j < r_count: broadcast_acc where src holds dst's
// leading dims and is broadcast along all the others (global average pooling's backward), one
// row per invocation with no per-element index arithmetic.
@compute @workgroup_size(256)
fn broadcast_rows_acc(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    for (var r = first_index(wid, nwg, lid); r < q.n; r += q.step) {
        let v = q.alpha * st_src[r];
        let base = r * q.r_count;
        for (var j = 0u; j < q.r_count; j++) {
            st_dst[base + j] += v;
        }
    }
}

// ---- broadcasting binary ops ----------------------------------------------------------------

@group(0) @binding(1) var<storage, read> bg_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bg_a: array<f32>;
@group(0) @binding(3) var<storage, read> bg_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> bg_dx: array<f32>;

// d (a op b) / d(side) times dy. Max and Min split a tie's gradient evenly (as PyTorch).
fn local_grad(dy: f32, a: f32, b: f32) -> f32 {
    switch BINARY_OP {
        case 0u: { return dy; }
        case 1u: { return select(dy, -dy, SIDE == 1u); }
        case 2u: { return dy * select(b, a, SIDE == 1u); }
        case 3u: { return select(dy / b, -dy * a / (b * b), SIDE == 1u); }
        case 4u: {  // PRelu(x = a, slope = b)
            if SIDE == 0u { return select(dy, dy * b, a < 0.0); }
            return select(0.0, dy * a, a < 0.0);
        }
        case 5u, 6u: {
            let mine = select(a, b, SIDE == 1u);
            let other = select(b, a, SIDE == 1u);
            let wins = select((mine < other), (mine > other), BINARY_OP == 5u);
            return select(select(0.0, dy, wins), 0.5 * dy, mine == other);
        }
        case 7u: {
            if SIDE == 0u { return dy * b * real_pow(a, b - 1.0); }
            return select(dy * real_pow(a, b) * log(a), 0.0, a <= 0.0);
        }
        default: { return dy; }
    }
}

// One thread per element e of the operand; it adds the local gradients of the output positions
// e broadcasts to, r in [r_begin, r_end) of r_count. The iteration shape lists the operand's
// own dims first and the broadcast dims last, so flat index e * r_count + r walks them; s0, s1,
// s2 are the strides of dy, a and b in that order of dims.
@compute @workgroup_size(64)
fn binary_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if e >= q.n {
        return;
    }
    var s = 0.0;
    for (var r = q.r_begin; r < q.r_end; r++) {
        let o = offsets3(e * q.r_count + r);
        s += local_grad(bg_dy[o.x], bg_a[o.y], bg_b[o.z]);
    }
    bg_dx[e] += s;
}

// ---- sums over the dims a gradient was broadcast along ---------------------------------------

struct Red {
    e: u32,        // elements of the result
    inner: u32,    // the source is [outer, e, inner]
    r: u32,        // outer * inner: the terms of each sum
    chunk: u32,    // terms per thread in the first pass
    chunks: u32,
    direct: u32,   // 1: one chunk, added straight into the result
    alpha: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> rd: Red;
@group(0) @binding(1) var<storage, read> rd_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> rd_dst: array<f32>;

// Thread t's chunk sum s of element e: alpha * s added into the result with one chunk, else
// written to partial t.
fn sum_store(t: u32, e: u32, s: f32) {
    if rd.direct != 0u {
        rd_dst[e] += rd.alpha * s;
    } else {
        rd_dst[t] = s;
    }
}

// Thread (c, e): the sum of chunk c of e's terms, into partial[c * e_count + e] (or, with one
// chunk, alpha times it added into the result).
@compute @workgroup_size(64)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    if t >= rd.e * rd.chunks {
        return;
    }
    let e = t % rd.e;
    let c = t / rd.e;
    var s = 0.0;
    for (var r = c * rd.chunk; r < min(rd.r, (c + 1u) * rd.chunk); r++) {
        s += rd_src[((r / rd.inner) * rd.e + e) * rd.inner + r % rd.inner];
    }
    sum_store(t, e, s);
}

// sum_partial for inner a multiple of 4 (so is rd.chunk): the terms as vectors of 4, which
// never cross a run of `inner`, walked by counters instead of a division per term.
@group(0) @binding(1) var<storage, read> rd_src4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn sum_partial_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    if t >= rd.e * rd.chunks {
        return;
    }
    let e = t % rd.e;
    let c = t / rd.e;
    let first = c * rd.chunk;
    let end = min(rd.r, first + rd.chunk);
    var row = first / rd.inner;
    var col = first % rd.inner;
    var s4 = vec4(0.0);
    for (var r = first; r < end; r += 4u) {
        s4 += rd_src4[((row * rd.e + e) * rd.inner + col) / 4u];
        col += 4u;
        if col == rd.inner {
            col = 0u;
            row += 1u;
        }
    }
    let s = (s4.x + s4.y) + (s4.z + s4.w);
    sum_store(t, e, s);
}

// Thread e: alpha times the sum of its partials, added into the result.
@compute @workgroup_size(64)
fn sum_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if e >= rd.e {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < rd.chunks; c++) {
        s += rd_src[c * rd.e + e];
    }
    rd_dst[e] += rd.alpha * s;
}

// ---- convolution ----------------------------------------------------------------------------

struct Conv {
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
    begin: u32,    // grad_input: output channels (within the group) of this dispatch;
    end: u32,      // grad_weight: output positions (n, oy, ox) of this dispatch
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> c: Conv;
@group(0) @binding(1) var<storage, read> cv_a: array<f32>;   // grad_input: w; grad_weight: x
@group(0) @binding(2) var<storage, read> cv_dy: array<f32>;  // [n, cout, oh, ow]
@group(0) @binding(3) var<storage, read_write> cv_out: array<f32>;

// The output index a tap at input offset `t` (input index + pad - tap * dilation) came from,
// or -1 when none did. Integer division is a scalar loop per lane on CPU adapters: stride 1
// skips it, and other strides (pipeline constants) divide once, by a shift for powers of two.
fn tap_source(t: i32, stride: u32, len: u32) -> i32 {
    if t < 0 {
        return -1;
    }
    var o = u32(t);
    if stride != 1u {
        o = u32(t) / stride;
        if o * stride != u32(t) {
            return -1;
        }
    }
    return select(-1, i32(o), o < len);
}

// dx[n, ci, iy, ix] += sum over the output channels of its group and the kernel taps that
// read it: dy[n, co, oy, ox] * w[co, ci_g, ky, kx] with oy * stride + ky * dil - pad = iy.
@compute @workgroup_size(64)
fn conv_grad_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    let total = c.n * c.cin * c.h * c.w;
    if i >= total {
        return;
    }
    let ix = i % c.w;
    let iy = (i / c.w) % c.h;
    let ci = (i / (c.w * c.h)) % c.cin;
    let n = i / (c.w * c.h * c.cin);
    let cin_g = c.cin / c.groups;
    let cout_g = c.cout / c.groups;
    let g = ci / cin_g;
    let ci_g = ci % cin_g;
    var s = 0.0;
    for (var k = c.begin; k < c.end; k++) {
        let co = g * cout_g + k;
        let dy_base = (n * c.cout + co) * c.oh * c.ow;
        let w_base = (co * cin_g + ci_g) * c.kh * c.kw;
        for (var ky = 0u; ky < c.kh; ky++) {
            let sy = tap_source(i32(iy + c.pad_t) - i32(ky * c.dil_h), STRIDE_H, c.oh);
            if sy < 0 {
                continue;
            }
            let oy = u32(sy);
            for (var kx = 0u; kx < c.kw; kx++) {
                let sx = tap_source(i32(ix + c.pad_l) - i32(kx * c.dil_w), STRIDE_W, c.ow);
                if sx < 0 {
                    continue;
                }
                let ox = u32(sx);
                s = fma(cv_dy[dy_base + oy * c.ow + ox], cv_a[w_base + ky * c.kw + kx], s);
            }
        }
    }
    cv_out[i] += s;
}

// dw[co, ci_g, ky, kx] += sum over output positions r in [begin, end) of n * oh * ow:
// dy[n, co, oy, ox] * x[n, g * cin_g + ci_g, oy * stride + ky * dil - pad, ...].
@compute @workgroup_size(64)
fn conv_grad_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    let cin_g = c.cin / c.groups;
    let total = c.cout * cin_g * c.kh * c.kw;
    if i >= total {
        return;
    }
    let kx = i % c.kw;
    let ky = (i / c.kw) % c.kh;
    let ci_g = (i / (c.kw * c.kh)) % cin_g;
    let co = i / (c.kw * c.kh * cin_g);
    let g = co / (c.cout / c.groups);
    let ci = g * cin_g + ci_g;
    let npix = c.oh * c.ow;
    var s = 0.0;
    // Position r = (n, oy, ox) counted up without dividing (see tap_source).
    var ox = c.begin % c.ow;
    var oy = (c.begin / c.ow) % c.oh;
    var n = c.begin / npix;
    for (var r = c.begin; r < c.end; r++) {
        let iy = i32(oy * c.stride_h + ky * c.dil_h) - i32(c.pad_t);
        let ix = i32(ox * c.stride_w + kx * c.dil_w) - i32(c.pad_l);
        if iy >= 0 && iy < i32(c.h) && ix >= 0 && ix < i32(c.w) {
            let xv = cv_a[((n * c.cin + ci) * c.h + u32(iy)) * c.w + u32(ix)];
            s = fma(cv_dy[(n * c.cout + co) * npix + oy * c.ow + ox], xv, s);
        }
        ox += 1u;
        if ox == c.ow {
            ox = 0u;
            oy += 1u;
            if oy == c.oh {
                oy = 0u;
                n += 1u;
            }
        }
    }
    cv_out[i] += s;
}

// wf[co, ci_g, ky, kx] = w[co, ci_g, kh - 1 - ky, kw - 1 - kx] (cv_a = w, written to cv_out):
// the kernel of the forward convolution that is a stride-1 depthwise convolution's input
// gradient.
@compute @workgroup_size(64)
fn flip_taps(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    let taps = c.kh * c.kw;
    if i >= c.cout * (c.cin / c.groups) * taps {
        return;
    }
    let t = i % taps;
    let ky = t / c.kw;
    let kx = t % c.kw;
    cv_out[i] = cv_a[i - t + (c.kh - 1u - ky) * c.kw + (c.kw - 1u - kx)];
}

// dx[n, ci, iy, ix] += the column entries of every tap that read it:
// colg[n, (ci * kh + ky) * kw + kx, oy * ow + ox] (cv_a = colg; groups 1): col2im of a GEMM's
// column gradients.
@compute @workgroup_size(64)
fn col2im_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= c.n * c.cin * c.h * c.w {
        return;
    }
    let ix = i % c.w;
    let iy = (i / c.w) % c.h;
    let ci = (i / (c.w * c.h)) % c.cin;
    let n = i / (c.w * c.h * c.cin);
    let npix = c.oh * c.ow;
    let k0 = ci * c.kh * c.kw;
    let base = n * c.cin * c.kh * c.kw;
    var s = 0.0;
    for (var ky = 0u; ky < c.kh; ky++) {
        let sy = tap_source(i32(iy + c.pad_t) - i32(ky * c.dil_h), STRIDE_H, c.oh);
        if sy < 0 {
            continue;
        }
        for (var kx = 0u; kx < c.kw; kx++) {
            let sx = tap_source(i32(ix + c.pad_l) - i32(kx * c.dil_w), STRIDE_W, c.ow);
            if sx < 0 {
                continue;
            }
            let k = k0 + ky * c.kw + kx;
            s += cv_a[(base + k) * npix + u32(sy) * c.ow + u32(sx)];
        }
    }
    cv_out[i] += s;
}

// ---- matrix products ------------------------------------------------------------------------

struct Mm {
    batches: u32,  // output batches
    m: u32,
    n: u32,
    k_begin: u32,  // the reduction range of this dispatch
    k_end: u32,
    r_end: u32,    // batches r_begin..r_end summed into each output (a broadcast operand's gradient)
    a_batch: u32,  // strides of a: per output batch, per reduced batch, along m and k
    a_reduce: u32,
    a_m: u32,
    a_k: u32,
    b_batch: u32,
    b_reduce: u32,
    b_k: u32,
    b_n: u32,
    alpha: f32,
    r_begin: u32,
}

@group(0) @binding(0) var<uniform> mm: Mm;
@group(0) @binding(1) var<storage, read> mm_a: array<f32>;
@group(0) @binding(2) var<storage, read> mm_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mm_c: array<f32>;   // [batches, m, n]

// c[bt, i, j] += alpha * sum over reduced batches r and k of a[bt, r, i, k] * b[bt, r, k, j],
// every operand addressed through strides (so transposes and broadcast batches cost nothing).
@compute @workgroup_size(64)
fn matmul_acc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * nwg.x) * 64u + lid;
    if idx >= mm.batches * mm.m * mm.n {
        return;
    }
    let j = idx % mm.n;
    let i = (idx / mm.n) % mm.m;
    let bt = idx / (mm.n * mm.m);
    var s = 0.0;
    for (var r = mm.r_begin; r < mm.r_end; r++) {
        let a0 = bt * mm.a_batch + r * mm.a_reduce + i * mm.a_m;
        let b0 = bt * mm.b_batch + r * mm.b_reduce + j * mm.b_n;
        for (var k = mm.k_begin; k < mm.k_end; k++) {
            s = fma(mm_a[a0 + k * mm.a_k], mm_b[b0 + k * mm.b_k], s);
        }
    }
    mm_c[idx] += mm.alpha * s;
}

// ---- pooling --------------------------------------------------------------------------------

struct Pool {
    nc: u32,
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
    pad_b: u32,
    pad_r: u32,
}

@group(0) @binding(0) var<uniform> pl: Pool;
@group(0) @binding(1) var<storage, read> pl_x: array<f32>;
@group(0) @binding(2) var<storage, read> pl_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> pl_dx: array<f32>;

// The flat input index (within the plane) of window (oy, ox)'s maximum: the first in scan
// order among equal values, as the forward's scan keeps it; a NaN is the maximum.
fn window_argmax(base: u32, oy: u32, ox: u32) -> i32 {
    var best = -1;
    var m = 0.0;
    for (var ky = 0u; ky < pl.kh; ky++) {
        let iy = i32(oy * pl.stride_h + ky * pl.dil_h) - i32(pl.pad_t);
        if iy < 0 || iy >= i32(pl.h) {
            continue;
        }
        for (var kx = 0u; kx < pl.kw; kx++) {
            let ix = i32(ox * pl.stride_w + kx * pl.dil_w) - i32(pl.pad_l);
            if ix < 0 || ix >= i32(pl.w) {
                continue;
            }
            let at = u32(iy) * pl.w + u32(ix);
            let v = pl_x[base + at];
            if best < 0 || (v > m && !is_nan(m)) || (is_nan(v) && !is_nan(m)) {
                best = i32(at);
                m = v;
            }
        }
    }
    return best;
}

// The output windows (oy, ox) of one axis that can cover input coordinate `i`.
fn window_range(i: u32, pad: u32, k: u32, dil: u32, stride: u32, out: u32) -> vec2<u32> {
    let hi = i + pad;                       // oy * stride <= hi
    let span = (k - 1u) * dil;              // oy * stride >= hi - span
    let lo = select(0u, (hi - span + stride - 1u) / stride, hi > span);
    return vec2<u32>(lo, min(hi / stride + 1u, out));
}

// dx[plane, iy, ix] += dy of every window whose maximum it is.
@compute @workgroup_size(64)
fn max_pool_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= pl.nc * pl.h * pl.w {
        return;
    }
    let plane = i / (pl.h * pl.w);
    let at = i % (pl.h * pl.w);
    let iy = at / pl.w;
    let ix = at % pl.w;
    let ry = window_range(iy, pl.pad_t, pl.kh, pl.dil_h, pl.stride_h, pl.oh);
    let rx = window_range(ix, pl.pad_l, pl.kw, pl.dil_w, pl.stride_w, pl.ow);
    var s = 0.0;
    for (var oy = ry.x; oy < ry.y; oy++) {
        for (var ox = rx.x; ox < rx.y; ox++) {
            if window_argmax(plane * pl.h * pl.w, oy, ox) == i32(at) {
                s += pl_dy[(plane * pl.oh + oy) * pl.ow + ox];
            }
        }
    }
    pl_dx[i] += s;
}

// dx[plane, iy, ix] += dy / count of every window that averages it (the forward's count).
@compute @workgroup_size(64)
fn avg_pool_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if i >= pl.nc * pl.h * pl.w {
        return;
    }
    let plane = i / (pl.h * pl.w);
    let iy = (i % (pl.h * pl.w)) / pl.w;
    let ix = i % pl.w;
    let ry = window_range(iy, pl.pad_t, pl.kh, 1u, pl.stride_h, pl.oh);
    let rx = window_range(ix, pl.pad_l, pl.kw, 1u, pl.stride_w, pl.ow);
    var s = 0.0;
    for (var oy = ry.x; oy < ry.y; oy++) {
        for (var ox = rx.x; ox < rx.y; ox++) {
            // The forward's count for window (oy, ox).
            let y0 = i32(oy * pl.stride_h) - i32(pl.pad_t);
            let x0 = i32(ox * pl.stride_w) - i32(pl.pad_l);
            var cnt = 0;
            if pl.count_include_pad != 0u {
                let y1 = min(y0 + i32(pl.kh), i32(pl.h + pl.pad_b));
                let x1 = min(x0 + i32(pl.kw), i32(pl.w + pl.pad_r));
                cnt = max(y1 - y0, 0) * max(x1 - x0, 0);
            } else {
                let y1 = min(y0 + i32(pl.kh), i32(pl.h));
                let x1 = min(x0 + i32(pl.kw), i32(pl.w));
                cnt = max(y1 - max(y0, 0), 0) * max(x1 - max(x0, 0), 0);
            }
            s += pl_dy[(plane * pl.oh + oy) * pl.ow + ox] / f32(max(cnt, 1));
        }
    }
    pl_dx[i] += s;
}

// ---- softmax --------------------------------------------------------------------------------

struct Rows {
    rows: u32,     // outer * inner
    len: u32,
    inner: u32,    // stride of the softmax axis
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> sm: Rows;
@group(0) @binding(1) var<storage, read> sm_y: array<f32>;
@group(0) @binding(2) var<storage, read> sm_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> sm_dx: array<f32>;

// dx += y * (dy - sum(dy * y)) along the axis.
@compute @workgroup_size(64)
fn softmax_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if row >= sm.rows {
        return;
    }
    let base = (row / sm.inner) * sm.len * sm.inner + row % sm.inner;
    var dot = 0.0;
    for (var k = 0u; k < sm.len; k++) {
        let at = base + k * sm.inner;
        dot = fma(sm_dy[at], sm_y[at], dot);
    }
    for (var k = 0u; k < sm.len; k++) {
        let at = base + k * sm.inner;
        sm_dx[at] += sm_y[at] * (sm_dy[at] - dot);
    }
}
