"""Offline access to the local ``evaluate`` modules shipped in ``perceptclip_hf/evaluation/metrics_modules``."""

from __future__ import annotations

from pathlib import Path

import evaluate

__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]

METRICS_DIR = Path(__file__).resolve().parent / "metrics_modules"
METRIC_NAMES = ("perceptual_regression", "perceptual_classification")


def metric_path(name: str) -> Path:
    """Directory of the shipped module ``name`` (loadable with ``evaluate.load(str(path))``)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; available: {list(METRIC_NAMES)}")
    return METRICS_DIR / name


def load_metric(name: str, **init_kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of a shipped module by local path; works offline."""
    return evaluate.load(str(metric_path(name)), **init_kwargs)
