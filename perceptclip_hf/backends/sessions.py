"""A loaded model on an exported backend: the export its folder ships (``perceptclip export``'s, recorded for this
model), else one made on the first run and cached under ``$HF_HUB_CACHE/perceptclip-exports/``, keyed by the model's
fingerprint, its config, the input size and the exporter's versions."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..cache_folders import build_once, cache_root
from .graph import OPSET, export_onnx, hash_tensors, quantize_onnx
from .layout import ONNX_FILE, QUANTIZED_FILE, RECORD_FILE, file_digest, recorded_export, write_export_record
from .runtimes import open_session

logger = logging.getLogger(__name__)
CACHE_DIR_NAME = "perceptclip-exports"


@dataclass
class BackendSession:
    """``session(pixels)`` → logits on ``backend`` at ``precision``; ``export``: the sha256 (16 hex digits) of the
    file it runs, ``path`` that file."""

    session: Any
    backend: str
    precision: str
    export: str
    path: Path

    def __call__(self, pixels):
        return self.session(pixels)


def backend_session(
    model: torch.nn.Module,
    fingerprint: str,
    image_size: tuple[int, int],
    backend: str,
    precision: str,
    folder: str | os.PathLike | None = None,
) -> BackendSession:
    """``model`` (trained tensors hashed as ``fingerprint``) on ``backend`` at ``precision``: the export ``folder``
    records for it, else the cached export (made now if missing)."""
    found = recorded_export(folder, fingerprint, backend, precision) if folder else None
    if found is None:
        cached = cached_export(model, fingerprint, image_size, quantized=precision == "int8")
        found = recorded_export(cached, fingerprint, backend, precision)
    path, digest = found
    return BackendSession(open_session(path, backend, precision), backend, precision, digest, path)


def cached_export(model: torch.nn.Module, fingerprint: str, image_size: tuple[int, int], quantized: bool) -> Path:
    """The cache folder holding ``model``'s ONNX graph (and its int8 version with ``quantized``), made once."""
    kind = "int8" if quantized else "fp32"
    folder = cache_root(CACHE_DIR_NAME) / f"{fingerprint}-{export_key(model, image_size)}-{kind}"
    if not (folder / RECORD_FILE).is_file():
        logger.warning("Exporting the model once for this backend into %s", folder)
        build_once(folder, partial(write_exports, model, fingerprint, image_size, quantized), done=RECORD_FILE)
    return folder


def write_exports(model, fingerprint: str, image_size, quantized: bool, folder: Path) -> None:
    """``onnx/model.onnx`` (and ``onnx/model_quantized.onnx``) in ``folder``, with their record."""
    files = {ONNX_FILE: export_onnx(model, folder / ONNX_FILE, image_size)}
    if quantized:
        files[QUANTIZED_FILE] = quantize_onnx(files[ONNX_FILE], folder / QUANTIZED_FILE)
    exports = {
        name: {"precision": "int8" if name == QUANTIZED_FILE else "fp32", "sha256": file_digest(path)}
        for name, path in files.items()
    }
    write_export_record(folder, fingerprint, image_size, exports)


def export_key(model: torch.nn.Module, image_size) -> str:
    """What else decides the exported file: the config, the input size, torch's and the quantiser's versions, the
    opset; and the weights themselves when the model names no base (its fingerprint covers only the trained ones)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        quantizer = version("onnxruntime")
    except PackageNotFoundError:
        quantizer = None
    versions = (torch.__version__, quantizer, OPSET)
    digest = hashlib.sha256(repr((model.config.to_json_string(), tuple(image_size), versions)).encode())
    if model.config.base_model_name_or_path is None:
        hash_tensors(digest, model.state_dict())
    return digest.hexdigest()[:12]


__all__ = ["BackendSession", "backend_session", "cached_export"]
