//! Folds batch norms into the convolutions of a model and writes the result as ONNX.
//!
//! `cargo run --release --example export_folded -- models/mobilenet_v2.onnx out/mnv2_folded.onnx`

use std::path::PathBuf;

fn main() -> qforge::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, dst) = match &args[..] {
        [s, d] => (PathBuf::from(s), PathBuf::from(d)),
        _ => {
            eprintln!("usage: export_folded MODEL.onnx OUT.onnx");
            std::process::exit(2);
        }
    };
    let mut g = qforge::graph::load(&src)?;
    g.resolve_with_batch(&Default::default(), Some(1))?;
    let folded = qforge::graph::passes::bn_fold::fold_batch_norms(&mut g)?;
    qforge::graph::export::save(&g, &dst, Some(&src))?;
    println!(
        "folded {} batch norms; wrote {}",
        folded.len(),
        dst.display()
    );
    Ok(())
}
