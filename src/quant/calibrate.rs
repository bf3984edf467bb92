//! Calibration on the GPU: forward passes of the prepared FP32 graph with taps on every
//! quantized activation; per batch, the observers record their statistics into the same
//! submission and one readback returns them all. Memory stays flat in the number of batches.

use std::sync::Arc;

use ndarray::{ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::exec::{Plan, Runner};
use crate::gpu::{Gpu, GpuTensor};
use crate::graph::attrs::Outside;
use crate::ops::calib::{self, RunningHistogram};
use crate::quant::analyzers::{percentile, tf_enhanced, Hist, Pdf, PdfRange, Scheme, PDF_BUCKETS};
use crate::quant::encoding::QuantKind;
use crate::quant::placement::Placement;

/// AIMET's tf-enhanced observer of one activation: a density over `PDF_BUCKETS` buckets whose
/// range is fixed by the first calibration sample holding a nonzero value (AIMET fixes it at
/// its first batch; fixing it per sample keeps the result independent of the batch size).
/// Values outside the range are left out.
struct PdfObserver {
    range: Option<PdfRange>,
    counts: Option<GpuTensor>,
    /// Finite values seen since the range was fixed (those left out included).
    seen: u64,
}

/// The statistics kept per activation besides min/max, with the scheme's parameter.
enum Observers {
    None,
    /// Running histograms and the percentile to clip at.
    Running(Vec<RunningHistogram>, f32),
    /// Densities and tf-enhanced's gamma.
    Pdf(Vec<PdfObserver>, f32),
}

/// What calibration found for one activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observed {
    /// A range to build the encoding from.
    Range(f32, f32),
    /// A grid chosen by a search (tf-enhanced): scale and offset.
    Grid { scale: f32, offset: f32 },
}

/// Observers on every quantized activation: running min/max always, plus AIMET's running
/// histogram (percentile) or its fixed-range density (tf-enhanced), on the GPU.
pub struct Calibrator {
    gpu: Arc<Gpu>,
    /// The model with taps on every observed activation (graph inputs are read directly).
    runner: Arc<Runner>,
    names: Vec<String>,
    observers: Observers,
    /// Per activation: (min, max) of finite values so far.
    pub ranges: Vec<(f32, f32)>,
    /// Per activation: non-finite values seen (left out of the ranges).
    pub non_finite: Vec<u64>,
    /// Samples seen.
    pub samples: usize,
}

impl Calibrator {
    /// Observers for every activation quantizer of `placement`, on `runner` (which taps
    /// every one of them that is not a graph input).
    pub fn new(
        gpu: Arc<Gpu>,
        runner: Runner,
        placement: &Placement,
        scheme: Scheme,
    ) -> Result<Calibrator> {
        let names: Vec<String> = placement
            .activations
            .iter()
            .map(|q| q.tensor.clone())
            .collect();
        let n = names.len();
        let observers = match scheme {
            Scheme::MinMax => Observers::None,
            Scheme::Percentile(p) => Observers::Running(
                (0..n)
                    .map(|_| RunningHistogram::new(calib::DEFAULT_BINS, None))
                    .collect::<Result<_>>()?,
                p,
            ),
            Scheme::TfEnhanced { gamma } => Observers::Pdf(
                (0..n)
                    .map(|_| PdfObserver {
                        range: None,
                        counts: None,
                        seen: 0,
                    })
                    .collect(),
                gamma,
            ),
        };
        Ok(Calibrator {
            gpu,
            runner: Arc::new(runner),
            names,
            observers,
            ranges: vec![(f32::INFINITY, f32::NEG_INFINITY); n],
            non_finite: vec![0; n],
            samples: 0,
        })
    }

