// Fake quantization (quantize-dequantize), its backward pass, and quantize-to-codes.
//
// Math (one module states it: src/quant/encoding.rs):
//   q     = clamp(round(x * inv_scale) - offset, 0, N)      round = half to even
//   x_hat = (q + offset) * scale
// x / scale is evaluated as x * (1 / scale) with 1 / scale computed once in f32 on the host:
// WGSL division may be off by 2.5 ULP, multiplication is correctly rounded, so GPU and CPU
// agree bit for bit. With `exact` set, the code is that of the IEEE quotient x / scale instead
// (what onnxruntime's QuantizeLinear computes), see rounded_quotient in activation.wgsl.
// Per-channel: channel = ((base + i) / inner) % channels; per-tensor is channels = 1.
// Each workgroup walks one contiguous block of `block` elements (sequential memory for CPU
// adapters, coalesced for GPUs); a thread takes every 256th element of it and advances its
// channel incrementally (one integer division per thread, not per element: GPUs and SIMD CPUs
// have no fast vector integer division).
// NaN inputs stay NaN in x_hat, quantize to the code of 0.0, and get zero gradients.

struct Params {
    n: u32,          // elements in this chunk
    base: u32,       // global index of the chunk's first element
    inner: u32,      // product of the dims after the channel axis
    channels: u32,   // channels (1 = per tensor)
    qmax: f32,       // N = number of steps: 2^bw - 1 (2^bw - 2 for strict symmetric)
    signed_codes: u32, // codes: 1 = q + offset (signed grid), 0 = q
    step: u32,       // distance between a thread's successive elements (the workgroup size)
    step_r: u32,     // step % inner
    step_c: u32,     // (step / inner) % channels
    block: u32,      // elements per workgroup (a contiguous block)
    _pad_exact: u32, // the constant EXACT says whether to round the IEEE quotient
}

// Round the IEEE quotient x / scale (see rounded_quotient): a pipeline constant, so that the
// plain rounding compiles without the exact path (software adapters evaluate both sides of a
// branch that differs between lanes).
override EXACT: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
// Per channel: (scale, 1 / scale, offset, unused).
@group(0) @binding(1) var<storage, read> enc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@group(0) @binding(3) var<storage, read_write> codes: array<i32>;

@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_scale_el: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_offset_el: array<f32>;

// A thread's position: element i of the chunk, its remainder within the inner run, its channel.
struct Cursor {
    i: u32,
    rem: u32,
    ch: u32,
    end: u32,
}

fn block_start(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * p.block;
}

fn block_end(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return min(p.n, block_start(wid, nwg) + p.block);
}

fn cursor_start(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Cursor {
    let i = block_start(wid, nwg) + lid;
    let g = p.base + i;
    return Cursor(i, g % p.inner, (g / p.inner) % p.channels, block_end(wid, nwg));
}

fn cursor_next(c: ptr<function, Cursor>) {
    (*c).i += p.step;
    (*c).rem += p.step_r;
    var carry = 0u;
    if (*c).rem >= p.inner {
        (*c).rem -= p.inner;
        carry = 1u;
    }
    (*c).ch += p.step_c + carry;
    if (*c).ch >= p.channels {
        (*c).ch -= p.channels;
    }
}

fn fake_quant_one(v: f32, e: vec4<f32>) -> f32 {
    return fake_quantize(v, e, p.qmax, EXACT);
}

fn code_of(x: f32, e: vec4<f32>) -> i32 {
    let v = select(x, 0.0, is_nan(x));
    let q = clamp(round(v * e.y) - e.z, 0.0, p.qmax);
    return i32(q) + select(0, i32(e.z), p.signed_codes != 0u);
}

// Per-tensor encodings take a loop without channel bookkeeping.
@compute @workgroup_size(256)
fn fake_quant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    if p.channels == 1u {
        let e = enc[0];
        for (var i = block_start(wid, nwg) + lid; i < block_end(wid, nwg); i += 256u) {
            y[i] = fake_quant_one(x[i], e);
        }
        return;
    }
    for (var c = cursor_start(wid, nwg, lid); c.i < c.end; cursor_next(&c)) {
        y[c.i] = fake_quant_one(x[c.i], enc[c.ch]);
    }
}

@compute @workgroup_size(256)
fn quantize_codes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    if p.channels == 1u {
        let e = enc[0];
        for (var i = block_start(wid, nwg) + lid; i < block_end(wid, nwg); i += 256u) {
            codes[i] = code_of(x[i], e);
        }
        return;
    }
    for (var c = cursor_start(wid, nwg, lid); c.i < c.end; cursor_next(&c)) {
        codes[c.i] = code_of(x[c.i], enc[c.ch]);
    }
}

