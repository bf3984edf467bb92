//! The compression report: summary, per-layer sensitivity curves (score vs ratio, the chosen
//! ratio marked) for each method, the chosen ratios, and what was skipped.

use crate::compress::pipeline::Outcome;
use crate::report::{esc, page_start, svg};

/// The whole report as one HTML page.
pub fn compress_report_html(
    model: &str,
    summary: &[(String, String)],
    outcome: &Outcome,
) -> String {
    let mut h = page_start("Compression", model, summary);
    for st in &outcome.stages {
        let m = st.method.name();
        h.push_str(&format!("<h2>{m}: per-layer sensitivity</h2><p>Score with only that layer compressed, against the layer's cost ratio (blue); the uncompressed score dashed; the chosen ratio red. {}</p>", if st.reused_scores { "Scores read from the saved table." } else { "" }));
        h.push_str("<div class=\"grid\">");
        for l in &st.table.layers {
            let curve: Vec<(f64, f64)> = l.entries.iter().map(|e| (e.ratio, e.score)).collect();
            let chosen = st
                .selection
                .as_ref()
                .and_then(|s| s.ratios.iter().find(|(n, _)| n == &l.name).map(|r| r.1));
            h.push_str(&svg::sensitivity_chart(
                &l.name,
                &curve,
                st.table.baseline,
                chosen,
            ));
        }
        h.push_str("</div>");
        match &st.selection {
            Some(s) => {
                h.push_str(&format!("<h3>{m}: chosen ratios (score threshold {:.3})</h3><table><tr><th>layer</th><th>ratio</th><th>score alone</th></tr>", s.threshold));
                for (n, r) in &s.ratios {
                    let score = st
                        .table
                        .layers
                        .iter()
                        .find(|l| &l.name == n)
                        .and_then(|l| l.entries.iter().find(|e| e.ratio == *r))
                        .map_or("-".to_string(), |e| format!("{:.3}", e.score));
                    h.push_str(&format!(
                        "<tr><td>{}</td><td>{r:.2}</td><td>{score}</td></tr>",
                        esc(n)
                    ));
                }
                h.push_str("</table>");
            }
            None => h.push_str(&format!(
                "<p>{m}: its share of the target was out of reach; left to the next method.</p>"
            )),
        }
        if !st.rebuilds.is_empty() {
            h.push_str(&format!("<h3>{m}: least-squares rebuilds</h3><p>Each pruned layer's weights are fitted on the rebuild images; the ridge is the one with the least output error on the check images (the scoring images, which the fit never saw), and the pruned layer's own (sliced) weights are kept when no rebuild beats them there. Errors are relative to the original layer's output energy on the check images. <b>few images</b>: fewer fitting images than AIMET's rule (10 positions per image, twice as many samples as unknowns) wants; positions of one image are not independent.</p><table><tr><th>layer</th><th>kept channels</th><th>unknowns</th><th>fit images</th><th>fit samples</th><th>check images</th><th>error sliced</th><th>error rebuilt</th><th>chosen</th></tr>"));
            for r in &st.rebuilds {
                let few = r.few_images();
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{} of {}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                    esc(&r.node),
                    r.kept.0,
                    r.kept.1,
                    r.features,
                    r.fit_images,
                    if few { " (few images)" } else { "" },
                    r.fit_samples,
                    r.check_images,
                    r.sliced_error,
                    r.rebuilt_error,
                    r.ridge.map_or("sliced".to_string(), |x| format!("ridge {x:e}"))
                ));
            }
            h.push_str("</table>");
        }
        if !st.skipped.is_empty() {
            h.push_str(&format!(
                "<h3>{m}: layers not compressed</h3><table><tr><th>layer</th><th>why</th></tr>"
            ));
            for (n, why) in &st.skipped {
                h.push_str(&format!(
                    "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                    esc(n),
                    esc(why)
                ));
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>\n");
    h
}
