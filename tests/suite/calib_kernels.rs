//! calib.wgsl against the CPU reference: min/max and histograms exact (identical counts),
//! moments and sums within tolerance, AIMET's running histogram exact.

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use qforge::gpu::{Gpu, GpuTensor};
use qforge::graph::attrs::{BinGrid, Outside};
use qforge::ops::calib::{self, histogram, min_max, moments, RunningHistogram};
use qforge::reference;
use rand::Rng;

fn random_axis(rng: &mut crate::common::TestRng, ndim: usize) -> Option<usize> {
    if rng.random_bool(0.4) {
        None
    } else {
        Some(rng.random_range(0..ndim))
    }
}

fn gpu_min_max(gpu: &Gpu, t: &GpuTensor, axis: Option<usize>) -> (Vec<[f32; 2]>, Vec<u32>) {
    let mut enc = gpu.encoder();
    let mm = min_max(&mut enc, gpu, t, axis).unwrap();
    let out = gpu
        .submit_and_read(enc, &[&mm.range, &mm.non_finite])
        .unwrap();
    (
        bytemuck::pod_collect_to_vec(&out[0]),
        bytemuck::pod_collect_to_vec(&out[1]),
    )
}

fn check_min_max(gpu: &Gpu, x: &ArrayD<f32>, axis: Option<usize>, what: &str) {
    let t = gpu.upload(&x.view()).unwrap();
    let (got, bad) = gpu_min_max(gpu, &t, axis);
    let (want, want_bad) = reference::calib::min_max(&x.view(), axis).unwrap();
    let want: Vec<[f32; 2]> = want.iter().map(|&(a, b)| [a, b]).collect();
    assert_eq!(got, want, "min/max {what}");
    assert_eq!(bad, want_bad, "non-finite counts {what}");
}

fn check_histogram(gpu: &Gpu, x: &ArrayD<f32>, axis: Option<usize>, bins: u32, what: &str) {
    let (mm, _) = reference::calib::min_max(&x.view(), axis).unwrap();
    // Ranges a little inside the data so the edge bins also collect outside values.
    let ranges: Vec<(f32, f32)> = mm
        .iter()
        .map(|&(lo, hi)| {
            if lo < hi {
                (lo * 0.9, hi * 0.95)
            } else {
                (lo - 1.0, hi + 1.0)
            }
        })
        .map(|(a, b)| if a < b { (a, b) } else { (b - 1.0, a + 1.0) })
        .collect();
    let t = gpu.upload(&x.view()).unwrap();
    let over: Vec<BinGrid> = ranges
        .iter()
        .map(|&(lo, hi)| BinGrid::over(lo, hi, bins))
        .collect();
    // Zero-aligned bins of the same width, starting at the bin holding lo.
    let aligned: Vec<BinGrid> = ranges
        .iter()
        .map(|&(lo, hi)| {
            let step = (hi as f64 - lo as f64) / bins as f64;
            BinGrid::zero_aligned(step, (lo as f64 / step).floor() as i64)
        })
        .collect();
    for (grids, outside) in [
        (&over, Outside::Edge),
        (&over, Outside::Drop),
        (&aligned, Outside::Drop),
    ] {
        let mut enc = gpu.encoder();
        let h = histogram(&mut enc, gpu, &t, axis, grids, bins, outside, None).unwrap();
        gpu.submit(enc).unwrap();
        let got = gpu.download::<u32>(&h).unwrap();
        let want = reference::calib::histogram(&x.view(), axis, grids, bins, outside).unwrap();
        assert_eq!(got.shape(), &[want.len(), bins as usize]);
        for (c, row) in want.iter().enumerate() {
            assert_eq!(
                got.row_view(c),
                row.as_slice(),
                "histogram {what} {outside:?} channel {c}"
            );
        }
    }
}

trait RowView {
    fn row_view(&self, c: usize) -> Vec<u32>;
}
impl RowView for ArrayD<u32> {
    fn row_view(&self, c: usize) -> Vec<u32> {
        self.index_axis(ndarray::Axis(0), c)
            .iter()
            .copied()
            .collect()
    }
}

#[test]
fn min_max_is_exact_on_random_shapes_and_axes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(10);
    for case in 0..60 {
        let shape = shape(&mut rng, 300_000);
        let n: usize = shape.iter().product();
        let mut data = values(&mut rng, n, -7.0, 3.0);
        if case % 5 == 0 {
            for _ in 0..3 {
                let i = rng.random_range(0..n);
                data[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.random_range(0..3)];
            }
        }
        let x = ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap();
        let axis = random_axis(&mut rng, shape.len());
        check_min_max(
            &gpu,
            &x,
            axis,
            &format!("case {case} {shape:?} axis {axis:?}"),
        );
    }
}

