//! The least-squares rebuild of pruned layers, made to hold on images it never saw.
//!
//! Positions of one image are not independent samples, so a rebuild fitted on few images fits
//! those images. Each layer's normal equations are therefore accumulated twice: on the images
//! the rebuild fits and on other images it is checked on. The ridge is the one of [`RIDGES`]
//! whose solution has the least output error on the check images, and a rebuild that does not
//! beat the pruned layer's own weights there is dropped ([`Rebuild::ridge`] `None`): rebuilding
//! never makes a layer worse on data it did not fit.

use std::sync::Arc;

use ndarray::{Array2, ArrayD, Axis, IxDyn};

use crate::compress::linalg::{solve_each, NormalEquations};
use crate::compress::prune::{kept_features, sample};
use crate::compress::CompressOptions;
use crate::error::{Error, Result};
use crate::exec::Runner;
use crate::gpu::Gpu;
use crate::graph::ir::{Const, Graph};

/// Candidate ridges, relative to the mean diagonal of the kept block of the Gram matrix.
pub const RIDGES: [f32; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 1.0];

/// Images a rebuild fits on and images it is checked on (disjoint), fed to `input`.
#[derive(Clone, Copy)]
pub struct RebuildData<'a> {
    pub input: &'a str,
    pub fit: &'a ArrayD<f32>,
    pub check: &'a ArrayD<f32>,
}

/// One layer's normal equations over every input feature (`X^T X`, `X^T Y` of sampled
/// patches and bias-free targets).
#[derive(Clone, Debug)]
pub struct Sums {
    pub gram: Array2<f32>,
    pub rhs: Array2<f32>,
    /// Sum of squared targets.
    pub energy: f64,
    pub images: usize,
    pub samples: usize,
}

/// A layer's sums on the images its rebuild fits and on the images it is checked on.
#[derive(Clone, Debug)]
pub struct Equations {
    pub fit: Sums,
    pub check: Sums,
}

/// What rebuilding one pruned layer chose, and its output error on the check images relative
/// to the energy of the original layer's output there.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebuild {
    pub node: String,
    /// Input channels kept, of how many.
    pub kept: (usize, usize),
    /// Features of the kept patches (the unknowns per output channel).
    pub features: usize,
    pub fit_images: usize,
    pub fit_samples: usize,
    pub check_images: usize,
    /// The ridge picked; `None`: the pruned layer's own weights were kept, since no rebuild
    /// beat them on the check images.
    pub ridge: Option<f32>,
    /// Relative error of the pruned layer's own weights (sliced, not rebuilt).
    pub sliced_error: f64,
    /// Relative error of the best rebuild.
    pub rebuilt_error: f64,
}

/// Output positions AIMET samples per image for a rebuild.
pub const POSITIONS_PER_IMAGE: usize = 10;

impl Rebuild {
    /// Fewer images than AIMET's rule ([`POSITIONS_PER_IMAGE`] per image, twice as many
    /// samples as unknowns) would need: the rebuild rests on positions of too few photos.
    pub fn few_images(&self) -> bool {
        self.fit_images * POSITIONS_PER_IMAGE < 2 * self.features
    }

    /// Images AIMET's rule wants for this layer.
    pub fn images_wanted(&self) -> usize {
        (2 * self.features).div_ceil(POSITIONS_PER_IMAGE)
    }
}

/// Output positions to sample per image: `samples_per_image`, raised (up to every position)
/// until the samples number twice the patch features.
fn per_image(opts: &CompressOptions, features: usize, images: usize, positions: usize) -> usize {
    opts.samples_per_image
        .max((2 * features).div_ceil(images.max(1)))
        .min(positions.max(opts.samples_per_image))
}

/// Patch features of a conv layer (input channels x window).
fn features(g: &Graph, node: &crate::graph::Node) -> usize {
    g.weight(&node.inputs[1])
        .map_or(0, |w| w.len() / w.shape()[0])
}

