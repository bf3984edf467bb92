//! Summarises criterion's results (`target/criterion`) into one JSON and one markdown table:
//! each benchmark's time and throughput (GB/s, GFLOP/s or images/s), memory-bound kernels as a
//! fraction of the adapter's copy bandwidth measured in the same run, FLOP rates as a fraction
//! of the adapter's FP32 peak where it is known (`QFORGE_FP32_PEAK_TFLOPS` overrides the table).
//! benches/device.sh runs it after the benches.
//!
//! `cargo run --release --example bench_summary -- <criterion dir> <out dir> <adapter name>`

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Dense FP32 peaks (TFLOP/s, boost clock, vendor figures) of GPUs the device script may meet.
const FP32_PEAKS: [(&str, f64); 10] = [
    ("H200", 67.0),
    ("H100 PCIe", 51.2),
    ("H100", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("L4", 30.3),
    ("A10", 31.2),
    ("RTX 4090", 82.6),
    ("V100", 15.7),
    ("T4", 8.1),
];

struct Row {
    group: String,
    id: String,
    seconds: f64,
    /// ("GB/s" | "GFLOP/s" | "images/s" | "elements/s", value).
    rate: Option<(&'static str, f64)>,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.ends_with("new/benchmark.json") {
            out.push(p);
        }
    }
}

fn read(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn row(bench: &Path) -> Option<Row> {
    let b = read(bench)?;
    let e = read(&bench.with_file_name("estimates.json"))?;
    let seconds = e["mean"]["point_estimate"].as_f64()? * 1e-9;
    let group = b["group_id"].as_str()?.to_string();
    let id = [b["function_id"].as_str(), b["value_str"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
    let flops = ["gemm", "conv", "depthwise", "dense conv"]
        .iter()
        .any(|g| group.starts_with(g));
    let images = ["mobilenet", "calibration", "simulation"]
        .iter()
        .any(|g| group.starts_with(g));
    let t = &b["throughput"];
    let rate = match (t["Bytes"].as_f64(), t["Elements"].as_f64()) {
        (Some(bytes), _) => Some(("GB/s", bytes / seconds * 1e-9)),
        (None, Some(n)) if flops => Some(("GFLOP/s", n / seconds * 1e-9)),
        (None, Some(n)) if images => Some(("images/s", n / seconds)),
        (None, Some(n)) => Some(("elements/s", n / seconds)),
        (None, None) => None,
    };
    Some(Row {
        group,
        id,
        seconds,
        rate,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, adapter] = args.as_slice() else {
        eprintln!("usage: bench_summary <criterion dir> <out dir> <adapter name>");
        std::process::exit(2);
    };
    let mut paths = Vec::new();
    files(Path::new(dir), &mut paths);
    let mut rows: Vec<Row> = paths.iter().filter_map(|p| row(p)).collect();
    rows.sort_by(|a, b| (&a.group, &a.id).cmp(&(&b.group, &b.id)));
    let copy = rows
        .iter()
        .filter(|r| r.id.starts_with("copy_"))
        .filter_map(|r| r.rate.map(|(_, v)| v))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let peak = std::env::var("QFORGE_FP32_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .or_else(|| {
            FP32_PEAKS
                .iter()
                .find(|(name, _)| adapter.contains(name))
                .map(|&(_, p)| p)
        });
    let mut md = format!(
        "# Device benchmark\n\nadapter: {adapter}\n\ncopy bandwidth (best copy in this run): {}\n\nFP32 peak: {}\n\n| group | benchmark | time | rate | fraction |\n|---|---|---|---|---|\n",
        copy.map_or("not measured".into(), |c| format!("{c:.1} GB/s")),
        peak.map_or("unknown (set QFORGE_FP32_PEAK_TFLOPS)".into(), |p| format!("{p} TFLOP/s")),
    );
    let mut entries = Vec::new();
    for r in &rows {
        let fraction = match r.rate {
            Some(("GB/s", v)) => copy.map(|c| (v / c, "of copy bandwidth")),
            Some(("GFLOP/s", v)) => peak.map(|p| (v / (p * 1e3), "of FP32 peak")),
            _ => None,
        };
        let rate = r.rate.map_or(String::new(), |(u, v)| format!("{v:.3} {u}"));
        let frac = fraction.map_or(String::new(), |(f, what)| {
            format!("{:.1}% {what}", f * 100.0)
        });
        md += &format!(
            "| {} | {} | {:.3} ms | {rate} | {frac} |\n",
            r.group,
            r.id,
            r.seconds * 1e3
        );
        entries.push(json!({
            "group": r.group,
            "benchmark": r.id,
            "seconds": r.seconds,
            "unit": r.rate.map(|(u, _)| u),
            "rate": r.rate.map(|(_, v)| v),
            "fraction": fraction.map(|(f, _)| f),
            "fraction_of": fraction.map(|(_, w)| w),
        }));
    }
    let summary = json!({
        "adapter": adapter,
        "copy_gb_per_s": copy,
        "fp32_peak_tflops": peak,
        "benchmarks": entries,
    });
    std::fs::create_dir_all(out).expect("output folder");
    let out = Path::new(out);
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("json"),
    )
    .expect("summary.json");
    std::fs::write(out.join("summary.md"), &md).expect("summary.md");
    print!("{md}");
}
