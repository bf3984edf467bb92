//! The training sections of the quantization report: AdaRound (per layer, the reconstruction
//! loss with rounding to nearest and with the learned rounding, and how the weights were
//! rounded) and QAT (the loss and the learned ranges over training).

use crate::quant::adaround::{AdaroundReport, CacheOn};
use crate::quant::qat::QatReport;
use crate::report::{esc, svg};

/// Appends the section.
pub(crate) fn section(h: &mut String, r: &AdaroundReport) {
    h.push_str("<h2>AdaRound</h2><p>Reconstruction loss (AIMET's: squared error summed over channels, averaged over samples and positions) of each layer's output, the following Relu/Clip applied, against the FP32 model's, on the samples the rounding was fitted on. The bars are the loss reduction over rounding to nearest.</p>");
    let bars: Vec<(String, f64, bool)> = r
        .layers
        .iter()
        .map(|l| {
            let db = 10.0 * (l.loss_nearest / l.loss_adaround.max(1e-30)).log10();
            (
                l.weight.clone(),
                if db.is_finite() { db } else { 0.0 },
                db < 0.0,
            )
        })
        .collect();
    h.push_str(&svg::hbar_chart(&bars, "dB"));
    h.push_str("<table><tr><th>weight</th><th>activation</th><th>samples</th><th>iterations</th><th>loss nearest</th><th>loss AdaRound</th><th>rounded up</th><th>rounded down</th><th>changed vs nearest</th><th>cache</th><th>cache MiB</th><th>iterations/s</th></tr>");
    for l in &r.layers {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.5}</td><td>{:.5}</td><td>{:.1}%</td><td>{:.1}%</td><td>{:.1}%</td><td>{}</td><td>{:.1}</td><td>{:.0}</td></tr>",
            esc(&l.weight),
            l.activation.unwrap_or("-"),
            l.samples,
            l.iterations,
            l.loss_nearest,
            l.loss_adaround,
            100.0 * l.rounded_up,
            100.0 * (1.0 - l.rounded_up),
            100.0 * l.changed,
            match l.cache {
                CacheOn::Gpu => "GPU",
                CacheOn::Host => "host",
            },
            l.cache_bytes as f64 / (1024.0 * 1024.0),
            l.iterations_per_s()
        ));
    }
    h.push_str("</table>");
    if !r.skipped.is_empty() {
        h.push_str(
            "<h3>Left to rounding to nearest</h3><table><tr><th>layer</th><th>why</th></tr>",
        );
        for (n, why) in &r.skipped {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(n),
                esc(why)
            ));
        }
        h.push_str("</table>");
    }
}

/// Appends the QAT section.
pub(crate) fn qat_section(h: &mut String, r: &QatReport) {
    let loss: Vec<(f64, f64)> = r.loss.iter().map(|&(s, l)| (s as f64, l)).collect();
    h.push_str(&format!(
        "<h2>Quantization-aware training</h2><p>{} optimizer steps on {} images in {:.0} s.</p>",
        r.steps, r.images, r.seconds
    ));
    h.push_str(&svg::line_chart("loss", &loss, "optimizer step", "loss"));
    if !r.range_curve.is_empty() {
        let curve: Vec<(f64, f64)> = r.range_curve.iter().map(|&(s, v)| (s as f64, v)).collect();
        h.push_str(&svg::line_chart(
            "learned scale / calibrated scale (mean)",
            &curve,
            "optimizer step",
            "ratio",
        ));
        h.push_str("<table><tr><th>quantizer</th><th>mean scale calibrated</th><th>mean scale learned</th><th>channels at the minimum</th></tr>");
        for c in &r.ranges {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{:.6}</td><td>{:.6}</td><td>{}</td></tr>",
                esc(&c.name),
                c.before,
                c.after,
                c.clamped
            ));
        }
        h.push_str("</table>");
    }
}
