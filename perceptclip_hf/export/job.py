"""The export job: copy the model folder (config, weights, image processor, remote code: it still loads with
``AutoModel`` and ``pipeline``), load it from that copy, export it (:mod:`perceptclip_hf.backends.graph`), run each
exported file on a calibration set and keep it only when it agrees with PyTorch fp32
(:mod:`perceptclip_hf.backends.agreement`). Everything is written into a staging folder beside ``OUT`` and moved in
once validated: a refused export leaves ``OUT`` as it was.

    >>> from perceptclip_hf.export.job import export_model
    >>> export_model("quality", "perceptclip-quality-onnx/", format="onnx", precision="int8")
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backends.agreement import Agreement, check_agreement
from ..backends.graph import export_onnx, export_openvino, quantize_onnx
from ..backends.layout import (
    FORMATS,
    ONNX_FILE,
    OPENVINO_FILE,
    QUANTIZED_FILE,
    RECORD_FILE,
    WRITER,
    file_digest,
    write_export_record,
)
from ..backends.runtimes import check_backend, open_session
from ..data.files import walk_images
from ..data.synthetic import procedural_images
from ..errors import ConfigurationError, InputError, loading_model
from ..hub.repo import copy_saved_model
from ..hub.source import ModelSource
from ..output_safety import check_own_folder
from ..scoring.scorer import PerceptScorer, error_message

CALIBRATION_IMAGES = 32
BATCH = 16
logger = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    """``folder``: the output; ``files``: each file written → its agreement with PyTorch fp32; ``calibration``: the
    images it was measured on; ``skipped``: unreadable calibration images ``(path, reason)``."""

    folder: Path
    files: dict[str, tuple[str, Agreement]]
    calibration: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line a file written: its path, precision and agreement with PyTorch fp32."""
        return [
            f"{self.folder / name}: {precision}; against PyTorch fp32, {agreement.text()} ({self.calibration})"
            for name, (precision, agreement) in self.files.items()
        ]


def check_export(out: Path, format: str, precision: str) -> None:
    """Everything that can be checked before a model loads: the format and precision, the backend installed, and
    ``OUT``: new, empty or an earlier export."""
    if format not in FORMATS:
        raise ConfigurationError(f"--format {format}: unknown; use one of {', '.join(FORMATS)}")
    backend, precisions = FORMATS[format]
    if precision not in precisions:
        others = [name for name, (_, kinds) in FORMATS.items() if precision in kinds]
        raise ConfigurationError(
            f"--precision {precision} is not an export of --format {format} (it has {', '.join(precisions)})"
            + (f"; --format {others[0]} has it" if others else "")
        )
    check_backend(backend, "fp32")
    if importlib.util.find_spec("onnx") is None:
        raise ConfigurationError("exporting needs onnx: pip install 'perceptclip-hf[onnx]'")
    check_own_folder(out, RECORD_FILE, WRITER, "OUT", create=False)  # created once the export passed


