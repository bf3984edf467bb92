//! gemm.wgsl against the f64 CPU reference over random shapes, transposes and broadcasts.

use crate::common::*;
use ndarray::{Array3, ArrayD};
use qforge::gpu::Gpu;
use qforge::ops::epilogue::Epilogue;
use qforge::ops::gemm::{matmul, matmul_sum_into, matmul_with, Bias, GemmKernel};
use qforge::reference;
use rand::Rng;

fn random3(rng: &mut crate::common::TestRng, shape: (usize, usize, usize)) -> Array3<f32> {
    Array3::from_shape_fn(shape, |_| rng.random_range(-1.0f32..1.0))
}

fn check(gpu: &Gpu, a: &Array3<f32>, b: &Array3<f32>, ta: bool, tb: bool, what: &str) {
    let want = reference::gemm::matmul(&a.view(), &b.view(), ta, tb);
    let (a_t, b_t) = (
        gpu.upload(&a.view().into_dyn()).unwrap(),
        gpu.upload(&b.view().into_dyn()).unwrap(),
    );
    let mut enc = gpu.encoder();
    let c = matmul(&mut enc, gpu, &a_t, &b_t, ta, tb).unwrap();
    gpu.submit(enc).unwrap();
    let got: ArrayD<f32> = gpu.download(&c).unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}");
    // Every kernel gives the bits of the one the adapter picks (where its grid fits).
    for kernel in GemmKernel::available(gpu) {
        let mut enc = gpu.encoder();
        let other = gpu.empty(c.shape(), qforge::error::DType::F32).unwrap();
        if matmul_with(
            &mut enc,
            gpu,
            kernel,
            &a_t,
            &b_t,
            ta,
            tb,
            1.0,
            Bias::None,
            &Epilogue::NONE,
            &other,
        )
        .is_err()
        {
            assert!(gpu.limits().max_groups < 100, "{what}: {kernel:?} refused");
            continue;
        }
        gpu.submit(enc).unwrap();
        let other: ArrayD<f32> = gpu.download(&other).unwrap();
        let same = other
            .iter()
            .zip(&got)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: {kernel:?} differs from the picked kernel");
    }
    let k = if ta { a.shape()[1] } else { a.shape()[2] } as f64;
    let tol = Tol {
        abs: Tol::GEMM.abs * k.sqrt(),
        rel: Tol::GEMM.rel,
    };
    assert_close(
        what,
        &got.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        tol,
    );
}

/// [`check`] on each `(m, n, k)` of `shapes` with `batch` items of seeded operands, transposed
/// as `transposes` says for the shape's index.
fn check_shapes(
    gpu: &Gpu,
    seed: u64,
    batch: usize,
    shapes: &[(usize, usize, usize)],
    transposes: impl Fn(usize) -> (bool, bool),
) {
    let mut rng = rng(seed);
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let (ta, tb) = transposes(i);
        let a = random3(&mut rng, if ta { (batch, k, m) } else { (batch, m, k) });
        let b = random3(&mut rng, if tb { (batch, n, k) } else { (batch, k, n) });
        let what = format!("{m}x{k} * {k}x{n} ta={ta} tb={tb}");
        check(gpu, &a, &b, ta, tb, &what);
    }
}

#[test]
fn matmul_matches_reference_with_transposes_and_broadcast() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(20);
    for case in 0..40 {
        let (m, n, k) = (
            rng.random_range(1..150),
            rng.random_range(1..150),
            rng.random_range(1..200),
        );
        let batch = [1, 1, 2, 5][case % 4];
        let (ta, tb) = (case % 2 == 1, (case / 2) % 2 == 1);
        let ba = if case % 7 == 3 { 1 } else { batch };
        let bb = if case % 5 == 2 { 1 } else { batch };
        let a = random3(&mut rng, if ta { (ba, k, m) } else { (ba, m, k) });
        let b = random3(&mut rng, if tb { (bb, n, k) } else { (bb, k, n) });
        check(
            &gpu,
            &a,
            &b,
            ta,
            tb,
            &format!("case {case}: batch {ba}/{bb} {m}x{k} * {k}x{n} ta={ta} tb={tb}"),
        );
    }
}

