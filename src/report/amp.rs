//! The mixed-precision section of report.html: the Pareto curve of relative bit-operations
//! against the score, the chosen point, and each group's candidate.

use crate::quant::amp::AmpResult;
use crate::report::esc;
use crate::report::svg::pareto_chart;

/// Appends the section for `a` to the page `h`.
pub fn section(h: &mut String, a: &AmpResult) {
    let v = |s: &crate::quant::analysis::Score| s.value(a.score);
    let unit = a.score.unit();
    h.push_str(&format!(
        "<h2>Mixed precision (AMP)</h2><p>{} quantizer groups, candidates {}; baseline {} scores {:.4}{unit} on {} calibration samples; allowed drop {}{unit}. Chosen: {:.3} of the baseline's bit-operations at {:.4}{unit} (SQNR {:.2} dB). Phase 1 {}; {} evaluations in phase 2.</p>",
        a.groups.len(),
        a.candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
        a.baseline,
        v(&a.baseline_score),
        a.samples,
        a.allowed_drop,
        a.point.relative_bit_ops,
        v(&a.point.score),
        a.point.score.sqnr_db,
        if a.reused { "read from amp_scores.json".to_string() } else { format!("{:.1} s", a.seconds[1]) },
        a.evaluations,
    ));
    let curve: Vec<(f64, f64)> = a
        .curve
        .iter()
        .map(|p| (p.relative_bit_ops, v(&p.score)))
        .collect();
    let uniform: Vec<(String, f64, f64)> = a
        .uniform
        .iter()
        .map(|(c, p)| (c.to_string(), p.relative_bit_ops, v(&p.score)))
        .collect();
    h.push_str(&pareto_chart(
        &curve,
        &a.front(),
        (a.point.relative_bit_ops, v(&a.point.score)),
        &uniform,
        v(&a.baseline_score) - a.allowed_drop,
        if unit.is_empty() {
            "score"
        } else {
            "SQNR (dB)"
        },
    ));
    h.push_str("<table><tr><th>group</th><th>layers</th><th>MACs</th><th>quantizers</th><th>chosen</th><th>phase-1 score per candidate</th></tr>");
    for ((g, c), row) in a.groups.iter().zip(&a.chosen).zip(&a.sensitivities.scores) {
        let scores: Vec<String> = row
            .iter()
            .map(|(c, s)| format!("{c}: {:.4}", v(s)))
            .collect();
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.name),
            g.layers.len(),
            g.macs(),
            g.quantizers.activations.len() + g.quantizers.params.len(),
            if *c == a.baseline {
                c.to_string()
            } else {
                format!("<b>{c}</b>")
            },
            esc(&scores.join(", "))
        ));
    }
    h.push_str("</table>");
}
