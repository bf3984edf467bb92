//! `qforge inspect`: a model's inputs, outputs, op counts, parameters and MACs per layer.

use std::path::PathBuf;

/// Arguments of `qforge inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Batch size for the MAC counts.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Sizes of other named dims, e.g. `--dim height=224`.
    #[arg(long = "dim", value_parser = super::parse_dim)]
    dims: Vec<(String, usize)>,
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Runs `qforge inspect`.
pub fn main(a: InspectArgs) -> qforge::Result<()> {
    let r = qforge::jobs::inspect::inspect(&a.model, a.batch, &a.dims)?;
    println!(
        "model: {} (opset {}, producer '{}')",
        a.model.display(),
        r.opset,
        r.producer
    );
    for (i, d) in &r.inputs {
        println!("input  {i}: [{}]", d.join(", "));
    }
    for (o, s) in &r.outputs {
        println!("output {o}: {s:?} (batch {})", a.batch);
    }
    println!(
        "ops: {}",
        r.op_counts
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let total_macs: u64 = r.layers.iter().map(|c| c.macs).sum();
    println!(
        "parameters: {} ({} bytes as f32)",
        human(r.params),
        human(r.params * 4)
    );
    println!("MACs (batch {}): {}", a.batch, human(total_macs));
    println!("unsupported ops: none");
    println!(
        "\n{:<40} {:<20} {:>12} {:>10} {:>6}  output",
        "layer", "op", "MACs", "params", "%MACs"
    );
    for c in r.layers.iter().filter(|c| c.macs > 0 || c.params > 0) {
        let pct = if total_macs > 0 {
            100.0 * c.macs as f64 / total_macs as f64
        } else {
            0.0
        };
        println!(
            "{:<40} {:<20} {:>12} {:>10} {:>5.1}%  {:?}",
            c.node,
            c.op,
            human(c.macs),
            human(c.params),
            pct,
            c.output_shape
        );
    }
    Ok(())
}
