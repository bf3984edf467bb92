//! Op attributes: the vocabulary the IR, the kernels (`ops`) and the CPU reference share.
//! Plain data and the arithmetic that defines it (bins, rebinning tables, quantized-add
//! tables); nothing here knows about the GPU or about a pipeline.

use crate::error::{Error, Result};

/// Convolution attributes (ONNX Conv, 2-D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// (height, width).
    pub strides: [usize; 2],
    /// (top, left, bottom, right).
    pub pads: [usize; 4],
    /// (height, width).
    pub dilations: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
        }
    }
}

/// Window pooling attributes (ONNX MaxPool / AveragePool, 2-D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// (top, left, bottom, right).
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// ONNX's `auto_pad` on Conv and pools: pads that depend on the input's size, computed when
/// shapes are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Output size ceil(in / stride); an odd total pad puts the extra one at the end.
    SameUpper,
    /// As SameUpper with the extra pad at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// From ONNX's attribute value (`None` for NOTSET).
    pub fn parse(s: &str) -> std::result::Result<Option<AutoPad>, String> {
        match s {
            "NOTSET" | "" => Ok(None),
            "SAME_UPPER" => Ok(Some(AutoPad::SameUpper)),
            "SAME_LOWER" => Ok(Some(AutoPad::SameLower)),
            "VALID" => Ok(Some(AutoPad::Valid)),
            other => Err(format!(
                "auto_pad = {other}: NOTSET, SAME_UPPER, SAME_LOWER or VALID"
            )),
        }
    }

    /// ONNX's name.
    pub fn onnx(self) -> &'static str {
        match self {
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }

    /// (top, left, bottom, right) pads of a window `kernel` with `strides` and `dilations`
    /// over spatial dims `input`.
    pub fn pads(
        self,
        input: [usize; 2],
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
    ) -> [usize; 4] {
        if self == AutoPad::Valid {
            return [0; 4];
        }
        let mut p = [0; 4];
        for d in 0..2 {
            let out = input[d].div_ceil(strides[d].max(1));
            let span = (kernel[d].max(1) - 1) * dilations[d].max(1) + 1;
            let total = ((out.max(1) - 1) * strides[d].max(1) + span).saturating_sub(input[d]);
            let small = total / 2;
            let (begin, end) = match self {
                AutoPad::SameUpper => (small, total - small),
                _ => (total - small, small),
            };
            p[d] = begin;
            p[d + 2] = end;
        }
        p
    }
}

/// ONNX Resize settings qforge runs (spatial dims of NCHW tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize {
    /// 0 nearest, 1 linear, 2 cubic.
    pub mode: u32,
    /// 0 half_pixel, 1 asymmetric, 2 align_corners, 3 pytorch_half_pixel, 4 half_pixel_symmetric,
    /// 5 tf_crop_and_resize.
    pub coordinates: u32,
    /// 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil.
    pub nearest: u32,
    /// `cubic_coeff_a`: the cubic convolution kernel's coefficient (ONNX's default -0.75).
    pub cubic_a: f32,
    /// `exclude_outside`: taps outside the input weigh 0 and the rest are renormalised.
    pub exclude_outside: bool,
    /// `antialias`: a linear or cubic downscale stretches its filter over 1 / scale inputs.
    pub antialias: bool,
    /// tf_crop_and_resize: the region of interest of the spatial dims, `[h0, h1, w0, w1]` as
    /// fractions of the input (the Resize's `roi` input).
    pub roi: [f32; 4],
    /// tf_crop_and_resize: the value of outputs whose source lies outside the input.
    pub extrapolation: f32,
}

impl Resize {
    /// From ONNX attribute strings, with the defaults of the other attributes.
    pub fn from_onnx(mode: &str, coordinates: &str, nearest: &str) -> Option<Resize> {
        Some(Resize {
            mode: ["nearest", "linear", "cubic"]
                .iter()
                .position(|&m| m == mode)? as u32,
            coordinates: [
                "half_pixel",
                "asymmetric",
                "align_corners",
                "pytorch_half_pixel",
                "half_pixel_symmetric",
                "tf_crop_and_resize",
            ]
            .iter()
            .position(|&c| c == coordinates)? as u32,
            nearest: ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
                .iter()
                .position(|&c| c == nearest)? as u32,
            cubic_a: -0.75,
            exclude_outside: false,
            antialias: false,
            roi: [0.0, 1.0, 0.0, 1.0],
            extrapolation: 0.0,
        })
    }

