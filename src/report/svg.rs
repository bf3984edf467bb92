//! Minimal SVG charts for the report: horizontal bars and per-channel range bars.

use crate::report::esc;

/// Horizontal bars: (label, value, highlighted), one row per bar; highlighted bars red.
pub fn hbar_chart(bars: &[(String, f64, bool)], unit: &str) -> String {
    hbar_chart_colors(bars, unit, ("#d62728", "#1f77b4"))
}

/// Horizontal bars with (highlighted, plain) colours.
pub fn hbar_chart_colors(bars: &[(String, f64, bool)], unit: &str, colors: (&str, &str)) -> String {
    let (row, label_w, plot_w) = (14.0, 220.0, 700.0);
    let max = bars.iter().map(|b| b.1).fold(1e-9f64, f64::max);
    let min = bars.iter().map(|b| b.1).fold(0f64, f64::min);
    let span = max - min;
    let height = bars.len() as f64 * row + 30.0;
    let x0 = label_w + (-min / span) * plot_w;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-size=\"10\">", label_w + plot_w + 60.0);
    for (i, (label, v, hot)) in bars.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let (xa, xb) = (
            x0.min(x0 + v / span * plot_w),
            x0.max(x0 + v / span * plot_w),
        );
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 4.0,
            y + 10.0,
            esc(label)
        ));
        s.push_str(&format!(
            "<rect x=\"{xa:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            (xb - xa).max(0.5),
            row - 3.0,
            if *hot { colors.0 } else { colors.1 }
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{v:.1}</text>",
            xb + 3.0,
            y + 10.0
        ));
    }
    let axis_y = bars.len() as f64 * row + 8.0;
    s.push_str(&format!(
        "<line x1=\"{x0:.1}\" y1=\"0\" x2=\"{x0:.1}\" y2=\"{axis_y}\" stroke=\"#444\"/>"
    ));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\">{unit}: {min:.1} … {max:.1}</text></svg>",
        label_w,
        axis_y + 14.0
    ));
    s
}

/// Vertical min..max bars per channel, around a zero line.
pub fn range_chart(ranges: &[(f32, f32)]) -> String {
    channel_bars(ranges, &[])
}

/// Per-channel min..max bars with mean ± std ticks: `[min, max, mean, std]` per channel.
pub fn summary_chart(channels: &[[f32; 4]]) -> String {
    let ranges: Vec<(f32, f32)> = channels.iter().map(|c| (c[0], c[1])).collect();
    let ticks: Vec<(f32, f32)> = channels
        .iter()
        .map(|c| (c[2] - c[3], c[2] + c[3]))
        .collect();
    channel_bars(&ranges, &ticks)
}

/// Green min..max bars per channel, and black (lo, hi) ticks over them when given.
fn channel_bars(ranges: &[(f32, f32)], ticks: &[(f32, f32)]) -> String {
    let (w, h) = (900.0, 220.0);
    let lo = ranges.iter().map(|r| r.0 as f64).fold(0f64, f64::min);
    let hi = ranges.iter().map(|r| r.1 as f64).fold(0f64, f64::max);
    let span = (hi - lo).max(1e-12);
    let y = |v: f64| 10.0 + (hi - v) / span * (h - 30.0);
    let bw = (w - 40.0) / ranges.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"10\">"
    );
    for (fill, min_h, bars) in [("#2ca02c", 0.5, ranges), ("#000", 0.8, ticks)] {
        for (c, &(a, b)) in bars.iter().enumerate() {
            let x = 35.0 + c as f64 * bw;
            s.push_str(&format!(
                "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{fill}\"/>",
                y(b as f64),
                (bw * 0.8).max(0.5),
                (y(a as f64) - y(b as f64)).max(min_h)
            ));
        }
    }
    s.push_str(&format!(
        "<line x1=\"35\" y1=\"{0:.1}\" x2=\"{w}\" y2=\"{0:.1}\" stroke=\"#444\"/>",
        y(0.0)
    ));
    s.push_str(&format!(
        "<text x=\"0\" y=\"{:.1}\">{hi:.3}</text><text x=\"0\" y=\"{:.1}\">{lo:.3}</text>",
        y(hi) + 4.0,
        y(lo)
    ));
    s.push_str(&format!(
        "<text x=\"35\" y=\"{}\">{} output channels (min..max)</text></svg>",
        h - 2.0,
        ranges.len()
    ));
    s
}

