//! The fine-tuning report: summary, the training loss over optimizer steps and the held-out
//! score over epochs, as inline SVG.

use crate::report::{page_start, svg};

/// The whole report as one HTML page: `loss` as (step, mean loss since the last reading),
/// `scores` as (epoch, held-out score; epoch 0 before training) named `metric`.
pub fn train_report_html(
    model: &str,
    summary: &[(String, String)],
    loss: &[(f64, f64)],
    scores: &[(f64, f64)],
    metric: &str,
) -> String {
    let mut h = page_start("Fine-tuning", model, summary);
    h.push_str("<h2>Training loss</h2>");
    h.push_str(&svg::line_chart("loss", loss, "optimizer step", "loss"));
    h.push_str(&format!("<h2>{metric} by epoch</h2>"));
    h.push_str(&svg::line_chart(metric, scores, "epoch", metric));
    h.push_str("<table><tr><th>epoch</th><th>score</th></tr>");
    for (e, s) in scores {
        h.push_str(&format!("<tr><td>{e}</td><td>{s:.4}</td></tr>"));
    }
    h.push_str("</table></body></html>");
    h
}
