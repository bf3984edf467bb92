//! Compress a model with the library API: spatial SVD then channel pruning to half the MACs,
//! per-layer ratios chosen by top-1 agreement with the original on an .npy batch.
//!
//! `cargo run --release --example compress -- MODEL.onnx INPUTS.npy OUT.onnx`

use std::sync::Arc;

use qforge::compress::pipeline::compress;
use qforge::compress::{CompressOptions, Method, Scorer};

fn main() -> qforge::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, inputs, out] = args.as_slice() else {
        eprintln!("usage: compress MODEL.onnx INPUTS.npy OUT.onnx");
        std::process::exit(2);
    };
    let gpu = Arc::new(qforge::gpu::Gpu::new()?);
    let g = qforge::graph::load(model.as_ref())?;
    let x = qforge::data::npy::read(inputs.as_ref())?;
    let scorer = Scorer::new(gpu.clone(), &g, x, None)?;
    let opts = CompressOptions {
        target: 0.5,
        candidates: vec![0.25, 0.5, 0.75],
        ..Default::default()
    };
    let done = compress(
        gpu,
        &g,
        &[Method::SpatialSvd, Method::ChannelPruning],
        &opts,
        &scorer,
        None,
        |m, i, n| eprintln!("{} {i}/{n}", m.name()),
    )?;
    println!(
        "MACs {} -> {}, agreement {:.3} -> {:.3}",
        done.cost_before.macs, done.cost_after.macs, done.score_before, done.score_after
    );
    qforge::graph::export::save(&done.graph, out.as_ref(), Some(model.as_ref()))
}
