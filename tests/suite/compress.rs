//! Compression: SVD splits reproduce the low-rank math, channel pruning traces chains and
//! its least-squares rebuild helps, greedy selection meets targets, bad input is refused, and
//! Fashion-MNIST at 50% MACs (spatial SVD then channel pruning) keeps its accuracy.

use std::collections::HashMap;
use std::path::Path;

use crate::common::*;
use ndarray::{Array2, ArrayD, Axis, IxDyn};
use qforge::compress::linalg::{svd_batched, SvdOptions};
use qforge::compress::pipeline::compress;
use qforge::compress::rebuild::RebuildData;
use qforge::compress::select::{greedy, Entry, LayerScores, ScoreTable};
use qforge::compress::svd::{self, SvdKind};
use qforge::compress::{
    model_cost, prune, CompressOptions, Compressor, Cost, CostMetric, Method, Scorer,
};
use qforge::eval::{sqnr_db, ScoreKind};
use qforge::exec::Runner;
use qforge::graph::{Const, Graph};

fn model(name: &str) -> Graph {
    qforge::graph::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name),
    )
    .unwrap()
}

/// The model BN-folded and resolved at batch 1, as compression sees it.
fn folded(name: &str) -> Graph {
    let mut g = model(name);
    g.resolve_with_batch(&HashMap::new(), Some(1)).unwrap();
    qforge::graph::passes::bn_fold::fold_batch_norms(&mut g).unwrap();
    g
}

fn fmnist(n: usize) -> (ArrayD<f32>, Vec<usize>) {
    fashion_mnist(true, n)
}

fn run(gpu: &std::sync::Arc<qforge::gpu::Gpu>, g: &Graph, x: &ArrayD<f32>) -> ArrayD<f32> {
    let input = g.inputs[0].clone();
    Runner::new(gpu.clone(), g.clone())
        .run(&[(&input, x.view())])
        .unwrap()
        .remove(0)
}

/// Puts a (rows x cols) matrix back into `layer`'s weight layout (inverse of svd::matrix).
fn unmatrix(g: &Graph, layer: &svd::SvdLayer, m: &Array2<f32>) -> ArrayD<f32> {
    let n = g.nodes.iter().find(|n| n.name == layer.node).unwrap();
    let w = g.weight(&n.inputs[1]).unwrap();
    let s = w.shape().to_vec();
    match (layer.kind, s.len()) {
        (SvdKind::Spatial, 4) => {
            ArrayD::from_shape_fn(IxDyn(&s), |d| m[[d[1] * s[2] + d[2], d[0] * s[3] + d[3]]])
        }
        (SvdKind::Weight, 4) => {
            ArrayD::from_shape_fn(IxDyn(&s), |d| m[[(d[0] * s[2] + d[2]) * s[3] + d[3], d[1]]])
        }
        _ => m.clone().into_dyn(),
    }
}

#[test]
fn svd_splits_match_the_low_rank_math() {
    let Some(gpu) = gpu() else { return };
    let g = folded("fmnist_cnn.onnx");
    let (x, _) = fmnist(16);
    let y0 = run(&gpu, &g, &x);
    let cases = [
        (SvdKind::Spatial, "/b4/b4.0/Conv"),
        (SvdKind::Weight, "/b4/b4.0/Conv"),
        (SvdKind::Weight, "/b2/b2.1/Conv"),
        (SvdKind::Weight, "/head/head.2/Gemm"),
    ];
    let layers: Vec<svd::SvdLayer> = cases
        .iter()
        .map(|(k, name)| {
            svd::layer(
                &g,
                g.nodes.iter().position(|n| &n.name == name).unwrap(),
                *k,
            )
            .unwrap()
        })
        .collect();
    let mats: Vec<Array2<f32>> = layers.iter().map(|l| svd::matrix(&g, l).unwrap()).collect();
    let views: Vec<_> = mats.iter().map(|m| m.view()).collect();
    let svds = svd_batched(&gpu, &views, &SvdOptions::default()).unwrap();
    for ((l, d), (kind, name)) in layers.iter().zip(&svds).zip(&cases) {
        // Full rank: the split model is the original model.
        let mut full = g.clone();
        svd::split(&mut full, l, d, d.s.len()).unwrap();
        let db = sqnr_db(&y0, &run(&gpu, &full, &x));
        assert!(db > 60.0, "{kind:?} {name} full rank: {db:.1} dB");
        // Rank r: the split model equals the original with the rank-r weight.
        let r = (d.s.len() / 4).max(1);
        let mut split = g.clone();
        svd::split(&mut split, l, d, r).unwrap();
        assert_eq!(split.nodes.len(), g.nodes.len() + 1);
        let mut lowrank = g.clone();
        let wname = g.nodes.iter().find(|n| &n.name == name).unwrap().inputs[1].clone();
        lowrank
            .consts
            .insert(wname, Const::F32(unmatrix(&g, l, &d.reconstruct(r))));
        let (ys, yl) = (run(&gpu, &split, &x), run(&gpu, &lowrank, &x));
        let db = sqnr_db(&yl, &ys);
        assert!(
            db > 60.0,
            "{kind:?} {name} rank {r}: split vs low-rank weight {db:.1} dB"
        );
        // The cost model's prediction is the cost of the split graph.
        let saved = model_cost(&g).macs - model_cost(&split).macs;
        assert_eq!(
            saved,
            l.original.macs - r as u64 * l.per_rank.macs,
            "{kind:?} {name}: MACs"
        );
    }
}

