//! Automatic mixed precision, as AIMET's AMP: a bitwidth candidate per quantizer group, the
//! smallest bit-operation cost whose score stays within an allowed drop of the highest
//! candidate's.
//!
//! The simulation is built and calibrated at the highest candidate (the baseline); the other
//! candidates' encodings come from the same observations ([`QuantSim::activation_encodings_at`],
//! [`QuantSim::param_encodings_at`]), so no candidate recalibrates.
//! * Phase 1: each group at each lower candidate, every other group at the baseline
//!   (`(group, candidate)` scores; prefixes shared: a group's runs start at the cut before it).
//! * The moves (a group down to a candidate) are ordered by score lost per bit-operation
//!   saved; applying them in order gives a sequence of configurations of falling cost.
//! * Phase 2: the longest prefix of moves whose score is within the drop, by binary search
//!   over the sequence (bracketed by evenly spaced points, which also draw the curve), or
//!   greedily (each move in order, kept if the score stays within the drop).
//! * The evaluated points' Pareto front of relative bit-operations against the score.

mod groups;
mod table;

pub use groups::{groups, Group};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::eval::ScoreKind;
use crate::exec::Samples;
use crate::quant::analysis::Score;
use crate::quant::encoding::Encoding;
use crate::quant::prefix::Prefix;
use crate::quant::sim::{Enabled, QuantSim};

/// Bitwidths a candidate may take: the integer containers of ONNX's QuantizeLinear.
pub const BITWIDTHS: [u32; 3] = [4, 8, 16];

/// A bitwidth candidate: weights and activations (`W8A16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    pub param_bw: u32,
    pub act_bw: u32,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W{}A{}", self.param_bw, self.act_bw)
    }
}

impl FromStr for Candidate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Candidate> {
        let bad = |why: &str| Error::invalid("amp", "candidate", s, why.to_string());
        let u = s.trim().to_ascii_uppercase();
        let rest = u
            .strip_prefix('W')
            .ok_or_else(|| bad("W<bits>A<bits>, e.g. W8A16"))?;
        let (w, a) = rest
            .split_once('A')
            .ok_or_else(|| bad("W<bits>A<bits>, e.g. W8A16"))?;
        let (w, a): (u32, u32) = match (w.parse(), a.parse()) {
            (Ok(w), Ok(a)) => (w, a),
            _ => return Err(bad("W<bits>A<bits>, e.g. W8A16")),
        };
        if !BITWIDTHS.contains(&w) || !BITWIDTHS.contains(&a) {
            return Err(bad(
                "bitwidths of 4, 8 or 16 (the int4, int8 and int16 grids a QDQ model holds)",
            ));
        }
        Ok(Candidate {
            param_bw: w,
            act_bw: a,
        })
    }
}

impl Candidate {
    /// Parses a comma-separated list (`W4A8,W8A8,W8A16`): at least two distinct candidates,
    /// one of which is at least as wide as every other in both bitwidths (the baseline).
    pub fn parse_list(s: &str) -> Result<Vec<Candidate>> {
        let mut out: Vec<Candidate> = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let c: Candidate = part.parse()?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        if out.len() < 2 {
            return Err(Error::invalid(
                "amp",
                "candidates",
                s,
                "at least two distinct candidates, e.g. W4A8,W8A8,W8A16",
            ));
        }
        out.sort();
        let top = baseline(&out);
        if out
            .iter()
            .any(|c| c.param_bw > top.param_bw || c.act_bw > top.act_bw)
        {
            return Err(Error::invalid(
                "amp",
                "candidates",
                s,
                "one candidate at least as wide as every other in weights and activations (the baseline the drop is measured from)",
            ));
        }
        Ok(out)
    }
}

/// The widest candidate (the baseline).
pub fn baseline(candidates: &[Candidate]) -> Candidate {
    *candidates
        .iter()
        .max_by_key(|c| (c.param_bw * c.act_bw, c.param_bw, c.act_bw))
        .expect("candidate lists are not empty")
}

