//! Shared test helpers: the GPU (or a loud skip), seeded data, tolerance presets.
#![allow(dead_code)]

pub mod build;
pub mod ops;

use std::sync::Arc;

use qforge::gpu::Gpu;
use rand::{Rng, SeedableRng};

/// The tests' seeded generator. Xoshiro256++ (rand's `small_rng`): with only this feature the
/// tests' dependencies enable no feature of a crate the library shares, so `cargo test
/// --release` and the Python package's build compile the library once between them.
pub type TestRng = rand::rngs::SmallRng;

/// On wgpu's GL backend one context serves every thread and wgpu panics when a thread waits
/// more than 6 s for it (llvmpipe runs one long dispatch in that time): GL tests take turns.
static GL_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// This test thread's turn on GL, held until the thread (the test) ends.
    static TURN: std::cell::RefCell<Option<std::sync::MutexGuard<'static, ()>>> = const { std::cell::RefCell::new(None) };
}

/// The shared GPU, or `None` with a loud message. With `QFORGE_REQUIRE_GPU=1` a missing
/// adapter fails the test instead. On GL the calling test holds the GPU until it ends.
/// `RUST_LOG` is honoured (`RUST_LOG=qforge::gpu::kernels=debug` times each pipeline's
/// creation; `--nocapture` shows it).
pub fn gpu() -> Option<Arc<Gpu>> {
    let _ = env_logger::builder().is_test(true).try_init();
    match Gpu::shared() {
        Ok(g) => {
            if g.adapter().backend == wgpu::Backend::Gl {
                TURN.with(|t| {
                    if t.borrow().is_none() {
                        *t.borrow_mut() = Some(GL_TURN.lock().unwrap_or_else(|p| p.into_inner()));
                    }
                });
            }
            Some(g)
        }
        Err(e) => {
            if std::env::var("QFORGE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("QFORGE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("SKIPPED (no GPU adapter): {e}");
            None
        }
    }
}

/// A fresh (unshared) GPU context, so a test can lower its limits.
pub fn own_gpu() -> Option<Gpu> {
    gpu()?;
    Some(Gpu::new().expect("a second device on the same adapter"))
}

/// Seeded generator for one test.
pub fn rng(seed: u64) -> TestRng {
    TestRng::seed_from_u64(seed)
}

/// `n` values spread over [lo, hi), with a sprinkling of exact zeros and exact grid ties.
pub fn values(rng: &mut TestRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..20) {
            0 => 0.0,
            1 => lo,
            2 => hi,
            _ => rng.random_range(lo..hi),
        })
        .collect()
}

/// A random shape of 1..=4 dims with odd sizes and size-1 dims, at most `max_elems` elements.
pub fn shape(rng: &mut TestRng, max_elems: usize) -> Vec<usize> {
    loop {
        let dims = rng.random_range(1..=4);
        let s: Vec<usize> = (0..dims)
            .map(|_| match rng.random_range(0..4) {
                0 => 1,
                1 => rng.random_range(2..8),
                2 => rng.random_range(8..40),
                _ => rng.random_range(40..300),
            })
            .collect();
        if s.iter().product::<usize>() <= max_elems {
            return s;
        }
    }
}

/// Absolute + relative tolerance.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    /// Sums of up to ~1e6 f32 terms in a different order than the f64 reference.
    pub const SUM: Tol = Tol {
        abs: 1e-3,
        rel: 1e-4,
    };
    /// f32 dot products of length up to a few thousand.
    pub const GEMM: Tol = Tol {
        abs: 1e-4,
        rel: 1e-4,
    };
    /// Single-pass f32 statistics (Welford / Chan) against two-pass f64.
    pub const STATS: Tol = Tol {
        abs: 1e-5,
        rel: 1e-4,
    };
}

/// Asserts |a - b| <= abs + rel * |b| element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok =
            (g - w).abs() <= tol.abs + tol.rel * w.abs() || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{what}[{i}]: got {g}, want {w} (tol {tol:?})");
    }
}

/// Bitwise equality of f32 slices (NaN equals NaN).
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g:e}, want {w:e}"
        );
    }
}

/// A path inside the repository.
pub fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The crops of the bundled photos the AIMET references were made on (examples/crops.rs):
/// calibration = 4 per photo with the centre crop first (seed 0), evaluation = 4 random per
/// photo (seed 1); 16 images each.
pub fn photo_crops(eval: bool) -> ndarray::ArrayD<f32> {
    use std::sync::OnceLock;
    static SETS: [OnceLock<ndarray::ArrayD<f32>>; 2] = [OnceLock::new(), OnceLock::new()];
    SETS[eval as usize]
        .get_or_init(|| {
            let pre = qforge::data::images::Preprocess::imagenet();
            qforge::data::images::crops(&repo("data/photos"), 4, eval as u64, !eval, &pre)
                .unwrap()
                .1
        })
        .clone()
}

