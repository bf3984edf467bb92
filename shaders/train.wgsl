// Training kernels: losses (value and gradient of the logits), the global gradient norm, and
// optimizer steps. Step-dependent numbers (learning rate, Adam's bias corrections, the clipping
// factor) live in a small storage buffer `hyper` the host rewrites before each step, so the
// prepared dispatches never change.

// hyper[] slots (src/ops/train.rs: Hyper).
const LR: u32 = 0u;
const BIAS1: u32 = 1u;      // 1 - beta1^t
const BIAS2: u32 = 2u;      // 1 - beta2^t
const CLIP: u32 = 3u;       // factor the gradients are multiplied by (global-norm clipping)
const MAX_NORM: u32 = 4u;   // 0: no clipping
const NORM: u32 = 5u;       // the last step's global gradient norm (written by clip_scale)

// ---- losses ----------------------------------------------------------------------------------

struct Loss {
    rows: u32,
    len: u32,
    mode: u32,         // 0 cross-entropy (target = class index), 1 distillation (target = teacher
                       // logits), 2 mean squared error (target = teacher outputs)
    _pad0: u32,
    scale: f32,        // the gradient's factor: 1 / (samples per optimizer step), or 1 / elements
    temperature: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> l: Loss;
@group(0) @binding(1) var<storage, read> ls_s: array<f32>;       // [rows, len] student outputs
@group(0) @binding(2) var<storage, read> ls_t: array<f32>;       // [rows] or [rows, len]
@group(0) @binding(3) var<storage, read_write> ls_ds: array<f32>; // += d loss / d s
@group(0) @binding(4) var<storage, read_write> ls_row: array<f32>; // [rows] loss per row

// One thread per row. Cross-entropy: logsumexp(s) - s[label], ds = softmax(s) - onehot.
// Distillation (Hinton): T^2 * KL(softmax(t / T) || softmax(s / T)), ds = T (p_s - p_t).
// MSE: sum (s - t)^2, ds = 2 (s - t). ds is multiplied by `scale`.
@compute @workgroup_size(64)
fn loss_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if row >= l.rows {
        return;
    }
    let base = row * l.len;
    if l.mode == 2u {
        var s = 0.0;
        for (var k = 0u; k < l.len; k++) {
            let d = ls_s[base + k] - ls_t[base + k];
            s = fma(d, d, s);
            ls_ds[base + k] += 2.0 * d * l.scale;
        }
        ls_row[row] = s;
        return;
    }
    let inv_t = select(1.0, 1.0 / l.temperature, l.mode == 1u);
    var ms = bitcast<f32>(0xff800000u);
    for (var k = 0u; k < l.len; k++) {
        ms = max(ms, ls_s[base + k] * inv_t);
    }
    var zs = 0.0;
    for (var k = 0u; k < l.len; k++) {
        zs += exp(ls_s[base + k] * inv_t - ms);
    }
    let lse_s = ms + log(zs);
    if l.mode == 0u {
        let label = u32(ls_t[row]);
        for (var k = 0u; k < l.len; k++) {
            let p = exp(ls_s[base + k] - lse_s);
            ls_ds[base + k] += (p - select(0.0, 1.0, k == label)) * l.scale;
        }
        ls_row[row] = lse_s - ls_s[base + label];
        return;
    }
    var mt = bitcast<f32>(0xff800000u);
    for (var k = 0u; k < l.len; k++) {
        mt = max(mt, ls_t[base + k] * inv_t);
    }
    var zt = 0.0;
    for (var k = 0u; k < l.len; k++) {
        zt += exp(ls_t[base + k] * inv_t - mt);
    }
    let lse_t = mt + log(zt);
    var kl = 0.0;
    for (var k = 0u; k < l.len; k++) {
        let log_pt = ls_t[base + k] * inv_t - lse_t;
        let log_ps = ls_s[base + k] * inv_t - lse_s;
        let pt = exp(log_pt);
        kl += pt * (log_pt - log_ps);
        ls_ds[base + k] += l.temperature * (exp(log_ps) - pt) * l.scale;
    }
    ls_row[row] = l.temperature * l.temperature * kl;
}

