//! The test suite, one binary: every module shares one process, so the GPU context and its
//! compiled pipelines are made once (on software adapters pipeline creation is most of a
//! small test's time). Run one module with `cargo test --release --test suite -- <module>::`.

mod common;

mod adaround;
mod amp;
mod analysis;
mod bad_input;
mod calib_kernels;
mod compress;
mod conformance;
mod finetune;
mod fusion;
mod gemm_kernels;
mod gpu_runtime;
mod grad_kernels;
mod held_out;
mod import_errors;
mod integer_kernels;
mod layers;
mod linalg_kernels;
mod models;
mod nn_kernels;
mod onnx_layout;
mod onnx_ops;
mod onnx_rows;
mod opsets;
mod placement;
mod ptq;
mod qat;
mod quant_kernels;
mod quant_parity;
mod real_models;
mod run_inputs;
mod shaders_validate;
mod train_kernels;
mod training;
