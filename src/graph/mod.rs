//! The host graph: IR and its op vocabulary ([`attrs`], [`shape`]), ONNX import and export,
//! shape resolution, and graph passes.

pub mod attrs;
pub mod export;
pub mod fold;
pub mod import;
mod import_ops;
pub mod infer;
pub mod ir;
pub mod legacy;
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod onnx;
mod einsum;
pub mod passes;
pub mod prepare;
pub mod resolve;
pub mod rewrite;
pub mod shape;
pub mod values;

pub use import::{import, load};
pub use ir::{Const, Dim, ElemType, Graph, Node, Op};
pub use prepare::{Edits, Prepared};
