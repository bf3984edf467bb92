//! quant.wgsl against the CPU reference: fake-quant, codes and backward, over random shapes,
//! axes, grids and bitwidths. Values compare bit for bit; gradient sums with a tolerance.

use crate::common::*;
use ndarray::{ArrayD, IxDyn};
use qforge::gpu::{Encoder, Gpu, GpuTensor};
use qforge::ops::quant::{self as ops, QuantGrads};
use qforge::quant::{Encoding, QuantKind};
use qforge::reference;
use rand::Rng;

const KINDS: [QuantKind; 4] = [
    QuantKind::Asymmetric,
    QuantKind::SignedSymmetric,
    QuantKind::UnsignedSymmetric,
    QuantKind::StrictSymmetric,
];

/// The kernels on an encoding's grid (an invalid encoding fails as its grid does).
fn fake_quant(
    enc: &mut Encoder,
    gpu: &Gpu,
    x: &GpuTensor,
    q: &Encoding,
) -> qforge::Result<GpuTensor> {
    ops::fake_quant(enc, gpu, x, &q.grid()?)
}

fn quantize_codes(
    enc: &mut Encoder,
    gpu: &Gpu,
    x: &GpuTensor,
    q: &Encoding,
) -> qforge::Result<GpuTensor> {
    ops::quantize_codes(enc, gpu, x, &q.grid()?)
}

fn fake_quant_backward(
    enc: &mut Encoder,
    gpu: &Gpu,
    x: &GpuTensor,
    g: &GpuTensor,
    q: &Encoding,
) -> qforge::Result<QuantGrads> {
    ops::fake_quant_backward(enc, gpu, x, g, &q.grid()?)
}

/// An encoding for `x` along a random axis (or per tensor) from its own ranges, shrunk a little
/// so that some values clamp.
fn encoding_for(
    rng: &mut crate::common::TestRng,
    x: &ArrayD<f32>,
    kind: QuantKind,
    bw: u32,
) -> Encoding {
    let axis = if rng.random_bool(0.5) {
        Some(rng.random_range(0..x.ndim()))
    } else {
        None
    };
    let (mm, _) = reference::calib::min_max(&x.view(), axis).unwrap();
    let shrink = rng.random_range(0.7..1.0f32);
    let mins: Vec<f32> = mm.iter().map(|r| r.0 * shrink).collect();
    let maxs: Vec<f32> = mm.iter().map(|r| r.1 * shrink).collect();
    Encoding::from_ranges(&mins, &maxs, bw, kind, axis).unwrap()
}

fn check_forward(gpu: &Gpu, x: &ArrayD<f32>, q: &Encoding, what: &str) {
    let t = gpu.upload(&x.view()).unwrap();
    let mut enc = gpu.encoder();
    let y = fake_quant(&mut enc, gpu, &t, q).unwrap();
    let c = quantize_codes(&mut enc, gpu, &t, q).unwrap();
    let out = gpu.submit_and_read(enc, &[&y, &c]).unwrap();
    let y: Vec<f32> = bytemuck::pod_collect_to_vec(&out[0]);
    let c: Vec<i32> = bytemuck::pod_collect_to_vec(&out[1]);
    let want_y = reference::quant::fake_quant(&x.view(), &q.grid().unwrap()).unwrap();
    let want_c = reference::quant::quantize_codes(&x.view(), &q.grid().unwrap()).unwrap();
    assert_bits_eq(
        &format!("fake_quant {what}"),
        &y,
        want_y.as_slice().unwrap(),
    );
    assert_eq!(c, want_c.into_raw_vec_and_offset().0, "codes {what}");
}

#[test]
fn fake_quant_and_codes_match_reference_on_random_shapes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(1);
    for case in 0..60 {
        let shape = shape(&mut rng, 200_000);
        let n: usize = shape.iter().product();
        let scale = 10f32.powf(rng.random_range(-3.0..3.0));
        let lo = if rng.random_bool(0.3) { 0.0 } else { -scale };
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, lo, scale)).unwrap();
        let kind = KINDS[case % 4];
        let bw = [2, 3, 4, 8, 8, 12, 16][rng.random_range(0..7)];
        let q = encoding_for(&mut rng, &x, kind, bw);
        check_forward(
            &gpu,
            &x,
            &q,
            &format!("case {case} {shape:?} {kind:?} bw={bw} axis={:?}", q.axis),
        );
    }
}

