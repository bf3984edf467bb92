// Fake quantization (quantize-dequantize), its backward pass, and quantize-to-codes.
//
// Math (one module states it: src/quant/encoding.rs):
//   q     = clamp(round(x * inv_scale) - offset, 0, N)      round = half to even
//   x_hat = (q + offset) * scale
// x / scale is evaluated as x * (1 / scale) with 1 / scale computed once in f32 on the host:
// WGSL division may be off by 2.5 ULP, multiplication is correctly rounded, so GPU and CPU
// agree bit for bit.
// Per-channel: channel = ((base + i) / inner) % channels; per-tensor is channels = 1.
// NaN inputs stay NaN in x_hat, quantize to the code of 0.0, and get zero gradients.

struct Params {
    n: u32,          // elements in this chunk
    base: u32,       // global index of the chunk's first element
    inner: u32,      // product of the dims after the channel axis
    channels: u32,   // channels (1 = per tensor)
    qmax: f32,       // N = number of steps: 2^bw - 1 (2^bw - 2 for strict symmetric)
    signed_codes: u32, // codes: 1 = q + offset (signed grid), 0 = q
    _pad0: u32,
    _pad1: u32,
}

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

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

fn encoding_of(i: u32) -> vec4<f32> {
    return enc[((p.base + i) / p.inner) % p.channels];
}

@compute @workgroup_size(256)
fn fake_quant(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if i >= p.n {
        return;
    }
    let e = encoding_of(i);
    let v = x[i];
    let q = clamp(round(v * e.y) - e.z, 0.0, p.qmax);
    y[i] = select((q + e.z) * e.x, v, is_nan(v));
}

@compute @workgroup_size(256)
fn quantize_codes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if i >= p.n {
        return;
    }
    let e = encoding_of(i);
    let v = select(x[i], 0.0, is_nan(x[i]));
    let q = clamp(round(v * e.y) - e.z, 0.0, p.qmax);
    codes[i] = i32(q) + select(0, i32(e.z), p.signed_codes != 0u);
}

// Straight-through estimator for x; LSQ-style gradients for scale and offset, per element
// (summed per channel afterwards by calib.wgsl's channel sum):
//   in range (0 <= round(t) - offset <= N): dx = g, dscale = g * (round(t) - t), doffset = 0
//   clamped:                               dx = 0, dscale = g * (q + offset),   doffset = g * scale
@compute @workgroup_size(256)
fn fake_quant_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if i >= p.n {
        return;
    }
    let e = encoding_of(i);
    let v = x[i];
    let g = grad[i];
    if is_nan(v) {
        grad_x[i] = 0.0;
        grad_scale_el[i] = 0.0;
        grad_offset_el[i] = 0.0;
        return;
    }
    let t = v * e.y;
    let r = round(t);
    let qu = r - e.z;
    let inside = qu >= 0.0 && qu <= p.qmax;
    grad_x[i] = select(0.0, g, inside);
    grad_scale_el[i] = g * (clamp(r, e.z, e.z + p.qmax) - select(0.0, t, inside));
    grad_offset_el[i] = select(g * e.x, 0.0, inside);
}
