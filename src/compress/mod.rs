//! Compression: the cost model, spatial/weight SVD, channel pruning with least-squares
//! reconstruction, and AIMET's greedy per-layer ratio selection.
//!
//! [`Compressor`] holds a BN-folded model (resolved at batch 1 for costs), the evaluation
//! images and the per-layer data each method needs (SVDs of every candidate layer in one GPU
//! batch; Gram matrices of sampled input patches for pruning). It scores each layer alone at
//! each candidate ratio ([`Compressor::score_table`]), picks per-layer ratios that meet a
//! target cost ([`select::greedy`]) and applies them ([`Compressor::apply`]).

pub mod cost;
pub mod linalg;
pub mod pipeline;
pub mod prune;
pub mod rebuild;
pub mod select;
pub mod svd;

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};

use crate::compress::linalg::{svd_batched, Svd, SvdOptions};
use crate::compress::prune::PruneLayer;
use crate::compress::rebuild::{Equations, Rebuild, RebuildData};
use crate::compress::select::{LayerScores, ScoreTable};
use crate::compress::svd::{SvdKind, SvdLayer};
use crate::error::{Error, Result};
use crate::eval::ScoreKind;
use crate::exec::{Prefix, Runner};
use crate::gpu::Gpu;
use crate::graph::ir::Graph;
use crate::graph::prepare::Prepared;

/// MACs and weight elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub macs: u64,
    pub params: u64,
}

/// Which cost a target ratio is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostMetric {
    Macs,
    Memory,
}

impl CostMetric {
    /// The metric's value of a cost.
    pub fn of(self, c: &Cost) -> u64 {
        match self {
            CostMetric::Macs => c.macs,
            CostMetric::Memory => c.params,
        }
    }

    /// Its name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            CostMetric::Macs => "macs",
            CostMetric::Memory => "memory",
        }
    }
}

/// A compression technique applied per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    SpatialSvd,
    WeightSvd,
    ChannelPruning,
}

impl Method {
    /// Short name (CLI and files).
    pub fn name(self) -> &'static str {
        match self {
            Method::SpatialSvd => "ssvd",
            Method::WeightSvd => "wsvd",
            Method::ChannelPruning => "cp",
        }
    }

    /// Parses `ssvd`, `wsvd` or `cp`.
    pub fn parse(s: &str) -> Result<Method> {
        match s.trim() {
            "ssvd" => Ok(Method::SpatialSvd),
            "wsvd" => Ok(Method::WeightSvd),
            "cp" => Ok(Method::ChannelPruning),
            other => Err(Error::invalid(
                "compress",
                "method",
                other,
                "expected ssvd, wsvd or cp",
            )),
        }
    }
}

/// Cost of a whole graph (at its resolved batch).
pub fn model_cost(g: &Graph) -> Cost {
    cost::layer_costs(g)
        .iter()
        .fold(Cost::default(), |c, l| Cost {
            macs: c.macs + l.macs,
            params: c.params + l.params,
        })
}

/// Settings of a compression run.
#[derive(Clone, Debug)]
pub struct CompressOptions {
    /// Target cost of the compressed model as a fraction of the original, in (0, 1].
    pub target: f64,
    pub metric: CostMetric,
    /// Candidate per-layer ratios, each in (0, 1).
    pub candidates: Vec<f64>,
    /// Layers (node names) left alone.
    pub ignore: Vec<String>,
    /// Ranks and kept channels are rounded to a multiple of this.
    pub multiplicity: usize,
    /// Output positions sampled per image for the least-squares rebuild (AIMET: 10). Raised
    /// as needed (up to every position) so the samples number at least twice the features
    /// of the layer's patches: with fewer, the rebuild fits the samples, not the layer.
    pub samples_per_image: usize,
    /// Rebuild pruned weights by least squares (otherwise only slice them).
    pub reconstruct: bool,
    /// How pruning ranks the input channels it keeps.
    pub selection: prune::Selection,
    /// What the greedy selection ranks layers by: accuracy or top-1 agreement (AIMET's), or
    /// the outputs' SQNR, which still tells layers apart where few scoring images leave
    /// agreement in coarse steps.
    pub score: ScoreKind,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            target: 0.5,
            metric: CostMetric::Macs,
            candidates: (1..10).map(|i| i as f64 / 10.0).collect(),
            ignore: Vec::new(),
            multiplicity: 1,
            samples_per_image: 10,
            reconstruct: true,
            selection: prune::Selection::Magnitude,
            score: ScoreKind::Agreement,
        }
    }
}