    /// True when outputs are filtered (cubic, or antialiased linear) rather than picked or
    /// interpolated between two inputs per axis.
    pub fn filtered(&self) -> bool {
        self.mode == 2 || (self.mode == 1 && self.antialias)
    }
}

/// Unary activations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    /// Clip to [min, max].
    Clip(f32, f32),
    LeakyRelu(f32),
    Sigmoid,
    /// max(0, min(1, alpha * x + beta)).
    HardSigmoid(f32, f32),
    HardSwish,
    Tanh,
    Erf,
    Gelu,
    /// Gelu with `approximate = tanh`: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
    GeluTanh,
    Exp,
    Sqrt,
    Neg,
    Abs,
    Sign,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Reciprocal,
    Log,
    Softplus,
    Softsign,
    /// alpha * (e^x - 1) below 0.
    Elu(f32),
    /// (alpha, gamma): gamma * (alpha * (e^x - 1)) at and below 0, gamma * x above.
    Selu(f32, f32),
    /// max(0, x) + min(0, alpha * (e^(x / alpha) - 1)).
    Celu(f32),
    Mish,
    /// (bias, lambd): x + bias below -lambd, x - bias above lambd, 0 between.
    Shrink(f32, f32),
    /// x above alpha, else 0.
    ThresholdedRelu(f32),
    /// Logical not of a bool carried as 0/1: 1 where x is 0, else 0.
    Not,
    /// 1 where x is NaN, else 0.
    IsNaN,
    /// 1 where x is +inf (when `positive`) or -inf (when `negative`), else 0.
    IsInf {
        positive: bool,
        negative: bool,
    },
    Sin,
    Cos,
}

impl Unary {
    /// Ops whose result is a bool (0 or 1) and that have no gradient.
    pub fn is_predicate(self) -> bool {
        matches!(self, Unary::Not | Unary::IsNaN | Unary::IsInf { .. })
    }
}

/// A reduction of a tensor's axes to one value each (ReduceMean is `Op::ReduceMean`). NaN
/// propagates through every one; an empty reduction gives [`Reduce::empty`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl Reduce {
    /// The value of an empty reduction.
    pub fn empty(self) -> f32 {
        match self {
            Reduce::Max | Reduce::LogSum | Reduce::LogSumExp => f32::NEG_INFINITY,
            Reduce::Min => f32::INFINITY,
            Reduce::Prod => 1.0,
            _ => 0.0,
        }
    }

    /// The ONNX op type.
    pub fn onnx(self) -> &'static str {
        match self {
            Reduce::Sum => "ReduceSum",
            Reduce::Max => "ReduceMax",
            Reduce::Min => "ReduceMin",
            Reduce::Prod => "ReduceProd",
            Reduce::L1 => "ReduceL1",
            Reduce::L2 => "ReduceL2",
            Reduce::LogSum => "ReduceLogSum",
            Reduce::LogSumExp => "ReduceLogSumExp",
            Reduce::SumSquare => "ReduceSumSquare",
        }
    }

    /// The reduction of an ONNX op type.
    pub fn from_onnx(op: &str) -> Option<Reduce> {
        [
            Reduce::Sum,
            Reduce::Max,
            Reduce::Min,
            Reduce::Prod,
            Reduce::L1,
            Reduce::L2,
            Reduce::LogSum,
            Reduce::LogSumExp,
            Reduce::SumSquare,
        ]
        .into_iter()
        .find(|r| r.onnx() == op)
    }
}

/// Binary ops with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// PRelu: a where a >= 0, a * b elsewhere.
    PRelu,
    Max,
    Min,
    Pow,
    /// Comparisons and logic: 1 or 0 (bools carried as f32), false where a NaN is compared.
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    /// Remainder: with `fmod` C's fmod (the sign of a), otherwise the sign of b (integers).
    Mod {
        fmod: bool,
    },
}