/// Accumulates the sums of `nodes` over `images`, piece by piece: inputs from `current`,
/// targets from `original` (one forward when they are the same graph).
fn accumulate(
    gpu: &Arc<Gpu>,
    original: &Graph,
    current: &Graph,
    nodes: &[String],
    input: &str,
    images: &ArrayD<f32>,
    opts: &CompressOptions,
) -> Result<Vec<Sums>> {
    let n_images = images.len_of(Axis(0));
    let piece = 8;
    let mut layers = Vec::new();
    for name in nodes {
        let (no, nc) = (
            &original.nodes[original.node_index(name)?],
            &current.nodes[current.node_index(name)?],
        );
        layers.push((
            nc.inputs[0].clone(),
            no.outputs[0].clone(),
            features(current, nc),
        ));
    }
    let ins: Vec<String> = layers.iter().map(|l| l.0.clone()).collect();
    let outs: Vec<String> = layers.iter().map(|l| l.1.clone()).collect();
    let same = std::ptr::eq(original, current);
    let mut sums: Vec<Option<(NormalEquations, f64, usize)>> =
        (0..nodes.len()).map(|_| None).collect();
    let mut add = |k: usize, x: &ArrayD<f32>, y: &ArrayD<f32>, first: usize| -> Result<()> {
        let positions = y.shape()[2] * y.shape()[3];
        let pi = per_image(opts, layers[k].2, n_images, positions);
        let s = sample(
            current,
            &nodes[k],
            x,
            y,
            pi,
            0x5eed ^ ((first as u64) << 20),
        )?;
        let e = match &mut sums[k] {
            Some(e) => e,
            slot => slot.insert((
                NormalEquations::new(gpu, s.patches.ncols(), s.targets.ncols())?,
                0.0,
                0,
            )),
        };
        e.0.add(gpu, s.patches.view(), s.targets.view())?;
        e.1 += s.targets.iter().map(|&t| t as f64 * t as f64).sum::<f64>();
        e.2 += s.patches.nrows();
        Ok(())
    };
    let mut first = 0;
    if same {
        let mut names = ins.clone();
        names.extend(outs.iter().cloned());
        let runner = Runner::new(gpu.clone(), original.truncated(&outs))
            .taps(&names)
            .batch(piece);
        runner.for_each_piece(&[(input, images.view())], |plan, part, rows| {
            // A piece filled up to the model's fixed batch holds copies: left out.
            if crate::exec::filled(part, rows) {
                first += rows;
                return Ok(());
            }
            let v = plan.run(part, &names)?;
            for k in 0..nodes.len() {
                add(k, &v[k], &v[nodes.len() + k], first)?;
            }
            first += part[0].1.len_of(Axis(0));
            Ok(())
        })?;
    } else {
        let ro = Runner::new(gpu.clone(), original.truncated(&outs))
            .taps(&outs)
            .batch(piece);
        let rc = Runner::new(gpu.clone(), current.truncated(&ins))
            .taps(&ins)
            .batch(piece);
        for chunk in images.axis_chunks_iter(Axis(0), piece) {
            let y = ro.run_names(&[(input, chunk.view())], &outs)?;
            let x = rc.run_names(&[(input, chunk.view())], &ins)?;
            for k in 0..nodes.len() {
                add(k, &x[k], &y[k], first)?;
            }
            first += chunk.len_of(Axis(0));
        }
    }
    sums.into_iter()
        .map(|s| {
            let (ne, energy, samples) = s.expect("every layer saw a piece");
            let (gram, rhs) = ne.read(gpu)?;
            Ok(Sums {
                gram,
                rhs,
                energy,
                images: n_images,
                samples,
            })
        })
        .collect()
}

/// The equations of every layer in `nodes` of `g` (inputs and targets from `g` itself), from
/// one forward over the fit images and one over the check images.
pub fn equations(
    gpu: &Arc<Gpu>,
    g: &Graph,
    nodes: &[String],
    data: RebuildData,
    opts: &CompressOptions,
) -> Result<Vec<Equations>> {
    let fit = accumulate(gpu, g, g, nodes, data.input, data.fit, opts)?;
    let check = accumulate(gpu, g, g, nodes, data.input, data.check, opts)?;
    Ok(fit
        .into_iter()
        .zip(check)
        .map(|(fit, check)| Equations { fit, check })
        .collect())
}

/// The equations of `node` with inputs from `current` (the model compressed so far) and
/// targets from `original`'s output of that node.
pub fn equations_between(
    gpu: &Arc<Gpu>,
    original: &Graph,
    current: &Graph,
    node: &str,
    data: RebuildData,
    opts: &CompressOptions,
) -> Result<Equations> {
    let nodes = [node.to_string()];
    let fit = accumulate(gpu, original, current, &nodes, data.input, data.fit, opts)?.remove(0);
    let check = accumulate(gpu, original, current, &nodes, data.input, data.check, opts)?.remove(0);
    Ok(Equations { fit, check })
}