struct Sum {
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> sum_p: Sum;
@group(0) @binding(1) var<storage, read> sum_rows: array<f32>;
@group(0) @binding(2) var<storage, read_write> sum_acc: array<f32>;  // [sum, rows, steps, _]

// acc += (sum of the rows, rows, 1): the loss the host reads every k steps.
@compute @workgroup_size(1)
fn loss_sum() {
    var s = 0.0;
    for (var i = 0u; i < sum_p.count; i++) {
        s += sum_rows[i];
    }
    sum_acc[0] += s;
    sum_acc[1] += f32(sum_p.count);
    sum_acc[2] += 1.0;
}

// ---- gradient norm ---------------------------------------------------------------------------

struct Norm {
    n: u32,         // elements of this chunk
    offset: u32,    // its first element
    slot: u32,      // where its sum of squares goes
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> nm: Norm;
@group(0) @binding(1) var<storage, read> nm_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> nm_out: array<f32>;

var<workgroup> sh: array<f32, 256>;

// One workgroup: the sum of squares of g[offset .. offset + n] into out[slot].
@compute @workgroup_size(256)
fn sq_sum(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < nm.n; i += 256u) {
        let v = nm_g[nm.offset + i];
        s = fma(v, v, s);
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
        nm_out[nm.slot] = sh[0];
    }
}

@group(0) @binding(1) var<storage, read> cl_sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> cl_hyper: array<f32>;

// The global norm of all gradients, and the factor clipping scales them by.
@compute @workgroup_size(1)
fn clip_scale() {
    var s = 0.0;
    for (var i = 0u; i < nm.n; i++) {
        s += cl_sums[i];
    }
    let norm = sqrt(s);
    cl_hyper[NORM] = norm;
    let max_norm = cl_hyper[MAX_NORM];
    cl_hyper[CLIP] = select(1.0, min(1.0, max_norm / (norm + 1e-6)), max_norm > 0.0);
}

// ---- optimizers ------------------------------------------------------------------------------

struct Opt {
    n: u32,
    step: u32,
    nesterov: u32,
    decoupled: u32,    // AdamW: weight decay applied to the parameter, not added to the gradient
    momentum: f32,     // SGD
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    lr_scale: f32,     // this parameter's rate relative to the schedule's
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> o: Opt;
@group(0) @binding(1) var<storage, read> op_hyper: array<f32>;
@group(0) @binding(2) var<storage, read_write> op_p: array<f32>;
@group(0) @binding(3) var<storage, read_write> op_g: array<f32>;   // zeroed after the step
@group(0) @binding(4) var<storage, read_write> op_m: array<f32>;
@group(0) @binding(5) var<storage, read_write> op_v: array<f32>;

fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// PyTorch's SGD: g += wd * p; v = momentum * v + g; g = g + momentum * v (Nesterov) or v;
// p -= lr * g.
@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let lr = op_hyper[LR] * o.lr_scale;
    let clip = op_hyper[CLIP];
    for (var i = first_index(wid, nwg, lid); i < o.n; i += o.step) {
        var g = op_g[i] * clip + o.weight_decay * op_p[i];
        if o.momentum != 0.0 {
            let v = o.momentum * op_m[i] + g;
            op_m[i] = v;
            g = select(v, g + o.momentum * v, o.nesterov != 0u);
        }
        op_p[i] -= lr * g;
        op_g[i] = 0.0;
    }
}

// PyTorch's Adam (weight decay added to the gradient) and AdamW (decoupled:
// p *= 1 - lr * wd), with bias-corrected moments.
@compute @workgroup_size(256)
fn adam_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let lr = op_hyper[LR] * o.lr_scale;
    let clip = op_hyper[CLIP];
    let b1 = op_hyper[BIAS1];
    let b2 = op_hyper[BIAS2];
    for (var i = first_index(wid, nwg, lid); i < o.n; i += o.step) {
        var p = op_p[i];
        var g = op_g[i] * clip;
        if o.decoupled != 0u {
            p *= 1.0 - lr * o.weight_decay;
        } else {
            g += o.weight_decay * p;
        }
        let m = o.beta1 * op_m[i] + (1.0 - o.beta1) * g;
        let v = o.beta2 * op_v[i] + (1.0 - o.beta2) * g * g;
        op_m[i] = m;
        op_v[i] = v;
        op_p[i] = p - lr * (m / b1) / (sqrt(v / b2) + o.eps);
        op_g[i] = 0.0;
    }
}

// ---- soft rounding (AdaRound) ----------------------------------------------------------------
// A weight w of a channel with step s and offset o (o <= 0) is trained through a variable a per
// element: h(a) = clamp(sigmoid(a) (ZETA - GAMMA) + GAMMA, 0, 1), the weight's code
// q = clamp(floor(w / s) + h(a) - o, 0, N), and its value (q + o) s. The regularizer
// reg * sum(1 - |2h - 1|^beta) pushes every h to 0 or 1.

const ZETA: f32 = 1.1;
const GAMMA: f32 = -0.1;