#[test]
fn every_bitwidth_and_grid_at_exact_ties() {
    let Some(gpu) = gpu() else { return };
    for kind in KINDS {
        for bw in 2..=16 {
            let q = Encoding::from_ranges(&[-1.0], &[1.5], bw, kind, None).unwrap();
            // Exact multiples of scale/2 hit every rounding tie.
            let s = q.scale[0];
            let x: Vec<f32> = (-300..300)
                .map(|i| i as f32 * 0.5 * s)
                .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30])
                .collect();
            let x = ArrayD::from_shape_vec(IxDyn(&[x.len()]), x).unwrap();
            check_forward(&gpu, &x, &q, &format!("{kind:?} bw={bw}"));
        }
    }
}

#[test]
fn nan_stays_nan_and_inf_saturates() {
    let Some(gpu) = gpu() else { return };
    let q = Encoding::from_ranges(&[-1.0], &[1.0], 8, QuantKind::Asymmetric, None).unwrap();
    let x = gpu
        .upload_slice(&[4], &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0])
        .unwrap();
    let mut enc = gpu.encoder();
    let y = fake_quant(&mut enc, &gpu, &x, &q).unwrap();
    gpu.submit(enc).unwrap();
    let y = gpu.download::<f32>(&y).unwrap();
    let (lo, hi) = q.grid_range(0);
    assert!(y[0].is_nan());
    assert_eq!((y[1], y[2], y[3]), (hi, lo, 0.0));
}

#[test]
fn backward_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(2);
    for case in 0..30 {
        let shape = shape(&mut rng, 100_000);
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -3.0, 3.0)).unwrap();
        let g = ArrayD::from_shape_vec(IxDyn(&shape), values(&mut rng, n, -1.0, 1.0)).unwrap();
        let q = encoding_for(&mut rng, &x, KINDS[case % 4], [4, 8, 16][case % 3]);
        let (want_gx, want_gs, want_go) =
            reference::quant::fake_quant_backward(&x.view(), &g.view(), &q.grid().unwrap())
                .unwrap();
        let (tx, tg) = (
            gpu.upload(&x.view()).unwrap(),
            gpu.upload(&g.view()).unwrap(),
        );
        let mut enc = gpu.encoder();
        let grads = fake_quant_backward(&mut enc, &gpu, &tx, &tg, &q).unwrap();
        let out = gpu
            .submit_and_read(enc, &[&grads.grad_x, &grads.grad_scale, &grads.grad_offset])
            .unwrap();
        let gx: Vec<f32> = bytemuck::pod_collect_to_vec(&out[0]);
        assert_bits_eq(
            &format!("grad_x case {case}"),
            &gx,
            want_gx.as_slice().unwrap(),
        );
        let to64 = |b: &[u8]| {
            bytemuck::pod_collect_to_vec::<u8, f32>(b)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>()
        };
        assert_close(
            &format!("grad_scale case {case}"),
            &to64(&out[1]),
            &want_gs,
            Tol::SUM,
        );
        assert_close(
            &format!("grad_offset case {case}"),
            &to64(&out[2]),
            &want_go,
            Tol::SUM,
        );
    }
}

