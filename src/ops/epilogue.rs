//! The fused epilogue of the convolution and GEMM kernels (`shaders/epilogue.wgsl`): what the
//! kernel applies to each output after the bias, in order — a per-channel affine map
//! (inference BatchNorm), a residual addition, a per-tensor fake quantization, an activation,
//! a per-tensor fake quantization.
//! Each part is the arithmetic of the op's own kernel on the same value, so a fused kernel
//! gives the bits of the unfused sequence. The plan decides what to fuse.

use crate::error::{Error, Result};
use crate::gpu::{Bind, Gpu, GpuTensor};
use crate::graph::attrs::Unary;
use crate::ops::elementwise::unary_code;

/// A per-tensor fake quantizer: its encoding table (`[1, 4]`: scale, 1 / scale, offset, -),
/// the grid's largest code, and whether to round the exact quotient (see `quant.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct Quantize<'a> {
    pub table: &'a GpuTensor,
    pub steps: u32,
    pub exact: bool,
}

/// The parts of an epilogue; [`Epilogue::NONE`] applies nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `[channels, 2]`: `v * a + b` per output channel (the conv's output channel, the GEMM's
    /// row).
    pub affine: Option<&'a GpuTensor>,
    /// A tensor of the output's shape added to it.
    pub residual: Option<&'a GpuTensor>,
    /// The quantizer of the value before the activation.
    pub quant_pre: Option<Quantize<'a>>,
    pub act: Option<Unary>,
    /// The quantizer of the output.
    pub quant: Option<Quantize<'a>>,
}

/// The epilogue's uniform fields (`Epi` in epilogue.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct EpiParams {
    act_alpha: f32,
    act_beta: f32,
    qmax: f32,
    _pad_exact: u32,
    qmax_pre: f32,
    _pad: [u32; 3],
}

/// Storage buffers a kernel with the epilogue binds.
const STORAGE_BUFFERS: u32 = 8;

impl<'a> Epilogue<'a> {
    /// No epilogue.
    pub const NONE: Epilogue<'static> = Epilogue {
        affine: None,
        residual: None,
        quant_pre: None,
        act: None,
        quant: None,
    };

    /// True when nothing is applied.
    pub fn is_none(&self) -> bool {
        self.affine.is_none()
            && self.residual.is_none()
            && self.act.is_none()
            && self.quant.is_none()
    }

    /// True when `gpu` can run kernels with an epilogue (they bind 8 storage buffers, more
    /// than the most restricted adapters allow); a plan fuses nothing otherwise.
    pub fn supported(gpu: &Gpu) -> bool {
        gpu.limits().storage_buffers >= STORAGE_BUFFERS
    }

    /// Checks the parts against an output of `len` elements with `channels` channels.
    pub(crate) fn check(
        &self,
        op: &'static str,
        gpu: &Gpu,
        len: usize,
        channels: usize,
    ) -> Result<()> {
        if self.is_none() {
            return Ok(());
        }
        if !Epilogue::supported(gpu) {
            return Err(Error::invalid(
                op,
                "epilogue",
                format!("{} storage buffers", gpu.limits().storage_buffers),
                format!("a fused epilogue needs {STORAGE_BUFFERS}"),
            ));
        }
        if let (Some(a), Some(b)) = (self.quant, self.quant_pre) {
            if a.exact != b.exact {
                return Err(Error::invalid(
                    op,
                    "epilogue quantizers",
                    "exact and inexact rounding",
                    "both quantizers of one epilogue round the same way",
                ));
            }
        }
        let parts = [
            ("affine", self.affine, channels * 2),
            ("residual", self.residual, len),
            ("quantizer table", self.quant.map(|q| q.table), 4),
            (
                "pre-activation quantizer table",
                self.quant_pre.map(|q| q.table),
                4,
            ),
        ];
        for (name, t, want) in parts {
            if let Some(t) = t.filter(|t| t.len() != want) {
                return Err(Error::ShapeMismatch {
                    op,
                    tensor: format!("epilogue {name}"),
                    expected: format!("{want} elements"),
                    got: t.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The pipeline constants that select the parts.
    pub(crate) fn constants(&self) -> Vec<(&'static str, f64)> {
        let mut c = Vec::new();
        if self.affine.is_some() {
            c.push(("EPI_AFFINE", 1.0));
        }
        if self.residual.is_some() {
            c.push(("EPI_RESIDUAL", 1.0));
        }
        if self.quant_pre.is_some() {
            c.push(("EPI_QUANT_PRE", 1.0));
        }
        if let Some(f) = self.act {
            c.push(("EPI_ACT", (unary_code(f).0 + 1) as f64));
        }
        if self.quant.is_some() {
            c.push(("EPI_QUANT", 1.0));
        }
        if self.quant.is_some_and(|q| q.exact) || self.quant_pre.is_some_and(|q| q.exact) {
            c.push(("EPI_EXACT", 1.0));
        }
        c
    }

    /// The uniform fields.
    pub(crate) fn params(&self) -> EpiParams {
        let (_, act_alpha, act_beta) = self.act.map_or((0, 0.0, 0.0), unary_code);
        EpiParams {
            act_alpha,
            act_beta,
            qmax: self.quant.map_or(0.0, |q| q.steps as f32),
            _pad_exact: 0,
            qmax_pre: self.quant_pre.map_or(0.0, |q| q.steps as f32),
            _pad: [0; 3],
        }
    }

    /// Bindings 5..=8 (affine, residual, output and pre-activation tables), `residual` bound as
    /// the caller binds the output and `dummy` (a read-only tensor of the dispatch) in place of
    /// absent parts.
    pub(crate) fn binds(&self, residual: Option<Bind<'a>>, dummy: &'a GpuTensor) -> [Bind<'a>; 4] {
        [
            Bind::Whole(self.affine.unwrap_or(dummy)),
            residual.unwrap_or(Bind::Whole(dummy)),
            Bind::Whole(self.quant.map_or(dummy, |q| q.table)),
            Bind::Whole(self.quant_pre.map_or(dummy, |q| q.table)),
        ]
    }
}