#[test]
fn svd_layers_report_what_they_skip() {
    let g = folded("fmnist_cnn.onnx");
    let (ok, skipped) = svd::layers(&g, SvdKind::Spatial);
    assert!(ok.iter().any(|l| l.node == "/b4/b4.0/Conv"));
    let why: HashMap<_, _> = skipped.into_iter().collect();
    assert!(why["/b1/b1.0/b1.0.0/Conv"].contains("grouped"), "{why:?}");
    assert!(
        why["/b1/b1.1/b1.1.0/Conv"].contains("no spatial dimension"),
        "{why:?}"
    );
    let l = ok.iter().find(|l| l.node == "/b4/b4.0/Conv").unwrap();
    assert_eq!(
        svd::rank_for_ratio(l, 1.0, CostMetric::Macs, 1),
        None,
        "no saving at ratio 1"
    );
    let r = svd::rank_for_ratio(l, 0.5, CostMetric::Macs, 8).unwrap();
    assert_eq!(r % 8, 0);
    assert!(r as u64 * l.per_rank.macs <= l.original.macs / 2);
}

#[test]
fn pruning_traces_chains_and_rebuild_helps() {
    let Some(gpu) = gpu() else { return };
    let g = folded("fmnist_cnn.onnx");
    let (ok, skipped) = prune::layers(&g);
    let names: Vec<&str> = ok.iter().map(|l| l.node.as_str()).collect();
    assert!(
        names.contains(&"/b4/b4.0/Conv") && names.contains(&"/b1/b1.1/b1.1.0/Conv"),
        "{names:?} / {skipped:?}"
    );
    // The 1x1 after a depthwise conv prunes through it into the stem.
    let b11 = ok
        .iter()
        .find(|l| l.node == "/b1/b1.1/b1.1.0/Conv")
        .unwrap();
    assert_eq!(b11.producer, "/stem/stem.0/Conv");
    assert!(
        b11.chain.iter().any(|c| c == "/b1/b1.0/b1.0.0/Conv"),
        "{:?}",
        b11.chain
    );
    assert!(
        skipped
            .iter()
            .any(|(_, why)| why.contains("branch or join")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|(_, why)| why.contains("reached Add")),
        "{skipped:?}"
    );
    // Rebuilt on training images, ridge checked on others, judged on test images.
    let (train, _) = fashion_mnist(false, 96);
    let (fit, check) = (first(&train, 0..64), first(&train, 64..96));
    let (x, _) = fmnist(64);
    let y0 = run(&gpu, &g, &x);
    let opts = CompressOptions::default();
    let data = RebuildData {
        input: &g.inputs[0],
        fit: &fit,
        check: &check,
    };
    let c = Compressor::new(
        gpu.clone(),
        &g,
        Method::ChannelPruning,
        opts.clone(),
        Some(data),
    )
    .unwrap();
    let no_rebuild = Compressor::new(
        gpu.clone(),
        &g,
        Method::ChannelPruning,
        CompressOptions {
            reconstruct: false,
            ..opts
        },
        Some(data),
    )
    .unwrap();
    for l in [b11, ok.iter().find(|l| l.node == "/b4/b4.0/Conv").unwrap()] {
        let ratios = HashMap::from([(l.node.clone(), 0.5)]);
        let ((pr, rebuilds), (pn, none)) = (
            c.apply(&ratios, data).unwrap(),
            no_rebuild.apply(&ratios, data).unwrap(),
        );
        assert!(none.is_empty());
        let [r] = rebuilds.as_slice() else {
            panic!("one rebuild: {rebuilds:?}")
        };
        assert_eq!((r.fit_images, r.check_images), (64, 32));
        assert!(r.ridge.is_some(), "{r:?}");
        assert!(r.rebuilt_error < r.sliced_error, "{r:?}");
        let w = pr
            .weight(&pr.nodes.iter().find(|n| n.name == l.node).unwrap().inputs[1])
            .unwrap();
        assert_eq!(w.shape()[1], l.channels / 2, "{}", l.node);
        let p = pr.nodes.iter().find(|n| n.name == l.producer).unwrap();
        assert_eq!(pr.weight(&p.inputs[1]).unwrap().shape()[0], l.channels / 2);
        assert!(model_cost(&pr).macs < model_cost(&g).macs);
        let (dr, dn) = (
            sqnr_db(&y0, &run(&gpu, &pr, &x)),
            sqnr_db(&y0, &run(&gpu, &pn, &x)),
        );
        assert!(
            dr > dn + 1.0,
            "{}: held-out rebuilt {dr:.1} dB vs sliced {dn:.1} dB",
            l.node
        );
    }
}

