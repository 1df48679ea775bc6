"""The backends a model runs on, their precisions, and the sessions that run an export on the CPU.

A precision means the same on every backend: ``fp32`` is computed in fp32 (OpenVINO's own default on a CPU with bf16
units is bf16: it is asked for f32 here), ``bf16`` / ``fp16`` in that type, ``int8`` with int8 weights (ONNX
Runtime's dynamic quantisation). A precision a backend would silently compute otherwise is refused.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..errors import ConfigurationError

BACKENDS = ("torch", "onnxruntime", "openvino")
CHOICES = (*BACKENDS, "auto")  # auto: the fastest that agrees with fp32 on this machine (:mod:`.probe`)
PRECISIONS = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16"),
}
# The module each exported backend needs and the package extra that installs it.
EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def check_backend(backend: str, precision: str, device: str | None = None) -> None:
    """One line, before any model loads, for a backend that is unknown or not installed, a precision it does not run,
    or a device it cannot use (the exported backends run on the CPU)."""
    if backend not in CHOICES:
        raise ConfigurationError(f"--backend {backend}: unknown; use one of {', '.join(CHOICES)}")
    if backend == "auto":  # any precision some backend runs; what is installed decides the candidates
        check_backend("torch" if precision != "int8" else "onnxruntime", precision)
        return
    if precision not in PRECISIONS[backend]:
        others = [name for name, precisions in PRECISIONS.items() if precision in precisions]
        raise ConfigurationError(
            f"--dtype {precision} does not run on --backend {backend} (it runs {', '.join(PRECISIONS[backend])})"
            + (f"; --backend {' or '.join(others)} runs {precision}" if others else "")
        )
    if backend == "torch":
        return
    if device is not None and not str(device).startswith("cpu"):
        raise ConfigurationError(f"--backend {backend} runs on the CPU; --device {device} is for --backend torch")
    module, extra = EXTRAS[backend]
    if importlib.util.find_spec(module) is None:
        raise ConfigurationError(f"--backend {backend} needs {module}: pip install 'perceptclip-hf[{extra}]'")


class OnnxRuntimeSession:
    """An ONNX file on ONNX Runtime's CPU provider: ``session(pixels)`` → logits (float32 numpy arrays)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its graph-optimisation notes are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: pixels})[0]


class OpenVinoSession:
    """An ONNX file or OpenVINO IR compiled for the CPU at ``precision`` (refused when the CPU would compute another
    one): ``session(pixels)`` → logits."""

    def __init__(self, path: str | os.PathLike, precision: str, threads: int | None = None):
        import openvino

        config = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(os.fspath(path), "CPU", config)
        computed = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if computed != OPENVINO_HINTS[precision]:
            capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            raise ConfigurationError(
                f"--dtype {precision} on --backend openvino: this CPU would compute {computed} (OpenVINO's CPU "
                f"capabilities here: {capabilities}); use --dtype {'bf16 or ' if precision != 'bf16' else ''}fp32"
            )
        self.request = self.compiled.create_infer_request()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: pixels})[0], dtype=np.float32)  # a copy: the request reuses its output


def open_session(path: str | os.PathLike, backend: str, precision: str, threads: int | None = None):
    """The session that runs the export at ``path`` on ``backend`` (``precision``: OpenVINO's; ONNX Runtime runs the
    file's own, fp32 or int8)."""
    if backend == "onnxruntime":
        return OnnxRuntimeSession(path, threads)
    return OpenVinoSession(path, precision, threads)


__all__ = [
    "BACKENDS",
    "CHOICES",
    "OnnxRuntimeSession",
    "OpenVinoSession",
    "PRECISIONS",
    "check_backend",
    "open_session",
]
