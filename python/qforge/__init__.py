"""qforge: quantize and compress trained neural networks on any GPU (wgpu + WGSL), from Python.

The same library as the ``qforge`` command: AIMET-exact QuantSim (encodings, configs,
placement), post-training techniques, automatic mixed precision, compression, all on whatever
GPU wgpu finds (Vulkan, Metal, DX12, GL; a software adapter where there is none). No torch, no
CUDA: numpy arrays in, numpy arrays and files out.

    import numpy as np, qforge
    sim = qforge.QuantSim("models/mobilenet_v2.onnx")
    sim.compute_encodings(batch.numpy() for batch, _ in loader)   # any iterable of arrays
    print(sim.evaluate(held_out))
    sim.export("out", "mobilenet_v2")                             # ONNX + AIMET encodings
    sim.export_qdq("out", "mobilenet_v2")                         # QDQ ONNX for onnxruntime

Arrays are float32 batches ``[samples, ...]`` shaped as the model's input; other dtypes raise
``TypeError`` (they are never converted silently), non-contiguous arrays are copied. Errors of
the library raise ``QforgeError`` with its message. Long calls release the GIL.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import QforgeError

__all__ = [
    "QforgeError",
    "QuantSim",
    "adapter",
    "compress",
    "devices",
    "finetune",
    "load_data",
    "load_labels",
    "run",
]

Model = Union[str, "os.PathLike[str]", bytes]


def _model(m: Model) -> Union[str, bytes]:
    if isinstance(m, (bytes, bytearray)):
        return bytes(m)
    return os.fspath(m)


def _pack(x, what: str = "batch", shape: Optional[Sequence[Optional[int]]] = None) -> Tuple[bytes, List[int]]:
    """A float32 array as (little-endian bytes, shape), checked against ``shape``."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "numpy"):  # a torch tensor on the CPU
            x = x.numpy()
        else:
            x = np.asarray(x)
    want = _describe(shape)
    if x.dtype != np.float32:
        raise TypeError(f"{what}: dtype {x.dtype}, expected a float32 array of shape {want}")
    if shape is not None:
        ok = x.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
        if not ok:
            raise ValueError(f"{what}: shape {list(x.shape)}, expected {want}")
    x = np.ascontiguousarray(x, dtype="<f4")
    return x.tobytes(), list(x.shape)


def _describe(shape: Optional[Sequence[Optional[int]]]) -> str:
    if shape is None:
        return "[samples, ...]"
    return "[" + ", ".join("samples" if s is None else str(s) for s in shape) + "]"


def _unpack(pair: Tuple[bytes, List[int]]) -> np.ndarray:
    data, shape = pair
    return np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32, copy=True)


def devices() -> List[str]:
    """Every adapter wgpu sees (``WGPU_BACKEND`` is honoured), one line each."""
    return _native.devices()


def adapter() -> str:
    """The adapter qforge runs on (the same choice as the command line)."""
    return _native.adapter()


def load_data(path: Union[str, "os.PathLike[str]"], limit: Optional[int] = None) -> Tuple[Optional[List[str]], np.ndarray]:
    """Data as the command line reads it: a folder of images (resized, center-cropped to 224
    and normalized as ImageNet models expect, with their file names), an .npy batch or IDX
    images (names ``None``). At most ``limit`` samples."""
    names, x = _native.load_data(os.fspath(path), limit)
    return names, _unpack(x)


def load_labels(path: Union[str, "os.PathLike[str]"], limit: Optional[int] = None) -> List[int]:
    """Labels of an IDX label file (e.g. Fashion-MNIST's ``t10k-labels-idx1-ubyte.gz``)."""
    return _native.load_labels(os.fspath(path), limit)