/// The score table runs each candidate only from the first node it changes, after a cut
/// that walks the original model once: its scores and SQNRs are those of whole runs.
#[test]
fn score_tables_from_shared_prefixes_equal_whole_runs() {
    let Some(gpu) = gpu() else { return };
    let g = folded("fmnist_cnn.onnx");
    let (train, _) = fashion_mnist(false, 48);
    let (fit, check) = (first(&train, 0..32), first(&train, 32..48));
    let data = RebuildData {
        input: &g.inputs[0],
        fit: &fit,
        check: &check,
    };
    let opts = CompressOptions {
        candidates: vec![0.25, 0.5, 0.75],
        ..Default::default()
    };
    let scorer = Scorer::new(gpu.clone(), &g, check.clone(), None).unwrap();
    for method in [Method::ChannelPruning, Method::SpatialSvd] {
        let c = Compressor::new(gpu.clone(), &g, method, opts.clone(), Some(data)).unwrap();
        let t = c.score_table(&scorer, |_, _| {}).unwrap();
        let mut checked = 0;
        for (i, l) in t.layers.iter().enumerate() {
            for e in &l.entries {
                let whole = c.candidate(i, e.ratio).unwrap().unwrap();
                let (score, sqnr) = scorer.evaluate(&whole).unwrap();
                assert_eq!(
                    (e.score, e.sqnr),
                    (score, sqnr),
                    "{} at {}",
                    l.name,
                    e.ratio
                );
                checked += 1;
            }
        }
        assert!(checked >= 3, "{method:?}: {checked} candidates");
    }
}

/// The first images of `x` in `range`.
fn first(x: &ArrayD<f32>, range: std::ops::Range<usize>) -> ArrayD<f32> {
    x.slice_axis(Axis(0), range.into()).to_owned()
}

#[test]
fn a_rebuild_never_does_worse_than_slicing_on_the_check_images() {
    let Some(gpu) = gpu() else { return };
    let g = folded("fmnist_cnn.onnx");
    // One fitting image: positions of one image say little about the others, so the check
    // images decide between the rebuild and the sliced weights.
    let (train, _) = fashion_mnist(false, 17);
    let (fit, check) = (first(&train, 0..1), first(&train, 1..17));
    let data = RebuildData {
        input: &g.inputs[0],
        fit: &fit,
        check: &check,
    };
    let c = Compressor::new(
        gpu.clone(),
        &g,
        Method::ChannelPruning,
        CompressOptions::default(),
        Some(data),
    )
    .unwrap();
    let sliced = Compressor::new(
        gpu.clone(),
        &g,
        Method::ChannelPruning,
        CompressOptions {
            reconstruct: false,
            ..Default::default()
        },
        Some(data),
    )
    .unwrap();
    let mut fell_back = 0;
    for name in c.layer_names() {
        for ratio in [0.25, 0.75] {
            let ratios = HashMap::from([(name.clone(), ratio)]);
            let (pr, rebuilds) = c.apply(&ratios, data).unwrap();
            let (ps, _) = sliced.apply(&ratios, data).unwrap();
            let Some(r) = rebuilds.first() else { continue };
            assert!(r.few_images(), "{r:?}");
            assert_eq!(r.fit_images, 1);
            let w = |g: &Graph| {
                let n = g.nodes.iter().find(|n| n.name == name).unwrap();
                g.weight(&n.inputs[1]).unwrap().clone()
            };
            match r.ridge {
                Some(_) => assert!(r.rebuilt_error < r.sliced_error, "{r:?}"),
                None => {
                    fell_back += 1;
                    assert!(r.rebuilt_error >= r.sliced_error, "{r:?}");
                    assert_eq!(w(&pr), w(&ps), "{name} at {ratio}: sliced weights kept");
                }
            }
        }
    }
    eprintln!("{fell_back} of the one-image rebuilds kept the sliced weights");
}

