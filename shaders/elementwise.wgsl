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
@group(0) @binding(1) var<storage, read_write> fill_dst4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        fill_dst[i] = p.alpha;
    }
}

// fill over vectors of 4 (p.n counts vectors): a quarter of the stores, each a per-lane loop
// on CPU adapters.
@compute @workgroup_size(256)
fn fill4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < p.n; i += p.step) {
        fill_dst4[i] = vec4(p.alpha);
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
    runs: u32,      // ceil(n / RUN)
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

// Consecutive elements one invocation handles: 1 where lanes should touch neighbouring
// elements (GPUs coalesce them); more on CPU adapters, where an integer division is a scalar
// loop over the lanes and a run pays for one index decomposition.
override RUN: u32 = 1u;

// Flat element i of the iteration shape as (offset into sa's layout, offset into sb's, its
// coordinate along the innermost dim). The outermost coordinate needs no division (i < n).
fn nd_start(i: u32) -> vec3<u32> {
    var rem = i;
    var o = vec2<u32>(0u, 0u);
    let last = q.ndim - 1u;
    var inner = i;
    for (var d = last; d > 0u; d--) {
        let dim = at(q.dims, d);
        let c = rem % dim;
        if d == last {
            inner = c;
        }
        rem /= dim;
        o += c * vec2<u32>(at(q.sa, d), at(q.sb, d));
    }
    o += rem * vec2<u32>(at(q.sa, 0u), at(q.sb, 0u));
    return vec3<u32>(o, inner);
}

// binary_op and strided_copy visit runs of RUN consecutive elements, stepping along the
// innermost dim without a division and decomposing again only where a run crosses its end.
// C's fmod, exact, on every adapter (subnormals included, whatever the driver does with
// them in float arithmetic): a long division of the two significands as integers. NaN for
// b = 0, an infinite a or a NaN; a itself for |a| < |b| (an infinite b included). The result,
// exact in IEEE arithmetic, is built from its bits; a - b * trunc(a / b) would lose it once
// |a / b| passes 2^24.
fn real_fmod(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = ua & 0x80000000u;
    let ma = ua & 0x7fffffffu;
    let mb = ub & 0x7fffffffu;
    if mb == 0u || mb > 0x7f800000u || ma >= 0x7f800000u {
        return bitcast<f32>(0x7fc00000u);
    }
    if ma < mb {
        return a;
    }
    if ma == mb {
        return bitcast<f32>(sign);
    }
    // Significands with the implicit bit, exponents of their lowest bit (subnormals normalised).
    var ea = i32(ma >> 23u);
    var eb = i32(mb >> 23u);
    var sa = ma & 0x7fffffu;
    var sb = mb & 0x7fffffu;
    if ea == 0 {
        ea = 1;
        while (sa & 0x800000u) == 0u {
            sa <<= 1u;
            ea -= 1;
        }
    } else {
        sa |= 0x800000u;
    }
    if eb == 0 {
        eb = 1;
        while (sb & 0x800000u) == 0u {
            sb <<= 1u;
            eb -= 1;
        }
    } else {
        sb |= 0x800000u;
    }
    // Shift-and-subtract, one exponent step at a time (at most 277 steps).
    for (; ea > eb; ea -= 1) {
        if sa >= sb {
            sa -= sb;
            if sa == 0u {
                return bitcast<f32>(sign);
            }
        }
        sa <<= 1u;
    }
    if sa >= sb {
        sa -= sb;
        if sa == 0u {
            return bitcast<f32>(sign);
        }
    }
    // Normalise back, then pack (as a subnormal below the smallest normal exponent).
    while (sa & 0x800000u) == 0u {
        sa <<= 1u;
        ea -= 1;
    }
    var bits: u32;
    if ea >= 1 {
        bits = (u32(ea) << 23u) | (sa & 0x7fffffu);
    } else {
        bits = sa >> u32(1 - ea);
    }
    return bitcast<f32>(bits | sign);
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
        // Comparisons and logic: bools as 0/1; a comparison with NaN is false (by the bits:
        // compilers may fold comparisons with NaN).
        case 8u: { return select(0.0, 1.0, !is_nan(a) && !is_nan(b) && a == b); }   // Equal
        case 9u: { return select(0.0, 1.0, !is_nan(a) && !is_nan(b) && a < b); }    // Less
        case 10u: { return select(0.0, 1.0, !is_nan(a) && !is_nan(b) && a > b); }   // Greater
        case 11u: { return select(0.0, 1.0, !is_nan(a) && !is_nan(b) && a <= b); }  // LessOrEqual
        case 12u: { return select(0.0, 1.0, !is_nan(a) && !is_nan(b) && a >= b); }  // GreaterOrEqual
        case 13u: { return select(0.0, 1.0, a != 0.0 && b != 0.0); }                // And
        case 14u: { return select(0.0, 1.0, a != 0.0 || b != 0.0); }                // Or
        case 15u: { return select(0.0, 1.0, (a != 0.0) != (b != 0.0)); }            // Xor
        case 16u: { return real_fmod(a, b); }                                       // Mod, fmod = 1
        case 17u: {                                 // Mod, fmod = 0: the sign of b (NumPy's mod)
            var r = real_fmod(a, b);
            if r != 0.0 && (r < 0.0) != (b < 0.0) {
                r += b;
            }
            return select(r, bitcast<f32>(bitcast<u32>(b) & 0x80000000u), r == 0.0);
        }
        case 18u: { return trunc(a / b); }                                          // Div of integers
        default: { return a; }
    }
}

