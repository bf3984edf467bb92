//! The quantization analysis report: whole-model sensitivities, per-layer sensitivity bars
//! (only this layer quantized, all but this layer), each activation's SQNR, encoding ranges
//! and histograms with the encodings' ranges marked.

use crate::quant::analysis::{Analysis, Score};
use crate::quant::encoding::Encoding;
use crate::report::{esc, page_start, svg};

/// What the analysis page shows.
pub struct AnalysisReport<'a> {
    pub model: &'a str,
    pub summary: Vec<(String, String)>,
    pub analysis: &'a Analysis,
    pub activations: &'a [(String, Encoding)],
    pub params: &'a [(String, Encoding)],
    /// (parameter, activation) bitwidths.
    pub bitwidths: (u32, u32),
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v))
}

fn score_cells(s: &Score) -> String {
    format!(
        "<td>{:.2}</td><td>{}</td><td>{}</td>",
        s.sqnr_db,
        pct(s.top1_agreement),
        pct(s.accuracy)
    )
}

/// Finite values for bars (an exact match, +inf dB, drawn at 99).
fn bar(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        99.0
    }
}

/// The whole report as one HTML page.
pub fn analysis_report_html(r: &AnalysisReport<'_>) -> String {
    let a = r.analysis;
    let (w, x) = r.bitwidths;
    let mut h = page_start("Quantization analysis", r.model, &r.summary);
    h.push_str(&format!("<h2>Sensitivity to weight and activation quantization</h2><p>The first output against the FP32 model's on {} evaluation samples.</p><table><tr><th>model</th><th>SQNR dB</th><th>top-1 agreement</th><th>accuracy</th></tr><tr><td>FP32 (W32A32)</td><td>-</td><td>100%</td><td>{}</td></tr>", a.samples, pct(a.fp32_accuracy)));
    for (label, s) in [
        (format!("weights only (W{w}A32)"), &a.weights_only),
        (format!("activations only (W32A{x})"), &a.activations_only),
        (format!("both (W{w}A{x})"), &a.quantized),
    ] {
        h.push_str(&format!(
            "<tr><td>{}</td>{}</tr>",
            esc(&label),
            score_cells(s)
        ));
    }
    h.push_str("</table>");

    let rank = |key: fn(&crate::quant::analysis::Sensitivity) -> f64, low: bool| {
        let mut v: Vec<(usize, f64)> = a.layers.iter().map(key).enumerate().collect();
        v.sort_by(|p, q| {
            if low {
                p.1.total_cmp(&q.1)
            } else {
                q.1.total_cmp(&p.1)
            }
        });
        v.into_iter().take(5).map(|p| p.0).collect::<Vec<usize>>()
    };
    let worst_only = rank(|s| s.only.sqnr_db, true);
    let worst_all_but = rank(|s| s.all_but.sqnr_db, false);
    h.push_str("<h2>Per-layer sensitivity: only this layer quantized</h2><p>Output SQNR with only the layer's quantizers enabled (its output activations, its parameters, the model inputs it reads first). Lower is more sensitive; the five most sensitive are red.</p>");
    let bars = |pick: fn(&crate::quant::analysis::Sensitivity) -> f64, hot: &[usize]| {
        a.layers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("{} ({})", s.layer.name, s.layer.op),
                    bar(pick(s)),
                    hot.contains(&i),
                )
            })
            .collect::<Vec<_>>()
    };
    h.push_str(&svg::hbar_chart(
        &bars(|s| s.only.sqnr_db, &worst_only),
        "dB",
    ));
    h.push_str(&format!("<h2>Per-layer sensitivity: all but this layer quantized</h2><p>Output SQNR with every quantizer but the layer's. Higher means leaving this layer in higher precision helps most (all quantized: {:.2} dB); the five highest are red.</p>", a.quantized.sqnr_db));
    h.push_str(&svg::hbar_chart(
        &bars(|s| s.all_but.sqnr_db, &worst_all_but),
        "dB",
    ));
    h.push_str("<table><tr><th>layer</th><th>op</th><th>quantizers</th><th>only: SQNR dB</th><th>top-1</th><th>accuracy</th><th>all but: SQNR dB</th><th>top-1</th><th>accuracy</th></tr>");
    for s in &a.layers {
        let q = &s.layer.quantizers;
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} act, {} param</td>{}{}</tr>",
            esc(&s.layer.name),
            esc(&s.layer.op),
            q.activations.len(),
            q.params.len(),
            score_cells(&s.only),
            score_cells(&s.all_but)
        ));
    }
    h.push_str("</table>");

    h.push_str(&format!("<h2>Each activation against FP32</h2><p>SQNR of every quantized activation in the simulated model against its FP32 value, on the {} evaluation samples; the five worst are red.</p>", a.samples));
    let mut order: Vec<usize> = (0..a.errors.len()).collect();
    order.sort_by(|&i, &j| a.errors[i].1.db().total_cmp(&a.errors[j].1.db()));
    let worst: Vec<usize> = order.into_iter().take(5).collect();
    let err_bars: Vec<(String, f64, bool)> = a
        .errors
        .iter()
        .enumerate()
        .map(|(i, (n, p))| (n.clone(), bar(p.db()), worst.contains(&i)))
        .collect();
    h.push_str(&svg::hbar_chart(&err_bars, "dB"));

    h.push_str("<h2>Encoding ranges</h2><p>Activation quantizers' min..max, in graph order:</p>");
    let act_ranges: Vec<(f32, f32)> = r.activations.iter().map(|(_, e)| e.grid_range(0)).collect();
    h.push_str(&svg::range_chart(&act_ranges));
    let mut shown = 0;
    for &i in &worst_only {
        for p in &a.layers[i].layer.quantizers.params {
            let Some((_, e)) = r.params.iter().find(|(n, _)| n == p) else {
                continue;
            };
            if e.channels() > 1 && shown < 4 {
                shown += 1;
                h.push_str(&format!(
                    "<h3>{}: per-channel encoding ranges (a sensitive layer)</h3>",
                    esc(p)
                ));
                let ranges: Vec<(f32, f32)> = (0..e.channels()).map(|c| e.grid_range(c)).collect();
                h.push_str(&svg::range_chart(&ranges));
            }
        }
    }

    h.push_str(&format!("<h2>Histograms</h2><p>Activations on {} calibration samples (as calibration saw them, weights quantized) and FP32 weights (every channel together), with the encoding's range in red; red bins are values the quantizer clips.</p><div class=\"grid\">", a.histogram_samples));
    for hg in &a.histograms {
        h.push_str(&svg::histogram(
            &format!("{}{}", if hg.param { "weight " } else { "" }, hg.tensor),
            hg.lo,
            hg.hi,
            &hg.counts,
            hg.encoding,
        ));
    }
    h.push_str("</div>");
    h.push_str("<h2>Encodings</h2><table><tr><th>tensor</th><th>kind</th><th>bitwidth</th><th>channels</th><th>min</th><th>max</th></tr>");
    for (kind, list) in [("activation", r.activations), ("parameter", r.params)] {
        for (n, e) in list {
            let (lo, hi) = (0..e.channels())
                .map(|c| e.grid_range(c))
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), (l, u)| {
                    (a.min(l), b.max(u))
                });
            h.push_str(&format!(
                "<tr><td>{}</td><td>{kind}</td><td>{}</td><td>{}</td><td>{lo:.5}</td><td>{hi:.5}</td></tr>",
                esc(n),
                e.bitwidth,
                e.channels()
            ));
        }
    }
    h.push_str("</table></body></html>\n");
    h
}