/// Every kernel at the edges of its blocks (1 x 1, sizes one past a block, N a multiple of 4
/// for the vector loads, K shorter and longer than the 8 lanes), with each transpose. Small
/// enough for a quick run on any backend.
#[test]
fn every_kernel_at_block_edges() {
    let Some(gpu) = gpu() else { return };
    check_shapes(
        &gpu,
        22,
        2,
        &[(1, 1, 1), (9, 33, 17), (8, 12, 9), (17, 4, 40), (3, 64, 7)],
        |i| (i % 2 == 1, i % 3 == 1),
    );
}

/// The subgroup kernel stacks 1 to 4 blocks of 8 rows by M (8, 13, 33 and 100 rows take 1, 2,
/// 3 and 4): each height with rows past M, K a multiple of the 8 lanes and not, A transposed or
/// not, in its vector form (B plain, N a multiple of 4) and its general one.
#[test]
fn every_row_block_height() {
    let Some(gpu) = gpu() else { return };
    check_shapes(
        &gpu,
        23,
        3,
        &[
            (8, 12, 9),
            (13, 4, 16),
            (33, 20, 27),
            (100, 8, 40),
            (24, 16, 5),
            (8, 7, 16),
            (13, 9, 21),
            (33, 49, 8),
            (100, 12, 19),
        ],
        |i| (i % 2 == 1, i % 3 == 2),
    );
}

/// The tiled kernel's tiles by shape: rows and columns of 16 (5, 16 rows), 32 (24, 196) and
/// 64 (49, 100, 128), each with a ragged edge and K not a multiple of the 16-deep tile, in
/// every transpose; the same bits as the other kernels (the 128-wide tiles of `TiledWide`
/// among them, past one tile in both directions in the last two shapes).
#[test]
fn every_tile_shape_of_the_tiled_kernel() {
    let Some(gpu) = gpu() else { return };
    check_shapes(
        &gpu,
        24,
        2,
        &[
            (5, 49, 17),
            (24, 196, 9),
            (128, 13, 33),
            (100, 24, 16),
            (16, 16, 20),
            (196, 5, 7),
            (200, 131, 21),
            (131, 260, 3),
        ],
        |i| (i % 2 == 1, i / 2 % 2 == 1),
    );
}

#[test]
fn two_d_operands_give_a_two_d_result() {
    let Some(gpu) = gpu() else { return };
    let a = gpu
        .upload_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    let b = gpu.upload_slice(&[3, 1], &[1.0f32, 0.0, -1.0]).unwrap();
    let mut enc = gpu.encoder();
    let c = matmul(&mut enc, &gpu, &a, &b, false, false).unwrap();
    gpu.submit(enc).unwrap();
    assert_eq!(
        gpu.download::<f32>(&c).unwrap().into_raw_vec_and_offset().0,
        vec![-2.0, -2.0]
    );
}

