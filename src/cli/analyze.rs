//! `qforge analyze`: AIMET's QuantAnalyzer on a model.

use std::path::PathBuf;

use qforge::jobs::analyze::{analyze, AnalyzeJob};

use super::quantize::SimArgs;

/// Arguments of `qforge analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    sim: SimArgs,
    /// Output folder (analysis.html, analysis.json, split.json).
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    /// Calibration samples the activation histograms are drawn from.
    #[arg(long, default_value_t = 4)]
    histogram_samples: usize,
    /// Bins per histogram.
    #[arg(long, default_value_t = 64)]
    bins: usize,
}

/// Runs `qforge analyze`.
pub fn main(a: AnalyzeArgs) -> qforge::Result<()> {
    let job = AnalyzeJob {
        quantize: a.sim.job(a.out)?,
        histogram_samples: a.histogram_samples,
        bins: a.bins,
    };
    let r = analyze(&job, &mut super::Bar::new())?;
    let x = &r.analysis;
    let q = &job.quantize;
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    println!("model            {}", q.model.display());
    println!("adapter          {}", r.adapter);
    println!(
        "quantizers       {} layers, W{}A{}, placed as {}",
        x.layers.len(),
        q.param_bw,
        q.act_bw,
        q.placement.describe()
    );
    println!("evaluation       {}", r.held_out);
    for (what, s) in [
        (format!("W{}A32", q.param_bw), &x.weights_only),
        (format!("W32A{}", q.act_bw), &x.activations_only),
        (format!("W{}A{}", q.param_bw, q.act_bw), &x.quantized),
    ] {
        println!(
            "{:<16} SQNR {:.2} dB, top-1 agreement {} ({}, {} samples)",
            what,
            s.sqnr_db,
            pct(s.top1_agreement),
            r.label,
            x.samples
        );
    }
    let mut only: Vec<_> = x.layers.iter().collect();
    only.sort_by(|a, b| a.only.sqnr_db.total_cmp(&b.only.sqnr_db));
    let list = |v: &[&qforge::quant::analysis::Sensitivity],
                pick: fn(&qforge::quant::analysis::Sensitivity) -> f64| {
        v.iter()
            .take(5)
            .map(|s| format!("{} {:.1} dB", s.layer.name, pick(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "most sensitive   {} (only this layer quantized)",
        list(&only, |s| s.only.sqnr_db)
    );
    let mut all_but: Vec<_> = x.layers.iter().collect();
    all_but.sort_by(|a, b| b.all_but.sqnr_db.total_cmp(&a.all_but.sqnr_db));
    println!(
        "best kept in FP  {} (all but this layer quantized)",
        list(&all_but, |s| s.all_but.sqnr_db)
    );
    println!(
        "time             calibrate {:.1} s; whole-model {:.1} s, per-layer {:.1} s, per-activation {:.1} s, histograms {:.1} s",
        r.setup_seconds[3], x.seconds.whole, x.seconds.per_layer, x.seconds.errors, x.seconds.histograms
    );
    println!(
        "wrote            {} into {}",
        super::file_names(&r.written),
        q.out.display()
    );
    Ok(())
}
