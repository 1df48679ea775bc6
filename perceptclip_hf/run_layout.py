"""The folder layout of a training run (`perceptclip train` / `train.py`): the one place that knows it. Training writes
it, the reports fill it, publishing (`perceptclip push --run-dir`) reads it; no torch here.

    <output_dir>/results.json, results.md, train.log
    <output_dir>/report/report.html, .md, *.png        the run's summary
    <output_dir>/split_<k>/report/                     split k's test report (a folder per dataset when several)
    <output_dir>/split_<k>/lr_<lr>/                    Trainer checkpoints of one learning rate
    <output_dir>/split_<k>/lr_<lr>/stage2/<dataset>/   multi-dataset stage 2: each head's checkpoints
    <output_dir>/split_<k>/model/                      the selected model (save_pretrained)
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_FILE = "results.json"
RESULTS_TABLE = "results.md"
LOG_FILE = "train.log"
REPORT_DIR = "report"
MODEL_DIR = "model"
STAGE2_DIR = "stage2"


def split_dir(output_dir: str | Path, split: int) -> Path:
    return Path(output_dir) / f"split_{split}"


def lr_dir(output_dir: str | Path, split: int, learning_rate: float) -> Path:
    return split_dir(output_dir, split) / f"lr_{learning_rate:g}"


def split_model_dir(output_dir: str | Path, split: int) -> Path:
    """The model selected on split `split`'s validation set."""
    return split_dir(output_dir, split) / MODEL_DIR


def run_model_dir(run_dir: str | Path) -> Path:
    """The model of a run: `<run>/model`, else the first reported split's `<run>/split_<k>/model`."""
    run_dir = Path(run_dir)
    if (run_dir / MODEL_DIR).is_dir():
        return run_dir / MODEL_DIR
    results = json.loads((run_dir / RESULTS_FILE).read_text()) if (run_dir / RESULTS_FILE).exists() else {}
    splits = [row["split"] for row in results.get("splits", [])]
    candidate = split_model_dir(run_dir, splits[0]) if splits else None
    if candidate is None or not candidate.is_dir():
        raise FileNotFoundError(f"{run_dir}: no model/ and no split_<k>/model/ of a train.py run (with results.json).")
    return candidate


__all__ = [
    "LOG_FILE",
    "MODEL_DIR",
    "REPORT_DIR",
    "RESULTS_FILE",
    "RESULTS_TABLE",
    "STAGE2_DIR",
    "lr_dir",
    "run_model_dir",
    "split_dir",
    "split_model_dir",
]