// Straight-through estimator for x; LSQ-style gradients for scale and offset, per element
// (summed per channel afterwards by calib.wgsl's channel sum):
//   in range (0 <= round(t) - offset <= N): dx = g, dscale = g * (round(t) - t), doffset = 0
//   clamped:                               dx = 0, dscale = g * (q + offset),   doffset = g * scale
@compute @workgroup_size(256)
fn fake_quant_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    for (var c = cursor_start(wid, nwg, lid); c.i < c.end; cursor_next(&c)) {
        let i = c.i;
        let e = enc[c.ch];
        let v = x[i];
        let g = grad[i];
        if is_nan(v) {
            grad_x[i] = 0.0;
            grad_scale_el[i] = 0.0;
            grad_offset_el[i] = 0.0;
            continue;
        }
        let t = v * e.y;
        let r = round(t);
        let qu = r - e.z;
        let inside = qu >= 0.0 && qu <= p.qmax;
        grad_x[i] = select(0.0, g, inside);
        grad_scale_el[i] = g * (clamp(r, e.z, e.z + p.qmax) - select(0.0, t, inside));
        grad_offset_el[i] = select(g * e.x, 0.0, inside);
    }
}

// Requantization of i32 accumulators (integer conv, GEMM, global average pooling) onto an
// output grid, as onnxruntime's MlasRequantizeOutput does it: r = clamp(round(f32(acc + bias)
// * multiplier), lo, hi), written dequantized as r * scale (r is the code minus its zero point;
// lo / hi are the grid's ends in the same terms). Multipliers are per channel,
// channel = (i / inner) % channels.
struct RequantParams {
    n: u32,
    inner: u32,
    channels: u32,
    scale: f32,
    lo: f32,
    hi: f32,
}

@group(0) @binding(0) var<uniform> rq: RequantParams;
@group(0) @binding(1) var<storage, read> rq_acc: array<i32>;
@group(0) @binding(2) var<storage, read> rq_bias: array<i32>;        // [channels]
@group(0) @binding(3) var<storage, read> rq_multiplier: array<f32>;  // [channels]
@group(0) @binding(4) var<storage, read_write> rq_y: array<f32>;

@group(0) @binding(1) var<storage, read> rq_acc_f32: array<f32>;  // requant_f32: exact integers

fn requant_one(i: u32, acc: i32) {
    let c = (i / rq.inner) % rq.channels;
    let v = f32(acc + rq_bias[c]) * rq_multiplier[c];
    // A zero code may come out as -0.0 where the runtime has +0.0: equal in every later use.
    rq_y[i] = clamp(round(v), rq.lo, rq.hi) * rq.scale;
}

@compute @workgroup_size(256)
fn requant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i < rq.n {
        requant_one(i, rq_acc[i]);
    }
}

// The same from accumulators an f32 GEMM summed exactly (integer-valued, below 2^24).
@compute @workgroup_size(256)
fn requant_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i < rq.n {
        requant_one(i, i32(rq_acc_f32[i]));
    }
}

// Quantized addition as onnxruntime's x86 QLinearAdd computes it, on dequantized inputs: the
// codes A = round(a / scale_a) + zp_a and B (exact recovery, see conv.wgsl) index a table of the
// output codes for every (A, B) pair, made on the host with the runtime's f32 fused
// multiply-adds (src/ops/quant.rs, AddGrids::table), four 8-bit entries per word.
struct AddParams {
    n: u32,
    a_inv: f32,
    b_inv: f32,
    a_first: f32,   // zp - qmin of each input: index = round(x / scale) + zp - qmin
    b_first: f32,
    c_first: f32,   // qmin - zp of the output: r = entry + qmin - zp
    scale_c: f32,
}

@group(0) @binding(0) var<uniform> ad: AddParams;
@group(0) @binding(1) var<storage, read> ad_a: array<f32>;
@group(0) @binding(2) var<storage, read> ad_b: array<f32>;
@group(0) @binding(3) var<storage, read> ad_table: array<u32>;   // [256 * 256 / 4]
@group(0) @binding(4) var<storage, read_write> ad_y: array<f32>;

@compute @workgroup_size(256)
fn qadd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= ad.n {
        return;
    }
    let ia = u32(clamp(round(ad_a[i] * ad.a_inv) + ad.a_first, 0.0, 255.0));
    let ib = u32(clamp(round(ad_b[i] * ad.b_inv) + ad.b_first, 0.0, 255.0));
    let at = ia * 256u + ib;
    let entry = (ad_table[at / 4u] >> (8u * (at % 4u))) & 0xffu;
    ad_y[i] = (f32(entry) + ad.c_first) * ad.scale_c;
}
