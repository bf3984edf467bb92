// Functions every kernel that writes activations shares (prepended to elementwise.wgsl,
// quant.wgsl, conv.wgsl and gemm.wgsl): the unary activations and fake quantization. A fused
// epilogue (epilogue.wgsl) and the op's own kernel call the same function on the same f32
// value, so both give the same bits.

// NaN by its bits: comparisons with NaN may be folded away by shader compilers.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// erf with Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), and below |x| = 1/2 its Maclaurin
// series (relative error < 1e-8), where that absolute error would be a large relative one.
fn erf_approx(x: f32) -> f32 {
    if abs(x) < 0.5 {
        let x2 = x * x;
        let s = 1.0 + x2 * (-0.33333333 + x2 * (0.1 + x2 * (-0.023809524 + x2 * (0.0046296296 + x2 * -0.00075757576))));
        return 1.1283792 * x * s;
    }
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-x * x));
}

// tanh to f32 precision on every adapter. Drivers may evaluate tanh as a quotient of
// exponentials: it overflows to NaN for large |x| (so the argument is saturated first:
// tanh(10) rounds to 1 in f32) and loses all relative precision near 0 (so small |x| takes
// the series x - x^3/3 + 2x^5/15 - 17x^7/315, exact to 2e-9 below 1/8).
fn tanh_real(x: f32) -> f32 {
    if abs(x) < 0.125 {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333333 + x2 * (0.13333333 + x2 * -0.053968254)));
    }
    return tanh(clamp(x, -10.0, 10.0));
}

// e^x - 1 without the cancellation near 0 (WGSL has no expm1): its series below 1/2^3.
fn expm1(x: f32) -> f32 {
    if abs(x) < 0.125 {
        return x * (1.0 + x * (0.5 + x * (0.16666667 + x * (0.041666668 + x * 0.008333334))));
    }
    return exp(x) - 1.0;
}

// ln x as ONNX defines it on every adapter: -inf at 0, NaN below (WGSL leaves both
// indeterminate).
fn real_log(x: f32) -> f32 {
    if x <= 0.0 {
        let inf = bitcast<f32>((bitcast<u32>(x) & 0u) | 0x7f800000u);
        return select(bitcast<f32>(bitcast<u32>(x) | 0x7fc00000u), -inf, x == 0.0);
    }
    return log(x);
}

// ln(1 + e^x) without overflow: max(x, 0) + ln(1 + e^-|x|), the last term by its series
// (x - x^2/2 + x^3/3) where e^-|x| is small enough that 1 + it would round it away.
fn softplus(x: f32) -> f32 {
    let t = exp(-abs(x));
    let l = select(log(1.0 + t), t * (1.0 - t * (0.5 - t * 0.33333333)), t < 0.01);
    return max(x, 0.0) + l;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Unary op codes (src/ops/elementwise.rs: unary_code) with their two parameters. NaN
// propagates through every op, as in onnxruntime (min, max and clamp alone may drop it).
fn activation(op: u32, x: f32, alpha: f32, beta: f32) -> f32 {
    if op == 28u || op == 33u {                                            // IsNaN, Cast to bool
        return select(0.0, 1.0, is_nan(x) || (op == 33u && x != 0.0));
    }
    if is_nan(x) {
        return select(x, 0.0, op == 27u || op == 29u);                     // Not, IsInf: false
    }
    switch op {
        case 0u: { return max(x, 0.0); }                                   // Relu
        case 1u: { return min(max(x, alpha), beta); }                      // Clip(alpha, beta)
        case 2u: { return select(x, x * alpha, x < 0.0); }                 // LeakyRelu(alpha)
        case 3u: { return sigmoid(x); }                                    // Sigmoid
        case 4u: { return clamp(alpha * x + beta, 0.0, 1.0); }            // HardSigmoid
        case 5u: { return x * clamp(x / 6.0 + 0.5, 0.0, 1.0); }           // HardSwish
        case 6u: { return tanh_real(x); }                                  // Tanh
        case 7u: { return erf_approx(x); }                                 // Erf
        case 8u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); } // Gelu
        case 9u: { return exp(x); }                                        // Exp
        // WGSL leaves sqrt of a negative value indeterminate; ONNX's is NaN.
        case 10u: { return select(sqrt(x), bitcast<f32>(bitcast<u32>(x) | 0x7fc00000u), x < 0.0); } // Sqrt
        case 11u: { return -x; }                                           // Neg
        case 12u: { return abs(x); }                                       // Abs
        case 13u: { return sign(x); }                                      // Sign
        case 14u: { return floor(x); }                                     // Floor
        case 15u: { return ceil(x); }                                      // Ceil
        case 16u: { return round(x); }                                     // Round (half to even)
        case 17u: { return 1.0 / x; }                                      // Reciprocal
        case 18u: { return real_log(x); }                                  // Log
        case 19u: { return softplus(x); }                                  // Softplus
        case 20u: { return x / (1.0 + abs(x)); }                           // Softsign
        case 21u: { return select(x, alpha * expm1(x), x < 0.0); }         // Elu(alpha)
        case 22u: { return beta * select(x, alpha * expm1(x), x <= 0.0); } // Selu(alpha, gamma)
        case 23u: { return max(x, 0.0) + min(0.0, alpha * expm1(x / alpha)); } // Celu(alpha)
        case 24u: { return x * tanh_real(softplus(x)); }                   // Mish
        case 25u: {                                                        // Shrink(bias, lambd)
            return select(select(0.0, x - alpha, x > beta), x + alpha, x < -beta);
        }
        case 26u: { return select(0.0, x, x > alpha); }                    // ThresholdedRelu
        case 27u: { return select(0.0, 1.0, x == 0.0); }                   // Not (bool as 0/1)
        case 29u: {                                                        // IsInf(pos, neg)
            let inf = (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
            return select(0.0, 1.0, inf && ((x > 0.0 && alpha != 0.0) || (x < 0.0 && beta != 0.0)));
        }
        case 30u: { return sin(x); }                                       // Sin
        case 31u: { return cos(x); }                                       // Cos
        case 32u: { return trunc(x); }                                     // Cast to an integer
        case 34u: {                                                        // Gelu, tanh form
            return 0.5 * x * (1.0 + tanh_real(0.7978845608 * (x + 0.044715 * x * x * x)));
        }
        default: { return x; }
    }
}

