//! The QuantSim library API end to end: prepare, place quantizers from AIMET's per-channel
//! default, calibrate on a .npy batch, evaluate, export encodings and a QDQ model.
//!
//! `cargo run --release --example quantize -- models/mobilenet_v2.onnx CALIB.npy out/`

use std::path::PathBuf;
use std::sync::Arc;

use ndarray::Axis;
use qforge::gpu::Gpu;
use qforge::quant::analyzers::Scheme;
use qforge::quant::export::EncodingsVersion;
use qforge::quant::sim::{QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn main() -> qforge::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, calib, out] = &args[..] else {
        eprintln!("usage: quantize MODEL.onnx CALIB.npy OUT_DIR");
        std::process::exit(2);
    };
    let gpu = Arc::new(Gpu::new()?);
    let graph = qforge::graph::load(&PathBuf::from(model))?;
    let mut sim = QuantSim::new(
        gpu,
        graph,
        &QuantConfig::default_per_channel(),
        QuantOptions::default(),
        Default::default(),
    )?;
    let data = qforge::data::npy::read(&PathBuf::from(calib))?;
    sim.calibrate(Scheme::MinMax, data.axis_chunks_iter(Axis(0), 8))?;
    let e = sim.evaluate(&data, 8, None)?;
    println!(
        "top-1 agreement {:.1}%, SQNR {:.2} dB",
        100.0 * e.top1_agreement,
        e.sqnr_db
    );
    sim.export(&PathBuf::from(out), "model", EncodingsVersion::V1_0_0)?;
    sim.export_qdq(&PathBuf::from(out), "model")?;
    Ok(())
}
