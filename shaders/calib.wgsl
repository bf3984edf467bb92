// Calibration statistics: per-channel (or per-tensor: one channel) min/max, sums,
// mean/variance, histograms, and histogram re-binning.
//
// A tensor is viewed as [outer, C, inner] (the channel axis in the middle). Reductions run in
// two stages: `*_partial` writes one partial per (channel, slot), `*_final` reduces the slots
// of each channel. A partial dispatch covers one chunk of the tensor (the part bound to it,
// at most the adapter's storage-binding size): outer range x channel range x inner range.
// Grid: x = split within the chunk, y + z * ny = channel within the chunk.
// Non-finite values (NaN, +-Inf) are left out of min/max, moments and histograms and counted.

struct Chunk {
    outer_n: u32,   // outer rows in this chunk
    inner_n: u32,   // inner elements per row in this chunk
    c_count: u32,   // channels in this chunk
    c0: u32,        // first channel of this chunk
    c_stride: u32,  // elements between consecutive channels (= full inner)
    o_stride: u32,  // elements between consecutive outer rows (= C * inner)
    skip: u32,      // offset of the chunk's first element within the binding
    splits: u32,    // workgroups per channel in this chunk
    slot_base: u32, // first slot this chunk writes
    slots: u32,     // slots per channel in the partial buffers
    ny: u32,        // grid y size (channel = y + z * ny)
    bins: u32,      // histogram bins
    step_o: u32,    // (splits * 256) / inner_n: outer rows a thread advances per step
    step_i: u32,    // (splits * 256) % inner_n
    drop_outside: u32, // histograms: 1 = values outside the range are left out, 0 = edge bins
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Chunk;

const WG: u32 = 256u;

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn channel_of(wid: vec3<u32>) -> u32 {
    return wid.y + wid.z * p.ny;
}

// A thread walks elements j, j + splits * 256, ... of its channel in the chunk, keeping the
// (outer row, inner position) pair incrementally: one integer division per thread.
struct Cursor {
    o: u32,
    ii: u32,
}

fn cursor_start(split: u32, lid: u32) -> Cursor {
    let j = split * WG + lid;
    return Cursor(j / p.inner_n, j % p.inner_n);
}

fn cursor_next(c: ptr<function, Cursor>) {
    (*c).ii += p.step_i;
    (*c).o += p.step_o;
    if (*c).ii >= p.inner_n {
        (*c).ii -= p.inner_n;
        (*c).o += 1u;
    }
}

// Index into the binding of the cursor's element of chunk channel cl.
fn elem(cl: u32, c: Cursor) -> u32 {
    return p.skip + c.o * p.o_stride + cl * p.c_stride + c.ii;
}

fn slot(cl: u32, split: u32) -> u32 {
    return (p.c0 + cl) * p.slots + p.slot_base + split;
}

var<workgroup> sh_a: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;
var<workgroup> sh_n: array<u32, WG>;

// ---- min / max ------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> mm_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mm_part: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> mm_bad: array<u32>;

var<private> acc_lo: f32;
var<private> acc_hi: f32;
var<private> acc_bad: u32;

fn minmax_visit(v: f32) {
    if is_finite(v) {
        acc_lo = min(acc_lo, v);
        acc_hi = max(acc_hi, v);
    } else {
        acc_bad += 1u;
    }
}

@compute @workgroup_size(256)
fn minmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = channel_of(wid);
    if cl >= p.c_count {
        return;
    }
    acc_lo = bitcast<f32>(0x7f800000u);
    acc_hi = -acc_lo;
    acc_bad = 0u;
    if p.outer_n == 1u {
        // Contiguous channel: each workgroup takes one contiguous block (sequential memory
        // for CPU adapters, coalesced for GPUs).
        let base = p.skip + cl * p.c_stride;
        let block = (p.inner_n + p.splits - 1u) / p.splits;
        let end = min(p.inner_n, (wid.x + 1u) * block);
        for (var j = wid.x * block + lid; j < end; j += WG) {
            minmax_visit(mm_x[base + j]);
        }
    } else {
        for (var cur = cursor_start(wid.x, lid); cur.o < p.outer_n; cursor_next(&cur)) {
            minmax_visit(mm_x[elem(cl, cur)]);
        }
    }
    let lo = acc_lo;
    let hi = acc_hi;
    let bad = acc_bad;
    sh_a[lid] = lo;
    sh_b[lid] = hi;
    sh_n[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh_a[lid] = min(sh_a[lid], sh_a[lid + s]);
            sh_b[lid] = max(sh_b[lid], sh_b[lid + s]);
            sh_n[lid] += sh_n[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let k = slot(cl, wid.x);
        mm_part[k] = vec2<f32>(sh_a[0], sh_b[0]);
        mm_bad[k] = sh_n[0];
    }
}

// Final stage: bindings 1, 2 = partials (read), 3, 4 = per-channel results.
@group(0) @binding(1) var<storage, read> mmf_part: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> mmf_bad: array<u32>;
@group(0) @binding(3) var<storage, read_write> mmf_out: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> mmf_out_bad: array<u32>;

@compute @workgroup_size(256)
fn minmax_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if channel_of(wid) >= p.c_count {
        return;
    }
    let c = p.c0 + channel_of(wid);
    var lo = bitcast<f32>(0x7f800000u);
    var hi = -lo;
    var bad = 0u;
    for (var s = lid; s < p.slots; s += WG) {
        let v = mmf_part[c * p.slots + s];
        lo = min(lo, v.x);
        hi = max(hi, v.y);
        bad += mmf_bad[c * p.slots + s];
    }
    sh_a[lid] = lo;
    sh_b[lid] = hi;
    sh_n[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh_a[lid] = min(sh_a[lid], sh_a[lid + s]);
            sh_b[lid] = max(sh_b[lid], sh_b[lid + s]);
            sh_n[lid] += sh_n[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        mmf_out[c] = vec2<f32>(sh_a[0], sh_b[0]);
        mmf_out_bad[c] = sh_n[0];
    }
}

// ---- sums and moments -------------------------------------------------------------------------
// Partials hold (count, mean, M2) per slot, combined with Chan's parallel formula; the sum is
// count * mean, accumulated the same way, so one kernel serves sums, means and variances.

@group(0) @binding(1) var<storage, read> mo_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mo_part: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> mo_n: array<u32>;

// Combines (na, ma, m2a) with (nb, mb, m2b) into a.
fn chan(na: u32, ma: f32, m2a: f32, nb: u32, mb: f32, m2b: f32) -> vec3<f32> {
    let n = na + nb;
    if n == 0u {
        return vec3<f32>(0.0, 0.0, 0.0);
    }
    let fa = f32(na);
    let fb = f32(nb);
    let fnn = f32(n);
    let d = mb - ma;
    return vec3<f32>(f32(n), ma + d * (fb / fnn), m2a + m2b + d * d * (fa * fb / fnn));
}

fn reduce_moments(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let r = chan(sh_n[lid], sh_a[lid], sh_b[lid], sh_n[lid + s], sh_a[lid + s], sh_b[lid + s]);
            sh_n[lid] += sh_n[lid + s];
            sh_a[lid] = r.y;
            sh_b[lid] = r.z;
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn moments_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = channel_of(wid);
    if cl >= p.c_count {
        return;
    }
    var n = 0u;
    var mean = 0.0;
    var m2 = 0.0;
    for (var cur = cursor_start(wid.x, lid); cur.o < p.outer_n; cursor_next(&cur)) {
        let v = mo_x[elem(cl, cur)];
        if is_finite(v) {
            n += 1u;
            let d = v - mean;
            mean += d / f32(n);
            m2 += d * (v - mean);
        }
    }
    sh_n[lid] = n;
    sh_a[lid] = mean;
    sh_b[lid] = m2;
    reduce_moments(lid);
    if lid == 0u {
        let k = slot(cl, wid.x);
        mo_part[k] = vec2<f32>(sh_a[0], sh_b[0]);
        mo_n[k] = sh_n[0];
    }
}

@group(0) @binding(1) var<storage, read> mof_part: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> mof_n: array<u32>;
// Per channel: (count, mean, M2, sum).
@group(0) @binding(3) var<storage, read_write> mof_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn moments_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if channel_of(wid) >= p.c_count {
        return;
    }
    let c = p.c0 + channel_of(wid);
    var n = 0u;
    var mean = 0.0;
    var m2 = 0.0;
    for (var s = lid; s < p.slots; s += WG) {
        let k = c * p.slots + s;
        let r = chan(n, mean, m2, mof_n[k], mof_part[k].x, mof_part[k].y);
        n += mof_n[k];
        mean = r.y;
        m2 = r.z;
    }
    sh_n[lid] = n;
    sh_a[lid] = mean;
    sh_b[lid] = m2;
    reduce_moments(lid);
    if lid == 0u {
        let cnt = f32(sh_n[0]);
        mof_out[c] = vec4<f32>(cnt, sh_a[0], sh_b[0], sh_a[0] * cnt);
    }
}