/// A small line chart of score (0..1, vertical) against ratio (0..1, horizontal) for one
/// layer: the points of `curve`, the baseline as a dashed line, and the chosen ratio (if
/// any, and below 1) as a red marker.
pub fn sensitivity_chart(
    title: &str,
    curve: &[(f64, f64)],
    baseline: f64,
    chosen: Option<f64>,
) -> String {
    let (w, h, l, b) = (260.0, 150.0, 30.0, 22.0);
    let (pw, ph) = (w - l - 8.0, h - b - 18.0);
    // Vertical axis from the lowest score (rounded down to 0.1) to 1.
    let lo = curve
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(baseline, f64::min)
        .clamp(0.0, 0.9);
    let lo = (lo * 10.0).floor() / 10.0;
    let x = |r: f64| l + r.clamp(0.0, 1.0) * pw;
    let y = |s: f64| 18.0 + (1.0 - (s.clamp(lo, 1.0) - lo) / (1.0 - lo)) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"9\">"
    );
    s.push_str(&format!(
        "<text x=\"{l}\" y=\"11\" font-size=\"10\">{}</text>",
        esc(title)
    ));
    s.push_str(&format!(
        "<rect x=\"{l}\" y=\"18\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#aaa\"/>"
    ));
    for (t, v) in [(0.0, lo), (0.5, (lo + 1.0) / 2.0), (1.0, 1.0)] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            l - 3.0,
            y(v) + 3.0
        ));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            h - 8.0
        ));
    }
    s.push_str(&format!("<line x1=\"{l}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>", y(baseline), l + pw, y(baseline)));
    let pts: Vec<String> = curve
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>",
        pts.join(" ")
    ));
    for &(r, v) in curve.iter().filter(|p| p.1.is_finite()) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#1f77b4\"/>",
            x(r),
            y(v)
        ));
    }
    if let Some(c) = chosen.filter(|&c| c < 1.0) {
        s.push_str(&format!("<line x1=\"{:.1}\" y1=\"18\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#d62728\" stroke-width=\"1.5\"/>", x(c), x(c), 18.0 + ph));
    }
    s.push_str("</svg>");
    s
}

/// A line chart of one series of (x, y) points with its axis labels and ranges.
/// With no finite point it says so instead of drawing axes.
pub fn line_chart(title: &str, points: &[(f64, f64)], x_label: &str, y_label: &str) -> String {
    let (w, h, left, bottom) = (640.0, 220.0, 60.0, 30.0);
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if finite.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"40\" font-size=\"10\"><text x=\"{left}\" y=\"9\">{}</text><text x=\"{left}\" y=\"28\">no points to plot</text></svg>",
            esc(title)
        );
    }
    let points = &finite[..];
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        points.iter().map(pick).fold(init, f)
    };
    let (x0, x1) = (
        fold(f64::min, f64::MAX, |p| p.0),
        fold(f64::max, f64::MIN, |p| p.0),
    );
    let (y0, y1) = (
        fold(f64::min, f64::MAX, |p| p.1),
        fold(f64::max, f64::MIN, |p| p.1),
    );
    let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let px = |x: f64| left + (x - x0) / xs * (w - left - 10.0);
    let py = |y: f64| 10.0 + (1.0 - (y - y0) / ys) * (h - bottom - 20.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"10\"><text x=\"{left}\" y=\"9\">{}</text>",
        esc(title)
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
        path.join(" ")
    ));
    for &(x, y) in points.iter().filter(|_| points.len() <= 40) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#1f77b4\"/>",
            px(x),
            py(y)
        ));
    }
    let axis = h - bottom + 4.0;
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\" stroke=\"#444\"/><text x=\"{left}\" y=\"{}\">{}: {x0:.0} … {x1:.0}</text><text x=\"2\" y=\"{}\">{}</text><text x=\"2\" y=\"{}\">{y1:.4}</text><text x=\"2\" y=\"{}\">{y0:.4}</text></svg>",
        w - 10.0,
        axis + 14.0,
        esc(x_label),
        h / 2.0,
        esc(y_label),
        py(y1) + 4.0,
        py(y0)
    ));
    s
}

