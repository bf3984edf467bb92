//! The layers import downwards only (ARCHITECTURE.md): every `crate::<module>` a source file
//! names must be one its module may use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module and the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("files", &["error"]),
    ("eval", &[]),
    ("graph", &["error", "files"]),
    ("gpu", &["error"]),
    ("data", &["error", "files"]),
    ("ops", &["error", "gpu", "graph"]),
    ("reference", &["error", "graph"]),
    ("exec", &["error", "gpu", "graph", "ops"]),
    (
        "quant",
        &[
            "error", "data", "eval", "exec", "files", "gpu", "graph", "ops", "train",
        ],
    ),
    (
        "compress",
        &["error", "eval", "exec", "files", "gpu", "graph", "ops"],
    ),
    (
        "train",
        &["error", "data", "exec", "files", "gpu", "graph", "ops"],
    ),
    ("report", &["error", "graph", "quant", "compress"]),
    (
        "jobs",
        &[
            "error", "files", "eval", "graph", "gpu", "data", "ops", "exec", "quant", "compress",
            "train", "report",
        ],
    ),
];

/// The crate root and the binary: they may use everything.
const UNCHECKED: &[&str] = &["lib", "main", "cli"];

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, a)| (*m, a.iter().copied().collect()))
        .collect();
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut bad = Vec::new();
    for f in &all {
        let rel = f.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if UNCHECKED.contains(&module.as_str()) {
            continue;
        }
        let Some(ok) = allowed.get(module.as_str()) else {
            bad.push(format!(
                "{}: module {module} has no row in ALLOWED",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `crate::Result`, `crate::DType`…: the crate root re-exports the error module.
                let used = if used.starts_with(char::is_uppercase) {
                    "error".to_string()
                } else {
                    used
                };
                if used != module && !ok.contains(used.as_str()) {
                    bad.push(format!("{}:{}: {module} uses {used}", rel.display(), i + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
    assert!(
        all.iter().any(|f| f.ends_with("exec/lower.rs")),
        "found the sources"
    );
}