impl Binary {
    /// Comparisons and logic ops: their result is a bool and they have no gradient.
    pub fn is_predicate(self) -> bool {
        matches!(
            self,
            Binary::Equal
                | Binary::Less
                | Binary::Greater
                | Binary::LessOrEqual
                | Binary::GreaterOrEqual
                | Binary::And
                | Binary::Or
                | Binary::Xor
        )
    }
}

/// A fake-quantization grid as the kernels apply it: per channel along `axis` (or one for the
/// whole tensor) a scale and an integer offset; code `q = clamp(round(x / scale) - offset, 0,
/// steps)`, value `(q + offset) * scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantGrid {
    pub axis: Option<usize>,
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
    /// N, the largest code.
    pub steps: u32,
    /// Codes are reported as `q + offset` (signed grids) rather than `q`.
    pub signed_codes: bool,
}

impl QuantGrid {
    /// Number of channels (1 for per-tensor).
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// Per channel (scale, 1/scale, offset, 0): the table the kernels read.
    pub fn table(&self) -> Vec<[f32; 4]> {
        self.scale
            .iter()
            .zip(&self.offset)
            .map(|(&s, &o)| [s, 1.0 / s, o, 0.0])
            .collect()
    }

    /// Checks one scale and offset per channel, scales finite and > 0 with a finite inverse,
    /// offsets whole in `[-steps, 0]`.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.scale.len() != self.offset.len() || self.scale.is_empty() {
            return Err(Error::invalid(
                op,
                "encoding",
                format!("{} scales, {} offsets", self.scale.len(), self.offset.len()),
                "need one scale and one offset per channel",
            ));
        }
        if self.axis.is_none() && self.scale.len() != 1 {
            return Err(Error::invalid(
                op,
                "encoding",
                self.scale.len(),
                "a per-tensor encoding has one scale",
            ));
        }
        let n = self.steps as f32;
        for (c, (&s, &o)) in self.scale.iter().zip(&self.offset).enumerate() {
            if !(s.is_finite() && s > 0.0 && (1.0 / s).is_finite()) {
                return Err(Error::invalid(
                    op,
                    "scale",
                    format!("{s} (channel {c})"),
                    "must be finite and > 0 with a finite inverse",
                ));
            }
            if o.fract() != 0.0 || o > 0.0 || o < -n {
                return Err(Error::invalid(
                    op,
                    "offset",
                    format!("{o} (channel {c})"),
                    format!("must be an integer in [-{n}, 0]"),
                ));
            }
        }
        Ok(())
    }
}

/// An output grid in integer terms: values `r * scale` with `r` (code minus zero point) in
/// `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntGrid {
    pub scale: f32,
    pub lo: f32,
    pub hi: f32,
}

/// The constants of a quantized addition `c = a + b` (see [`qadd_into`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddGrids {
    /// Inputs' (scale, zero point) and the output's.
    pub a: (f32, f32),
    pub b: (f32, f32),
    pub c: (f32, f32),
    /// The output codes' range (0..=255 for uint8, -128..=127 for int8).
    pub qmin: f32,
    pub qmax: f32,
}

impl AddGrids {
    /// onnxruntime's x86 constants `(ra, rb, k)`: `ra = sa / sc`, `rb = sb / sc` and
    /// `k = zp_c - (ra * zp_a + rb * zp_b)` in f32, the inner sum contracted to
    /// `fma(ra, zp_a, rb * zp_b)` as its FMA build compiles it (an exact tie told the
    /// contracted and the plain forms apart: codes 79 + 174 of MobileNetV2's add_51 on a
    /// held-out photo give 112.49999 and 112.50001).
    pub fn constants(&self) -> (f32, f32, f32) {
        let (ra, rb) = (self.a.0 / self.c.0, self.b.0 / self.c.0);
        (ra, rb, self.c.1 - ra.mul_add(self.a.1, rb * self.b.1))
    }