/// How phase 2 searches the ordered moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmpSearch {
    /// Binary search for the longest prefix within the drop (AIMET's default).
    Binary,
    /// Each move in order, kept when the score stays within the drop.
    Greedy,
}

/// Options of [`search`].
#[derive(Clone, Debug)]
pub struct AmpOptions {
    pub candidates: Vec<Candidate>,
    /// Largest score drop from the baseline allowed: a fraction in [0, 1] for
    /// [`ScoreKind::Agreement`], dB for [`ScoreKind::Sqnr`].
    pub allowed_drop: f64,
    pub score: ScoreKind,
    pub search: AmpSearch,
    /// Samples per GPU batch.
    pub piece: usize,
    /// Evenly spaced points of the move sequence evaluated for the curve (and to bracket
    /// the binary search).
    pub curve_points: usize,
}

impl AmpOptions {
    /// Checks the drop's range for the score.
    pub fn check(&self) -> Result<()> {
        let d = self.allowed_drop;
        let ok = match self.score {
            ScoreKind::Agreement => (0.0..=1.0).contains(&d),
            ScoreKind::Sqnr => d.is_finite() && d >= 0.0,
        };
        if !ok {
            return Err(Error::invalid(
                "amp",
                "allowed drop",
                d,
                match self.score {
                    ScoreKind::Agreement => "a fraction of accuracy (or top-1 agreement) in [0, 1]",
                    ScoreKind::Sqnr => "a finite number of dB >= 0",
                },
            ));
        }
        Ok(())
    }
}

/// A configuration evaluated in phase 2 (or a uniform one).
#[derive(Clone, Debug)]
pub struct Point {
    /// Moves of the ordered sequence applied (`None` for a uniform configuration).
    pub moves: Option<usize>,
    /// Bit-operations relative to the baseline's.
    pub relative_bit_ops: f64,
    pub score: Score,
}

/// Phase 1's table: per group, the score at each candidate other than the baseline. A saved
/// table is reused when its groups, candidates and baseline score (to the bit: the same
/// model, encodings and data) are the run's.
#[derive(Clone, Debug, Default)]
pub struct Sensitivities {
    /// Group names, in order.
    pub groups: Vec<String>,
    /// The baseline's logits SQNR when the table was made.
    pub baseline_sqnr_db: f64,
    pub scores: Vec<Vec<(Candidate, Score)>>,
}

/// What AMP chose and saw.
#[derive(Clone, Debug)]
pub struct AmpResult {
    pub candidates: Vec<Candidate>,
    pub baseline: Candidate,
    pub score: ScoreKind,
    pub allowed_drop: f64,
    pub samples: usize,
    pub groups: Vec<Group>,
    /// Per group, its candidate in the chosen configuration.
    pub chosen: Vec<Candidate>,
    pub sensitivities: Sensitivities,
    /// The baseline's score.
    pub baseline_score: Score,
    /// The chosen configuration.
    pub point: Point,
    /// Every point phase 2 evaluated, in order of moves.
    pub curve: Vec<Point>,
    /// Each candidate applied to every group.
    pub uniform: Vec<(Candidate, Point)>,
    /// The chosen configuration's encodings (activations, parameters), in the simulation's
    /// orders.
    pub activations: Vec<(String, Encoding)>,
    pub params: Vec<(String, Encoding)>,
    /// Seconds: encodings at every bitwidth, phase 1, phase 2.
    pub seconds: [f64; 3],
    /// Full-model evaluations phase 2 ran.
    pub evaluations: usize,
    /// Whether phase 1's table was a saved one.
    pub reused: bool,
}

impl AmpResult {
    /// Indices into `curve` of the points no other point beats in both cost and score.
    pub fn front(&self) -> Vec<usize> {
        let v = |p: &Point| p.score.value(self.score);
        (0..self.curve.len())
            .filter(|&i| {
                let p = &self.curve[i];
                !self.curve.iter().any(|q| {
                    q.relative_bit_ops <= p.relative_bit_ops
                        && v(q) >= v(p)
                        && (q.relative_bit_ops < p.relative_bit_ops || v(q) > v(p))
                })
            })
            .collect()
    }
}

