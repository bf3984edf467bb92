//! The host graph: IR, ONNX import and export, shape resolution, and graph passes.

pub mod export;
pub mod import;
pub mod ir;
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod onnx;
pub mod passes;
pub mod resolve;

pub use import::{import, load};
pub use ir::{Const, Dim, Graph, Node, Op};