/// `sum_o (w_o^T G w_o - 2 w_o^T b_o) + energy`: the squared output error of weights `w`
/// (`[features, outputs]`) on the samples behind `G`, `B`, relative to `energy`.
fn relative_error(w: &Array2<f32>, gram: &Array2<f32>, rhs: &Array2<f32>, energy: f64) -> f64 {
    let (w64, g64, b64) = (w.mapv(f64::from), gram.mapv(f64::from), rhs.mapv(f64::from));
    let gw = g64.dot(&w64);
    let quad = (&w64 * &gw).sum();
    let lin = (&w64 * &b64).sum();
    ((quad - 2.0 * lin + energy) / energy.max(f64::MIN_POSITIVE)).max(0.0)
}

/// Rebuilds the weight of `node` (already pruned to the input channels `keep` in `g`) by
/// least squares on the fit sums, with the ridge that does best on the check sums; keeps the
/// pruned weights when no rebuild beats them there.
pub fn rebuild(
    g: &mut Graph,
    node: &str,
    keep: &[usize],
    channels: usize,
    eq: &Equations,
    gpu: &Gpu,
) -> Result<Rebuild> {
    let n = &g.nodes[g.node_index(node)?];
    let wname = n.inputs[1].clone();
    let w = g.weight(&wname).expect("conv weight").clone();
    let (co, k, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    if k != keep.len() {
        return Err(Error::invalid(
            "reconstruct",
            "kept channels",
            keep.len(),
            format!("the pruned weight of '{node}' has {k} input channels"),
        ));
    }
    let f = kept_features(keep, kh * kw);
    let block =
        |m: &Array2<f32>| Array2::from_shape_fn((f.len(), f.len()), |(a, b)| m[[f[a], f[b]]]);
    let rows = |m: &Array2<f32>| Array2::from_shape_fn((f.len(), co), |(a, o)| m[[f[a], o]]);
    let (gf, bf) = (block(&eq.fit.gram), rows(&eq.fit.rhs));
    let (gc, bc) = (block(&eq.check.gram), rows(&eq.check.rhs));
    let sliced = Array2::from_shape_fn((f.len(), co), |(a, o)| {
        let (c, r) = (a / (kh * kw), a % (kh * kw));
        w[[o, c, r / kw, r % kw]]
    });
    let sliced_error = relative_error(&sliced, &gc, &bc, eq.check.energy);
    let mean_diag = (0..f.len()).map(|i| gf[[i, i]] as f64).sum::<f64>() / f.len().max(1) as f64;
    let systems: Vec<NormalEquations> = RIDGES
        .iter()
        .map(|&r| {
            let mut a = gf.clone();
            for i in 0..f.len() {
                a[[i, i]] += (r as f64 * mean_diag.max(f64::MIN_POSITIVE)) as f32;
            }
            NormalEquations::from_parts(gpu, &a, &bf)
        })
        .collect::<Result<_>>()?;
    // As many systems per dispatch as fit one storage binding.
    let per_call =
        ((gpu.limits().max_binding as usize / 4) / (f.len() * f.len().max(co)).max(1)).max(1);
    let mut solutions = Vec::new();
    for chunk in systems.chunks(per_call) {
        let refs: Vec<&NormalEquations> = chunk.iter().collect();
        solutions.extend(solve_each(gpu, &refs, 0.0)?);
    }
    let mut best: Option<(f32, f64, Array2<f32>)> = None;
    for (r, sol) in RIDGES.iter().zip(solutions) {
        // A system the factorisation fails on is simply not a candidate.
        let Ok(sol) = sol else { continue };
        let e = relative_error(&sol, &gc, &bc, eq.check.energy);
        if best.as_ref().is_none_or(|b| e < b.1) {
            best = Some((*r, e, sol));
        }
    }
    let rebuilt_error = best.as_ref().map_or(f64::INFINITY, |b| b.1);
    let mut ridge = None;
    if let Some((r, e, sol)) = best {
        if e < sliced_error {
            ridge = Some(r);
            let neww = ArrayD::from_shape_fn(IxDyn(&[co, k, kh, kw]), |d| {
                sol[[(d[1] * kh + d[2]) * kw + d[3], d[0]]]
            });
            g.consts.insert(wname, Const::F32(neww));
        }
    }
    Ok(Rebuild {
        node: node.to_string(),
        kept: (k, channels),
        features: f.len(),
        fit_images: eq.fit.images,
        fit_samples: eq.fit.samples,
        check_images: eq.check.images,
        ridge,
        sliced_error,
        rebuilt_error,
    })
}