#[test]
fn mobilenet_pruning_stops_at_residual_joins() {
    let g = folded("mobilenet_v2.onnx");
    let (ok, skipped) = prune::layers(&g);
    assert!(ok.len() >= 16, "{} prunable", ok.len());
    // Every prunable layer's chain crosses a depthwise conv (projection convs) or none (the
    // last 1x1); expansions reading the residual stream are refused.
    assert!(
        ok.iter()
            .filter(|l| l.chain.iter().any(|c| g
                .nodes
                .iter()
                .any(|n| &n.name == c
                    && matches!(&n.op, qforge::graph::Op::Conv(cv) if cv.groups > 1))))
            .count()
            >= 16
    );
    assert!(
        skipped
            .iter()
            .filter(|(_, why)| why.contains("branch or join"))
            .count()
            >= 9,
        "{skipped:?}"
    );
}

/// (ratio, score, MACs saved) per candidate.
type Entries<'a> = &'a [(f64, f64, u64)];

fn table(layers: &[(&str, Entries<'_>)]) -> ScoreTable {
    ScoreTable {
        method: "cp".into(),
        metric: "macs".into(),
        baseline: 0.9,
        cost: Cost {
            macs: 1000,
            params: 100,
        },
        layers: layers
            .iter()
            .map(|(n, e)| LayerScores {
                name: n.to_string(),
                entries: e
                    .iter()
                    .map(|&(ratio, score, saved)| Entry {
                        ratio,
                        score,
                        // SQNR in the score's order, except that it also ranks by how much
                        // is saved where scores tie.
                        sqnr: 40.0 * score - saved as f64 / 1000.0,
                        macs_saved: saved,
                        params_saved: saved / 10,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[test]
fn greedy_selection_meets_targets_and_tables_round_trip() {
    let t = table(&[
        ("a", &[(0.25, 0.5, 300), (0.5, 0.85, 200), (0.75, 0.9, 100)]),
        (
            "b",
            &[(0.25, 0.8, 400), (0.5, f64::NAN, 250), (0.75, 0.88, 120)],
        ),
    ]);
    let s = greedy(&t, 0.6, CostMetric::Macs, ScoreKind::Agreement).unwrap();
    // Highest threshold reaching 600 MACs: 0.8 (a at 0.5 saves 200, b at 0.25 saves 400).
    assert_eq!(
        s.ratios,
        vec![("a".to_string(), 0.5), ("b".to_string(), 0.25)]
    );
    assert_eq!(s.cost.macs, 400);
    let s = greedy(&t, 0.9, CostMetric::Macs, ScoreKind::Agreement).unwrap();
    assert!(s.cost.macs <= 900 && s.threshold >= 0.88, "{s:?}");
    let e = greedy(&t, 0.2, CostMetric::Macs, ScoreKind::Agreement)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not reachable") && e.contains("0.300"), "{e}");
    // Scores that tie on the few scoring images: agreement cannot tell the candidates apart
    // and takes the strongest of each layer (far past the target); SQNR ranks them and stops
    // at the first threshold that meets it.
    let mut tie = table(&[
        ("a", &[(0.25, 1.0, 450), (0.5, 1.0, 300)]),
        ("b", &[(0.5, 1.0, 200)]),
    ]);
    for (e, db) in tie.layers[0].entries.iter_mut().zip([20.0, 30.0]) {
        e.sqnr = db;
    }
    tie.layers[1].entries[0].sqnr = 25.0;
    let s = greedy(&tie, 0.7, CostMetric::Macs, ScoreKind::Agreement).unwrap();
    assert_eq!(s.cost.macs, 350, "{s:?}");
    let s = greedy(&tie, 0.7, CostMetric::Macs, ScoreKind::Sqnr).unwrap();
    assert_eq!(
        (s.ratios.clone(), s.cost.macs),
        (vec![("a".to_string(), 0.5), ("b".to_string(), 1.0)], 700),
        "{s:?}"
    );
    let dir = std::env::temp_dir().join(format!("qforge-scores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("cp.scores.json");
    t.save(&f).unwrap();
    let back = ScoreTable::load(&f).unwrap();
    assert!(back.layers[1].entries[1].score.is_nan());
    assert_eq!(back.layers[0].entries[0].sqnr, t.layers[0].entries[0].sqnr);
    assert_eq!(
        format!("{:?}", back.layers[0]),
        format!("{:?}", t.layers[0])
    );
    assert!(back.matches("cp", CostMetric::Macs, &["a".into(), "b".into()]));
    std::fs::write(&f, "{\"method\": 3}").unwrap();
    let e = ScoreTable::load(&f).unwrap_err().to_string();
    assert!(e.contains("method"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_clearly() {
    let Some(gpu) = gpu() else { return };
    for target in [0.0, 1.5, f64::NAN] {
        assert!(
            CompressOptions {
                target,
                ..Default::default()
            }
            .validate()
            .is_err(),
            "target {target}"
        );
    }
    assert!(CompressOptions {
        candidates: vec![1.0],
        ..Default::default()
    }
    .validate()
    .is_err());
    let g = folded("fmnist_cnn.onnx");
    let all: Vec<String> = g.nodes.iter().map(|n| n.name.clone()).collect();
    let e = Compressor::new(
        gpu.clone(),
        &g,
        Method::SpatialSvd,
        CompressOptions {
            ignore: all,
            ..Default::default()
        },
        None,
    )
    .err()
    .expect("nothing to compress")
    .to_string();
    assert!(e.contains("no layer ssvd can compress"), "{e}");
    let e = Compressor::new(
        gpu.clone(),
        &g,
        Method::ChannelPruning,
        Default::default(),
        None,
    )
    .err()
    .expect("pruning needs images")
    .to_string();
    assert!(e.contains("give rebuild and check images"), "{e}");
    assert!(Method::parse("svd").is_err());
    assert!(Scorer::new(gpu.clone(), &g, ArrayD::zeros(IxDyn(&[0, 1, 28, 28])), None).is_err());
    let (x, labels) = fmnist(4);
    assert!(Scorer::new(gpu, &g, x, Some(labels[..3].to_vec())).is_err());
}

#[test]
fn fmnist_half_macs_with_spatial_svd_then_pruning() {
    let Some(gpu) = gpu() else { return };
    let g = model("fmnist_cnn.onnx");
    // Layers are scored on 200 training images and rebuilt on 256 others; the figure that
    // counts is on 300 test images nothing was fitted to.
    let (train, train_labels) = fashion_mnist(false, 456);
    let scorer = Scorer::new(
        gpu.clone(),
        &g,
        first(&train, 0..200),
        Some(train_labels[..200].to_vec()),
    )
    .unwrap();
    let rebuild_images = first(&train, 200..456);
    let (x, labels) = fmnist(300);
    let held = Scorer::new(gpu.clone(), &g, x.clone(), Some(labels.clone())).unwrap();
    let opts = CompressOptions {
        target: 0.5,
        candidates: vec![0.25, 0.5, 0.75],
        ..Default::default()
    };
    let out = compress(
        gpu.clone(),
        &g,
        &[Method::SpatialSvd, Method::ChannelPruning],
        &opts,
        &scorer,
        &rebuild_images,
        None,
        |_, _, _| {},
    )
    .unwrap();
    let ratio = out.cost_after.macs as f64 / out.cost_before.macs as f64;
    let (before, after) = (
        held.score(&qforge::compress::bn_folded(&g).unwrap())
            .unwrap(),
        held.score(&out.graph).unwrap(),
    );
    eprintln!(
        "fmnist ssvd+cp: MACs {ratio:.3}, held-out accuracy {before:.3} -> {after:.3} (scoring images {:.3} -> {:.3})",
        out.score_before, out.score_after
    );
    assert!(ratio <= 0.5 + 1e-9, "MAC ratio {ratio}");
    assert!(
        after >= before - 0.03,
        "held-out accuracy {before} -> {after}"
    );
    // The exported model runs and gives the same outputs.
    let bytes = qforge::graph::export::to_model(&out.graph);
    let back =
        qforge::graph::import(&prost::Message::encode_to_vec(&bytes), "compressed", None).unwrap();
    let (ya, yb) = (
        run(
            &gpu,
            &out.graph,
            &x.slice_axis(Axis(0), (0..16).into()).to_owned(),
        ),
        run(
            &gpu,
            &back,
            &x.slice_axis(Axis(0), (0..16).into()).to_owned(),
        ),
    );
    assert!(sqnr_db(&ya, &yb) > 100.0);
}