@compute @workgroup_size(256)
fn binary_op(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let last = q.ndim - 1u;
    let inner_dim = at(q.dims, last);
    let along = vec2<u32>(at(q.sa, last), at(q.sb, last));
    for (var r = first_index(wid, nwg, lid); r < q.runs; r += q.step) {
        let start = r * RUN;
        let end = min(start + RUN, q.n);
        var s = nd_start(start);
        for (var i = start; i < end; i++) {
            if s.z == inner_dim {
                s = nd_start(i);
            }
            bin_y[i] = binary(BINARY_OP, bin_a[s.x], bin_b[s.y]);
            s += vec3<u32>(along, 1u);
        }
    }
}

@group(0) @binding(1) var<storage, read> st_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_y: array<f32>;

// y[y_off + sum c_d * sb_d] = x[a_off + sum c_d * sa_d] over the iteration shape.
@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let last = q.ndim - 1u;
    let inner_dim = at(q.dims, last);
    let along = vec2<u32>(at(q.sa, last), at(q.sb, last));
    for (var r = first_index(wid, nwg, lid); r < q.runs; r += q.step) {
        let start = r * RUN;
        let end = min(start + RUN, q.n);
        var s = nd_start(start);
        for (var i = start; i < end; i++) {
            if s.z == inner_dim {
                s = nd_start(i);
            }
            st_y[q.y_off + s.y] = st_x[q.a_off + s.x];
            s += vec3<u32>(along, 1u);
        }
    }
}

// ---- Where: y = c != 0 ? a : b, the three broadcast to y (strides 0 on broadcast dims) ------