#[test]
fn nan_does_not_poison_min_max() {
    let Some(gpu) = gpu() else { return };
    let t = gpu
        .upload_slice(
            &[2, 3],
            &[f32::NAN, 1.0, -2.0, f32::NAN, f32::NAN, f32::NAN],
        )
        .unwrap();
    let (per_tensor, bad) = gpu_min_max(&gpu, &t, None);
    assert_eq!((per_tensor, bad), (vec![[-2.0, 1.0]], vec![4]));
    let (rows, bad) = gpu_min_max(&gpu, &t, Some(0));
    assert_eq!(rows[0], [-2.0, 1.0]);
    assert_eq!(
        (rows[1][0], rows[1][1]),
        (f32::INFINITY, f32::NEG_INFINITY),
        "a channel with no finite value"
    );
    assert_eq!(bad, vec![1, 3]);
}

#[test]
fn histograms_are_exact_per_tensor_and_per_channel() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(11);
    for case in 0..40 {
        let shape = shape(&mut rng, 200_000);
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -2.0, 9.0)).unwrap();
        let axis = random_axis(&mut rng, shape.len());
        let bins = [1, 7, 128, 2048, 2048, 4096, 5000][case % 7];
        check_histogram(
            &gpu,
            &x,
            axis,
            bins,
            &format!("case {case} {shape:?} axis {axis:?} bins {bins}"),
        );
    }
}

#[test]
fn moments_and_sums_match_f64_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(12);
    for case in 0..30 {
        let shape = shape(&mut rng, 200_000);
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -1.0, 4.0)).unwrap();
        let axis = random_axis(&mut rng, shape.len());
        let t = gpu.upload(&x.view()).unwrap();
        let mut enc = gpu.encoder();
        let m = moments(&mut enc, &gpu, &t, axis).unwrap();
        let s = calib::channel_sum(&mut enc, &gpu, &t, axis).unwrap();
        let out = gpu.submit_and_read(enc, &[&m, &s]).unwrap();
        let m: Vec<[f32; 4]> = bytemuck::pod_collect_to_vec(&out[0]);
        let s: Vec<f32> = bytemuck::pod_collect_to_vec(&out[1]);
        let want = reference::calib::moments(&x.view(), axis).unwrap();
        let want_sum = reference::calib::channel_sum(&x.view(), axis).unwrap();
        let what = format!("case {case} {shape:?} axis {axis:?}");
        assert_eq!(
            m.iter().map(|r| r[0] as u64).collect::<Vec<_>>(),
            want.iter().map(|r| r.0).collect::<Vec<_>>(),
            "counts {what}"
        );
        assert_close(
            &format!("mean {what}"),
            &m.iter().map(|r| r[1] as f64).collect::<Vec<_>>(),
            &want.iter().map(|r| r.1).collect::<Vec<_>>(),
            Tol::STATS,
        );
        let var: Vec<f64> = m
            .iter()
            .map(|r| {
                if r[0] > 0.0 {
                    r[2] as f64 / r[0] as f64
                } else {
                    0.0
                }
            })
            .collect();
        assert_close(
            &format!("variance {what}"),
            &var,
            &want.iter().map(|r| r.2).collect::<Vec<_>>(),
            Tol::STATS,
        );
        assert_close(
            &format!("sum {what}"),
            &s.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &want_sum,
            Tol::SUM,
        );
    }
}

#[test]
fn running_histogram_rebins_exactly_like_the_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(13);
    for case in 0..12 {
        let shape = vec![
            rng.random_range(1..5),
            rng.random_range(1..9),
            rng.random_range(1..200),
        ];
        let axis = random_axis(&mut rng, 3);
        let n: usize = shape.iter().product();
        // Ranges that grow, shrink and stay: every path of the observer.
        let batches: Vec<ArrayD<f32>> = (0..5)
            .map(|b| {
                let w = [1.0, 3.0, 2.0, 3.0, 10.0][b] * (1.0 + case as f32);
                ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -w * 0.5, w)).unwrap()
            })
            .collect();
        let bins = [2048, 16, 100][case % 3];
        let mut h = RunningHistogram::new(bins, axis).unwrap();
        for b in &batches {
            update(&mut h, &gpu, &gpu.upload(&b.view()).unwrap()).unwrap();
        }
        let views: Vec<_> = batches.iter().map(|b| b.view()).collect();
        let (ranges, want) = reference::calib::running_histogram(&views, axis, bins).unwrap();
        assert_eq!(h.ranges(), ranges.as_slice(), "ranges case {case}");
        let got = gpu.download::<u32>(h.counts().unwrap()).unwrap();
        for (c, row) in want.iter().enumerate() {
            assert_eq!(got.row_view(c), *row, "case {case} channel {c}");
            let total: u64 = row.iter().map(|&v| v as u64).sum();
            assert_eq!(
                total,
                (n / want.len() * batches.len()) as u64,
                "rebinning keeps every count"
            );
        }
    }
}

