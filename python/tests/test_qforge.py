"""The Python package against the command line on the same inputs, and its bad-input behaviour.

Run from the repository root after `maturin develop --release -m python/Cargo.toml` and
`cargo build --release` (the CLI the results are compared with).
"""

import gc
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import qforge

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "fmnist_cnn.onnx"
X = np.load(ROOT / "tests" / "golden" / "fmnist_input8.npy")
CLI = Path(os.environ.get("QFORGE_BIN", ROOT / "target" / "release" / "qforge"))


def _gpu():
    try:
        return qforge.adapter()
    except qforge.QforgeError as e:
        if os.environ.get("QFORGE_REQUIRE_GPU") == "1":
            raise
        pytest.skip(f"SKIPPED: no GPU adapter ({e})")


@pytest.fixture(autouse=True)
def gpu():
    _gpu()


def cli(*args):
    r = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "RUST_LOG": "error"})
    assert r.returncode == 0, r.stderr
    return r


def calibrated(**kw):
    sim = qforge.QuantSim(MODEL, **kw)
    sim.compute_encodings(X[i:i + 4] for i in range(0, len(X), 4))
    return sim


def test_encodings_and_qdq_equal_the_command_lines(tmp_path):
    cli("quantize", MODEL, "--calib", ROOT / "tests/golden/fmnist_input8.npy", "--holdout", "0",
        "--per-layer-samples", "0", "--out", tmp_path / "cli")
    sim = calibrated()
    sim.export(tmp_path / "py", "fmnist_cnn")
    sim.export_qdq(tmp_path / "py", "fmnist_cnn")
    for f in ["fmnist_cnn.encodings", "fmnist_cnn.onnx", "fmnist_cnn_qdq.onnx"]:
        assert (tmp_path / "py" / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f


def test_run_equals_the_command_line(tmp_path):
    np.save(tmp_path / "x.npy", X)
    cli("run", MODEL, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    (y,) = qforge.run(MODEL, X)
    assert y.dtype == np.float32 and y.shape == (8, 10)
    np.testing.assert_array_equal(y, np.load(tmp_path / "y.npy"))
    (by_name,) = qforge.run(MODEL.read_bytes(), {"input": X})
    np.testing.assert_array_equal(y, by_name)


def test_model_bytes_and_paths_give_the_same_simulation():
    a, b = calibrated(), qforge.QuantSim(MODEL.read_bytes())
    b.compute_encodings([X])
    assert a.activation_encodings == b.activation_encodings
    assert a.param_encodings == b.param_encodings
    e = a.evaluate(X)
    assert e["samples"] == 8 and 20 < e["sqnr_db"] < 80 and e["top1_agreement"] == 1.0


def test_wrong_dtype_and_shape_are_clear_errors():
    sim = calibrated()
    for bad in [X.astype(np.float64), X.astype(np.int32)]:
        with pytest.raises(TypeError, match=r"float32 array of shape \[samples, 1, 28, 28\]"):
            sim.evaluate(bad)
    with pytest.raises(ValueError, match=r"expected \[samples, 1, 28, 28\]"):
        sim.evaluate(X[:, 0])
    with pytest.raises(ValueError, match="expected"):
        sim.compute_encodings([X.reshape(8, 28, 28, 1)])
    with pytest.raises(qforge.QforgeError, match="scheme"):
        qforge.QuantSim(MODEL, scheme="nonsense")
    with pytest.raises(qforge.QforgeError):
        qforge.QuantSim(ROOT / "no_such_model.onnx")
    with pytest.raises(qforge.QforgeError, match="calibrate first"):
        qforge.QuantSim(MODEL).export_qdq("/tmp/never-written")


def test_non_contiguous_arrays_are_copied_not_misread():
    sim = calibrated()
    flipped = X[:, :, ::-1, :]
    assert not flipped.flags["C_CONTIGUOUS"]
    a = sim.simulate(flipped)[0]
    b = sim.simulate(np.ascontiguousarray(flipped))[0]
    np.testing.assert_array_equal(a, b)


class Loader:
    """A DataLoader-like iterable of (tensor, label) whose tensors have .numpy()."""

    class T:
        def __init__(self, a):
            self.a = a

        def numpy(self):
            return self.a

    def __iter__(self):
        for i in range(0, len(X), 2):
            yield Loader.T(X[i:i + 2]), i


def test_a_dataloader_like_iterable_calibrates_as_arrays_do():
    sim = qforge.QuantSim(MODEL)
    seen = []
    sim.compute_encodings((t.numpy() for t, _ in Loader()), progress=seen.append)
    assert seen == [1, 2, 3, 4]
    assert sim.activation_encodings == calibrated().activation_encodings


def test_an_exception_in_the_users_iterator_propagates_unchanged(tmp_path):
    sim = qforge.QuantSim(MODEL)

    def batches():
        yield X[:4]
        raise KeyError("the user's own error")

    with pytest.raises(KeyError, match="the user's own error"):
        sim.compute_encodings(batches())
    assert sim.activation_encodings == {}
    with pytest.raises(qforge.QforgeError):
        sim.export_qdq(tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_does_not_grow_across_repeated_calls():
    sim = calibrated()
    for _ in range(5):
        sim.evaluate(X)
        sim.simulate(X)
    gc.collect()
    before = _rss_mb()
    for _ in range(40):
        sim.evaluate(X)
        sim.simulate(X)
        qforge.run(MODEL, X)
    gc.collect()
    grew = _rss_mb() - before
    assert grew < 64, f"resident memory grew by {grew:.1f} MB over 40 rounds"


def test_mixed_precision_from_python(tmp_path):
    sim = calibrated(param_bw=8, act_bw=16)
    r = sim.choose_mixed_precision(X, "W4A8,W8A8,W8A16", 1.0, score="sqnr")
    assert r["baseline"] == "W8A16" and r["relative_bit_ops"] < 1.0
    assert r["sqnr_db"] >= r["baseline_sqnr_db"] - 1.0
    widths = {e["bitwidth"] for e in sim.activation_encodings.values()}
    assert widths <= {8, 16} and len(widths) >= 1
    sim.export(tmp_path, "mixed")
    sim.export_qdq(tmp_path, "mixed")
    assert (tmp_path / "mixed_qdq.onnx").stat().st_size > 0
    with pytest.raises(qforge.QforgeError, match="baseline"):
        calibrated().choose_mixed_precision(X, "W4A8,W8A16", 0.01)


def test_analysis_and_data_free_quantization():
    sim = calibrated()
    phases = []
    a = sim.analyze(X, X[:4], bins=16, progress=lambda p, d, t: phases.append(p))
    assert a["samples"] == 8 and len(a["layers"]) >= 2 and phases
    assert a["quantized"]["sqnr_db"] == pytest.approx(sim.evaluate(X)["sqnr_db"], rel=1e-3)

    def boom(*_):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        sim.analyze(X, X[:4], progress=boom)
    free = qforge.QuantSim(MODEL)
    assert free.dfq() >= 0
    free.compute_encodings_data_free()
    assert free.evaluate(X)["sqnr_db"] > 5


def test_techniques_and_compression(tmp_path):
    sim = qforge.QuantSim(MODEL)
    sim.equalize()
    sim.bias_correction("analytical")
    sim.compute_encodings([X])
    assert sim.bias_correction("empirical", X[:4]) >= 0
    sim.seq_mse(X[:4], candidates=4)
    assert sim.evaluate(X)["sqnr_db"] > 10
    steps = []
    r = qforge.compress(MODEL, tmp_path / "small.onnx", 0.8, X[:4], X[4:], methods=["ssvd"],
                        progress=lambda m, d, t: steps.append(m))
    assert set(steps) == {"ssvd"}
    assert r["macs_after"] < r["macs_before"]
    (y,) = qforge.run(tmp_path / "small.onnx", X)
    assert y.shape == (8, 10) and np.isfinite(y).all()


def test_finetune_from_python(tmp_path):
    fm = ROOT / "data" / "fashion-mnist"
    r = qforge.finetune(MODEL, fm / "train-images-1024-idx3-ubyte.gz", tmp_path / "ft",
                        labels=fm / "train-labels-1024-idx1-ubyte.gz", data_count=128, batch=32,
                        lr=1e-4)
    assert r["metric"] == "accuracy" and r["epochs"] == 1
    assert len(r["scores"]) == 2 and all(0.0 <= s <= 1.0 for _, s in r["scores"])
    assert any(w.endswith(".onnx") for w in r["written"])
    with pytest.raises(qforge.QforgeError, match="epochs"):
        qforge.finetune(MODEL, fm / "train-images-1024-idx3-ubyte.gz", tmp_path / "bad", epochs=0)



def test_adaround_from_python_matches_the_command_line(tmp_path):
    sim = qforge.QuantSim(MODEL, param_bw=4)
    steps = []
    layers = sim.adaround(X, iterations=20, progress=lambda p, d, t: steps.append(p))
    assert len(layers) == 9 and all(l["loss_adaround"] <= l["loss_nearest"] * 1.5 for l in layers)
    assert steps and steps[-1] == "AdaRound layer 9/9"
    sim.compute_encodings([X])
    sim.export_qdq(tmp_path, "py")
    cli("quantize", MODEL, "--calib", ROOT / "tests" / "golden" / "fmnist_input8.npy", "--holdout", 0,
        "--param-bw", 4, "--adaround", "--adaround-iters", 20, "--batch", 8, "--out", tmp_path / "cli")
    assert (tmp_path / "py_qdq.onnx").read_bytes() == (tmp_path / "cli" / "fmnist_cnn_qdq.onnx").read_bytes()


def test_qat_from_python():
    sim = calibrated(param_bw=4, act_bw=4)
    before = sim.evaluate(X)["sqnr_db"]
    loss = sim.qat(X, epochs=4, batch=4)
    assert len(loss) >= 1 and all(np.isfinite(l) for _, l in loss)
    assert sim.evaluate(X)["sqnr_db"] > before
    with pytest.raises(qforge.QforgeError, match="calibrate first"):
        qforge.QuantSim(MODEL).qat(X)
    with pytest.raises(qforge.QforgeError, match="temperature"):
        sim.qat(X, batch=4, temperature=0.0)
    loss = sim.qat(X, batch=4, augment="flip,crop", crop_scale=0.8)
    assert all(np.isfinite(l) for _, l in loss)
    with pytest.raises(qforge.QforgeError, match="rotate"):
        sim.qat(X, batch=4, augment="rotate")
