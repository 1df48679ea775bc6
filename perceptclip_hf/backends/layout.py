"""The export folder, as ``perceptclip export`` writes it and the backends read it (no torch here): where each file
sits (where transformers.js and optimum look for them), which file runs a backend at a precision, and the record
``perceptclip_export.json``: each file's precision, sha256 and the agreement with PyTorch fp32 it was validated with,
and the model fingerprint it was exported from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ONNX_FILE = "onnx/model.onnx"
QUANTIZED_FILE = "onnx/model_quantized.onnx"
OPENVINO_FILE = "openvino/openvino_model.xml"
RECORD_FILE = "perceptclip_export.json"
WRITER = "perceptclip-hf export"
# The files that can run a (backend, precision), best first: ONNX Runtime its two ONNX files; OpenVINO its IR, or
# the fp32 ONNX graph at any precision. A file recorded at fp32 runs every precision of its backends.
RUNS = {
    ("onnxruntime", "fp32"): (ONNX_FILE,),
    ("onnxruntime", "int8"): (QUANTIZED_FILE,),
    **{("openvino", precision): (OPENVINO_FILE, ONNX_FILE) for precision in ("fp32", "bf16", "fp16")},
}


# --format of `perceptclip export` → the backend that validates it, and per precision the files it writes with the
# precision each one runs: int8 keeps the fp32 graph too (transformers.js and optimum expect both).
FORMATS = {
    "onnx": ("onnxruntime", {"fp32": [(ONNX_FILE, "fp32")], "int8": [(ONNX_FILE, "fp32"), (QUANTIZED_FILE, "int8")]}),
    "openvino": ("openvino", {precision: [(OPENVINO_FILE, precision)] for precision in ("fp32", "bf16", "fp16")}),
}


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's sha256 (an OpenVINO IR: of its ``.xml`` and ``.bin``)."""
    digest = hashlib.sha256()
    paths = [Path(path)] + ([Path(path).with_suffix(".bin")] if str(path).endswith(".xml") else [])
    for part in paths:
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def read_export_record(folder: str | os.PathLike) -> dict[str, Any]:
    """A folder's ``perceptclip_export.json`` (``{}`` when it has none or it is not ours)."""
    try:
        record = json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("writer") == WRITER else {}


def write_export_record(folder: str | os.PathLike, fingerprint: str, image_size, exports: dict[str, dict]) -> None:
    """Add ``exports`` (``{file: {"precision", "sha256", "agreement", ...}}``) to the folder's record."""
    record = read_export_record(folder)
    if record.get("model_fingerprint") != fingerprint:
        record = {}
    record.update(writer=WRITER, model_fingerprint=fingerprint, image_size=list(image_size))
    record["exports"] = {**record.get("exports", {}), **exports}
    (Path(folder) / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def recorded_export(folder: str | os.PathLike, fingerprint: str, backend: str, precision: str) -> tuple | None:
    """``(path, sha256)`` of the file of ``folder`` that runs ``backend`` at ``precision`` for the model
    ``fingerprint``, when the folder's record says it was exported from that model at that precision (or fp32) and
    the file is unchanged (else ``None``)."""
    record = read_export_record(folder)
    if record.get("model_fingerprint") != fingerprint:
        return None
    for name in RUNS[backend, precision]:
        entry, path = record.get("exports", {}).get(name, {}), Path(folder) / name
        runs = entry.get("precision") in (precision, "fp32") and path.is_file()
        if runs and entry.get("sha256") == file_digest(path):
            return path, entry["sha256"]
    return None


__all__ = [
    "FORMATS",
    "ONNX_FILE",
    "OPENVINO_FILE",
    "QUANTIZED_FILE",
    "RECORD_FILE",
    "RUNS",
    "WRITER",
    "file_digest",
    "read_export_record",
    "recorded_export",
    "write_export_record",
]
