//! The HTML report: self-contained, plots as inline SVG (no scripts, no external files).

mod adaround;
mod amp;
pub mod analysis;
pub mod compress;
pub mod svg;
pub mod train;

use crate::quant::encoding::Encoding;
use crate::quant::params::WeightRanges;

/// An equalized weight's per-output-channel [min, max, mean, std] before and after CLE.
pub type CleLayer = (String, Vec<[f32; 4]>, Vec<[f32; 4]>);

/// What a quantization report shows.
pub struct QuantReport<'a> {
    pub model: &'a str,
    pub summary: Vec<(String, String)>,
    /// (activation, SQNR dB) in graph order.
    pub per_layer: &'a [(String, f64)],
    pub activations: &'a [(String, Encoding)],
    pub params: &'a [(String, Encoding)],
    /// (weight name, per-output-channel (min, max)) of the layers to show.
    pub weight_ranges: Vec<WeightRanges>,
    /// (weight name, per-output-channel [min, max, mean, std] before CLE, after CLE) of every
    /// equalized layer; empty without CLE.
    pub cle_ranges: Vec<CleLayer>,
    /// Mixed precision's choice, with `--amp`.
    pub amp: Option<&'a crate::quant::amp::AmpResult>,
    /// What AdaRound did, with `--adaround`.
    pub adaround: Option<&'a crate::quant::adaround::AdaroundReport>,
    /// What QAT did, with `--qat`.
    pub qat: Option<&'a crate::quant::qat::QatReport>,
}

/// How uneven a layer's channels are: the largest channel's max |w| over the median one's
/// (1 = every channel spans the same range; per-tensor quantization suffers as it grows).
pub fn range_spread(channels: &[[f32; 4]]) -> f64 {
    let mut r: Vec<f64> = channels
        .iter()
        .map(|c| c[0].abs().max(c[1].abs()) as f64)
        .collect();
    if r.is_empty() {
        return 1.0;
    }
    r.sort_by(f64::total_cmp);
    let median = r[r.len() / 2];
    if median > 0.0 {
        r[r.len() - 1] / median
    } else {
        f64::INFINITY
    }
}

fn cle_section(h: &mut String, layers: &[CleLayer]) {
    h.push_str("<h2>Weight ranges before and after cross-layer equalization</h2><p>Per layer, the largest output channel's max |w| over the median channel's: before (grey) and after (blue). Per-tensor quantization spends its grid on the largest channel, so high bars are the problem layers.</p>");
    let mut bars = Vec::with_capacity(2 * layers.len());
    for (name, before, after) in layers {
        bars.push((
            format!("{name} (before)"),
            range_spread(before).min(1e3),
            true,
        ));
        bars.push((
            format!("{name} (after)"),
            range_spread(after).min(1e3),
            false,
        ));
    }
    h.push_str(&svg::hbar_chart_colors(
        &bars,
        "max/median channel range",
        ("#999999", "#1f77b4"),
    ));
    let mut worst: Vec<&CleLayer> = layers.iter().collect();
    worst.sort_by(|a, b| range_spread(&b.1).total_cmp(&range_spread(&a.1)));
    for (name, before, after) in worst.into_iter().take(6) {
        h.push_str(&format!(
            "<h3>{}: spread {:.1} before, {:.1} after</h3>",
            esc(name),
            range_spread(before),
            range_spread(after)
        ));
        h.push_str("<p>Bars: min..max per output channel; black ticks: mean ± std.</p>");
        h.push_str("<div>before CLE</div>");
        h.push_str(&svg::summary_chart(before));
        h.push_str("<div>after CLE</div>");
        h.push_str(&svg::summary_chart(after));
    }
}

/// Text escaped for HTML and SVG (element content and quoted attributes).
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The start of a report page: head, style, heading and the summary table.
pub(crate) fn page_start(kind: &str, model: &str, summary: &[(String, String)]) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>qforge: {}</title>",
        esc(model)
    );
    h.push_str("<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}h2{margin-top:1.6em}.grid{display:flex;flex-wrap:wrap;gap:6px}</style></head><body>");
    h.push_str(&format!("<h1>{kind} report: {}</h1><table>", esc(model)));
    for (k, v) in summary {
        h.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)));
    }
    h.push_str("</table>");
    h
}

/// The report as one HTML page.
pub fn quant_report_html(r: &QuantReport<'_>) -> String {
    let mut h = page_start("Quantization", r.model, &r.summary);
    if let Some(a) = r.amp {
        amp::section(&mut h, a);
    }
    if let Some(a) = r.adaround {
        adaround::section(&mut h, a);
    }
    if let Some(q) = r.qat {
        adaround::qat_section(&mut h, q);
    }
    let mut worst: Vec<&(String, f64)> = r.per_layer.iter().collect();
    worst.sort_by(|a, b| a.1.total_cmp(&b.1));
    let worst5: Vec<&str> = worst.iter().take(5).map(|(n, _)| n.as_str()).collect();
    h.push_str("<h2>Per-layer SQNR (quantized vs FP32 activation)</h2><p>Lower is worse; the five worst are red.</p>");
    let bars: Vec<(String, f64, bool)> = r
        .per_layer
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                if v.is_finite() { *v } else { 99.0 },
                worst5.contains(&n.as_str()),
            )
        })
        .collect();
    h.push_str(&svg::hbar_chart(&bars, "dB"));
    for (name, ranges) in &r.weight_ranges {
        h.push_str(&format!(
            "<h2>Per-channel weight ranges: {}</h2>",
            esc(name)
        ));
        h.push_str(&svg::range_chart(ranges));
    }
    if !r.cle_ranges.is_empty() {
        cle_section(&mut h, &r.cle_ranges);
    }
    h.push_str("<h2>Encodings</h2><table><tr><th>tensor</th><th>kind</th><th>bitwidth</th><th>channels</th><th>scale (first)</th><th>offset (first)</th><th>min</th><th>max</th></tr>");
    for (kind, list) in [("activation", r.activations), ("parameter", r.params)] {
        for (n, e) in list {
            let (lo, hi) = e.grid_range(0);
            h.push_str(&format!("<tr><td>{}</td><td>{kind}</td><td>{}</td><td>{}</td><td>{:.6e}</td><td>{}</td><td>{:.5}</td><td>{:.5}</td></tr>", esc(n), e.bitwidth, e.channels(), e.scale[0], e.offset[0], lo, hi));
        }
    }
    h.push_str("</table></body></html>\n");
    h
}