struct Nd3 {
    n: u32,
    ndim: u32,
    step: u32,
    _pad0: u32,
    dims: array<vec4<u32>, 2>,
    sc: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> w: Nd3;
@group(0) @binding(1) var<storage, read> where_c: array<f32>;
@group(0) @binding(2) var<storage, read> where_a: array<f32>;
@group(0) @binding(3) var<storage, read> where_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> where_y: array<f32>;

@compute @workgroup_size(256)
fn where_op(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    for (var i = first_index(wid, nwg, lid); i < w.n; i += w.step) {
        var rem = i;
        var o = vec3<u32>(0u, 0u, 0u);
        for (var d = i32(w.ndim) - 1; d >= 0; d--) {
            let dim = at(w.dims, u32(d));
            let c = rem % dim;
            rem /= dim;
            o += c * vec3<u32>(at(w.sc, u32(d)), at(w.sa, u32(d)), at(w.sb, u32(d)));
        }
        where_y[i] = select(where_b[o.z], where_a[o.y], where_c[o.x] != 0.0);
    }
}

// ---- Gather along an axis with runtime indices: x viewed as [outer, dim, inner], indices
// flat [nidx] (integers carried as f32), y as [outer, nidx, inner]. A negative index counts
// from the end; one outside [-dim, dim) reads 0 (never memory outside x).

struct Gath {
    n: u32,
    step: u32,
    inner: u32,
    nidx: u32,
    dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> gp: Gath;
@group(0) @binding(1) var<storage, read> gather_x: array<f32>;
@group(0) @binding(2) var<storage, read> gather_idx: array<f32>;
@group(0) @binding(3) var<storage, read_write> gather_y: array<f32>;

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    for (var t = first_index(wid, nwg, lid); t < gp.n; t += gp.step) {
        let i = t % gp.inner;
        let j = (t / gp.inner) % gp.nidx;
        let o = t / (gp.inner * gp.nidx);
        var k = i32(gather_idx[j]);
        if k < 0 {
            k += i32(gp.dim);
        }
        var v = 0.0;
        if k >= 0 && k < i32(gp.dim) {
            v = gather_x[(o * gp.dim + u32(k)) * gp.inner + i];
        }
        gather_y[t] = v;
    }
}

// ---- GatherElements: y (of the indices' shape) at coordinates c reads x at c with the
// coordinate along `axis` replaced by the index there (negative from the end, outside the
// dim: 0).

struct GathEl {
    n: u32,
    ndim: u32,
    step: u32,
    axis: u32,
    xdim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    dims: array<vec4<u32>, 2>,   // the indices' (and y's) shape
    xs: array<vec4<u32>, 2>,     // x's strides
}

@group(0) @binding(0) var<uniform> ge: GathEl;
@group(0) @binding(1) var<storage, read> ge_x: array<f32>;
@group(0) @binding(2) var<storage, read> ge_idx: array<f32>;
@group(0) @binding(3) var<storage, read_write> ge_y: array<f32>;

@compute @workgroup_size(256)
fn gather_elements(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    for (var t = first_index(wid, nwg, lid); t < ge.n; t += ge.step) {
        var k = i32(ge_idx[t]);
        if k < 0 {
            k += i32(ge.xdim);
        }
        var rem = t;
        var off = 0u;
        for (var d = i32(ge.ndim) - 1; d >= 0; d--) {
            let dim = at(ge.dims, u32(d));
            var c = rem % dim;
            rem /= dim;
            if u32(d) == ge.axis {
                c = u32(max(k, 0));
            }
            off += c * at(ge.xs, u32(d));
        }
        ge_y[t] = select(0.0, ge_x[off], k >= 0 && k < i32(ge.xdim));
    }
}

// ---- Pad of any mode with signed pads (a negative pad crops): y[o] = x[o - begin] where that
// lies inside x, else by mode: 0 constant (p.value), 1 edge (the nearest element), 2 reflect
// (mirrored about the edge element), 3 wrap (periodic).

struct PadP {
    n: u32,
    ndim: u32,
    step: u32,
    mode: u32,
    value: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    dims: array<vec4<u32>, 2>,    // y's shape
    in_dims: array<vec4<u32>, 2>, // x's shape
    begin: array<vec4<i32>, 2>,   // pads at the start of each dim
    xs: array<vec4<u32>, 2>,      // x's strides
}

@group(0) @binding(0) var<uniform> pd: PadP;
@group(0) @binding(1) var<storage, read> pad_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> pad_y: array<f32>;

@compute @workgroup_size(256)
fn pad_any(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    for (var t = first_index(wid, nwg, lid); t < pd.n; t += pd.step) {
        var rem = t;
        var off = 0u;
        var inside = true;
        for (var d = i32(pd.ndim) - 1; d >= 0; d--) {
            let u = u32(d);
            let dim = at(pd.dims, u);
            let o = i32(rem % dim);
            rem /= dim;
            let n = i32(at(pd.in_dims, u));
            var i = o - pd.begin[u / 4u][u % 4u];
            if i < 0 || i >= n {
                switch pd.mode {
                    case 1u: { i = clamp(i, 0, n - 1); }
                    case 2u: {
                        // Reflect about the edge elements (period 2n - 2).
                        let period = max(2 * n - 2, 1);
                        var r = i % period;
                        if r < 0 {
                            r += period;
                        }
                        i = select(r, period - r, r >= n);
                    }
                    case 3u: {
                        var r = i % n;
                        if r < 0 {
                            r += n;
                        }
                        i = r;
                    }
                    default: { inside = false; }
                }
            }
            off += u32(max(i, 0)) * at(pd.xs, u);
        }
        pad_y[t] = select(pd.value, pad_x[off], inside);
    }
}

// ---- ScatterND: each thread one element of the update slices, applying the updates in order
// (duplicates included, deterministically): y[offset(indices[i]) + t] combined with
// updates[i * slice + t] (mode 0 replace, 1 add, 2 mul, 3 max, 4 min). y holds the data
// already. Indices are integers carried as f32, negative from the end; an index outside its
// dim skips the update. One dispatch applies updates _pad0 .. nidx.

struct ScatP {
    slice: u32,
    nidx: u32,
    k: u32,
    mode: u32,
    step: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    dims: array<vec4<u32>, 2>,   // data's first k dims
    xs: array<vec4<u32>, 2>,     // data's strides of those dims
}

@group(0) @binding(0) var<uniform> sc: ScatP;
@group(0) @binding(1) var<storage, read> sc_idx: array<f32>;
@group(0) @binding(2) var<storage, read> sc_upd: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc_y: array<f32>;

@compute @workgroup_size(256)
fn scatter_nd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var t = first_index(wid, nwg, lid); t < sc.slice; t += sc.step) {
        for (var i = sc._pad0; i < sc.nidx; i++) {
            var off = 0u;
            var ok = true;
            for (var j = 0u; j < sc.k; j++) {
                let dim = i32(at(sc.dims, j));
                var c = i32(sc_idx[i * sc.k + j]);
                if c < 0 {
                    c += dim;
                }
                ok = ok && c >= 0 && c < dim;
                off += u32(max(c, 0)) * at(sc.xs, j);
            }
            if !ok {
                continue;
            }
            let at_y = off + t;
            let u = sc_upd[i * sc.slice + t];
            let v = sc_y[at_y];
            switch sc.mode {
                case 1u: { sc_y[at_y] = v + u; }
                case 2u: { sc_y[at_y] = v * u; }
                case 3u: { sc_y[at_y] = select(max(v, u), v + u, is_nan(v) || is_nan(u)); }
                case 4u: { sc_y[at_y] = select(min(v, u), v + u, is_nan(v) || is_nan(u)); }
                default: { sc_y[at_y] = u; }
            }
        }
    }
}
