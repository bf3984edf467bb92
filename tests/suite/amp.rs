//! Mixed precision: quantizer groups, phase-1 scores with shared prefixes against whole runs,
//! and a search whose chosen configuration is what the simulation then computes.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};
use qforge::eval::ScoreKind;
use qforge::quant::amp::{
    baseline, groups, search, AmpOptions, AmpSearch, Candidate, Sensitivities,
};
use qforge::quant::analyzers::Scheme;
use qforge::quant::sim::{Enabled, QuantOptions, QuantSim};
use qforge::quant::QuantConfig;

fn fmnist_x() -> ArrayD<f32> {
    ndarray_npy::read_npy(common::repo("tests/golden/fmnist_input8.npy")).unwrap()
}

fn sim_at(gpu: Arc<qforge::gpu::Gpu>, c: Candidate, scheme: Scheme, x: &ArrayD<f32>) -> QuantSim {
    let g = qforge::graph::load(&common::repo("models/fmnist_cnn.onnx")).unwrap();
    let mut sim = QuantSim::new(
        gpu,
        g,
        &QuantConfig::default_per_channel(),
        QuantOptions {
            param_bw: c.param_bw,
            act_bw: c.act_bw,
            ..Default::default()
        },
        Default::default(),
    )
    .unwrap();
    sim.calibrate(scheme, x.axis_chunks_iter(Axis(0), 4))
        .unwrap();
    sim
}

fn options(list: &str, drop: f64, score: ScoreKind, search: AmpSearch) -> AmpOptions {
    AmpOptions {
        candidates: Candidate::parse_list(list).unwrap(),
        allowed_drop: drop,
        score,
        search,
        piece: 4,
        curve_points: 4,
    }
}

#[test]
fn candidates_parse_and_bad_lists_are_typed_errors() {
    let c = Candidate::parse_list("w8a16, W4A8,W8A8,W8A8").unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(baseline(&c).to_string(), "W8A16");
    for bad in [
        "W8A16",
        "W3A8,W8A8",
        "W8A8,W8A32",
        "8x8,W8A8",
        "W16A8,W8A16",
        "",
    ] {
        let e = Candidate::parse_list(bad).expect_err(bad);
        assert!(e.to_string().contains("candidate"), "{bad}: {e}");
    }
    for (drop, score) in [
        (1.5, ScoreKind::Agreement),
        (-0.1, ScoreKind::Agreement),
        (f64::NAN, ScoreKind::Sqnr),
    ] {
        let o = options("W4A8,W8A8", drop, score, AmpSearch::Binary);
        assert!(o.check().is_err(), "{drop}");
    }
}

#[test]
fn groups_hold_every_quantizer_once_with_each_layers_input() {
    let Some(gpu) = common::gpu() else { return };
    let x = fmnist_x();
    let sim = sim_at(gpu, "W8A8".parse().unwrap(), Scheme::MinMax, &x);
    let gs = groups(&sim).unwrap();
    let all = Enabled::all(&sim);
    let mut seen = BTreeSet::new();
    for g in &gs {
        for q in g.quantizers.activations.iter().chain(&g.quantizers.params) {
            assert!(seen.insert(q.clone()), "{q} in two groups");
        }
    }
    let every: BTreeSet<String> = all.activations.iter().chain(&all.params).cloned().collect();
    assert_eq!(seen, every);
    let prepared = sim.prepared(1).unwrap();
    for g in gs.iter().filter(|g| g.has_params()) {
        assert!(g.macs() > 0, "{}: a layer with weights has MACs", g.name);
        assert!(g.has_activations(), "{}: its input is quantized", g.name);
        let n = &prepared.nodes[prepared.node_index(&g.layers[0].0).unwrap()];
        assert!(g.position <= prepared.node_index(&n.name).unwrap());
    }
    assert!(gs.len() >= 2);
}

