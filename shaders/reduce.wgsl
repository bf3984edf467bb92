// Row reductions over the last axis of a [rows, len] view: softmax and mean.
// One workgroup per row; grid folded: row = x + y * nwg.x.

struct Params {
    rows: u32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> sh: array<f32, 256>;

fn reduce_max(lid: u32) -> f32 {
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            sh[lid] = max(sh[lid], sh[lid + k]);
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32) -> f32 {
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            sh[lid] += sh[lid + k];
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    var m = bitcast<f32>(0xff800000u);
    for (var i = lid; i < p.len; i += 256u) {
        m = max(m, x[base + i]);
    }
    sh[lid] = m;
    m = reduce_max(lid);
    var s = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        s += exp(x[base + i] - m);
    }
    sh[lid] = s;
    s = reduce_sum(lid);
    for (var i = lid; i < p.len; i += 256u) {
        y[base + i] = exp(x[base + i] - m) / s;
    }
}

@compute @workgroup_size(256)
fn mean_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    var s = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        s += x[row * p.len + i];
    }
    sh[lid] = s;
    s = reduce_sum(lid);
    if lid == 0u {
        y[row] = s / f32(p.len);
    }
}

// ---- General row reductions, argmax/argmin, log-softmax, hardmax, top-k, cumulative sums
// and normalization. Params.rows / len as above; _pad0 and _pad1 carry per-kernel flags.

// Reduction op: 0 sum, 2 max, 3 min, 4 prod, 5 L1, 6 L2, 7 log-sum, 8 log-sum-exp,
// 9 sum of squares (1, the mean, has mean_rows). NaN propagates through every one.
override REDUCE_OP: u32 = 0u;

fn nan_of(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn pos_inf() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

fn combine(a: f32, b: f32) -> f32 {
    if nan_of(a) || nan_of(b) {
        return a + b;
    }
    switch REDUCE_OP {
        case 2u: { return max(a, b); }
        case 3u: { return min(a, b); }
        case 4u: { return a * b; }
        default: { return a + b; }
    }
}

fn identity() -> f32 {
    switch REDUCE_OP {
        case 2u: { return -pos_inf(); }
        case 3u: { return pos_inf(); }
        case 4u: { return 1.0; }
        default: { return 0.0; }
    }
}

fn reduce_combine(lid: u32) -> f32 {
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            sh[lid] = combine(sh[lid], sh[lid + k]);
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

// Max with NaN propagating (max() may drop it).
fn nan_max(a: f32, b: f32) -> f32 {
    return select(max(a, b), a + b, nan_of(a) || nan_of(b));
}

fn reduce_nan_max(lid: u32) -> f32 {
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k {
            sh[lid] = nan_max(sh[lid], sh[lid + k]);
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

// ln s for s >= 0 with ln 0 = -inf (WGSL's log(0) is indeterminate).
fn log_or_minus_inf(s: f32) -> f32 {
    return select(log(s), -pos_inf(), s == 0.0);
}

@compute @workgroup_size(256)
fn reduce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    // Log-sum-exp: the row's maximum first (an infinite or NaN maximum is the result).
    var m = 0.0;
    if REDUCE_OP == 8u {
        var mm = -pos_inf();
        for (var i = lid; i < p.len; i += 256u) {
            mm = nan_max(mm, x[base + i]);
        }
        sh[lid] = mm;
        m = reduce_nan_max(lid);
    }
    var s = identity();
    for (var i = lid; i < p.len; i += 256u) {
        let v = x[base + i];
        var t = v;
        switch REDUCE_OP {
            case 5u: { t = abs(v); }
            case 6u, 9u: { t = v * v; }
            case 8u: { t = exp(v - m); }
            default: {}
        }
        s = combine(s, t);
    }
    sh[lid] = s;
    s = reduce_combine(lid);
    if lid == 0u {
        var r = s;
        switch REDUCE_OP {
            case 6u: { r = sqrt(s); }
            case 7u: { r = log_or_minus_inf(s); }
            case 8u: {
                r = select(m + log_or_minus_inf(s), m, abs(m) == pos_inf() || nan_of(m));
            }
            default: {}
        }
        y[row] = r;
    }
}

// Index of the row's maximum (p._pad0 = 0) or minimum (1); among equal values the first
// (p._pad1 = 0) or the last (1); a NaN wins over every number, the first NaN over later ones
// (NumPy's argmax and argmin). The index is written as f32 (exact below 2^24).
var<workgroup> shi: array<u32, 256>;

fn arg_better(v: f32, i: u32, w: f32, j: u32) -> bool {
    // Is (v, i) better than (w, j)?
    if nan_of(w) {
        return nan_of(v) && i < j;
    }
    if nan_of(v) {
        return true;
    }
    if v == w {
        return select((i < j), (i > j), p._pad1 == 1u);
    }
    return select((v > w), (v < w), p._pad0 == 1u);
}

@compute @workgroup_size(256)
fn arg_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    var bv = x[base + min(lid, p.len - 1u)];
    var bi = min(lid, p.len - 1u);
    for (var i = lid; i < p.len; i += 256u) {
        let v = x[base + i];
        if arg_better(v, i, bv, bi) {
            bv = v;
            bi = i;
        }
    }
    sh[lid] = bv;
    shi[lid] = bi;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k && arg_better(sh[lid + k], shi[lid + k], sh[lid], shi[lid]) {
            sh[lid] = sh[lid + k];
            shi[lid] = shi[lid + k];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        y[row] = f32(shi[0]);
    }
}

// log(softmax(x)) = x - max - ln(sum(exp(x - max))), per row.
@compute @workgroup_size(256)
fn log_softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    var m = -pos_inf();
    for (var i = lid; i < p.len; i += 256u) {
        m = nan_max(m, x[base + i]);
    }
    sh[lid] = m;
    m = reduce_nan_max(lid);
    var s = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        s += exp(x[base + i] - m);
    }
    sh[lid] = s;
    s = reduce_sum(lid);
    let l = log(s);
    for (var i = lid; i < p.len; i += 256u) {
        y[base + i] = x[base + i] - m - l;
    }
}