#[test]
fn past_65535_workgroups_and_chunked_bindings() {
    let Some(mut gpu) = own_gpu() else { return };
    let mut rng = rng(3);
    // 2-D dispatch: more than 65,535 workgroups of 256 threads in one chunk.
    let n = 65_535 * 256 + 4_097;
    let x = ArrayD::from_shape_vec(IxDyn(&[n]), values(&mut rng, n, -5.0, 5.0)).unwrap();
    let q = Encoding::from_ranges(&[-4.0], &[4.0], 8, QuantKind::Asymmetric, None).unwrap();
    check_forward(&gpu, &x, &q, "2-D grid");
    // Chunked bindings: a 64 KiB binding limit splits these tensors into many pieces.
    gpu.set_max_binding(64 << 10);
    gpu.set_max_groups(3);
    for (i, shape) in [[3usize, 50, 401], [2, 4099, 9], [1, 1, 70_001]]
        .iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(shape), values(&mut rng, n, -2.0, 3.0)).unwrap();
        for axis in [None, Some(0), Some(1), Some(2)] {
            let q = match axis {
                None => {
                    Encoding::from_ranges(&[-1.5], &[2.0], 8, QuantKind::Asymmetric, None).unwrap()
                }
                Some(a) => {
                    let c = shape[a];
                    Encoding::from_ranges(
                        &vec![-1.0; c],
                        &(0..c).map(|k| 0.5 + k as f32 * 0.01).collect::<Vec<_>>(),
                        6,
                        QuantKind::SignedSymmetric,
                        axis,
                    )
                    .unwrap()
                }
            };
            check_forward(&gpu, &x, &q, &format!("chunked shape {i} axis {axis:?}"));
        }
    }
}

#[test]
fn tensor_larger_than_the_storage_binding_limit() {
    let Some(gpu) = gpu() else { return };
    let limit = gpu.limits().max_binding;
    let n = (limit / 4 + limit / 16 + 12_345) as usize;
    let mut rng = rng(4);
    let x = ArrayD::from_shape_vec(
        IxDyn(&[n]),
        (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect(),
    )
    .unwrap();
    let q = Encoding::from_ranges(&[-2.0], &[2.5], 8, QuantKind::Asymmetric, None).unwrap();
    check_forward(&gpu, &x, &q, &format!("{} MiB tensor", (n * 4) >> 20));
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let x = gpu.upload_slice(&[2, 3], &[0.0f32; 6]).unwrap();
    let mut enc = gpu.encoder();
    let per_channel =
        Encoding::from_ranges(&[-1.0; 4], &[1.0; 4], 8, QuantKind::Asymmetric, Some(1)).unwrap();
    let err = fake_quant(&mut enc, &gpu, &x, &per_channel).unwrap_err();
    assert!(matches!(err, qforge::Error::ShapeMismatch { .. }), "{err}");
    let bad_axis = Encoding {
        axis: Some(5),
        ..per_channel.clone()
    };
    assert!(fake_quant(&mut enc, &gpu, &x, &bad_axis).is_err());
    let zero_scale = Encoding {
        bitwidth: 8,
        kind: QuantKind::Asymmetric,
        axis: None,
        scale: vec![0.0],
        offset: vec![0.0],
    };
    assert!(matches!(
        fake_quant(&mut enc, &gpu, &x, &zero_scale).unwrap_err(),
        qforge::Error::InvalidArgument { .. }
    ));
    let neg_scale = Encoding {
        scale: vec![-1.0],
        ..zero_scale.clone()
    };
    assert!(fake_quant(&mut enc, &gpu, &x, &neg_scale).is_err());
    let bw = Encoding {
        bitwidth: 17,
        scale: vec![1.0],
        ..zero_scale.clone()
    };
    assert!(fake_quant(&mut enc, &gpu, &x, &bw).is_err());
    let ints = gpu.upload_slice(&[2], &[1i32, 2]).unwrap();
    let ok = Encoding {
        scale: vec![0.1],
        ..zero_scale.clone()
    };
    assert!(matches!(
        fake_quant(&mut enc, &gpu, &ints, &ok).unwrap_err(),
        qforge::Error::DTypeMismatch { .. }
    ));
    let g = gpu.upload_slice(&[3, 2], &[0.0f32; 6]).unwrap();
    assert!(matches!(
        fake_quant_backward(&mut enc, &gpu, &x, &g, &ok).unwrap_err(),
        qforge::Error::ShapeMismatch { .. }
    ));
    // An empty tensor fake-quantizes to an empty tensor; reductions over it are errors.
    let empty = gpu.upload_slice::<f32>(&[0, 3], &[]).unwrap();
    assert_eq!(
        fake_quant(&mut enc, &gpu, &empty, &ok).unwrap().shape(),
        &[0, 3]
    );
    assert!(matches!(
        fake_quant_backward(&mut enc, &gpu, &empty, &empty, &ok).unwrap_err(),
        qforge::Error::EmptyTensor { .. }
    ));
}