def run(model: Model, inputs: Union[np.ndarray, Dict[str, np.ndarray]], batch: int = 8) -> List[np.ndarray]:
    """Runs ``model`` (a path or ONNX bytes) on ``inputs`` (one array for the model's first
    input, or arrays by input name) in batches of ``batch``; returns its outputs."""
    if not isinstance(inputs, dict):
        inputs = {"": inputs}
    packed = [(name, *_pack(x, f"input '{name}'")) for name, x in inputs.items()]
    return [_unpack(y) for y in _native.run(_model(model), packed, batch)]


class QuantSim:
    """AIMET's QuantizationSimModel on the GPU: BN folded, quantizers placed from a config,
    weights quantized once, activation encodings computed on data, simulated, exported.

    ``config``: an AIMET quantsim config JSON (default: AIMET's per-channel default);
    ``scheme``: ``minmax``, ``tf-enhanced``, ``mse`` or ``percentile[:P]``; ``placement``:
    ``targets`` (as onnxruntime, QNN and TFLite fuse) or ``aimet-onnx`` (aimet-onnx 2.42's
    exact placement); ``batch``: samples per GPU batch.
    """

    def __init__(
        self,
        model: Model,
        config: Optional[Union[str, "os.PathLike[str]"]] = None,
        param_bw: int = 8,
        act_bw: int = 8,
        scheme: str = "minmax",
        per_tensor: bool = False,
        placement: str = "targets",
        batch: int = 8,
    ) -> None:
        self._sim = _native.QuantSim(
            _model(model),
            None if config is None else os.fspath(config),
            param_bw,
            act_bw,
            scheme,
            per_tensor,
            placement,
            batch,
        )

    @property
    def input(self) -> Tuple[str, List[Optional[int]]]:
        """The model input's name and shape (``None`` for the batch)."""
        return self._sim.input

    def _x(self, x, what: str) -> Tuple[bytes, List[int]]:
        return _pack(x, what, self.input[1])

    def compute_encodings(
        self,
        batches: Iterable[np.ndarray],
        progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        """Calibrates activation ranges on ``batches``: any iterable of float32 arrays
        ``[samples, ...]`` (a generator over a DataLoader works). ``progress(n)`` hears each
        batch done. An exception raised by the iterable propagates unchanged."""
        shape = self.input[1]
        self._sim.compute_encodings((_pack(b, "calibration batch", shape) for b in batches), progress)

    def dfq(self) -> int:
        """Data-free quantization's techniques: CLE, then analytical bias correction (calibrate
        afterwards, on data or with ``compute_encodings_data_free``). Returns the layers
        corrected."""
        return self._sim.dfq()

    def analyze(
        self,
        x: np.ndarray,
        calib: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        bins: int = 64,
        progress: Optional[Callable[[str, int, int], None]] = None,
    ) -> dict:
        """AIMET's QuantAnalyzer on ``x``: scores with the weights only, the activations only
        and both quantized; per layer with only it quantized and with all but it; each
        activation's SQNR and MSE (histograms of activations on ``calib``). After
        compute_encodings; ``progress(phase, done, total)``."""
        return self._sim.analyze(
            self._x(x, "x"), self._x(calib, "calib"),
            None if labels is None else [int(v) for v in labels], bins, progress,
        )

    def compute_encodings_data_free(self) -> None:
        """Activation ranges from batch-norm statistics alone (data-free quantization)."""
        self._sim.compute_encodings_data_free()

    def equalize(self) -> Dict[str, int]:
        """Cross-layer equalization with high-bias absorption; call before compute_encodings."""
        return self._sim.equalize()

    def bias_correction(self, kind: str = "analytical", x: Optional[np.ndarray] = None) -> int:
        """Bias correction, ``analytical`` (data-free, before or after calibration) or
        ``empirical`` on ``x`` (after compute_encodings); returns the layers corrected."""
        return self._sim.bias_correction(kind, None if x is None else self._x(x, "x"))

    def seq_mse(self, x: np.ndarray, candidates: int = 20) -> None:
        """Sequential MSE: per-channel weight ranges searched layer by layer on ``x``."""
        self._sim.seq_mse(self._x(x, "x"), candidates)

    def adaround(self, x: np.ndarray, iterations: Optional[int] = None, batch: int = 32, reg: float = 0.01,
                 seed: int = 0, progress: Optional[Callable[[str, int, int], None]] = None) -> List[Dict[str, Any]]:
        """AdaRound: each Conv/Gemm/MatMul weight's rounding learned layer by layer on ``x``
        (AIMET's defaults: 10,000 iterations per layer, 15,000 below 8 bits); the encodings
        stay frozen and the rounded weights replace the FP32 ones. Call before
        ``compute_encodings``. Returns per layer: weight, loss_nearest, loss_adaround,
        rounded_up, changed, iterations, seconds."""
        return self._sim.adaround(self._x(x, "x"), iterations, batch, reg, seed, progress)

    def qat(self, x: np.ndarray, epochs: int = 1, batch: int = 32, lr: float = 1e-4, learn_ranges: bool = True,
            labels: Optional[Sequence[int]] = None, seed: int = 0,
            progress: Optional[Callable[[str, int, int], None]] = None,
            schedule: str = "constant", lsq: bool = False, range_lr: float = 1e-2,
            temperature: float = 1.0, augment: str = "none",
            crop_scale: float = 0.35) -> List[Tuple[int, float]]:
        """Quantization-aware training on ``x`` (after ``compute_encodings``): the simulated
        model distilled from the FP32 one (or trained on ``labels``), weights through the
        straight-through estimator, scales (and asymmetric offsets) learned unless
        ``learn_ranges`` is false; the trained weights and encodings replace the simulation's.
        ``schedule`` is the learning rate's (constant, step or cosine with warm-up); ``lsq``
        scales each range's gradient by LSQ's 1 / sqrt(elements x positive levels);
        ``range_lr`` is the ranges' rate (learned as logarithms: about the fraction of a scale
        one step moves); ``temperature`` softens both outputs for distillation; ``augment``
        (none, or a comma list of flip, crop: crops keep at least ``crop_scale`` of the area)
        varies each image ``[C, H, W]`` as it enters a batch, the teacher seeing the same one.
        Returns (optimizer step, loss) readings."""
        return self._sim.qat(self._x(x, "x"), epochs, batch, lr, learn_ranges,
                             None if labels is None else [int(v) for v in labels], seed, progress,
                             schedule, lsq, range_lr, temperature, augment, crop_scale)

    def evaluate(self, x: np.ndarray, labels: Optional[Sequence[int]] = None) -> Dict[str, float]:
        """SQNR (dB) and top-1/top-5 agreement of the simulated model against FP32 on ``x``;
        FP32 and simulated accuracy with ``labels``."""
        return self._sim.evaluate(self._x(x, "x"), None if labels is None else [int(v) for v in labels])

    def simulate(self, x: np.ndarray) -> List[np.ndarray]:
        """The simulated (fake-quantized) model's outputs on ``x``."""
        return [_unpack(y) for y in self._sim.simulate(self._x(x, "x"))]

    def fp32(self, x: np.ndarray) -> List[np.ndarray]:
        """The reference FP32 (BN-folded) model's outputs on ``x``."""
        return [_unpack(y) for y in self._sim.fp32(self._x(x, "x"))]

    def export(self, path: Union[str, "os.PathLike[str]"], stem: str = "model", encodings_version: str = "1.0.0") -> None:
        """Writes ``<stem>.onnx`` (the prepared FP32 model) and ``<stem>.encodings`` (AIMET
        0.6.1, 1.0.0 or 2.0.0) into ``path``."""
        self._sim.export(os.fspath(path), stem, encodings_version)

    def export_qdq(self, path: Union[str, "os.PathLike[str]"], stem: str = "model") -> None:
        """Writes ``<stem>_qdq.onnx``: QuantizeLinear/DequantizeLinear on every quantized
        activation and integer weights, as onnxruntime and Qualcomm's converters take it."""
        self._sim.export_qdq(os.fspath(path), stem)

    def choose_mixed_precision(
        self,
        x: np.ndarray,
        candidates: str = "W4A8,W8A8,W8A16",
        allowed_drop: float = 0.01,
        score: str = "agreement",
        search: str = "binary",
        labels: Optional[Sequence[int]] = None,
        progress: Optional[Callable[[str, int, int], None]] = None,
    ) -> dict:
        """AIMET's AMP on ``x``: each quantizer group's candidate, the fewest bit-operations
        within ``allowed_drop`` of the widest candidate (a fraction of agreement/accuracy, or dB
        with ``score="sqnr"``). The simulation must be built at the widest candidate's
        bitwidths and calibrated; the chosen mix is installed (export writes it).
        ``progress(phase, done, total)``."""
        return self._sim.choose_mixed_precision(
            self._x(x, "x"), candidates, allowed_drop, score, search,
            None if labels is None else [int(v) for v in labels], progress,
        )

    @property
    def activation_encodings(self) -> Dict[str, dict]:
        """Activation encodings by tensor name: bitwidth, kind, scale, offset."""
        return self._sim.activation_encodings

    @property
    def param_encodings(self) -> Dict[str, dict]:
        """Parameter encodings by tensor name (per channel along ``axis`` where per channel)."""
        return self._sim.param_encodings


def compress(
    model: Model,
    output: Union[str, "os.PathLike[str]"],
    target_macs: float,
    scoring: np.ndarray,
    rebuild: np.ndarray,
    methods: Sequence[str] = ("ssvd", "cp"),
    labels: Optional[Sequence[int]] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    score: str = "agreement",
) -> Dict[str, float]:
    """Compresses ``model`` to ``target_macs`` of its MACs with ``methods`` in order (``ssvd``,
    ``wsvd``, ``cp``): per-layer ratios chosen greedily by the score on ``scoring`` (``score``:
    ``agreement``, top-1 agreement with the original or accuracy with ``labels``, or ``sqnr``,
    the outputs' SQNR against the original), pruned layers rebuilt by least squares on
    ``rebuild`` (other images). Writes the compressed ONNX model to ``output``;
    ``progress(method, layers_scored, layers)``."""
    return _native.compress(
        _model(model), os.fspath(output), float(target_macs),
        _pack(scoring, "scoring"), _pack(rebuild, "rebuild"), list(methods),
        None if labels is None else [int(v) for v in labels], progress, score,
    )


def finetune(
    model: Union[str, "os.PathLike[str]"],
    data: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    labels: Optional[Union[str, "os.PathLike[str]"]] = None,
    eval: Optional[Union[str, "os.PathLike[str]"]] = None,
    eval_labels: Optional[Union[str, "os.PathLike[str]"]] = None,
    holdout: float = 0.25,
    epochs: int = 1,
    lr: float = 1e-4,
    batch: int = 32,
    loss: Optional[str] = None,
    freeze: Sequence[str] = (),
    data_count: Optional[int] = None,
    eval_count: Optional[int] = None,
    resume: bool = False,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> dict:
    """Fine-tunes ``model`` on the GPU as ``qforge finetune`` does: ``data`` a folder of images,
    an .npy batch or IDX images (``holdout`` of them held out by image unless ``eval`` is
    given); cross-entropy with ``labels``, else distillation from the model as it was
    (``loss``: ce, kd or mse); ``freeze`` names or patterns of parameters left alone. Writes the
    tuned model, report.html, split.json and a checkpoint (``resume=True`` continues it) into
    ``out``; returns the per-epoch scores and the loss curve."""
    f = lambda p: None if p is None else os.fspath(p)
    return _native.finetune(
        os.fspath(model), os.fspath(data), os.fspath(out), f(labels), f(eval), f(eval_labels),
        float(holdout), int(epochs), float(lr), int(batch), loss, list(freeze), data_count,
        eval_count, bool(resume), progress,
    )