// 1 at the row's first maximum, 0 elsewhere.
@compute @workgroup_size(256)
fn hardmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    var bv = x[base + min(lid, p.len - 1u)];
    var bi = min(lid, p.len - 1u);
    for (var i = lid; i < p.len; i += 256u) {
        let v = x[base + i];
        if arg_better(v, i, bv, bi) {
            bv = v;
            bi = i;
        }
    }
    sh[lid] = bv;
    shi[lid] = bi;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if lid < k && arg_better(sh[lid + k], shi[lid + k], sh[lid], shi[lid]) {
            sh[lid] = sh[lid + k];
            shi[lid] = shi[lid + k];
        }
        workgroupBarrier();
    }
    let best = shi[0];
    for (var i = lid; i < p.len; i += 256u) {
        y[base + i] = select(0.0, 1.0, i == best);
    }
}

// Top-k per row: values into y ([rows, k]) and indices into topk_idx, in order (largest
// first when p._pad0 = 0, smallest first when 1; equal values by index). Step j picks the best
// element ordered after step j - 1's pick. A NaN counts as larger than every number.
@group(0) @binding(3) var<storage, read_write> topk_idx: array<f32>;

fn topk_before(v: f32, i: u32, w: f32, j: u32) -> bool {
    // Does (v, i) come before (w, j) in the output order?
    let vn = nan_of(v);
    let wn = nan_of(w);
    if vn || wn {
        if vn && wn {
            return i < j;
        }
        // NaN is the largest: first for largest-first, last for smallest-first.
        return select(vn, wn, p._pad0 == 1u);
    }
    if v == w {
        return i < j;
    }
    return select((v > w), (v < w), p._pad0 == 1u);
}

@compute @workgroup_size(256)
fn topk_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    let k = p._pad1;
    var pv = 0.0;
    var pi = 0u;
    for (var j = 0u; j < k; j++) {
        var found = false;
        var bv = 0.0;
        var bi = 0u;
        for (var i = lid; i < p.len; i += 256u) {
            let v = x[base + i];
            let after = j == 0u || topk_before(pv, pi, v, i);
            if after && (!found || topk_before(v, i, bv, bi)) {
                found = true;
                bv = v;
                bi = i;
            }
        }
        sh[lid] = bv;
        shi[lid] = select(0xffffffffu, bi, found);
        workgroupBarrier();
        for (var s = 128u; s > 0u; s >>= 1u) {
            if lid < s {
                let oi = shi[lid + s];
                if oi != 0xffffffffu && (shi[lid] == 0xffffffffu
                        || topk_before(sh[lid + s], oi, sh[lid], shi[lid])) {
                    sh[lid] = sh[lid + s];
                    shi[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        pv = sh[0];
        pi = shi[0];
        if lid == 0u {
            y[row * k + j] = pv;
            topk_idx[row * k + j] = f32(pi);
        }
        workgroupBarrier();
    }
}

// Cumulative sum along rows, one thread per row, in order (p._pad0: bit 0 exclusive, bit 1
// reverse). Grid: one thread per row over a 1-D grid-stride loop of rows.
@compute @workgroup_size(256)
fn cumsum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 256u + lid;
    if row >= p.rows {
        return;
    }
    let exclusive = (p._pad0 & 1u) != 0u;
    let reverse = (p._pad0 & 2u) != 0u;
    var s = 0.0;
    for (var t = 0u; t < p.len; t++) {
        let i = select(t, p.len - 1u - t, reverse);
        let v = x[row * p.len + i];
        if exclusive {
            y[row * p.len + i] = s;
            s += v;
        } else {
            s += v;
            y[row * p.len + i] = s;
        }
    }
}

// Normalization of each row: mean, then the variance about it (two passes, f32); y = (x -
// mean) / sqrt(var + eps) (p._pad0 = 0, LayerNorm, InstanceNorm, GroupNorm) or (x - mean) /
// (sqrt(var) + eps) (1, MeanVarianceNormalization), eps as bits in p._pad1. Each row's mean
// and 1 / sqrt(var + eps) go to norm_stats[2 row], [2 row + 1].
@group(0) @binding(3) var<storage, read_write> norm_stats: array<f32>;

@compute @workgroup_size(256)
fn normalize_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.len;
    let eps = bitcast<f32>(p._pad1);
    var s = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        s += x[base + i];
    }
    sh[lid] = s;
    let mean = reduce_sum(lid) / f32(p.len);
    var q = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    sh[lid] = q;
    let var_ = reduce_sum(lid) / f32(p.len);
    var inv: f32;
    if p._pad0 == 1u {
        inv = 1.0 / (sqrt(var_) + eps);
    } else {
        inv = 1.0 / sqrt(var_ + eps);
    }
    for (var i = lid; i < p.len; i += 256u) {
        y[base + i] = (x[base + i] - mean) * inv;
    }
    if lid == 0u {
        norm_stats[2u * row] = mean;
        norm_stats[2u * row + 1u] = inv;
    }
}
