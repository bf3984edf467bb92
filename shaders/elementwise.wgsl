// Elementwise kernels over flat f32 arrays: copy, unary activations, broadcasting binary ops,
// per-channel affine (inference batch norm), fill, and strided copies (transpose, slice,
// concat, split, pad).
// Grid-stride loops over elements; the grid folds into 2-D past the per-dimension limit.

// The unary and binary op codes are pipeline constants: a software adapter runs a switch on a
// uniform value by evaluating every case for every lane.
override UNARY_OP: u32 = 0u;
override BINARY_OP: u32 = 0u;

struct Params {
    n: u32,
    step: u32,      // threads in the dispatch (grid stride)
    _pad0: u32,     // the op codes are the constants UNARY_OP / BINARY_OP
    inner: u32,     // affine: elements per channel run
    channels: u32,  // affine: channels
    base: u32,      // global index of the chunk's first element
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// Plain copy: the bandwidth roofline memory-bound kernels are compared against.
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        dst[i] = src[i];
    }
}

@group(0) @binding(1) var<storage, read_write> fill_dst: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        fill_dst[i] = p.alpha;
    }
}

// The unary ops of activation.wgsl (prepended to this file) with this dispatch's parameters.
fn unary(op: u32, x: f32) -> f32 {
    return activation(op, x, p.alpha, p.beta);
}

@compute @workgroup_size(256)
fn unary_op(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        dst[i] = unary(UNARY_OP, src[i]);
    }
}

// Inference batch norm and any per-channel affine map: y = x * ab[c].x + ab[c].y,
// channel = ((base + i) / inner) % channels.
@group(0) @binding(2) var<storage, read> aff_ab: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> aff_y: array<f32>;

@compute @workgroup_size(256)
fn channel_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        let ab = aff_ab[((p.base + i) / p.inner) % p.channels];
        aff_y[i] = fma(src[i], ab.x, ab.y);
    }
}

// ---- broadcasting binary ops and strided copies: shapes of up to 8 dims in the uniform --------

struct Nd {
    n: u32,
    ndim: u32,
    _pad_op: u32,   // the op code is the constant BINARY_OP
    step: u32,
    a_off: u32,     // strided copy: input element offset
    y_off: u32,     // strided copy: output element offset
    _pad0: u32,
    _pad1: u32,
    dims: array<vec4<u32>, 2>,  // iteration shape
    sa: array<vec4<u32>, 2>,    // strides of a (0 on broadcast dims)
    sb: array<vec4<u32>, 2>,    // strides of b (binary) or of the output (strided copy)
}

@group(0) @binding(0) var<uniform> q: Nd;
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_y: array<f32>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d / 4u][d % 4u];
}

// Flat element i of the iteration shape as offsets into the two strided layouts (sa, sb).
fn nd_offsets(i: u32) -> vec2<u32> {
    var rem = i;
    var o = vec2<u32>(0u, 0u);
    for (var d = i32(q.ndim) - 1; d >= 0; d--) {
        let dim = at(q.dims, u32(d));
        let c = rem % dim;
        rem /= dim;
        o += c * vec2<u32>(at(q.sa, u32(d)), at(q.sb, u32(d)));
    }
    return o;
}

fn binary(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return select(a, a * b, a < 0.0); }  // PRelu(x = a, slope = b)
        case 5u: { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
        case 6u: { return select(min(a, b), a + b, is_nan(a) || is_nan(b)); }
        case 7u: { return real_pow(a, b); }  // WGSL pow is undefined for a < 0
        default: { return a; }
    }
}

@compute @workgroup_size(256)
fn binary_op(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < q.n; i += q.step) {
        let o = nd_offsets(i);
        bin_y[i] = binary(BINARY_OP, bin_a[o.x], bin_b[o.y]);
    }
}

@group(0) @binding(1) var<storage, read> st_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_y: array<f32>;

// y[y_off + sum c_d * sb_d] = x[a_off + sum c_d * sa_d] over the iteration shape.
@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < q.n; i += q.step) {
        let o = nd_offsets(i);
        st_y[q.y_off + o.y] = st_x[q.a_off + o.x];
    }
}
