//! Whole compression runs: one or more methods in sequence (e.g. spatial SVD then channel
//! pruning), each scoring its layers, choosing per-layer ratios and applying them, until the
//! model meets the target cost.

use std::path::Path;
use std::sync::Arc;

use crate::compress::rebuild::{Rebuild, RebuildData};
use crate::compress::select::{greedy, ratio_map, ScoreTable, Selection};
use crate::compress::{model_cost, CompressOptions, Compressor, Cost, Method, Scorer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::ir::Graph;

/// What one method did.
#[derive(Clone, Debug)]
pub struct Stage {
    pub method: Method,
    pub table: ScoreTable,
    /// `None` when the stage was skipped because its share of the target was out of reach.
    pub selection: Option<Selection>,
    /// Layers the method could not handle, with why.
    pub skipped: Vec<(String, String)>,
    /// What the rebuild of each pruned layer chose (channel pruning with rebuilds).
    pub rebuilds: Vec<Rebuild>,
    /// Whether the score table was read from a file instead of evaluated.
    pub reused_scores: bool,
    pub seconds: f64,
}

/// The result of [`compress`].
pub struct Outcome {
    /// The compressed model (BN folded), resolved at batch 1.
    pub graph: Graph,
    pub stages: Vec<Stage>,
    pub cost_before: Cost,
    pub cost_after: Cost,
    /// Scores on the scoring images (those the greedy selection saw).
    pub score_before: f64,
    pub score_after: f64,
}

/// Compresses `model` with `methods` in order to `opts.target` of its cost. Each method but
/// the last aims at an equal share (in log scale) of what is left; a share out of its reach is
/// left to the next method. Layers are scored on `scorer`'s images; pruned layers are rebuilt
/// on `rebuild_images` and their ridge is checked on the scorer's images, so no score rests on
/// images a rebuild fitted. Score tables are read from `tables_dir/<method>.scores.json` when
/// one made for the same model state exists, and written there otherwise.
#[allow(clippy::too_many_arguments)]
pub fn compress(
    gpu: Arc<Gpu>,
    model: &Graph,
    methods: &[Method],
    opts: &CompressOptions,
    scorer: &Scorer,
    rebuild_images: &ndarray::ArrayD<f32>,
    tables_dir: Option<&Path>,
    mut progress: impl FnMut(Method, usize, usize),
) -> Result<Outcome> {
    opts.validate()?;
    if methods.is_empty() {
        return Err(Error::invalid(
            "compress",
            "methods",
            "none",
            "give at least one of ssvd, wsvd, cp",
        ));
    }
    let data = RebuildData {
        input: scorer.input(),
        fit: rebuild_images,
        check: scorer.images(),
    };
    let mut current = crate::compress::bn_folded(model)?;
    let cost_before = model_cost(&current);
    let score_before = scorer.score(&current)?;
    let mut stages = Vec::new();
    for (k, &method) in methods.iter().enumerate() {
        let t = std::time::Instant::now();
        let left = methods.len() - k;
        let now =
            opts.metric.of(&model_cost(&current)) as f64 / opts.metric.of(&cost_before) as f64;
        if k > 0 && now <= opts.target {
            log::info!("target met before {}; it is not run", method.name());
            break;
        }
        let stage_target = ((opts.target / now).min(1.0)).powf(1.0 / left as f64);
        let c = Compressor::new(
            gpu.clone(),
            &current,
            method,
            CompressOptions {
                target: stage_target,
                ..opts.clone()
            },
            Some(data),
        )?;
        let file = tables_dir.map(|d| d.join(format!("{}.scores.json", method.name())));
        let names = c.layer_names();
        // A table that does not read (corrupt, from another version) is scored again.
        let cached = file
            .as_ref()
            .filter(|f| f.exists())
            .and_then(|f| {
                ScoreTable::load(f)
                    .map_err(|e| log::warn!("{e}; scoring again"))
                    .ok()
            })
            .filter(|t| {
                t.matches(&c.table_key(), opts.metric, &names) && t.cost == model_cost(c.graph())
            });
        let reused = cached.is_some();
        let table = match cached {
            Some(t) => t,
            None => {
                let t = c.score_table(scorer, |done, total| progress(method, done, total))?;
                if let Some(f) = &file {
                    t.save(f)?;
                }
                t
            }
        };
        let selection = match greedy(&table, stage_target, opts.metric, opts.score) {
            Ok(s) => Some(s),
            Err(e) if k + 1 < methods.len() => {
                log::warn!(
                    "{}: {e}; leaving the rest to {}",
                    method.name(),
                    methods[k + 1].name()
                );
                None
            }
            Err(e) => return Err(e),
        };
        let mut rebuilds = Vec::new();
        if let Some(s) = &selection {
            (current, rebuilds) = c.apply(&ratio_map(s), data)?;
        }
        stages.push(Stage {
            method,
            table,
            selection,
            skipped: c.skipped.clone(),
            rebuilds,
            reused_scores: reused,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    let cost_after = model_cost(&current);
    let score_after = scorer.score(&current)?;
    Ok(Outcome {
        graph: current,
        stages,
        cost_before,
        cost_after,
        score_before,
        score_after,
    })
}