// Fake quantization, e = (scale, 1 / scale, offset, unused), N = qmax (src/quant/encoding.rs
// states the math): q = clamp(round(v / scale) - offset, 0, N), value (q + offset) * scale.
//
// round(v / scale): with `exact`, the integer nearest to the IEEE quotient v / scale (ties to
// even, as onnxruntime's QuantizeLinear rounds it); otherwise of the product v * (1 / scale).
// The product can only round differently near a rounding edge b = k + 1/2 of the grid, so the
// exact path decides on which side of b * scale the value v lies, in arithmetic that is exact
// whether or not the compiler fuses multiply-adds: scale splits into two 12-bit halves, and
// b (at most 11 significant bits while |v / scale| < 1024) times either half is exact. A
// quotient within half an ulp of b rounds to b itself and then to the even neighbour.
fn rounded_quotient(v: f32, e: vec4<f32>, exact: bool) -> f32 {
    let q = v * e.y;
    if !exact || !(abs(q) < 1024.0) {
        return round(q);
    }
    let k = floor(q);
    let b = k + 0.5;
    let s_hi = bitcast<f32>(bitcast<u32>(e.x) & 0xfffff000u);
    let s_lo = e.x - s_hi;
    let d = (v - b * s_hi) - b * s_lo;
    let half_ulp = bitcast<f32>(bitcast<u32>(b) & 0x7f800000u) * 5.9604645e-8;
    if abs(d) <= half_ulp * e.x {
        return round(b);
    }
    return select(k, k + 1.0, d > 0.0);
}

// NaN stays NaN.
fn fake_quantize(v: f32, e: vec4<f32>, qmax: f32, exact: bool) -> f32 {
    let q = clamp(rounded_quotient(v, e, exact) - e.z, 0.0, qmax);
    return select((q + e.z) * e.x, v, is_nan(v));
}

// a^b as ONNX (and C's pow) define it for real numbers, on every adapter: WGSL's pow is
// undefined for a < 0 and at a = 0, so only finite positive bases with finite exponents reach
// it. A negative base with an integral exponent is real, its sign the exponent's parity;
// x^0 = 1^y = 1 even for NaN; 0, infinite bases and infinite exponents take their limits.
fn real_pow(a: f32, b: f32) -> f32 {
    if b == 0.0 || a == 1.0 {
        return 1.0;
    }
    if is_nan(a) || is_nan(b) {
        return a + b;
    }
    // Made from a runtime value: shader front ends refuse infinite and NaN constants.
    let inf = bitcast<f32>((bitcast<u32>(a) & 0u) | 0x7f800000u);
    let b_inf = abs(b) == inf;
    let integral = b_inf || b == floor(b);
    if a < 0.0 && a != -inf && !integral {
        return bitcast<f32>((bitcast<u32>(a) & 0u) | 0x7fc00000u);
    }
    let odd = !b_inf && abs(b) < 16777216.0 && abs(b) % 2.0 == 1.0;
    let m = abs(a);
    var r: f32;
    if m == 0.0 {
        r = select(0.0, inf, b < 0.0);
    } else if m == inf {
        r = select(inf, 0.0, b < 0.0);
    } else if m == 1.0 {
        r = 1.0;
    } else if b_inf {
        r = select(0.0, inf, (m > 1.0) == (b > 0.0));
    } else {
        r = pow(m, b);
    }
    let negative = (bitcast<u32>(a) >> 31u) == 1u;
    return select(r, -r, odd && negative);
}