def export_model(
    model: str | os.PathLike | ModelSource,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    precision: str = "fp32",
    calibration: str | os.PathLike | None = None,
    base_model: str | None = None,
    task: str | None = None,
    report: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write ``model`` (a folder, Hub id, or official checkpoint / alias) into ``out`` with its export: ``format``
    ``"onnx"`` (``precision`` fp32: ``onnx/model.onnx``; int8: that and ``onnx/model_quantized.onnx``) or
    ``"openvino"`` (``openvino/openvino_model.xml`` for fp32, bf16 or fp16). Each file is validated on
    ``calibration`` (a folder of images; default: 32 procedural images) and refused, with the numbers, when it falls
    short (:mod:`perceptclip_hf.backends.agreement`). ``report`` hears of unreadable calibration images."""
    out = Path(out)
    check_export(out, format, precision)
    source = ModelSource.of(model, task).check()
    images, described = calibration_images(calibration)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out.absolute().parent))
    try:
        copy_saved_model(model_folder(source, base_model), staging)
        if (out / RECORD_FILE).is_file():  # an earlier export of the same folder: its record is added to
            shutil.copyfile(out / RECORD_FILE, staging / RECORD_FILE)
        load = {"base_model_name_or_path": base_model} if base_model else None
        scorer = PerceptScorer.from_pretrained(staging, load_kwargs=load, dtype="fp32", tta=1, num_workers=0)
        pixels, skipped = calibration_pixels(scorer, images)
        if len(pixels) < 2:
            raise InputError(f"--calibration {calibration}: {len(pixels)} readable images; the gate needs at least 2")
        reference = batched(lambda batch: scorer.predict_logits(torch.from_numpy(batch)).numpy(), pixels)
        files = write_validated(scorer, staging, format, precision, pixels, reference)
        for path in sorted(staging.rglob("*")):  # validated: moved into OUT
            if path.is_file():
                (out / path.relative_to(staging)).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, out / path.relative_to(staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for path, reason in skipped:
        (report or logger.warning)(f"calibration image not used: {path}: {reason}")
    return ExportSummary(out, files, described, skipped)


def export_into_repo(folder: Path, report: Callable[[str], None] | None = None) -> ExportSummary:
    """Add the ONNX export of the model folder ``folder`` (a Hub repo folder, being written) to it: fp32, and int8
    when it passes the gate (else fp32 alone, said to ``report``); exported from the folder itself into a sibling
    staging folder, then ``onnx/`` and the record moved in. What ``push_to_hub.py --onnx`` adds."""
    from ..backends.agreement import AgreementError

    with tempfile.TemporaryDirectory(dir=folder.absolute().parent, prefix=".tmp-onnx-") as tmp:
        out = Path(tmp) / "export"
        try:
            summary = export_model(folder, out, format="onnx", precision="int8", report=report)
        except AgreementError as err:
            (report or logger.warning)(f"the int8 export is left out: {err}")
            shutil.rmtree(out, ignore_errors=True)
            summary = export_model(folder, out, format="onnx", precision="fp32", report=report)
        for path in sorted(out.rglob("*")):
            relative = path.relative_to(out)
            if path.is_file() and (relative.parts[0] == "onnx" or relative.name == RECORD_FILE):
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, folder / relative)
    summary.folder = folder
    return summary


def write_validated(scorer, folder: Path, format: str, precision: str, pixels, reference) -> dict:
    """Export into ``folder``, run each file on ``pixels`` and compare with ``reference`` (refused: one line); record
    the files. Returns ``{file: (precision, agreement)}``."""
    backend, precisions = FORMATS[format]
    size = (scorer.transform.crop_size, scorer.transform.crop_size)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tmp-graph-") as scratch:
        onnx = export_onnx(scorer.model, (folder if format == "onnx" else Path(scratch)) / ONNX_FILE, size)
        if precision == "int8":
            quantize_onnx(onnx, folder / QUANTIZED_FILE)
        if format == "openvino":
            export_openvino(onnx, folder / OPENVINO_FILE, precision)
    files = {}
    for name, kind in precisions[precision]:
        session = open_session(folder / name, backend, kind)
        agreement = Agreement.measure(reference, batched(session, pixels), scorer.is_classification)
        fix = "export fp32 (--precision fp32), or pass --calibration with images like the ones you will score"
        check_agreement(agreement, kind, f"--format {format} --precision {precision} ({name})", fix)
        files[name] = (kind, agreement)
    exports = {
        name: {"format": format, "precision": kind, "sha256": file_digest(folder / name), "agreement": a.as_dict()}
        for name, (kind, a) in files.items()
    }
    write_export_record(folder, scorer.fingerprint(), size, exports)
    return files


def model_folder(source: ModelSource, base_model: str | None) -> Path:
    """The saved folder of ``source``: a local folder, the cached conversion of an official checkpoint, or a Hub
    repo's files (downloaded)."""
    if source.official:
        from ..hub.official import official_model_dir

        with loading_model(source.location, hint=source.hint):
            return official_model_dir(source, base_model=base_model)
    if os.path.isdir(source.location):
        return Path(source.location)
    from huggingface_hub import snapshot_download

    with loading_model(source.location):
        return Path(snapshot_download(source.location))


def calibration_images(folder: str | os.PathLike | None) -> tuple[list, str]:
    """The calibration set: every image under ``folder`` (paths), else 32 procedural images; and its description."""
    if folder is None:
        return procedural_images(CALIBRATION_IMAGES), "procedural images"
    if not os.path.isdir(folder):
        raise ConfigurationError(f"--calibration {folder}: not a folder; give a folder of images")
    images = walk_images(folder).images
    if not images:
        raise InputError(f"--calibration {folder}: no images in it; give a folder of images like the ones you score")
    return images, f"images of {folder}"


def calibration_pixels(scorer: PerceptScorer, images: list) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """The images as the model sees them (the serving transform at one view: a crop policy that still gives a crops
    axis adds each crop); unreadable ones apart."""
    pixels, skipped = [], []
    for image in images:
        try:
            views = scorer.preprocess(image)
            pixels.extend(views if views.dim() == 4 else [views])
        except Exception as err:  # noqa: BLE001 - an unreadable file is reported, not fatal
            skipped.append((os.fspath(image), error_message(err)))
    return (torch.stack(pixels) if pixels else torch.empty(0)), skipped


def batched(run: Callable[[np.ndarray], np.ndarray], pixels: torch.Tensor) -> np.ndarray:
    """``run`` (pixels → logits, numpy) over ``pixels`` in batches, the logits stacked."""
    return np.concatenate([run(pixels[start : start + BATCH].numpy()) for start in range(0, len(pixels), BATCH)])


__all__ = ["ExportSummary", "check_export", "export_into_repo", "export_model"]