#[test]
fn search_picks_a_cheaper_configuration_the_simulation_then_computes() {
    let Some(gpu) = common::gpu() else { return };
    let x = fmnist_x();
    let top: Candidate = "W8A16".parse().unwrap();
    let mut sim = sim_at(gpu, top, Scheme::MinMax, &x);
    for search_kind in [AmpSearch::Binary, AmpSearch::Greedy] {
        let o = options("W4A8,W8A8,W8A16", 1.0, ScoreKind::Sqnr, search_kind);
        let r = search(&sim, &x, None, &o, None, &mut |_, _, _| {}).unwrap();
        assert_eq!(r.chosen.len(), r.groups.len());
        assert!(
            r.point.relative_bit_ops < 1.0,
            "{search_kind:?}: some group went lower"
        );
        assert!(
            r.point.score.sqnr_db >= r.baseline_score.sqnr_db - 1.0,
            "{search_kind:?}: {} dB vs baseline {} dB",
            r.point.score.sqnr_db,
            r.baseline_score.sqnr_db
        );
        // The chosen encodings carry each group's bitwidths.
        for (g, c) in r.groups.iter().zip(&r.chosen) {
            for (n, e) in r.activations.iter().chain(&r.params) {
                if g.quantizers.activations.contains(n) {
                    assert_eq!(e.bitwidth, c.act_bw, "{n}");
                }
                if g.quantizers.params.contains(n) {
                    assert_eq!(e.bitwidth, c.param_bw, "{n}");
                }
            }
        }
        let front = r.front();
        assert!(!front.is_empty());
        assert_eq!(r.uniform.len(), 3);
        // Phase 1 equals whole-model runs of each (group, candidate).
        let reference = sim.fp32(&x, 4).unwrap().remove(0);
        let acts8: std::collections::HashMap<_, _> = sim
            .activation_encodings_at(8)
            .unwrap()
            .into_iter()
            .collect();
        let params4: std::collections::HashMap<_, _> =
            sim.param_encodings_at(4).unwrap().into_iter().collect();
        for (g, row) in r.groups.iter().zip(&r.sensitivities.scores) {
            let Some((_, s)) = row.iter().find(|(c, _)| c.to_string() == "W4A8") else {
                continue;
            };
            let enc: Vec<_> = g
                .quantizers
                .activations
                .iter()
                .map(|n| (n.clone(), acts8[n].clone()))
                .chain(
                    g.quantizers
                        .params
                        .iter()
                        .map(|n| (n.clone(), params4[n].clone())),
                )
                .collect();
            let y = sim
                .partial_runner(&Enabled::all(&sim).with_encodings(&enc), None)
                .unwrap()
                .batch(4)
                .run(&[(sim.inputs()[0].as_str(), x.view())])
                .unwrap()
                .remove(0);
            let want = qforge::eval::sqnr_db(&reference, &y);
            assert!(
                (s.sqnr_db - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{}: shared prefix {} dB, whole run {want} dB",
                g.name,
                s.sqnr_db
            );
        }
        // A cached table of the right shape is used as is.
        let again = search(
            &sim,
            &x,
            None,
            &o,
            Some(r.sensitivities.clone()),
            &mut |_, _, _| {},
        )
        .unwrap();
        assert_eq!(again.chosen, r.chosen);
        let wrong = Sensitivities::default();
        assert!(search(&sim, &x, None, &o, Some(wrong), &mut |_, _, _| {}).is_ok());
        if search_kind == AmpSearch::Binary {
            // Installed in the simulation, the mix computes the chosen point's score.
            let mut mixed = QuantSim::new(
                sim.gpu().clone(),
                qforge::graph::load(&common::repo("models/fmnist_cnn.onnx")).unwrap(),
                &QuantConfig::default_per_channel(),
                sim.options(),
                Default::default(),
            )
            .unwrap();
            mixed
                .calibrate(Scheme::MinMax, x.axis_chunks_iter(Axis(0), 4))
                .unwrap();
            mixed.set_activation_encodings(&r.activations).unwrap();
            mixed.set_param_encodings(r.params.clone()).unwrap();
            let e = mixed.evaluate(&x, 4, None).unwrap();
            exports_keep_each_bitwidth(&mixed);
            assert!(
                (e.sqnr_db - r.point.score.sqnr_db).abs() <= 1e-3 * e.sqnr_db.abs().max(1.0),
                "installed {} dB, searched {} dB",
                e.sqnr_db,
                r.point.score.sqnr_db
            );
            // QAT then trains the mix, each quantizer at the bitwidth AMP chose.
            let bits = |s: &QuantSim| -> Vec<u32> {
                s.activation_encodings()
                    .iter()
                    .chain(s.param_encodings())
                    .map(|(_, e)| e.bitwidth)
                    .collect()
            };
            let chosen = bits(&mixed);
            let opts = qforge::quant::qat::QatOptions {
                batch: 8,
                ..Default::default()
            };
            qforge::quant::qat::apply(&mut mixed, &x, &opts, &mut |_, _, _, _| {}).unwrap();
            assert_eq!(bits(&mixed), chosen, "QAT keeps AMP's bitwidths");
            exports_keep_each_bitwidth(&mixed);
        }
    }
    // A simulation not built at the baseline is refused.
    let o = options("W4A8,W8A8", 0.01, ScoreKind::Agreement, AmpSearch::Binary);
    let e = search(&sim, &x, None, &o, None, &mut |_, _, _| {}).expect_err("refused");
    assert!(e.to_string().contains("W8A8"), "{e}");
    sim.set_activation_encodings(&sim.activation_encodings_at(4).unwrap())
        .unwrap();
}

#[test]
fn tf_enhanced_encodings_at_other_bitwidths_redo_the_search() {
    let Some(gpu) = common::gpu() else { return };
    let x = fmnist_x();
    let sim = sim_at(
        gpu.clone(),
        "W8A8".parse().unwrap(),
        Scheme::TfEnhanced { gamma: 3.0 },
        &x,
    );
    let at16 = sim.activation_encodings_at(16).unwrap();
    let direct = sim_at(
        gpu,
        "W8A16".parse().unwrap(),
        Scheme::TfEnhanced { gamma: 3.0 },
        &x,
    );
    assert_eq!(at16, direct.activation_encodings().to_vec());
    assert_eq!(
        sim.activation_encodings_at(8).unwrap(),
        sim.activation_encodings().to_vec()
    );
}

/// Every encodings version lists each quantizer at its own bitwidth.
fn exports_keep_each_bitwidth(sim: &QuantSim) {
    use qforge::quant::export::{read_activations_1_0_0, EncodingsVersion};
    let dir = std::env::temp_dir().join(format!("qforge-amp-export-{}", std::process::id()));
    let want: std::collections::HashMap<&str, u32> = sim
        .activation_encodings()
        .iter()
        .chain(sim.param_encodings())
        .map(|(n, e)| (n.as_str(), e.bitwidth))
        .collect();
    let widths: BTreeSet<u32> = want.values().copied().collect();
    assert!(
        widths.len() > 1,
        "the chosen mix has more than one bitwidth: {widths:?}"
    );
    for v in [
        EncodingsVersion::V0_6_1,
        EncodingsVersion::V1_0_0,
        EncodingsVersion::V2_0_0,
    ] {
        sim.export(&dir, "m", v).unwrap();
        let text = std::fs::read_to_string(dir.join("m.encodings")).unwrap();
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut seen = 0;
        let mut check = |name: &str, bits: u64| {
            if let Some(&w) = want.get(name) {
                assert_eq!(bits, w as u64, "{v:?}: {name}");
                seen += 1;
            }
        };
        match v {
            EncodingsVersion::V0_6_1 => {
                for section in ["activation_encodings", "param_encodings"] {
                    for (n, list) in j[section].as_object().unwrap() {
                        check(n, list[0]["bitwidth"].as_u64().unwrap());
                    }
                }
            }
            EncodingsVersion::V1_0_0 => {
                for section in ["activation_encodings", "param_encodings"] {
                    for e in j[section].as_array().unwrap() {
                        check(e["name"].as_str().unwrap(), e["bw"].as_u64().unwrap());
                    }
                }
                let back = read_activations_1_0_0(&j, "m.encodings").unwrap();
                assert_eq!(back, sim.activation_encodings().to_vec());
            }
            EncodingsVersion::V2_0_0 => {
                for e in j["encodings"].as_array().unwrap() {
                    let dt = e["output_dtype"].as_str().unwrap();
                    let bits: u64 = dt
                        .trim_start_matches('u')
                        .trim_start_matches("int")
                        .parse()
                        .unwrap();
                    if dt != "int32" {
                        check(e["name"].as_str().unwrap(), bits);
                    }
                }
            }
        }
        assert!(
            seen >= want.len(),
            "{v:?}: {seen} of {} quantizers listed",
            want.len()
        );
    }
    // The QDQ model: each zero point in its bitwidth's ONNX type, the pairs in onnxruntime's
    // domain (the model's opset is below 21).
    sim.export_qdq(&dir, "m").unwrap();
    let bytes = std::fs::read(dir.join("m_qdq.onnx")).unwrap();
    let m = <qforge::graph::onnx::ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
    let g = m.graph.unwrap();
    let types: std::collections::HashMap<String, i32> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap(), t.data_type.unwrap()))
        .collect();
    for (name, &w) in &want {
        let t = types[&format!("{name}_zero_point")];
        let ok = match w {
            8 => [2, 3].contains(&t),
            16 => [4, 5].contains(&t),
            4 => [21, 22].contains(&t),
            _ => false,
        };
        assert!(ok, "{name}: {w}-bit grid stored as ONNX type {t}");
    }
    assert!(g
        .node
        .iter()
        .filter(|n| n
            .op_type
            .as_deref()
            .is_some_and(|o| o.ends_with("QuantizeLinear")))
        .all(|n| n.domain.as_deref() == Some("com.microsoft")));
    assert!(m
        .opset_import
        .iter()
        .any(|o| o.domain.as_deref() == Some("com.microsoft")));
    let _ = std::fs::remove_dir_all(&dir);
}
