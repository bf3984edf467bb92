//! ONNX's backend conformance suite through qforge's executor: every case under
//! tests/conformance/cases (written by tools/make_conformance.py from the onnx package:
//! the node tests `collect_testcases` generates, the wheel's pytorch-converted,
//! pytorch-operator, simple and light models), or under `QFORGE_CONFORMANCE_DIR` when set
//! (a full, uncommitted generation).
//!
//! A case is in scope when every op it uses is in tests/conformance/ops.txt, its values are
//! tensors of a type qforge carries, and its opset is 6 or later; the others are listed as
//! excluded with the reason. In-scope cases run with all their inputs on the GPU and are
//! compared with the expected outputs at ONNX's tolerances (each case's rtol/atol, 1e-3 and
//! 1e-7 unless the case states others): same shape, same element type, `|y - ref| <= atol +
//! rtol * |ref|`, NaN where ref is NaN and infinities equal. The table of every case
//! (pass, fail with the first error, excluded with the reason) is printed; the test fails when
//! an in-scope case fails that tests/conformance/known_failures.txt does not list, or a listed
//! one passes (so the list only shrinks).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use qforge::exec::Runner;
use qforge::graph::ir::{Const, ElemType};
use qforge::graph::onnx;

/// What happened to one case.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Pass,
    Fail(String),
    Excluded(String),
}

/// One case: its kind, name and files (paths relative to the case's folder).
struct Case {
    kind: String,
    name: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Case {
    fn file(&self, rel: &str) -> Result<&[u8], String> {
        self.files
            .get(rel)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("{}/{}: no file {rel}", self.kind, self.name))
    }

    /// The data sets' folders (`test_data_set_K`), in order.
    fn sets(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .files
            .keys()
            .filter_map(|f| f.split_once('/').map(|(d, _)| d.to_string()))
            .filter(|d| d.starts_with("test_data_set_"))
            .collect();
        set.into_iter().collect()
    }

    /// The files `set/prefixK.pb`, in K order.
    fn numbered(&self, set: &str, prefix: &str) -> Vec<&[u8]> {
        let mut v: Vec<(usize, &[u8])> = self
            .files
            .iter()
            .filter_map(|(f, b)| {
                let k = f
                    .strip_prefix(set)?
                    .strip_prefix('/')?
                    .strip_prefix(prefix)?
                    .strip_suffix(".pb")?
                    .parse()
                    .ok()?;
                Some((k, b.as_slice()))
            })
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, b)| b).collect()
    }
}

/// Every case under `root`: `<kind>.pack.gz` files (tools/make_conformance.py --pack) or
/// `<kind>/<case>/` folders, sorted by kind and name.
fn load_cases(root: &Path) -> Vec<Case> {
    let mut by: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let path = e.path();
        let fname = e.file_name().to_string_lossy().into_owned();
        if let Some(kind) = fname.strip_suffix(".pack.gz") {
            let mut data = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
                .read_to_end(&mut data)
                .unwrap();
            let mut at = 0;
            let take = |at: &mut usize, n: usize| {
                let s = data[*at..*at + n].to_vec();
                *at += n;
                s
            };
            while at < data.len() {
                let len = u32::from_le_bytes(take(&mut at, 4).try_into().unwrap()) as usize;
                let rel = String::from_utf8(take(&mut at, len)).unwrap();
                let size = u64::from_le_bytes(take(&mut at, 8).try_into().unwrap()) as usize;
                let bytes = take(&mut at, size);
                let (case, file) = rel.split_once('/').unwrap();
                by.entry((kind.to_string(), case.to_string()))
                    .or_default()
                    .insert(file.to_string(), bytes);
            }
        } else if path.is_dir() {
            for c in std::fs::read_dir(&path).unwrap().flatten() {
                let mut files = BTreeMap::new();
                let mut stack = vec![c.path()];
                while let Some(d) = stack.pop() {
                    for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if f.path().is_dir() {
                            stack.push(f.path());
                        } else {
                            let rel = f
                                .path()
                                .strip_prefix(c.path())
                                .unwrap()
                                .to_string_lossy()
                                .replace('\\', "/");
                            files.insert(rel, std::fs::read(f.path()).unwrap());
                        }
                    }
                }
                if files.contains_key("data.json") {
                    by.insert(
                        (fname.clone(), c.file_name().to_string_lossy().into_owned()),
                        files,
                    );
                }
            }
        }
    }
    by.into_iter()
        .map(|((kind, name), files)| Case { kind, name, files })
        .collect()
}

/// Every op type of a graph and its subgraphs (`domain::Op` outside the default domain).
fn ops_of(g: &onnx::GraphProto, out: &mut BTreeSet<String>) {
    for n in &g.node {
        let op = n.op_type.clone().unwrap_or_default();
        match n.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => out.insert(op),
            Some(d) => out.insert(format!("{d}::{op}")),
        };
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                ops_of(sub, out);
            }
            for sub in &a.graphs {
                ops_of(sub, out);
            }
        }
    }
}