// ---- plain sums (gradients: NaN and Inf are summed, never skipped) ------------------------------

@group(0) @binding(1) var<storage, read> su_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> su_part: array<f32>;

@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = channel_of(wid);
    if cl >= p.c_count {
        return;
    }
    var acc = 0.0;
    for (var cur = cursor_start(wid.x, lid); cur.o < p.outer_n; cursor_next(&cur)) {
        acc += su_x[elem(cl, cur)];
    }
    sh_a[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh_a[lid] += sh_a[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        su_part[slot(cl, wid.x)] = sh_a[0];
    }
}

@group(0) @binding(1) var<storage, read> suf_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> suf_out: array<f32>;

@compute @workgroup_size(256)
fn sum_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if channel_of(wid) >= p.c_count {
        return;
    }
    let c = p.c0 + channel_of(wid);
    var acc = 0.0;
    for (var s = lid; s < p.slots; s += WG) {
        acc += suf_part[c * p.slots + s];
    }
    sh_a[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            sh_a[lid] += sh_a[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        suf_out[c] = sh_a[0];
    }
}

// ---- histograms -------------------------------------------------------------------------------
// bin = floor((x - origin) * inv_width) + shift, the grid (origin, inv_width, shift, _) computed
// in f32 on the host: only correctly rounded operations, so the CPU reference gets the same bins
// bit for bit. Values outside the bins land in the edge bins, or are left out when
// p.drop_outside is 1.