#[test]
fn chunked_bindings_and_many_channels() {
    let Some(mut gpu) = own_gpu() else { return };
    let mut rng = rng(14);
    gpu.set_max_binding(16 << 10);
    gpu.set_max_groups(100);
    for shape in [[3usize, 70, 61], [1, 3, 9000], [2, 5000, 1], [1, 1, 40_000]] {
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -3.0, 5.0)).unwrap();
        for axis in [None, Some(0), Some(1), Some(2)] {
            check_min_max(&gpu, &x, axis, &format!("chunked {shape:?} axis {axis:?}"));
            check_histogram(
                &gpu,
                &x,
                axis,
                64,
                &format!("chunked {shape:?} axis {axis:?}"),
            );
        }
    }
}

#[test]
fn more_than_65535_channels() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(15);
    let shape = [70_001usize, 3];
    let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, 70_001 * 3, -1.0, 1.0)).unwrap();
    check_min_max(&gpu, &x, Some(0), "70,001 channels");
}

#[test]
fn min_max_past_the_binding_limit_and_65535_workgroups() {
    let Some(gpu) = gpu() else { return };
    let limit = gpu.limits().max_binding;
    let n = (limit / 4 + 999_999) as usize;
    let mut rng = rng(16);
    let mut data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    data[n - 3] = 7.5;
    data[17] = -9.25;
    let x = ArrayD::from_shape_vec(IxDyn(&[4, n / 4]), data[..n / 4 * 4].to_vec()).unwrap();
    check_min_max(&gpu, &x, None, "big per-tensor");
    check_min_max(&gpu, &x, Some(0), "big per-channel");
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let mut enc = gpu.encoder();
    let empty = gpu.upload_slice::<f32>(&[0], &[]).unwrap();
    assert!(matches!(
        min_max(&mut enc, &gpu, &empty, None).unwrap_err(),
        qforge::Error::EmptyTensor { .. }
    ));
    let x = gpu.upload_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    assert!(min_max(&mut enc, &gpu, &x, Some(2)).is_err());
    let grid = |lo, hi| [BinGrid::over(lo, hi, 10)];
    assert!(
        histogram(
            &mut enc,
            &gpu,
            &x,
            None,
            &grid(1.0, 1.0),
            10,
            Outside::Edge,
            None
        )
        .is_err(),
        "empty range"
    );
    assert!(
        histogram(
            &mut enc,
            &gpu,
            &x,
            None,
            &grid(0.0, f32::NAN),
            10,
            Outside::Edge,
            None
        )
        .is_err(),
        "NaN range"
    );
    assert!(
        histogram(
            &mut enc,
            &gpu,
            &x,
            None,
            &[BinGrid {
                shift: 0.5,
                ..BinGrid::zero_aligned(0.1, 0)
            }],
            10,
            Outside::Drop,
            None
        )
        .is_err(),
        "fractional shift"
    );
    assert!(
        histogram(
            &mut enc,
            &gpu,
            &x,
            Some(0),
            &grid(0.0, 1.0),
            10,
            Outside::Edge,
            None
        )
        .is_err(),
        "one grid for two channels"
    );
    assert!(
        histogram(
            &mut enc,
            &gpu,
            &x,
            None,
            &grid(0.0, 1.0),
            0,
            Outside::Edge,
            None
        )
        .is_err(),
        "zero bins"
    );
    let all_nan = gpu.upload_slice(&[3], &[f32::NAN; 3]).unwrap();
    let mut h = RunningHistogram::new(2048, None).unwrap();
    assert!(matches!(
        update(&mut h, &gpu, &all_nan).unwrap_err(),
        qforge::Error::NonFinite { count: 3, .. }
    ));
}

/// One batch into a running histogram: its finite range read back, then the histogram update
/// (what calibration does per batch, with the readback in between).
fn update(h: &mut RunningHistogram, gpu: &Gpu, x: &GpuTensor) -> qforge::Result<()> {
    let mut enc = gpu.encoder();
    let mm = min_max(&mut enc, gpu, x, h.axis())?;
    let bytes = gpu.submit_and_read(enc, &[&mm.range, &mm.non_finite])?;
    let range: Vec<(f32, f32)> = bytemuck::cast_slice::<u8, [f32; 2]>(&bytes[0])
        .iter()
        .map(|r| (r[0], r[1]))
        .collect();
    let bad: &[u32] = bytemuck::cast_slice(&bytes[1]);
    let mut enc = gpu.encoder();
    h.update_known(&mut enc, gpu, x, &range, bad)?;
    gpu.submit(enc)
}
