"""A PerceptCLIP model as one exported graph: normalised pixels ``(batch, 3, H, W)`` in, the first head's logits
``(batch, outputs)`` out, LoRA merged, the batch axis dynamic, opset 17. Test-time crops are flattened into the batch
before the graph and averaged after it (as the PyTorch model does), so one graph serves every crop policy. Written as
ONNX (fp32), its int8 version (ONNX Runtime's dynamic quantisation: int8 weights) and OpenVINO IR; where the files go
is :mod:`.layout`'s.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer

OPSET = 17


def merge_lora_weights(model: torch.nn.Module) -> int:
    """Fold every LoRA update into its base weight, in place (peft's ``merge``): the same outputs with one matrix
    product per projection instead of three. Returns the number of layers merged. Adapters that are switched off
    later (:func:`..explain.interpretability.adapters_disabled`) are unmerged by peft first."""
    layers = [module for module in model.modules() if isinstance(module, LoraLayer) and not module.merged]
    for layer in layers:
        layer.merge()
    return len(layers)


def hash_tensors(digest, state: dict[str, torch.Tensor]):
    """Feed ``state``'s names and values (as float32, in name order) to ``digest`` (a hashlib object); returns it."""
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().numpy().tobytes())
    return digest


class LogitsGraph(torch.nn.Module):
    """What is exported: normalised pixels → the first head's logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, return_dict=True).logits


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, image_size: tuple[int, int]) -> Path:
    """Write ``model`` (LoRA merged: a merged copy when its adapters are not, e.g. on a shared base) as an ONNX graph
    at ``path`` for ``image_size`` = (H, W) inputs, fp32, opset 17, with a dynamic batch axis."""
    if any(isinstance(module, LoraLayer) and not module.merged for module in model.modules()):
        model = copy.deepcopy(model)
        merge_lora_weights(model)
    graph = LogitsGraph(model).eval().float().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros(2, 3, *image_size)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for a fixed image size
        torch.onnx.export(
            graph,
            (sample,),
            str(path),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def quantize_onnx(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """``source``'s int8 version (weights int8, activations quantised per batch: ONNX Runtime's dynamic
    quantisation) at ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)  # its advice to pre-process first goes to the root logger (`logging.warning`), which
    try:  # also installs a handler there: every later warning of any library would print as "WARNING:name:..."
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    return Path(target)


def export_openvino(source: str | os.PathLike, target: str | os.PathLike, precision: str) -> Path:
    """The ONNX graph ``source`` as OpenVINO IR at ``target`` (``.xml`` + ``.bin``): fp32 weights, or fp16-compressed
    weights for the bf16 / fp16 precisions."""
    import openvino

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Core.read_model, not convert_model: the converter sends telemetry from a forked process, which waits on DNS
    # for minutes offline (and keeps a test session from ending).
    model = openvino.Core().read_model(str(source))
    openvino.save_model(model, str(target), compress_to_fp16=precision != "fp32")
    return target


__all__ = [
    "LogitsGraph",
    "OPSET",
    "export_onnx",
    "hash_tensors",
    "export_openvino",
    "merge_lora_weights",
    "quantize_onnx",
]