/// The element type code of a value info (0 when it is not a tensor).
fn elem_code(vi: &onnx::ValueInfoProto) -> i32 {
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx::type_proto::Value::TensorType(t)) => t.elem_type.unwrap_or(0),
        _ => 0,
    }
}

/// Why a case is outside scope, if it is.
fn exclusion(model: &onnx::ModelProto, scope: &BTreeSet<String>) -> Option<String> {
    let g = model.graph.as_ref()?;
    let mut ops = BTreeSet::new();
    ops_of(g, &mut ops);
    let outside: Vec<&String> = ops.iter().filter(|o| !scope.contains(*o)).collect();
    if !outside.is_empty() {
        return Some(format!(
            "ops outside scope: {}",
            outside
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let inits: BTreeSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    for vi in g
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_deref().unwrap_or("")))
        .chain(&g.output)
    {
        let code = elem_code(vi);
        if ElemType::from_onnx(code).is_none() {
            return Some(format!(
                "{} values ('{}')",
                ElemType::onnx_name(code),
                vi.name.as_deref().unwrap_or("")
            ));
        }
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(0);
    if opset < 6 {
        return Some(format!("opset {opset} (before 6)"));
    }
    None
}

fn read_pb(bytes: &[u8]) -> Result<onnx::TensorProto, String> {
    onnx::TensorProto::decode(bytes).map_err(|e| format!("not a TensorProto: {e}"))
}

/// Compares one output with ONNX's rule (np.testing.assert_allclose, NaN equal to NaN).
fn compare(
    name: &str,
    got: &ArrayD<f32>,
    want: &ArrayD<f32>,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "output '{name}' has shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, wg, ww)| (g - w).abs() > (wg - ww).abs() || wg.is_nan()) {
                worst = Some((i, g, w));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, g, w)) => Err(format!(
            "output '{name}': {bad} of {} values differ; element {i} is {g}, expected {w}",
            got.len()
        )),
    }
}

/// Runs one in-scope case.
fn run_case(
    gpu: &std::sync::Arc<qforge::gpu::Gpu>,
    case: &Case,
    meta: &serde_json::Value,
) -> Outcome {
    match try_case(gpu, case, meta) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

fn try_case(
    gpu: &std::sync::Arc<qforge::gpu::Gpu>,
    case: &Case,
    meta: &serde_json::Value,
) -> Result<(), String> {
    let rtol = meta["rtol"].as_f64().unwrap_or(1e-3);
    let atol = meta["atol"].as_f64().unwrap_or(1e-7);
    let g = qforge::graph::import(case.file("model.onnx")?, "model.onnx", None)
        .map_err(|e| format!("import: {e}"))?;
    let types = g.value_types();
    let value_inputs = g.value_inputs();
    let inputs = g.inputs.clone();
    let outputs = g.outputs.clone();
    let runner = Runner::new(gpu.clone(), g.clone()).exact();
    let sets = case.sets();
    if sets.is_empty() {
        return Err("no test data set".into());
    }
    for set in sets {
        let mut xs: Vec<ArrayD<f32>> = Vec::new();
        if meta["generated_inputs"] == "arange" {
            // As ONNX's runner feeds the light models: arange(n) / n at the declared shape.
            for i in &inputs {
                let shape: Vec<usize> = g.input_dims[i]
                    .iter()
                    .map(|d| match d {
                        qforge::graph::Dim::Fixed(v) => *v,
                        qforge::graph::Dim::Named(_) => 1,
                    })
                    .collect();
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n).map(|k| (k as f64 / n as f64) as f32).collect();
                xs.push(ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap());
            }
        } else {
            for (k, b) in case.numbered(&set, "input_").into_iter().enumerate() {
                let c = read_pb(b)
                    .and_then(|t| qforge::graph::import::tensor(&t, None))
                    .map_err(|e| format!("input {k}: {e}"))?;
                let name = inputs.get(k).cloned().unwrap_or_default();
                if let Const::I64(a) = &c {
                    if !value_inputs.contains(&name) && a.iter().any(|v| v.unsigned_abs() > 1 << 24)
                    {
                        return Err(format!(
                            "input '{name}' holds integers beyond 2^24 (not exact in f32)"
                        ));
                    }
                }
                xs.push(c.to_f32());
            }
        }
        if xs.len() != inputs.len() {
            return Err(format!(
                "{} input files for {} inputs",
                xs.len(),
                inputs.len()
            ));
        }
        let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> = inputs
            .iter()
            .zip(&xs)
            .map(|(n, x)| (n.as_str(), x.view()))
            .collect();
        let mut ys = Vec::new();
        runner
            .for_each_piece(&views, |plan, part, _| {
                ys = plan.run(part, plan.outputs())?;
                Ok(())
            })
            .map_err(|e| format!("run: {e}"))?;
        let want = case.numbered(&set, "output_");
        if want.len() != outputs.len() {
            return Err(format!(
                "{} expected outputs for {} outputs",
                want.len(),
                outputs.len()
            ));
        }
        for ((name, y), b) in outputs.iter().zip(&ys).zip(want) {
            let t = read_pb(b)?;
            let expected_type = t.data_type.unwrap_or(1);
            let got_type = types.get(name).copied().unwrap_or_default();
            if got_type.onnx() != expected_type {
                return Err(format!(
                    "output '{name}' is {got_type}, expected {}",
                    ElemType::onnx_name(expected_type)
                ));
            }
            let w = qforge::graph::import::tensor(&t, None)
                .map_err(|e| format!("expected output: {e}"))?
                .to_f32();
            compare(name, y, &w, rtol, atol)?;
        }
    }
    Ok(())
}