    /// The output code (minus qmin) for every pair of input codes (each minus its qmin), four
    /// per word: onnxruntime's x86 arithmetic, `round(fma(A, ra, fma(B, rb, k)))` with
    /// [`AddGrids::constants`], clamped to the output type.
    pub fn table(&self) -> Vec<u32> {
        let (ra, rb, k) = self.constants();
        let mut t = vec![0u32; 256 * 256 / 4];
        for ia in 0..256usize {
            for ib in 0..256usize {
                let (ca, cb) = (ia as f32 + self.qmin, ib as f32 + self.qmin);
                let v = ca.mul_add(ra, cb.mul_add(rb, k));
                let code = v.round_ties_even().clamp(self.qmin, self.qmax) - self.qmin;
                let at = ia * 256 + ib;
                t[at / 4] |= (code as u32) << (8 * (at % 4));
            }
        }
        t
    }
}

/// What a histogram does with values outside its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outside {
    /// Counted in the first or last bin.
    Edge,
    /// Left out (AIMET's tf-enhanced density).
    Drop,
}

/// How values map to bins: `bin = floor((v - origin) * inv_width) + shift`, in f32 (only
/// correctly rounded operations, so host code bins exactly as the kernels do).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinGrid {
    pub origin: f32,
    pub inv_width: f32,
    pub shift: f32,
}

impl BinGrid {
    /// `bins` equal bins over [lo, hi].
    pub fn over(lo: f32, hi: f32, bins: u32) -> BinGrid {
        BinGrid {
            origin: lo,
            inv_width: bins as f32 / (hi - lo),
            shift: 0.0,
        }
    }

    /// Bins of width `step` whose edges are multiples of it, bin 0 starting at `first * step`:
    /// a value that is an exact multiple (zero above all) lands at the start of its bin.
    pub fn zero_aligned(step: f64, first: i64) -> BinGrid {
        BinGrid {
            origin: 0.0,
            inv_width: (1.0 / step) as f32,
            shift: -first as f32,
        }
    }

    /// The bin of `v`; `None` when it is left out.
    pub fn index(&self, v: f32, bins: u32, outside: Outside) -> Option<u32> {
        let t = ((v - self.origin) * self.inv_width).floor() + self.shift;
        if outside == Outside::Drop && !(t >= 0.0 && t < bins as f32) {
            return None;
        }
        Some(t.clamp(0.0, (bins - 1) as f32) as u32)
    }

    pub(crate) fn check(&self, op: &'static str, c: usize) -> Result<()> {
        if !(self.origin.is_finite()
            && self.inv_width.is_finite()
            && self.inv_width > 0.0
            && self.shift.is_finite()
            && self.shift.fract() == 0.0)
        {
            return Err(Error::invalid(op, "bin grid", format!("channel {c}: {self:?}"), "needs a finite origin, a finite inverse width > 0 and a whole shift (a range with lo < hi)"));
        }
        Ok(())
    }
}

/// Where each source bin's count goes when a histogram over `[old_lo, old_hi]` is re-binned
/// into `[new_lo, new_hi]` (AIMET's observer): the destination bin, the bin that takes the
/// rest, and the fraction that stays in the destination. f32 arithmetic as AIMET's.
pub fn rebin_table(old: (f32, f32), new: (f32, f32), bins: u32) -> (Vec<[u32; 2]>, Vec<f32>) {
    let b = bins as f32;
    let dest_w = (new.1 - new.0) / b;
    let src_w = (old.1 - old.0) / b;
    let bin_of = |v: f32| (((v - new.0) / dest_w) as i64).clamp(0, bins as i64 - 1) as u32;
    let mut dest = Vec::with_capacity(bins as usize);
    let mut frac = Vec::with_capacity(bins as usize);
    for i in 0..bins {
        let start = old.0 + src_w * i as f32;
        let d = bin_of(start);
        let end = new.0 + dest_w * (d + 1) as f32;
        dest.push([d, bin_of(start + dest_w)]);
        frac.push((end - start) / src_w);
    }
    (dest, frac)
}