struct Soft {
    n: u32,
    inner: u32,        // elements per channel step along the channel axis
    channels: u32,
    step: u32,         // grid stride
    levels: f32,       // N, the grid's top code
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> sr: Soft;
@group(0) @binding(1) var<storage, read> sr_a: array<f32>;      // the rounding variables
@group(0) @binding(2) var<storage, read> sr_floor: array<f32>;  // floor(w / s)
@group(0) @binding(3) var<storage, read> sr_grid: array<f32>;   // [scale; channels], [offset; channels]
@group(0) @binding(4) var<storage, read_write> sr_w: array<f32>;     // the weight; its gradient in soft_round_grad
@group(0) @binding(5) var<storage, read> sr_hyper: array<f32>;  // [beta, regularizer weight]
@group(0) @binding(6) var<storage, read_write> sr_da: array<f32>;

// (h, dh/da); the derivative is zero where the clamp holds h at 0 or 1.
fn soft_h(a: f32) -> vec2<f32> {
    let s = 1.0 / (1.0 + exp(-a));
    let pre = s * (ZETA - GAMMA) + GAMMA;
    let inside = pre >= 0.0 && pre <= 1.0;
    return vec2<f32>(clamp(pre, 0.0, 1.0), select(0.0, s * (1.0 - s) * (ZETA - GAMMA), inside));
}

@compute @workgroup_size(256)
fn soft_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < sr.n; i += sr.step) {
        let c = (i / sr.inner) % sr.channels;
        let off = sr_grid[sr.channels + c];
        let q = clamp(sr_floor[i] + soft_h(sr_a[i]).x - off, 0.0, sr.levels);
        sr_w[i] = (q + off) * sr_grid[c];
    }
}

// da += (dw * s * [0 <= code <= N] + reg * d(1 - |2h - 1|^beta)/dh) * dh/da; dw is zeroed (it
// was consumed).
@compute @workgroup_size(256)
fn soft_round_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let beta = sr_hyper[0];
    let reg = sr_hyper[1];
    for (var i = (wid.x + wid.y * nwg.x) * 256u + lid; i < sr.n; i += sr.step) {
        let c = (i / sr.inner) % sr.channels;
        let hd = soft_h(sr_a[i]);
        let u = sr_floor[i] + hd.x - sr_grid[sr.channels + c];
        var g = select(0.0, sr_w[i] * sr_grid[c], u >= 0.0 && u <= sr.levels);
        let t = 2.0 * hd.x - 1.0;
        let m = abs(t);
        if reg != 0.0 && m > 0.0 {
            g -= reg * 2.0 * beta * pow(m, beta - 1.0) * sign(t);
        }
        sr_da[i] += g * hd.y;
        sr_w[i] = 0.0;
    }
}

// ---- learned quantization ranges (QAT) -------------------------------------------------------
// A quantizer's encoding table [channels, 4] = (scale, 1 / scale, offset, 0) computed from its
// learned range [channels, 2] = (ln scale, offset), the scale held at or above AIMET's minimum, a
// learned offset rounded onto the grid;
// the table's gradient (columns 0 and 2) flows back into the range, the offset's only where it
// is learned (asymmetric grids).

struct Ranges {
    channels: u32,
    learn_offset: u32,
    min_scale: f32,
    grad_scale: f32,
    steps: f32,        // the grid's steps: a learned offset is held in [-steps, 0]
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rg: Ranges;
@group(0) @binding(1) var<storage, read> rg_range: array<f32>;
@group(0) @binding(2) var<storage, read_write> rg_table: array<f32>;
@group(0) @binding(2) var<storage, read_write> rg_dtable: array<f32>;  // range_table_grad
@group(0) @binding(3) var<storage, read_write> rg_drange: array<f32>;  // range_table_grad

@compute @workgroup_size(64)
fn range_table(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= rg.channels {
        return;
    }
    let s = max(exp(rg_range[2u * c]), rg.min_scale);
    rg_table[4u * c] = s;
    rg_table[4u * c + 1u] = 1.0 / s;
    // A learned offset is used on the grid, as it is exported: rounded half away from zero
    // and held in range (its gradient passes straight through).
    var o = rg_range[2u * c + 1u];
    if rg.learn_offset != 0u {
        o = clamp(sign(o) * floor(abs(o) + 0.5), -rg.steps, 0.0);
    }
    rg_table[4u * c + 2u] = o;
    rg_table[4u * c + 3u] = 0.0;
}

@compute @workgroup_size(64)
fn range_table_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= rg.channels {
        return;
    }
    // d scale / d ln(scale) = scale.
    rg_drange[2u * c] += rg.grad_scale * exp(rg_range[2u * c]) * rg_dtable[4u * c];
    rg_drange[2u * c + 1u] += select(0.0, rg.grad_scale * rg_dtable[4u * c + 2u], rg.learn_offset != 0u);
    for (var k = 0u; k < 4u; k++) {
        rg_dtable[4u * c + k] = 0.0;
    }
}