    /// Adds one batch (each input by name, `[batch, ...]`), in pieces the adapter holds.
    pub fn add(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<()> {
        let runner = self.runner.clone();
        runner.for_each_piece(inputs, |plan, part, rows| {
            // A piece filled up to the model's fixed batch holds copies, which would weigh
            // in histograms: left out.
            if crate::exec::filled(part, rows) {
                log::warn!(
                    "calibration leaves out the last {rows} samples: the model fixes its batch \
                     at {}, and calibrates on whole batches",
                    part[0].1.shape()[0]
                );
                return Ok(());
            }
            self.add_piece(plan, part)
        })
    }

    /// One piece: one submission and one readback for the min/max (and, until each
    /// density's range is fixed, per-sample min/max), then one submission for the histograms.
    fn add_piece(&mut self, plan: &Plan, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<()> {
        let batch = inputs[0].1.len_of(Axis(0));
        let gpu = self.gpu.clone();
        let names = self.names.clone();
        let unfixed: Vec<bool> = match &self.observers {
            Observers::Pdf(obs, _) => obs.iter().map(|o| o.range.is_none()).collect(),
            _ => vec![false; names.len()],
        };
        plan.write_inputs(inputs)?;
        let mut enc = gpu.encoder();
        plan.record(&mut enc);
        let mut outs: Vec<GpuTensor> = Vec::with_capacity(2 * names.len());
        let mut per_sample: Vec<(usize, GpuTensor)> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let t = plan.tensor(name).ok_or_else(|| Error::Graph {
                model: "calibration".into(),
                message: format!("no tap for '{name}'"),
            })?;
            let mm = calib::min_max(&mut enc, &gpu, t, None)?;
            outs.push(mm.range);
            outs.push(mm.non_finite);
            if unfixed[i] {
                per_sample.push((i, calib::min_max(&mut enc, &gpu, t, Some(0))?.range));
            }
        }
        let refs: Vec<&GpuTensor> = outs
            .iter()
            .chain(per_sample.iter().map(|(_, t)| t))
            .collect();
        let bytes = gpu.submit_and_read(enc, &refs)?;
        let mut batch_ranges = Vec::with_capacity(names.len());
        for (i, pair) in bytes[..outs.len()].chunks(2).enumerate() {
            let r: &[f32] = bytemuck::cast_slice(&pair[0]);
            let bad: &[u32] = bytemuck::cast_slice(&pair[1]);
            self.ranges[i].0 = self.ranges[i].0.min(r[0]);
            self.ranges[i].1 = self.ranges[i].1.max(r[1]);
            self.non_finite[i] += bad[0] as u64;
            batch_ranges.push(((r[0], r[1]), bad[0]));
        }
        match &mut self.observers {
            Observers::None => {}
            Observers::Running(hists, _) => {
                // The taps still hold this batch: histogram them in a second submission.
                let mut enc = gpu.encoder();
                for ((name, h), (range, bad)) in
                    names.iter().zip(hists.iter_mut()).zip(&batch_ranges)
                {
                    let t = plan.tensor(name).expect("tapped above");
                    h.update_known(&mut enc, &gpu, t, &[*range], &[*bad])?;
                }
                gpu.submit(enc)?;
            }
            Observers::Pdf(obs, _) => {
                for ((i, _), b) in per_sample.iter().zip(&bytes[outs.len()..]) {
                    let samples: &[[f32; 2]] = bytemuck::cast_slice(b);
                    // The first sample with a finite nonzero value fixes the range. Earlier
                    // all-zero samples of the same batch are counted, where AIMET (one sample
                    // per batch) would skip them.
                    obs[*i].range = samples
                        .iter()
                        .find(|r| r[0] <= r[1] && !(r[0] == 0.0 && r[1] == 0.0))
                        .map(|r| PdfRange::around(r[0], r[1]));
                }
                let mut enc = gpu.encoder();
                for ((name, o), (_, bad)) in names.iter().zip(obs.iter_mut()).zip(&batch_ranges) {
                    let Some(range) = o.range else { continue };
                    let t = plan.tensor(name).expect("tapped above");
                    o.counts = Some(calib::histogram(
                        &mut enc,
                        &gpu,
                        t,
                        None,
                        &[range.grid()],
                        PDF_BUCKETS as u32,
                        Outside::Drop,
                        o.counts.as_ref(),
                    )?);
                    o.seen += t.len() as u64 - *bad as u64;
                }
                gpu.submit(enc)?;
            }
        }
        self.samples += batch;
        Ok(())
    }

    /// What each activation's statistics give under the scheme, for `bitwidth`-bit grids of
    /// the given kinds (one per activation, in placement order).
    pub fn observed(&self, bitwidth: u32, kinds: &[QuantKind]) -> Result<Vec<Observed>> {
        match self.observers {
            Observers::None => Ok(self
                .ranges
                .iter()
                .map(|&(lo, hi)| Observed::Range(lo, hi))
                .collect()),
            Observers::Running(ref hists, p) => {
                let counts: Vec<&GpuTensor> = hists
                    .iter()
                    .map(|h| h.counts().expect("one batch was added"))
                    .collect();
                let bytes = self.gpu.submit_and_read(self.gpu.encoder(), &counts)?;
                Ok(hists
                    .iter()
                    .zip(bytes)
                    .map(|(h, b)| {
                        let (lo, hi) = h.ranges()[0];
                        let (lo, hi) = percentile(
                            &Hist {
                                counts: bytemuck::cast_slice(&b),
                                lo,
                                hi,
                            },
                            p,
                        );
                        Observed::Range(lo, hi)
                    })
                    .collect())
            }
            Observers::Pdf(ref obs, gamma) => {
                let counts: Vec<&GpuTensor> =
                    obs.iter().filter_map(|o| o.counts.as_ref()).collect();
                let mut bytes = self
                    .gpu
                    .submit_and_read(self.gpu.encoder(), &counts)?
                    .into_iter();
                Ok(obs
                    .iter()
                    .zip(kinds)
                    .map(|(o, &kind)| {
                        let pdf = o.range.map(|r| {
                            Pdf::from_counts(
                                r,
                                bytemuck::cast_slice(
                                    &bytes.next().expect("one readback per density"),
                                ),
                                o.seen,
                            )
                        });
                        let (scale, offset) = tf_enhanced(pdf.as_ref(), bitwidth, kind, gamma);
                        Observed::Grid { scale, offset }
                    })
                    .collect())
            }
        }
    }

    /// The activation names, in placement order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}
