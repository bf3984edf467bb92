//! The crate's one error type. Every variant names what was wrong and with which input.

use std::fmt;

/// Result alias used throughout qforge.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in qforge, with structured fields.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU or software adapter could be found.
    #[error("no GPU adapter found{detail}. {hint}")]
    NoAdapter { detail: String, hint: &'static str },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },

    /// A WGSL shader failed to parse, validate or compile.
    #[error("shader '{family}' failed to build: {message}")]
    Shader { family: String, message: String },

    /// A compute pipeline (entry point + override constants) could not be created.
    #[error("pipeline '{family}::{entry}' failed to build: {message}")]
    Pipeline {
        family: String,
        entry: String,
        message: String,
    },

    /// wgpu reported an error while recording or submitting work.
    #[error("GPU error during {during}: {message}")]
    Gpu { during: String, message: String },

    /// Mapping a buffer for readback failed.
    #[error("reading back '{tensor}' from the GPU failed: {message}")]
    Readback { tensor: String, message: String },

    /// Two shapes that must agree do not.
    #[error("{op}: shape of '{tensor}' is {got:?}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        tensor: String,
        expected: String,
        got: Vec<usize>,
    },

    /// A tensor has the wrong element type.
    #[error("{op}: '{tensor}' has dtype {got}, expected {expected}")]
    DTypeMismatch {
        op: &'static str,
        tensor: String,
        expected: DType,
        got: DType,
    },

    /// An argument is outside its valid range (bitwidth, scale, bins, axis ...).
    #[error("{op}: invalid {what} = {value}: {reason}")]
    InvalidArgument {
        op: &'static str,
        what: &'static str,
        value: String,
        reason: String,
    },

    /// An input tensor has no elements where at least one is needed.
    #[error("{op}: '{tensor}' is empty")]
    EmptyTensor { op: &'static str, tensor: String },

    /// A tensor or buffer exceeds what the adapter can hold or the kernel can split.
    #[error("{op}: '{tensor}' needs {bytes} bytes but the limit is {limit} bytes ({which})")]
    TooLarge {
        op: &'static str,
        tensor: String,
        bytes: u64,
        limit: u64,
        which: &'static str,
    },

    /// A file could not be read or written.
    #[error("{action} '{path}': {message}")]
    Io {
        action: &'static str,
        path: String,
        message: String,
    },

    /// A model file is not valid ONNX or breaks one of ONNX's rules.
    #[error("model '{model}': {message}")]
    Model { model: String, message: String },

    /// Ops the model uses that qforge does not run, all listed at once.
    #[error("model '{model}' (opset {opset}) uses unsupported ops: {}", ops.join(", "))]
    Unsupported {
        model: String,
        opset: i64,
        ops: Vec<String>,
    },

    /// The graph's structure is broken: a cycle, a dangling name, a missing input.
    #[error("graph '{model}': {message}")]
    Graph { model: String, message: String },

    /// A quantsim config file is malformed: the key and what was wrong with it.
    #[error("config '{file}': {key}: {message}")]
    Config {
        file: String,
        key: String,
        message: String,
    },

    /// Input data contains NaN or infinite values where they are not allowed.
    #[error("{op}: '{tensor}' contains {count} non-finite value(s) (NaN or Inf)")]
    NonFinite {
        op: &'static str,
        tensor: String,
        count: u64,
    },

    /// Training produced a NaN or infinite loss or parameter.
    #[error("training diverged by optimizer step {step}: {what} is not finite; {kept}")]
    Diverged {
        step: u64,
        what: String,
        /// What was kept (the last finite checkpoint, or that there is none).
        kept: String,
    },
}

/// Element type of a GPU tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    U32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U32 => "u32",
        })
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(
        op: &'static str,
        what: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            op,
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