/// Encodings of every quantizer at each candidate's bitwidths, by bitwidth and name.
struct Sets {
    acts: BTreeMap<u32, HashMap<String, Encoding>>,
    params: BTreeMap<u32, HashMap<String, Encoding>>,
}

impl Sets {
    fn new(sim: &QuantSim, candidates: &[Candidate]) -> Result<Sets> {
        let mut acts = BTreeMap::new();
        let mut params = BTreeMap::new();
        for c in candidates {
            if let std::collections::btree_map::Entry::Vacant(e) = acts.entry(c.act_bw) {
                e.insert(sim.activation_encodings_at(c.act_bw)?.into_iter().collect());
            }
            if let std::collections::btree_map::Entry::Vacant(e) = params.entry(c.param_bw) {
                e.insert(sim.param_encodings_at(c.param_bw)?.into_iter().collect());
            }
        }
        Ok(Sets { acts, params })
    }

    /// Every quantizer's encoding for a choice of candidate per group.
    fn enabled(&self, sim: &QuantSim, groups: &[Group], choice: &[Candidate]) -> Enabled {
        let mut e = Enabled::all(sim);
        for (g, c) in groups.iter().zip(choice) {
            e = e.with_encodings(&g.encodings(&self.acts, &self.params, (c.param_bw, c.act_bw)));
        }
        e
    }
}

/// The candidates that differ for a group: those whose bitwidths it has (a group without
/// parameters ignores the weights' bitwidth), the baseline's equivalent left out.
fn distinct(group: &Group, candidates: &[Candidate], top: Candidate) -> Vec<Candidate> {
    let key = |c: &Candidate| {
        (
            group.has_params().then_some(c.param_bw),
            group.has_activations().then_some(c.act_bw),
        )
    };
    let mut seen = vec![key(&top)];
    let mut out = Vec::new();
    for c in candidates {
        if !seen.contains(&key(c)) {
            seen.push(key(c));
            out.push(*c);
        }
    }
    out
}

fn total_bit_ops(groups: &[Group], choice: &[Candidate]) -> u64 {
    groups
        .iter()
        .zip(choice)
        .map(|(g, c)| g.bit_ops(c.param_bw, c.act_bw))
        .sum()
}

