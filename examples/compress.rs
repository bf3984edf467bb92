//! Compress a model with the library API: spatial SVD then channel pruning to half the MACs,
//! per-layer ratios chosen by top-1 agreement with the original on an .npy batch. A quarter of
//! the images is held out (split by image) and only the final figure uses it; of the rest,
//! half score layers and half rebuild pruned ones.
//!
//! `cargo run --release --example compress -- MODEL.onnx INPUTS.npy OUT.onnx`

use std::sync::Arc;

use qforge::compress::pipeline::compress;
use qforge::compress::{CompressOptions, Method, Scorer};
use qforge::data::split::{split, take, SEED};

fn main() -> qforge::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, inputs, out] = args.as_slice() else {
        eprintln!("usage: compress MODEL.onnx INPUTS.npy OUT.onnx");
        std::process::exit(2);
    };
    let gpu = Arc::new(qforge::gpu::Gpu::new()?);
    let g = qforge::graph::load(model.as_ref())?;
    let x = qforge::data::npy::read(inputs.as_ref())?;
    let parts = split("the inputs", x.shape()[0], 0.25, SEED)?;
    let fit = take(&x, &parts.fit);
    let halves = split("the fitting inputs", fit.shape()[0], 0.5, SEED)?;
    let scorer = Scorer::new(gpu.clone(), &g, take(&fit, &halves.held_out), None)?;
    let held = Scorer::new(gpu.clone(), &g, take(&x, &parts.held_out), None)?;
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
        &take(&fit, &halves.fit),
        None,
        |m: Method, i, n| eprintln!("{} {i}/{n}", m.name()),
    )?;
    let (agreement, sqnr) = held.evaluate(&done.graph)?;
    println!(
        "MACs {} -> {}; held-out ({} images): top-1 agreement {:.3}, logits SQNR {sqnr:.2} dB",
        done.cost_before.macs,
        done.cost_after.macs,
        parts.held_out.len(),
        agreement
    );
    qforge::graph::export::save(&done.graph, out.as_ref(), Some(model.as_ref()))
}
