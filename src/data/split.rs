//! Splitting samples by image into a part that fits and a part held out, so that figures rest
//! on images nothing was fitted to. One sample is one image here (a folder gives one centre
//! crop per photo, an .npy or IDX file one image per row): samples of one photo are never
//! independent, so a split never separates them.

use ndarray::{ArrayD, Axis};

use crate::data::rng::Rng;
use crate::error::{Error, Result};

/// The seed of every split unless a caller picks another: the same data splits the same way
/// on every machine and in every command.
pub const SEED: u64 = 0x005e_ed0f_4e1d;

/// Sample indices (ascending) of the part that fits and of the part held out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub fit: Vec<usize>,
    pub held_out: Vec<usize>,
}

/// Splits `n` samples: `round(n * fraction)` of them, drawn by a seeded permutation, are held
/// out. `fraction` 0 holds out nothing. Refuses a split that leaves either part empty, saying
/// how many samples the fraction needs.
pub fn split(what: &str, n: usize, fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::invalid(
            "split",
            "--holdout",
            fraction,
            "the held-out fraction must be in [0, 1)",
        ));
    }
    if fraction == 0.0 {
        return Ok(Split {
            fit: (0..n).collect(),
            held_out: Vec::new(),
        });
    }
    let held = (n as f64 * fraction).round() as usize;
    if held == 0 || held >= n {
        // The smallest n whose rounded share is at least one image and leaves one to fit.
        let need = (1..)
            .find(|&m: &usize| {
                let h = (m as f64 * fraction).round() as usize;
                h >= 1 && h < m
            })
            .unwrap_or(2);
        return Err(Error::invalid(
            "split",
            "--holdout",
            fraction,
            format!(
                "{what} holds {n} images: holding out {fraction} of them needs at least {need} \
                 (give more images, an explicit --eval set, or --holdout 0 for in-sample figures)"
            ),
        ));
    }
    let (mut held_out, mut fit) = draw(n, held, seed);
    held_out.sort_unstable();
    fit.sort_unstable();
    Ok(Split { fit, held_out })
}

/// `k` of `0..n` drawn by a seeded permutation, and the rest, each in the permutation's order
/// (`k` is at most `n`).
pub fn draw(n: usize, k: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut drawn = Rng::new(seed).permutation(n);
    let rest = drawn.split_off(k.min(n));
    (drawn, rest)
}

/// The samples of `x` at `idx`, in that order.
pub fn take(x: &ArrayD<f32>, idx: &[usize]) -> ArrayD<f32> {
    x.select(Axis(0), idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let s = split("data", 100, 0.25, SEED).unwrap();
        assert_eq!(s.held_out.len(), 25);
        assert_eq!(s.fit.len(), 75);
        let mut all: Vec<usize> = s.fit.iter().chain(&s.held_out).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s, split("data", 100, 0.25, SEED).unwrap());
        assert_ne!(s, split("data", 100, 0.25, SEED + 1).unwrap());
        // Not simply the last quarter.
        assert_ne!(s.held_out, (75..100).collect::<Vec<_>>());
    }

    #[test]
    fn too_few_images_say_how_many_are_needed() {
        let e = split("the calibration data", 1, 0.25, SEED)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least 2"), "{e}");
        let e = split("data", 1, 0.1, SEED).unwrap_err().to_string();
        assert!(e.contains("needs at least 5"), "{e}");
        assert!(split("data", 2, 0.9, SEED).is_err());
        assert!(split("data", 4, 1.0, SEED).is_err());
        assert!(split("data", 4, -0.1, SEED).is_err());
        assert_eq!(
            split("data", 3, 0.0, SEED).unwrap().held_out,
            Vec::<usize>::new()
        );
    }
}
