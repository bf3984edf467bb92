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
