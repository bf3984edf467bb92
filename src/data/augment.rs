//! Seeded augmentation of training images, applied to preprocessed `[C, H, W]` tensors:
//! horizontal flips and torchvision-style random-resized crops (a random area share and
//! aspect ratio, resized back to `H x W` bilinearly). Normalisation is affine per channel, so
//! cropping and resizing the normalised tensor equals doing it before normalising. Images
//! loaded from a folder were already resized and centre-cropped, so crops are drawn from that
//! view.

use ndarray::{Array3, ArrayD, ArrayView3, Axis, Ix3, IxDyn};

use crate::data::rng::Rng;
use crate::error::{Error, Result};

/// How each training image is varied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Crop a random share of the area in `[crop_scale, 1]` (with aspect ratio in [3/4, 4/3])
    /// and resize back; `None`: no crop.
    pub crop_scale: Option<f64>,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        crop_scale: None,
    };

    /// Parses `none` or a comma list of `flip`, `crop`; `crop` takes `crop_scale`.
    pub fn named(list: &str, crop_scale: f64) -> Result<Augment> {
        let mut a = Augment::NONE;
        for part in list.split(',').map(str::trim) {
            match part {
                "none" | "" => {}
                "flip" => a.flip = true,
                "crop" => {
                    if !(crop_scale > 0.0 && crop_scale <= 1.0) {
                        return Err(Error::invalid(
                            "augment",
                            "--crop-scale",
                            crop_scale,
                            "must be in (0, 1]",
                        ));
                    }
                    a.crop_scale = Some(crop_scale);
                }
                other => {
                    return Err(Error::invalid(
                        "augment",
                        "--augment",
                        other,
                        "expected none, or a comma list of flip, crop",
                    ))
                }
            }
        }
        Ok(a)
    }

    /// Whether it changes anything.
    pub fn is_none(&self) -> bool {
        *self == Augment::NONE
    }

    /// A batch `[N, C, H, W]` with each image varied (drawing from `rng` image by image);
    /// any other rank is returned as it is.
    pub fn batch(&self, x: ArrayD<f32>, rng: &mut Rng) -> ArrayD<f32> {
        if self.is_none() || x.ndim() != 4 {
            return x;
        }
        let mut out = x.clone();
        for (i, mut o) in out.outer_iter_mut().enumerate() {
            let img = x
                .index_axis(Axis(0), i)
                .into_dimensionality::<Ix3>()
                .expect("4-d batch");
            let shape = IxDyn(o.shape());
            let a = self.apply(img, rng).into_dyn();
            o.assign(&a.into_shape_with_order(shape).expect("same size"));
        }
        out
    }

    /// One varied copy of `x` (`[C, H, W]`), drawing from `rng`.
    pub fn apply(&self, x: ArrayView3<'_, f32>, rng: &mut Rng) -> Array3<f32> {
        let (_, h, w) = x.dim();
        let mut out = match self.crop_scale {
            Some(lo) => {
                let (top, left, ch, cw) = crop_box(h, w, lo, rng);
                resize_bilinear(x, top, left, ch, cw)
            }
            None => x.to_owned(),
        };
        if self.flip && rng.below(2) == 1 {
            out.invert_axis(ndarray::Axis(2));
            out = out.as_standard_layout().into_owned();
        }
        out
    }
}

/// A random crop `(top, left, height, width)` of an `h x w` image: area share uniform in
/// `[lo, 1]`, aspect ratio log-uniform in [3/4, 4/3]; after 10 draws that do not fit, the
/// whole image (torchvision's rule, without its centre fallback, since the image is square or
/// close to it here).
fn crop_box(h: usize, w: usize, lo: f64, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (r0, r1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let share = lo + (1.0 - lo) * rng.unit();
        let ratio = (r0 + (r1 - r0) * rng.unit()).exp();
        let cw = (area * share * ratio).sqrt().round() as usize;
        let ch = (area * share / ratio).sqrt().round() as usize;
        if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
            let top = rng.below((h - ch + 1) as u64) as usize;
            let left = rng.below((w - cw + 1) as u64) as usize;
            return (top, left, ch, cw);
        }
    }
    (0, 0, h, w)
}

/// The `ch x cw` window of `x` at (`top`, `left`) resized to `x`'s size, bilinear with
/// half-pixel centres (align_corners = false), edges clamped.
fn resize_bilinear(
    x: ArrayView3<'_, f32>,
    top: usize,
    left: usize,
    ch: usize,
    cw: usize,
) -> Array3<f32> {
    let (c, h, w) = x.dim();
    let taps = |out: usize, len: usize, start: usize| -> Vec<(usize, usize, f32)> {
        let scale = len as f64 / out as f64;
        (0..out)
            .map(|o| {
                let s = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (len - 1) as f64);
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(len - 1);
                (start + i0, start + i1, (s - i0 as f64) as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(h, ch, top), taps(w, cw, left));
    Array3::from_shape_fn((c, h, w), |(k, i, j)| {
        let (y0, y1, fy) = ys[i];
        let (x0, x1, fx) = xs[j];
        let a = x[[k, y0, x0]] * (1.0 - fx) + x[[k, y0, x1]] * fx;
        let b = x[[k, y1, x0]] * (1.0 - fx) + x[[k, y1, x1]] * fx;
        a * (1.0 - fy) + b * fy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> Array3<f32> {
        Array3::from_shape_fn((c, h, w), |(k, i, j)| (k * 100 + i * 10 + j) as f32)
    }

    #[test]
    fn the_whole_window_resizes_to_itself() {
        let x = ramp(2, 5, 7);
        assert_eq!(resize_bilinear(x.view(), 0, 0, 5, 7), x);
    }

    #[test]
    fn a_flip_mirrors_columns_and_crops_stay_inside_the_image() {
        let x = ramp(1, 4, 6);
        let flip = Augment {
            flip: true,
            crop_scale: None,
        };
        let mut rng = Rng::new(3);
        let mut flipped = 0;
        for _ in 0..20 {
            let y = flip.apply(x.view(), &mut rng);
            if y != x {
                flipped += 1;
                assert_eq!(y[[0, 2, 0]], x[[0, 2, 5]]);
            }
        }
        assert!(flipped > 0 && flipped < 20, "about half are flipped");
        for _ in 0..200 {
            let (t, l, h, w) = crop_box(32, 24, 0.3, &mut rng);
            assert!(t + h <= 32 && l + w <= 24 && h * w * 10 >= 32 * 24 * 2);
        }
        let crop = Augment::named("crop,flip", 0.5).unwrap();
        let y = crop.apply(ramp(3, 16, 16).view(), &mut rng);
        assert_eq!(y.dim(), (3, 16, 16));
        let batch = ndarray::Array4::from_shape_fn((6, 1, 3, 4), |(n, _, i, j)| {
            (n * 100 + i * 10 + j) as f32
        })
        .into_dyn();
        let varied = flip.batch(batch.clone(), &mut rng);
        for (x, y) in batch.outer_iter().zip(varied.outer_iter()) {
            let mut mirrored = x.to_owned();
            mirrored.invert_axis(ndarray::Axis(2));
            assert!(y == x || y == mirrored, "each image kept or mirrored");
        }
        let flat = batch
            .clone()
            .into_shape_with_order((6, 12))
            .unwrap()
            .into_dyn();
        assert_eq!(
            flip.batch(flat.clone(), &mut rng),
            flat,
            "not images: as it is"
        );
        assert!(Augment::named("rotate", 0.5).is_err());
        assert!(Augment::named("crop", 0.0).is_err());
    }
}