impl CompressOptions {
    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<()> {
        if !(self.target > 0.0 && self.target <= 1.0) {
            return Err(Error::invalid(
                "compress",
                "target ratio",
                self.target,
                "must be in (0, 1]",
            ));
        }
        if self.candidates.is_empty() || self.candidates.iter().any(|&r| !(r > 0.0 && r < 1.0)) {
            return Err(Error::invalid(
                "compress",
                "candidate ratios",
                format!("{:?}", self.candidates),
                "need at least one, each in (0, 1)",
            ));
        }
        if self.samples_per_image == 0 {
            return Err(Error::invalid(
                "compress",
                "--samples-per-image",
                0,
                "need at least 1 sample per image",
            ));
        }
        Ok(())
    }
}

/// Evaluation images and how a model is scored on them: labelled accuracy when labels are
/// given, otherwise top-1 agreement with the original model.
pub struct Scorer {
    gpu: Arc<Gpu>,
    input: String,
    images: ArrayD<f32>,
    labels: Option<Vec<usize>>,
    reference: Vec<usize>,
    /// The original model's outputs on the images.
    reference_outputs: ArrayD<f32>,
}

impl Scorer {
    /// Scores against `original` (its top-1 classes on `images` are the reference).
    pub fn new(
        gpu: Arc<Gpu>,
        original: &Graph,
        images: ArrayD<f32>,
        labels: Option<Vec<usize>>,
    ) -> Result<Scorer> {
        if images.shape().first().copied().unwrap_or(0) == 0 {
            return Err(Error::EmptyTensor {
                op: "compress",
                tensor: "evaluation images".into(),
            });
        }
        if let Some(l) = &labels {
            crate::graph::Prepared::new(original.clone())
                .at(1)?
                .check_labels("compress", l, images.shape()[0])?;
        }
        let input = original
            .inputs
            .first()
            .cloned()
            .ok_or_else(|| Error::Graph {
                model: original.name.clone(),
                message: "no input".into(),
            })?;
        let mut s = Scorer {
            gpu,
            input,
            images,
            labels,
            reference: Vec::new(),
            reference_outputs: ArrayD::zeros(vec![0]),
        };
        let y = s.outputs(original)?;
        s.reference = crate::eval::top_k(&y, 1)
            .into_iter()
            .map(|t| t[0])
            .collect();
        s.reference_outputs = y;
        Ok(s)
    }

    /// The model's first output on every image.
    pub fn outputs(&self, g: &Graph) -> Result<ArrayD<f32>> {
        Ok(Runner::new(self.gpu.clone(), g.clone())
            .run(&[(&self.input, self.images.view())])?
            .remove(0))
    }

    /// The score of `g` in [0, 1]; NaN when its outputs are not finite.
    pub fn score(&self, g: &Graph) -> Result<f64> {
        Ok(self.evaluate(g)?.0)
    }

    /// The original model's own score (1 for agreement; its accuracy with labels), from the
    /// outputs computed when the scorer was made.
    pub fn baseline(&self) -> f64 {
        crate::eval::accuracy(
            &self.reference_outputs,
            self.labels.as_ref().unwrap_or(&self.reference),
        )
    }

    /// The score of `g` and the SQNR (dB) of its outputs against the original's.
    pub fn evaluate(&self, g: &Graph) -> Result<(f64, f64)> {
        Ok(self.judge(&self.outputs(g)?))
    }

    /// The score and SQNR of outputs `y` computed on the images (NaN for non-finite outputs).
    fn judge(&self, y: &ArrayD<f32>) -> (f64, f64) {
        if y.iter().any(|v| !v.is_finite()) {
            return (f64::NAN, f64::NAN);
        }
        (
            crate::eval::accuracy(y, self.labels.as_ref().unwrap_or(&self.reference)),
            crate::eval::sqnr_db(&self.reference_outputs, y),
        )
    }

