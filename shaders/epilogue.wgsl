// The fused epilogue of the convolution and GEMM kernels (appended after activation.wgsl,
// before conv.wgsl / gemm.wgsl): after the bias, in this order, a per-channel affine map
// (inference BatchNorm), a residual addition, the per-tensor fake quantization of the value
// before the activation (a simulation's quantizer there), an activation and the output's
// per-tensor fake quantization. Each is the f32 arithmetic of the op's own kernel (channel_affine, binary_op
// Add, unary_op, fake_quant) on the same value, so fused and unfused give the same bits.
// Pipeline constants select the parts (the plain kernels compile them away); a reduction
// split into dispatches applies them on its last dispatch only.

override EPI_AFFINE: bool = false;
override EPI_RESIDUAL: bool = false;
override EPI_QUANT_PRE: bool = false;
override EPI_ACT: u32 = 0u;  // 0: none; else 1 + the unary op code
override EPI_QUANT: bool = false;
override EPI_EXACT: bool = false;  // the quantizers round the exact quotient (see activation.wgsl)

// The epilogue's uniform fields (a member of each kernel's Params).
struct Epi {
    act_alpha: f32,
    act_beta: f32,
    qmax: f32,
    _pad_exact: u32,
    qmax_pre: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(5) var<storage, read> epi_affine: array<f32>;   // [channels, 2]: (a, b)
@group(0) @binding(6) var<storage, read> epi_residual: array<f32>; // indexed as the output
@group(0) @binding(7) var<storage, read> epi_enc: array<f32>;      // (scale, 1 / scale, offset, -)
@group(0) @binding(8) var<storage, read> epi_enc_pre: array<f32>;  // the same, before the activation

// The quantizers' encodings, read from their tables once per invocation (before the outputs
// are stored): on CPU adapters every storage load is a scalar loop over the lanes, and an
// invocation storing 8 to 128 outputs would otherwise read them for each.
struct EpiQ {
    q: vec4<f32>,
    pre: vec4<f32>,
}

fn epi_encodings() -> EpiQ {
    var e: EpiQ;
    if EPI_QUANT {
        e.q = vec4(epi_enc[0], epi_enc[1], epi_enc[2], epi_enc[3]);
    }
    if EPI_QUANT_PRE {
        e.pre = vec4(epi_enc_pre[0], epi_enc_pre[1], epi_enc_pre[2], epi_enc_pre[3]);
    }
    return e;
}

// `v` (bias added) at output index `at` of channel `ch`, with the selected parts applied.
fn epilogue(v: f32, at: u32, ch: u32, e: Epi, eq: EpiQ) -> f32 {
    var r = v;
    if EPI_AFFINE {
        r = fma(r, epi_affine[2u * ch], epi_affine[2u * ch + 1u]);
    }
    if EPI_RESIDUAL {
        r = r + epi_residual[at];
    }
    if EPI_QUANT_PRE {
        r = fake_quantize(r, eq.pre, e.qmax_pre, EPI_EXACT);
    }
    if EPI_ACT != 0u {
        r = activation(EPI_ACT - 1u, r, e.act_alpha, e.act_beta);
    }
    if EPI_QUANT {
        r = fake_quantize(r, eq.q, e.qmax, EPI_EXACT);
    }
    return r;
}