const LOCAL_BINS: u32 = 4096u;

@group(0) @binding(1) var<storage, read> hi_range: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> hi_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> hi_counts: array<atomic<u32>>;

var<workgroup> sh_hist: array<atomic<u32>, LOCAL_BINS>;

const DROPPED: u32 = 0xffffffffu;

fn bin_of(v: f32, r: vec4<f32>) -> u32 {
    let t = floor((v - r.x) * r.y) + r.z;
    if p.drop_outside != 0u && (t < 0.0 || t >= f32(p.bins)) {
        return DROPPED;
    }
    return u32(clamp(t, 0.0, f32(p.bins - 1u)));
}

// bins <= 4096: counts gathered in workgroup memory, then added to the global histogram.
@compute @workgroup_size(256)
fn histogram_local(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = channel_of(wid);
    if cl >= p.c_count {
        return;
    }
    for (var b = lid; b < p.bins; b += WG) {
        atomicStore(&sh_hist[b], 0u);
    }
    workgroupBarrier();
    let r = hi_range[p.c0 + cl];
    if p.outer_n == 1u {
        let base = p.skip + cl * p.c_stride;
        for (var j = wid.x * WG + lid; j < p.inner_n; j += p.splits * WG) {
            let v = hi_x[base + j];
            let b = bin_of(v, r);
            if is_finite(v) && b != DROPPED {
                atomicAdd(&sh_hist[b], 1u);
            }
        }
    } else {
        for (var cur = cursor_start(wid.x, lid); cur.o < p.outer_n; cursor_next(&cur)) {
            let v = hi_x[elem(cl, cur)];
            let b = bin_of(v, r);
            if is_finite(v) && b != DROPPED {
                atomicAdd(&sh_hist[b], 1u);
            }
        }
    }
    workgroupBarrier();
    let base = (p.c0 + cl) * p.bins;
    for (var b = lid; b < p.bins; b += WG) {
        let k = atomicLoad(&sh_hist[b]);
        if k != 0u {
            atomicAdd(&hi_counts[base + b], k);
        }
    }
}

// Any bin count: atomics straight into the global histogram.
@compute @workgroup_size(256)
fn histogram_global(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = channel_of(wid);
    if cl >= p.c_count {
        return;
    }
    let r = hi_range[p.c0 + cl];
    let base = (p.c0 + cl) * p.bins;
    for (var cur = cursor_start(wid.x, lid); cur.o < p.outer_n; cursor_next(&cur)) {
        let v = hi_x[elem(cl, cur)];
        let b = bin_of(v, r);
        if is_finite(v) && b != DROPPED {
            atomicAdd(&hi_counts[base + b], 1u);
        }
    }
}

// Re-binning a histogram into a wider range. The host computes, per source bin, the
// destination bin, the bin that takes the remainder, and the fraction that stays: a table that
// depends only on the two ranges. Here: split = min(round(frac * count), count).
// Grid: 1-D over C * bins, folded into 2-D.
@group(0) @binding(1) var<storage, read> rb_dest: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> rb_frac: array<f32>;
@group(0) @binding(3) var<storage, read> rb_old: array<u32>;
@group(0) @binding(4) var<storage, read_write> rb_new: array<atomic<u32>>;

@compute @workgroup_size(256)
fn histogram_rebin(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if i >= p.c_count * p.bins {
        return;
    }
    let count = rb_old[i];
    if count == 0u {
        return;
    }
    let base = (i / p.bins) * p.bins;
    let d = rb_dest[i];
    let split = min(u32(max(round(rb_frac[i] * f32(count)), 0.0)), count);
    if split > 0u {
        atomicAdd(&rb_new[base + d.x], split);
    }
    if count > split {
        atomicAdd(&rb_new[base + d.y], count - split);
    }
}
