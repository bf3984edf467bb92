//! Fidelity metrics shared by quantization and compression: SQNR and top-k agreement.

use ndarray::{ArrayD, Axis};

/// Which score a search holds (mixed precision's allowed drop) or ranks by (compression's
/// greedy selection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreKind {
    /// Accuracy with labels, else top-1 agreement with FP32 (fractions; AIMET's accuracy).
    Agreement,
    /// SQNR of the logits against FP32, in dB.
    Sqnr,
}

impl ScoreKind {
    /// The unit of a difference of scores.
    pub fn unit(self) -> &'static str {
        match self {
            ScoreKind::Sqnr => "dB",
            ScoreKind::Agreement => "",
        }
    }

    /// By name: `agreement` (accuracy with labels) or `sqnr`.
    pub fn named(name: &str) -> Option<ScoreKind> {
        match name {
            "agreement" | "accuracy" => Some(ScoreKind::Agreement),
            "sqnr" => Some(ScoreKind::Sqnr),
            _ => None,
        }
    }
}

/// Signal and noise power summed over any number of (reference, test) pairs, in f64: the SQNR
/// of several batches taken together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sqnr {
    pub signal: f64,
    pub noise: f64,
    /// Elements added.
    pub count: u64,
}

impl Sqnr {
    /// Adds one pair of same-shape arrays.
    pub fn add(&mut self, reference: &ArrayD<f32>, test: &ArrayD<f32>) {
        for (&a, &b) in reference.iter().zip(test.iter()) {
            self.signal += (a as f64).powi(2);
            self.noise += (a as f64 - b as f64).powi(2);
        }
        self.count += reference.len().min(test.len()) as u64;
    }

    /// Mean squared error per element (0 when nothing was added).
    pub fn mse(&self) -> f64 {
        self.noise / self.count.max(1) as f64
    }

    /// 10 log10(signal / noise) in dB; +inf when the noise is zero.
    pub fn db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// 10 log10(|y|^2 / |y - y_q|^2) in dB over all elements (f64 sums); +inf when identical.
pub fn sqnr_db(reference: &ArrayD<f32>, test: &ArrayD<f32>) -> f64 {
    let mut s = Sqnr::default();
    s.add(reference, test);
    s.db()
}

/// Indices of the k largest values of each row of a `[n, classes]` array (each sample's
/// values in standard order for outputs of other ranks).
pub fn top_k(y: &ArrayD<f32>, k: usize) -> Vec<Vec<usize>> {
    y.axis_iter(Axis(0))
        .map(|row| {
            let row: Vec<f32> = row.iter().copied().collect();
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(k);
            idx
        })
        .collect()
}

/// Fraction of rows whose top-1 class is the same in both.
pub fn top1_agreement(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let (ta, tb) = (top_k(a, 1), top_k(b, 1));
    ta.iter().zip(&tb).filter(|(x, y)| x[0] == y[0]).count() as f64 / ta.len().max(1) as f64
}

/// Fraction of rows where the reference's top-1 class is among the test's top 5.
pub fn top5_agreement(reference: &ArrayD<f32>, test: &ArrayD<f32>) -> f64 {
    let (ta, tb) = (top_k(reference, 1), top_k(test, 5));
    ta.iter()
        .zip(&tb)
        .filter(|(x, y)| y.contains(&x[0]))
        .count() as f64
        / ta.len().max(1) as f64
}

/// Fraction of rows whose top-1 class equals the label.
pub fn accuracy(y: &ArrayD<f32>, labels: &[usize]) -> f64 {
    let t = top_k(y, 1);
    t.iter().zip(labels).filter(|(p, &l)| p[0] == l).count() as f64 / t.len().max(1) as f64
}