    /// The score and SQNR of `g`, which computes what the original does before node
    /// `cut.at()`: only the nodes after the cut run (`original`: the graph the cut was made
    /// in). A cut past `g`'s first change is moved there first when it can move; otherwise
    /// the whole model runs.
    fn evaluate_from(&self, original: &Graph, cut: &mut Prefix, g: &Graph) -> Result<(f64, f64)> {
        let first = first_change(original, g);
        if first < cut.at() {
            return self.evaluate(g);
        }
        let segment = |g: &Graph, from: usize, to: usize| {
            Runner::new(self.gpu.clone(), Prepared::new(g.clone()).segment(from, to))
        };
        cut.advance(original, first, &segment(original, cut.at(), first))?;
        let y = cut.finish(g, &segment(g, first, g.nodes.len()))?;
        Ok(self.judge(&y))
    }

    /// The evaluation images.
    pub fn images(&self) -> &ArrayD<f32> {
        &self.images
    }

    /// The model input they feed.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Whether the score is labelled accuracy (otherwise agreement with the original).
    pub fn labelled(&self) -> bool {
        self.labels.is_some()
    }
}

/// Per-layer data a method needs to compress a layer at any ratio.
enum LayerData {
    Svd(Vec<(SvdLayer, Svd)>),
    Prune(Vec<(PruneLayer, Equations)>),
}

/// A model being compressed with one method.
pub struct Compressor {
    gpu: Arc<Gpu>,
    /// BN-folded, resolved at batch 1.
    graph: Graph,
    method: Method,
    opts: CompressOptions,
    prepared: LayerData,
    /// Candidate layers the method cannot handle, with why.
    pub skipped: Vec<(String, String)>,
}

/// The model resolved at batch 1 with its batch norms folded (as AIMET compresses it).
pub fn bn_folded(g: &Graph) -> Result<Graph> {
    Ok(Prepared::bn_folded(g.clone(), HashMap::new())?
        .0
        .at(1)?
        .as_ref()
        .clone())
}