/// Names in a list file (first word of each line; `#` comments), with the rest of the line.
fn listed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((a, b)) => (a.to_string(), b.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn onnx_backend_conformance() {
    let Some(gpu) = common::gpu() else { return };
    let root = std::env::var_os("QFORGE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo("tests/conformance/cases"));
    let scope: BTreeSet<String> = listed(include_str!("../conformance/ops.txt"))
        .into_keys()
        .collect();
    let known = listed(include_str!("../conformance/known_failures.txt"));
    let all = load_cases(&root);
    assert!(
        all.len() > 500,
        "only {} conformance cases under {} (tools/make_conformance.py writes them)",
        all.len(),
        root.display()
    );
    let mut results: Vec<(String, String, Outcome)> = Vec::new();
    for case in &all {
        let meta: serde_json::Value =
            serde_json::from_slice(case.file("data.json").unwrap()).unwrap();
        let outcome = match meta["values"].as_str().unwrap_or("") {
            "non-tensor" => Outcome::Excluded("sequence, optional or map values".into()),
            "not kept" | "too large" => {
                let ops: BTreeSet<String> = meta["ops"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let outside: Vec<String> = ops.difference(&scope).cloned().collect();
                if outside.is_empty() {
                    Outcome::Excluded(format!(
                        "data not committed ({} bytes; QFORGE_CONFORMANCE_DIR runs it)",
                        meta["bytes"]
                    ))
                } else {
                    Outcome::Excluded(format!("ops outside scope: {}", outside.join(", ")))
                }
            }
            _ => {
                let model = case
                    .file("model.onnx")
                    .ok()
                    .and_then(|b| onnx::ModelProto::decode(b).ok());
                match model.as_ref().map(|m| exclusion(m, &scope)) {
                    None => Outcome::Fail("unreadable model".into()),
                    Some(Some(reason)) => Outcome::Excluded(reason),
                    Some(None) => {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_case(&gpu, case, &meta)
                        }));
                        r.unwrap_or_else(|_| Outcome::Fail("PANICKED".into()))
                    }
                }
            }
        };
        results.push((case.kind.clone(), case.name.clone(), outcome));
    }
    let mut per_kind: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    println!("{:<18} {:<70} result", "kind", "case");
    for (kind, name, o) in &results {
        let e = per_kind.entry(kind).or_default();
        let (label, why) = match o {
            Outcome::Pass => {
                e[0] += 1;
                ("pass", String::new())
            }
            Outcome::Fail(m) => {
                e[1] += 1;
                ("FAIL", m.clone())
            }
            Outcome::Excluded(m) => {
                e[2] += 1;
                *reasons.entry(m.clone()).or_default() += 1;
                ("excluded", m.clone())
            }
        };
        println!("{kind:<18} {name:<70} {label} {why}");
    }
    println!("\nexclusions by reason:");
    let mut by: Vec<(&String, &usize)> = reasons.iter().collect();
    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (r, n) in by {
        println!("  {n:>5}  {r}");
    }
    println!(
        "\n{:<18} {:>6} {:>6} {:>9} {:>9}",
        "kind", "pass", "fail", "excluded", "pass rate"
    );
    let mut total = [0usize; 3];
    for (k, v) in &per_kind {
        let rate = 100.0 * v[0] as f64 / (v[0] + v[1]).max(1) as f64;
        println!("{k:<18} {:>6} {:>6} {:>9} {rate:>8.1}%", v[0], v[1], v[2]);
        (0..3).for_each(|i| total[i] += v[i]);
    }
    let rate = 100.0 * total[0] as f64 / (total[0] + total[1]).max(1) as f64;
    println!(
        "{:<18} {:>6} {:>6} {:>9} {rate:>8.1}%  (of {} in-scope cases)",
        "all",
        total[0],
        total[1],
        total[2],
        total[0] + total[1]
    );
    let mut problems = Vec::new();
    for (_, name, o) in &results {
        match (o, known.get(name)) {
            (Outcome::Fail(m), None) => {
                problems.push(format!("{name}: fails, not a known failure: {m}"))
            }
            (Outcome::Pass, Some(_)) => {
                problems.push(format!("{name}: passes; remove it from known_failures.txt"))
            }
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} conformance regressions or stale entries:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
