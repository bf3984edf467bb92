// Elementwise kernels over flat f32 arrays.
// Grid-stride loops over elements; the grid folds into 2-D past the per-dimension limit.

struct Params {
    n: u32,
    step: u32,      // threads in the dispatch (grid stride)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Plain copy: the bandwidth roofline memory-bound kernels are compared against.
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < p.n; i += p.step) {
        dst[i] = src[i];
    }
}