/// Mixed precision for a simulation calibrated at the baseline candidate's bitwidths, scored
/// on `x` (with `labels`, optional) against the reference FP32 model. `cached` is a phase-1
/// table from an earlier run of the same simulation, data and candidates (it is used when its
/// shape matches). `progress` hears (phase, done, total).
pub fn search<'a>(
    sim: &QuantSim,
    x: impl Into<Samples<'a>>,
    labels: Option<&[usize]>,
    opts: &AmpOptions,
    cached: Option<Sensitivities>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<AmpResult> {
    opts.check()?;
    let top = baseline(&opts.candidates);
    let own = (sim.options().param_bw, sim.options().act_bw);
    if own != (top.param_bw, top.act_bw) {
        return Err(Error::invalid(
            "amp",
            "simulation bitwidths",
            format!("W{}A{}", own.0, own.1),
            format!("the baseline candidate {top}: build and calibrate the simulation at it"),
        ));
    }
    let x = x.into();
    let samples = x.len();
    if samples == 0 {
        return Err(Error::EmptyTensor {
            op: "amp",
            tensor: "scoring data".into(),
        });
    }
    let groups = groups(sim)?;
    if groups.len() < 2 {
        return Err(Error::invalid(
            "amp",
            "quantizer groups",
            groups.len(),
            "at least two groups to give different bitwidths (this model has one)",
        ));
    }
    let piece = opts.piece.max(1);
    let t = Instant::now();
    let sets = Sets::new(sim, &opts.candidates)?;
    let t_sets = t.elapsed().as_secs_f64();
    let reference = sim.fp32(&x, piece)?.remove(0);
    let all = Enabled::all(sim);
    let run = |choice: &[Candidate]| -> Result<Score> {
        let y = sim
            .partial_runner(&sets.enabled(sim, &groups, choice), None)?
            .batch(piece)
            .run(&x.feed(sim.inputs())?)?
            .remove(0);
        Ok(Score::of(&reference, &y, labels))
    };
    let base_choice = vec![top; groups.len()];
    let base_bit_ops = total_bit_ops(&groups, &base_choice).max(1) as f64;
    let point = |choice: &[Candidate], moves: Option<usize>, score: Score| Point {
        moves,
        relative_bit_ops: total_bit_ops(&groups, choice) as f64 / base_bit_ops,
        score,
    };

    let t = Instant::now();
    let base_score = run(&base_choice)?;
    let base_value = base_score.value(opts.score);
    let mut t_phase2 = t.elapsed().as_secs_f64();

    // Phase 1.
    let t = Instant::now();
    let shape_ok = |s: &Sensitivities| {
        s.baseline_sqnr_db.to_bits() == base_score.sqnr_db.to_bits()
            && s.groups.iter().eq(groups.iter().map(|g| &g.name))
            && s.scores.len() == groups.len()
            && s.scores.iter().zip(&groups).all(|(row, g)| {
                row.iter().map(|(c, _)| *c).collect::<Vec<_>>()
                    == distinct(g, &opts.candidates, top)
            })
    };
    let cached = cached.filter(shape_ok);
    let reused = cached.is_some();
    let sensitivities = match cached {
        Some(s) => s,
        None => {
            let mut prefix = Prefix::new(sim, &x, all.clone(), piece)?;
            let mut scores = Vec::with_capacity(groups.len());
            for (k, g) in groups.iter().enumerate() {
                progress("AMP phase 1: group sensitivity", k, groups.len());
                prefix.advance_to(sim, g.position)?;
                let mut row = Vec::new();
                for c in distinct(g, &opts.candidates, top) {
                    let e = all.clone().with_encodings(&g.encodings(
                        &sets.acts,
                        &sets.params,
                        (c.param_bw, c.act_bw),
                    ));
                    row.push((c, Score::of(&reference, &prefix.finish(sim, &e)?, labels)));
                }
                scores.push(row);
            }
            Sensitivities {
                groups: groups.iter().map(|g| g.name.clone()).collect(),
                baseline_sqnr_db: base_score.sqnr_db,
                scores,
            }
        }
    };
    let t_phase1 = t.elapsed().as_secs_f64();

    // The moves, ordered by score lost per bit-operation saved; free moves last.
    let t = Instant::now();
    let mut moves: Vec<(usize, Candidate, f64, u64)> = Vec::new();
    for (gi, (g, row)) in groups.iter().zip(&sensitivities.scores).enumerate() {
        for (c, s) in row {
            let saved = g
                .bit_ops(top.param_bw, top.act_bw)
                .saturating_sub(g.bit_ops(c.param_bw, c.act_bw));
            moves.push((gi, *c, base_value - s.value(opts.score), saved));
        }
    }
    moves.sort_by(|a, b| {
        let rate = |m: &(usize, Candidate, f64, u64)| {
            if m.3 == 0 {
                f64::INFINITY
            } else {
                m.2.max(0.0) / m.3 as f64
            }
        };
        rate(a)
            .total_cmp(&rate(b))
            .then(a.2.total_cmp(&b.2))
            .then(b.3.cmp(&a.3))
    });
    // A move applies when it lowers its group's cost (or, at equal cost, narrows it).
    let lowers = |gi: usize, c: Candidate, now: Candidate| {
        let g = &groups[gi];
        let (a, b) = (
            g.bit_ops(c.param_bw, c.act_bw),
            g.bit_ops(now.param_bw, now.act_bw),
        );
        a < b || (a == b && c.param_bw <= now.param_bw && c.act_bw <= now.act_bw && c != now)
    };
    let target = base_value - opts.allowed_drop;
    let within = |s: &Score| s.value(opts.score) >= target;
    let mut curve: Vec<Point> = vec![point(&base_choice, Some(0), base_score)];
    let mut evaluations = 1;
    let (chosen_choice, chosen_score) = match opts.search {
        AmpSearch::Binary => {
            // The configuration after each prefix of the moves that apply.
            let mut sequence = vec![base_choice.clone()];
            let mut cur = base_choice.clone();
            for &(gi, c, _, _) in &moves {
                if lowers(gi, c, cur[gi]) {
                    cur[gi] = c;
                    sequence.push(cur.clone());
                }
            }
            let last = sequence.len() - 1;
            let mut scored: HashMap<usize, Score> = HashMap::from([(0, base_score)]);
            let mut eval_at = |k: usize, curve: &mut Vec<Point>| -> Result<Score> {
                if let Some(s) = scored.get(&k) {
                    return Ok(*s);
                }
                let s = run(&sequence[k])?;
                evaluations += 1;
                scored.insert(k, s);
                curve.push(point(&sequence[k], Some(k), s));
                Ok(s)
            };
            let n = opts.curve_points.max(1);
            let mut marks: Vec<usize> = (0..=n).map(|i| i * last / n).collect();
            marks.dedup();
            let mut passing = Vec::new();
            for (i, &k) in marks.iter().enumerate() {
                progress("AMP phase 2: curve", i, marks.len());
                passing.push(within(&eval_at(k, &mut curve)?));
            }
            // Bracket: the last evenly spaced point within the drop and the next one.
            let li = (0..marks.len()).rev().find(|&i| passing[i]).unwrap_or(0);
            let (mut lo, mut hi) = (marks[li], marks.get(li + 1).copied().unwrap_or(last));
            if lo == last {
                hi = last;
            }
            while hi > lo + 1 {
                let mid = (lo + hi) / 2;
                progress("AMP phase 2: binary search", last - (hi - lo), last);
                if within(&eval_at(mid, &mut curve)?) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let s = eval_at(lo, &mut curve)?;
            (sequence[lo].clone(), s)
        }
        AmpSearch::Greedy => {
            let (mut keep, mut kept) = (base_choice.clone(), base_score);
            for (k, &(gi, c, _, _)) in moves.iter().enumerate() {
                progress("AMP phase 2: greedy", k, moves.len());
                if !lowers(gi, c, keep[gi]) {
                    continue;
                }
                let mut trial = keep.clone();
                trial[gi] = c;
                let s = run(&trial)?;
                evaluations += 1;
                curve.push(point(&trial, Some(k + 1), s));
                if within(&s) {
                    (keep, kept) = (trial, s);
                }
            }
            (keep, kept)
        }
    };
    curve.sort_by_key(|p| p.moves);
    let mut uniform = Vec::new();
    for c in &opts.candidates {
        let choice = vec![*c; groups.len()];
        let s = if *c == top { base_score } else { run(&choice)? };
        evaluations += usize::from(*c != top);
        uniform.push((*c, point(&choice, None, s)));
    }
    t_phase2 += t.elapsed().as_secs_f64();
    progress("AMP phase 2", 1, 1);

    let e = sets.enabled(sim, &groups, &chosen_choice);
    let pick = |own: &[(String, Encoding)]| -> Vec<(String, Encoding)> {
        own.iter()
            .map(|(n, enc)| (n.clone(), e.encodings.get(n).unwrap_or(enc).clone()))
            .collect()
    };
    Ok(AmpResult {
        candidates: opts.candidates.clone(),
        baseline: top,
        score: opts.score,
        allowed_drop: opts.allowed_drop,
        samples,
        point: point(&chosen_choice, None, chosen_score),
        chosen: chosen_choice,
        groups,
        sensitivities,
        baseline_score: base_score,
        curve,
        uniform,
        activations: pick(sim.activation_encodings()),
        params: pick(sim.param_encodings()),
        seconds: [t_sets, t_phase1, t_phase2],
        evaluations,
        reused,
    })
}