/// A file of AIMET's reference run `run` (tests/golden/aimet/<run>/): .npy arrays as they
/// are, encodings JSON gzipped.
pub fn aimet_npy(run: &str, file: &str) -> ndarray::ArrayD<f32> {
    ndarray_npy::read_npy(repo("tests/golden/aimet").join(run).join(file)).unwrap()
}

/// AIMET's encodings file `file` (e.g. "model.encodings") of reference run `run`.
pub fn aimet_encodings(run: &str, file: &str) -> serde_json::Value {
    use std::io::Read;
    let path = repo("tests/golden/aimet")
        .join(run)
        .join(format!("{file}.gz"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The bundled Fashion-MNIST subset: the first `n` images (normalised) and labels of the
/// training (1,024) or test (1,000) set.
pub fn fashion_mnist(test: bool, n: usize) -> (ndarray::ArrayD<f32>, Vec<usize>) {
    use qforge::data::idx;
    let (images, labels) = if test {
        (
            "t10k-images-1000-idx3-ubyte.gz",
            "t10k-labels-1000-idx1-ubyte.gz",
        )
    } else {
        (
            "train-images-1024-idx3-ubyte.gz",
            "train-labels-1024-idx1-ubyte.gz",
        )
    };
    let dir = repo("data/fashion-mnist");
    let x = idx::read_images(
        &dir.join(images),
        Some(n),
        idx::FASHION_MNIST_MEAN,
        idx::FASHION_MNIST_STD,
    )
    .unwrap();
    let y = idx::read_labels(&dir.join(labels), Some(n)).unwrap();
    assert_eq!(
        x.shape()[0],
        n,
        "the bundled subset holds fewer than {n} samples"
    );
    (x, y)
}

/// AIMET's own simulation against FP32 in reference run `run` (its timings.json): (SQNR dB,
/// top-1 agreement) on the evaluation crops.
pub fn aimet_fidelity(run: &str) -> (f64, f64) {
    // Python's json writes non-finite numbers as bare words.
    let text = std::fs::read_to_string(repo("tests/golden/aimet").join(run).join("timings.json"))
        .unwrap()
        .replace("-Infinity", "null")
        .replace("Infinity", "null")
        .replace("NaN", "null");
    let t: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        t["sim_vs_fp32"]["sqnr_db"].as_f64().unwrap(),
        t["sim_vs_fp32"]["top1_agree"].as_f64().unwrap(),
    )
}

/// A fresh folder under the system's temporary folder, removed when dropped.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qforge-{tag}-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every unary op, with parameters whose kinks lie inside the tests' ranges.
pub const ALL_UNARY: [qforge::graph::attrs::Unary; 27] = [
    qforge::graph::attrs::Unary::Relu,
    qforge::graph::attrs::Unary::Clip(-0.5, 1.5),
    qforge::graph::attrs::Unary::LeakyRelu(0.1),
    qforge::graph::attrs::Unary::Sigmoid,
    qforge::graph::attrs::Unary::HardSigmoid(0.2, 0.5),
    qforge::graph::attrs::Unary::HardSwish,
    qforge::graph::attrs::Unary::Tanh,
    qforge::graph::attrs::Unary::Erf,
    qforge::graph::attrs::Unary::Gelu,
    qforge::graph::attrs::Unary::Exp,
    qforge::graph::attrs::Unary::Sqrt,
    qforge::graph::attrs::Unary::Neg,
    qforge::graph::attrs::Unary::Abs,
    qforge::graph::attrs::Unary::Sign,
    qforge::graph::attrs::Unary::Floor,
    qforge::graph::attrs::Unary::Ceil,
    qforge::graph::attrs::Unary::Round,
    qforge::graph::attrs::Unary::Reciprocal,
    qforge::graph::attrs::Unary::Log,
    qforge::graph::attrs::Unary::Softplus,
    qforge::graph::attrs::Unary::Softsign,
    qforge::graph::attrs::Unary::Elu(0.5),
    qforge::graph::attrs::Unary::Selu(1.673_263_2, 1.050_701),
    qforge::graph::attrs::Unary::Celu(0.7),
    qforge::graph::attrs::Unary::Mish,
    qforge::graph::attrs::Unary::Shrink(0.2, 0.5),
    qforge::graph::attrs::Unary::ThresholdedRelu(0.3),
];