/// A small histogram (equal-width bins over `lo..hi`, counts on a square-root scale so the
/// tails show) with the encoding's range `(emin, emax)` as red lines; bins outside it, whose
/// values the quantizer clips, in red.
pub fn histogram(
    title: &str,
    lo: f32,
    hi: f32,
    counts: &[u64],
    (emin, emax): (f32, f32),
) -> String {
    let (w, h, l, b) = (260.0, 150.0, 8.0, 22.0);
    let (pw, ph) = (w - 2.0 * l, h - b - 18.0);
    let span = (hi - lo).max(f32::MIN_POSITIVE) as f64;
    let x = |v: f32| l + ((v - lo) as f64 / span).clamp(0.0, 1.0) * pw;
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"9\"><text x=\"{l}\" y=\"11\" font-size=\"10\">{}</text>",
        esc(title)
    );
    let bw = pw / counts.len().max(1) as f64;
    for (i, &c) in counts.iter().enumerate() {
        let bh = (c as f64 / top).sqrt() * ph;
        let centre = lo as f64 + (i as f64 + 0.5) * span / counts.len() as f64;
        let clipped = centre < emin as f64 || centre > emax as f64;
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>",
            l + i as f64 * bw,
            18.0 + ph - bh,
            bw.max(0.5),
            if clipped { "#d62728" } else { "#7f7f7f" }
        ));
    }
    for v in [emin, emax] {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"18\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#d62728\" stroke-width=\"1.2\"/>",
            x(v),
            18.0 + ph
        ));
    }
    s.push_str(&format!(
        "<text x=\"{l}\" y=\"{0:.1}\">{lo:.3}</text><text x=\"{1:.1}\" y=\"{0:.1}\" text-anchor=\"end\">{hi:.3}</text><text x=\"{2:.1}\" y=\"{0:.1}\" text-anchor=\"middle\" fill=\"#d62728\">[{emin:.3}, {emax:.3}]</text></svg>",
        h - 8.0,
        w - l,
        w / 2.0
    ));
    s
}

/// Score (vertical) against relative bit-operations (horizontal, 0..1) of evaluated
/// configurations: every point grey, the Pareto front joined in blue, each uniform
/// configuration labelled, the chosen point in red and the lowest allowed score dashed.
pub fn pareto_chart(
    points: &[(f64, f64)],
    front: &[usize],
    chosen: (f64, f64),
    uniform: &[(String, f64, f64)],
    floor: f64,
    y_label: &str,
) -> String {
    let (w, h, l, b) = (640.0, 300.0, 60.0, 34.0);
    let (pw, ph) = (w - l - 20.0, h - b - 20.0);
    let ys = points
        .iter()
        .map(|p| p.1)
        .chain(uniform.iter().map(|u| u.2))
        .chain([chosen.1, floor])
        .filter(|v| v.is_finite());
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, c), v| (a.min(v), c.max(v)));
    let (y0, y1) = if y1 > y0 {
        (y0, y1)
    } else {
        (y0 - 1.0, y0 + 1.0)
    };
    let x = |r: f64| l + r.clamp(0.0, 1.05) / 1.05 * pw;
    let y = |v: f64| 20.0 + (1.0 - (v.clamp(y0, y1) - y0) / (y1 - y0)) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"10\">"
    );
    s.push_str(&format!(
        "<rect x=\"{l}\" y=\"20\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#aaa\"/>"
    ));
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            h - b + 14.0
        ));
    }
    for v in [y0, (y0 + y1) / 2.0, y1] {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.3}</text>",
            l - 4.0,
            y(v) + 3.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">bit-operations relative to the baseline</text><text x=\"4\" y=\"12\">{}</text>",
        l + pw / 2.0,
        h - 4.0,
        esc(y_label)
    ));
    if floor.is_finite() {
        s.push_str(&format!(
            "<line x1=\"{l}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-dasharray=\"4,3\"/>",
            y(floor),
            l + pw,
            y(floor)
        ));
    }
    for &(r, v) in points.iter().filter(|p| p.1.is_finite()) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#bbb\"/>",
            x(r),
            y(v)
        ));
    }
    let mut f: Vec<(f64, f64)> = front
        .iter()
        .filter_map(|&i| points.get(i).copied())
        .filter(|p| p.1.is_finite())
        .collect();
    f.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pts: Vec<String> = f
        .iter()
        .map(|&(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>",
        pts.join(" ")
    ));
    for (name, r, v) in uniform.iter().filter(|u| u.2.is_finite()) {
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" fill=\"#2ca02c\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x(*r) - 3.0,
            y(*v) - 3.0,
            x(*r) + 5.0,
            y(*v) - 5.0,
            esc(name)
        ));
    }
    if chosen.1.is_finite() {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>",
            x(chosen.0),
            y(chosen.1)
        ));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_without_finite_points_says_so() {
        for points in [vec![], vec![(0.0, f64::NAN)], vec![(f64::INFINITY, 1.0)]] {
            let s = line_chart("loss", &points, "step", "loss");
            assert!(s.contains("no points to plot"), "{s}");
            assert!(!s.contains("e308") && !s.contains("17976931"), "{s}");
        }
        assert!(
            !line_chart("loss", &[(0.0, 1.0), (1.0, f64::NAN)], "step", "loss")
                .contains("no points")
        );
    }
}
