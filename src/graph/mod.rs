//! The host graph: IR and its op vocabulary ([`attrs`], [`shape`]), ONNX import and export,
//! shape resolution, and graph passes.

pub mod attrs;
pub mod export;
pub mod import;
pub mod ir;
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod onnx;
pub mod passes;
pub mod prepare;
pub mod resolve;
pub mod shape;

pub use import::{import, load};
pub use ir::{Const, Dim, Graph, Node, Op};
pub use prepare::{Edits, Prepared};