#[test]
fn batches_split_across_bindings_and_grid_limits() {
    let Some(mut gpu) = own_gpu() else { return };
    gpu.set_max_binding(32 << 10);
    gpu.set_max_groups(3);
    let mut rng = rng(21);
    for (ta, tb) in [(false, false), (true, true)] {
        let (batch, m, n, k) = (11, 37, 29, 45);
        let a = random3(&mut rng, if ta { (batch, k, m) } else { (batch, m, k) });
        let b = random3(&mut rng, if tb { (1, n, k) } else { (1, k, n) });
        check(
            &gpu,
            &a,
            &b,
            ta,
            tb,
            &format!("split batches ta={ta} tb={tb}"),
        );
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let mut enc = gpu.encoder();
    let a = gpu.upload_slice(&[2, 3], &[0.0f32; 6]).unwrap();
    let b = gpu.upload_slice(&[2, 3], &[0.0f32; 6]).unwrap();
    assert!(matches!(
        matmul(&mut enc, &gpu, &a, &b, false, false).unwrap_err(),
        qforge::Error::ShapeMismatch { .. }
    ));
    assert!(matmul(&mut enc, &gpu, &a, &b, false, true).is_ok());
    let v = gpu.upload_slice(&[6], &[0.0f32; 6]).unwrap();
    assert!(matmul(&mut enc, &gpu, &v, &b, false, false).is_err());
    let a3 = gpu.upload_slice(&[2, 2, 3], &[0.0f32; 12]).unwrap();
    let b3 = gpu.upload_slice(&[3, 3, 2], &[0.0f32; 18]).unwrap();
    assert!(
        matmul(&mut enc, &gpu, &a3, &b3, false, false).is_err(),
        "batch 2 vs 3"
    );
}

/// Reductions far longer than one invocation's loop budget on software adapters (a VGG-style
/// classifier has K = 25,088; llvmpipe ends a loop nest after ~32,500 iterations).
#[test]
fn long_reductions_are_complete() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng(21);
    for k in [5_000, 40_000, 100_000] {
        let a = random3(&mut rng, (1, 3, k));
        let b = random3(&mut rng, (1, k, 5));
        check(&gpu, &a, &b, false, false, &format!("3x{k} * {k}x5"));
        let bt = random3(&mut rng, (1, 5, k));
        check(&gpu, &a, &bt, false, true, &format!("3x{k} * ({k}x5)^T"));
    }
}

/// `matmul_sum_into`: every kernel adds the batch's products into C (which it accumulates
/// into) as the reference's sum over the batch, with items that take several dispatches (items
/// times K past one invocation's loop budget, and K past it alone), transposes, a shared
/// operand, and a batch split across bindings.
#[test]
fn summed_batches_match_the_reference_sum() {
    let Some(mut gpu) = own_gpu() else { return };
    let mut rng = rng(24);
    let cases = [
        (5, 9, 13, 17, false, true, false),
        (3, 33, 20, 27, true, false, false),
        (40, 24, 16, 784, false, true, false),
        (2, 8, 12, 20_000, false, false, false),
        (7, 13, 9, 21, false, false, true),
        (11, 37, 29, 45, true, true, false),
    ];
    for (i, &(batch, m, n, k, ta, tb, shared_b)) in cases.iter().enumerate() {
        if i == cases.len() - 1 {
            gpu.set_max_binding(32 << 10);
        }
        let a = random3(&mut rng, if ta { (batch, k, m) } else { (batch, m, k) });
        let bb = if shared_b { 1 } else { batch };
        let b = random3(&mut rng, if tb { (bb, n, k) } else { (bb, k, n) });
        let per_item = reference::gemm::matmul(&a.view(), &b.view(), ta, tb);
        let c0 = random3(&mut rng, (1, m, n));
        let sum = per_item.mapv(|v| v as f64).sum_axis(ndarray::Axis(0));
        let want = (sum + c0.index_axis(ndarray::Axis(0), 0).mapv(|v| v as f64))
            .into_raw_vec_and_offset()
            .0;
        let (ta_t, tb_t) = (
            gpu.upload(&a.view().into_dyn()).unwrap(),
            gpu.upload(&b.view().into_dyn()).unwrap(),
        );
        let what = format!("sum of {batch} x {m}x{k} * {k}x{n} ta={ta} tb={tb}");
        let tol = Tol {
            abs: Tol::GEMM.abs * ((batch * k) as f64).sqrt(),
            rel: Tol::GEMM.rel,
        };
        for kernel in GemmKernel::available(&gpu) {
            let c = gpu.upload(&c0.view().into_dyn()).unwrap();
            let c = c.view(&[m, n], qforge::error::DType::F32).unwrap();
            let mut enc = gpu.encoder();
            matmul_sum_into(&mut enc, &gpu, kernel, &ta_t, &tb_t, ta, tb, 1.0, &c).unwrap();
            gpu.submit(enc).unwrap();
            let got: ArrayD<f32> = gpu.download(&c).unwrap();
            assert_close(
                &format!("{what} {kernel:?}"),
                &got.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                &want,
                tol,
            );
        }
    }
}