impl Compressor {
    /// Prepares `method` on `model` (BN is folded first): SVDs of every candidate layer in
    /// one GPU batch, or, for pruning, sampled patches of every candidate layer's input and
    /// output from one tapped forward over the rebuild's fit images and one over its check
    /// images, accumulated into normal equations (`data` is needed by pruning only).
    pub fn new(
        gpu: Arc<Gpu>,
        model: &Graph,
        method: Method,
        opts: CompressOptions,
        data: Option<RebuildData>,
    ) -> Result<Compressor> {
        opts.validate()?;
        let graph = bn_folded(model)?;
        let ignored = |n: &str| opts.ignore.iter().any(|i| i == n);
        let (prepared, mut skipped) = match method {
            Method::SpatialSvd | Method::WeightSvd => {
                let kind = if method == Method::SpatialSvd {
                    SvdKind::Spatial
                } else {
                    SvdKind::Weight
                };
                let (layers, skipped) = svd::layers(&graph, kind);
                let layers: Vec<SvdLayer> =
                    layers.into_iter().filter(|l| !ignored(&l.node)).collect();
                let mats = layers
                    .iter()
                    .map(|l| svd::matrix(&graph, l))
                    .collect::<Result<Vec<_>>>()?;
                for (l, m) in layers.iter().zip(&mats) {
                    let bad = m.iter().filter(|v| !v.is_finite()).count();
                    if bad > 0 {
                        return Err(Error::NonFinite {
                            op: "compress",
                            tensor: format!("weight of layer '{}'", l.node),
                            count: bad as u64,
                        });
                    }
                }
                let views: Vec<_> = mats.iter().map(|m| m.view()).collect();
                let svds = svd_batched(&gpu, &views, &SvdOptions::default())?;
                (
                    LayerData::Svd(layers.into_iter().zip(svds).collect()),
                    skipped,
                )
            }
            Method::ChannelPruning => {
                let (layers, skipped) = prune::layers(&graph);
                let layers: Vec<PruneLayer> =
                    layers.into_iter().filter(|l| !ignored(&l.node)).collect();
                let names: Vec<String> = layers.iter().map(|l| l.node.clone()).collect();
                let eqs = match data {
                    _ if names.is_empty() => Vec::new(),
                    Some(d) => rebuild::equations(&gpu, &graph, &names, d, &opts)?,
                    None => {
                        return Err(Error::invalid(
                            "compress",
                            "data",
                            "none",
                            "channel pruning samples its layers on images: give rebuild and check images",
                        ))
                    }
                };
                (
                    LayerData::Prune(layers.into_iter().zip(eqs).collect()),
                    skipped,
                )
            }
        };
        skipped.retain(|(n, _)| !ignored(n));
        skipped.extend(
            opts.ignore
                .iter()
                .map(|n| (n.clone(), "ignored by request".to_string())),
        );
        let c = Compressor {
            gpu,
            graph,
            method,
            opts,
            prepared,
            skipped,
        };
        let largest = match &c.prepared {
            LayerData::Svd(v) => v.iter().map(|(l, _)| l.full_rank()).max(),
            LayerData::Prune(v) => v.iter().map(|(l, _)| l.channels).max(),
        };
        if let Some(largest) = largest.filter(|&l| c.opts.multiplicity > l) {
            return Err(Error::invalid(
                "compress",
                "--multiplicity",
                c.opts.multiplicity,
                format!(
                    "is larger than every {} layer's {} (the largest is {largest})",
                    method.name(),
                    if method == Method::ChannelPruning {
                        "channel count"
                    } else {
                        "rank"
                    }
                ),
            ));
        }
        if c.layer_names().is_empty() {
            return Err(Error::invalid(
                "compress",
                "model",
                &model.name,
                format!(
                    "has no layer {} can compress ({} skipped: {})",
                    method.name(),
                    c.skipped.len(),
                    c.skipped
                        .iter()
                        .map(|(n, w)| format!("{n}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        Ok(c)
    }

    /// The BN-folded model at batch 1.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// What a score table made by this compressor is keyed by: the method and, for pruning,
    /// the channel selection and whether weights are rebuilt.
    pub fn table_key(&self) -> String {
        match self.method {
            Method::ChannelPruning => format!(
                "cp/{:?}/{}",
                self.opts.selection,
                if self.opts.reconstruct {
                    format!(
                        "rebuilt/{}-per-image/2x-features/ridge-by-check-images",
                        self.opts.samples_per_image
                    )
                } else {
                    "sliced".into()
                }
            )
            .to_lowercase(),
            m => m.name().to_string(),
        }
    }

    /// Names of the layers this method can compress.
    pub fn layer_names(&self) -> Vec<String> {
        match &self.prepared {
            LayerData::Svd(v) => v.iter().map(|(l, _)| l.node.clone()).collect(),
            LayerData::Prune(v) => v.iter().map(|(l, _)| l.node.clone()).collect(),
        }
    }

    /// The model with only layer `i` (of [`Compressor::layer_names`]) compressed to `ratio`
    /// of its cost, as the score table scores it (`None`: the ratio changes nothing).
    pub fn candidate(&self, i: usize, ratio: f64) -> Result<Option<Graph>> {
        self.compress_layer(&self.graph, i, ratio)
    }

    /// `g` with layer `i` compressed to `ratio` of its cost (`None`: the ratio changes
    /// nothing, e.g. a rank at or above the full rank).
    fn compress_layer(&self, g: &Graph, i: usize, ratio: f64) -> Result<Option<Graph>> {
        let mut g = g.clone();
        let mut rebuilds = Vec::new();
        match &self.prepared {
            LayerData::Svd(v) => {
                let (l, d) = &v[i];
                let Some(r) =
                    svd::rank_for_ratio(l, ratio, self.opts.metric, self.opts.multiplicity)
                else {
                    return Ok(None);
                };
                svd::split(&mut g, l, d, r)?;
            }
            LayerData::Prune(v) => {
                let (l, eq) = &v[i];
                let Some(k) = prune::keep_for_ratio(l, ratio, self.opts.multiplicity) else {
                    return Ok(None);
                };
                self.prune_layer(&mut g, l, k, eq, &mut rebuilds)?;
            }
        }
        Ok(Some(g))
    }

    /// Prunes `l` in `g` to `k` input channels, rebuilding its weights when asked.
    fn prune_layer(
        &self,
        g: &mut Graph,
        l: &PruneLayer,
        k: usize,
        eq: &Equations,
        rebuilds: &mut Vec<Rebuild>,
    ) -> Result<()> {
        let keep = prune::select(&prune::scores(g, l, self.opts.selection, &eq.fit.gram), k);
        prune::prune(g, l, &keep)?;
        if self.opts.reconstruct {
            rebuilds.push(rebuild::rebuild(
                g, &l.node, &keep, l.channels, eq, &self.gpu,
            )?);
        }
        Ok(())
    }

    /// Scores every layer alone at every candidate ratio (`progress` is called after each
    /// evaluation with (done, total)).
    pub fn score_table(
        &self,
        scorer: &Scorer,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<ScoreTable> {
        let names = self.layer_names();
        let base_cost = model_cost(&self.graph);
        let baseline = scorer.score(&self.graph)?;
        let total = names.len() * self.opts.candidates.len();
        let mut layers = Vec::new();
        // Layers come in graph order: one cut walks the original model once, and each
        // candidate runs only from the first node it changes.
        let mut cut = Prefix::new(
            &[scorer.input().to_string()],
            &scorer.images().into(),
            scorer.images().len_of(Axis(0)),
        )?;
        for (i, name) in names.iter().enumerate() {
            let mut entries = Vec::new();
            for (k, &ratio) in self.opts.candidates.iter().enumerate() {
                if let Some(g) = self.candidate(i, ratio)? {
                    let c = model_cost(&g);
                    let (score, sqnr) = scorer.evaluate_from(&self.graph, &mut cut, &g)?;
                    entries.push(select::Entry {
                        ratio,
                        score,
                        sqnr,
                        macs_saved: base_cost.macs - c.macs,
                        params_saved: base_cost.params - c.params,
                    });
                }
                progress(i * self.opts.candidates.len() + k + 1, total);
            }
            layers.push(LayerScores {
                name: name.clone(),
                entries,
            });
        }
        Ok(ScoreTable {
            method: self.table_key(),
            metric: self.opts.metric.name().into(),
            baseline,
            cost: base_cost,
            layers,
        })
    }

    /// Applies per-layer ratios (layer name -> ratio) in graph order. Pruned layers are
    /// rebuilt on inputs from the model pruned so far (outputs from the original); returns
    /// the model and what each rebuild chose.
    pub fn apply(
        &self,
        ratios: &HashMap<String, f64>,
        data: RebuildData,
    ) -> Result<(Graph, Vec<Rebuild>)> {
        let names = self.layer_names();
        let mut g = self.graph.clone();
        let mut rebuilds = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(&ratio) = ratios.get(name) else {
                continue;
            };
            if ratio >= 1.0 {
                continue;
            }
            match &self.prepared {
                LayerData::Svd(_) => {
                    if let Some(next) = self.compress_layer(&g, i, ratio)? {
                        g = next;
                    }
                }
                LayerData::Prune(v) => {
                    let l = &v[i].0;
                    // The chain is traced again on the current graph (earlier layers may have
                    // renamed shared constants).
                    let idx = g
                        .nodes
                        .iter()
                        .position(|n| &n.name == name)
                        .expect("layer kept its name");
                    let l = prune::layer(&g, idx).map_err(|why| Error::Graph {
                        model: g.name.clone(),
                        message: format!("'{}' is no longer prunable: {why}", l.node),
                    })?;
                    let Some(k) = prune::keep_for_ratio(&l, ratio, self.opts.multiplicity) else {
                        continue;
                    };
                    let needs_samples =
                        self.opts.reconstruct || self.opts.selection == prune::Selection::Energy;
                    // Magnitude selection without a rebuild reads no samples: the equations
                    // made for scoring serve as they are.
                    let fresh;
                    let eq = if needs_samples {
                        fresh = rebuild::equations_between(
                            &self.gpu,
                            &self.graph,
                            &g,
                            &l.node,
                            data,
                            &self.opts,
                        )?;
                        &fresh
                    } else {
                        &v[i].1
                    };
                    self.prune_layer(&mut g, &l, k, eq, &mut rebuilds)?;
                }
            }
        }
        Ok((g, rebuilds))
    }
}

/// The position of the first node of `b` that differs from `a`'s (its op, its values, or a
/// constant it reads); nodes before it compute the same values in both.
fn first_change(a: &Graph, b: &Graph) -> usize {
    let reads_other_constant =
        |n: &crate::graph::ir::Node| n.inputs.iter().any(|i| a.consts.get(i) != b.consts.get(i));
    a.nodes
        .iter()
        .zip(&b.nodes)
        .position(|(x, y)| x != y || reads_other_constant(y))
        .unwrap_or(a.nodes.len().min(b.nodes.len()))
}
