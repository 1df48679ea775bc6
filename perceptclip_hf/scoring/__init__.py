"""Scoring images with trained models: where a model comes from and how it loads (`scorer.load_model`), the scorer
(`PerceptScorer`), several models in one pass (`ScorerSet`), the input engine (`input_pipeline`), what is scored
(`image_sources`, `inputs`), the rows and score files (`score_rows`, `score_files`, `score_formats`), several
processes (`distributed`) and the job that ties them together (`score`, what `perceptclip predict` runs).

    >>> from perceptclip_hf.scoring import score
    >>> summary = score("photos/", "quality", "quality.csv")

The names below load on first use (PEP 562): importing this package loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES = {
    "PerceptScorer": "scorer",
    "load_model": "scorer",
    "ScorerSet": "model_set",
    "score": "job",
    "ScoringSummary": "job",
    "id_name": "score_rows",
}
__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from .job import ScoringSummary, score  # noqa: F401
    from .model_set import ScorerSet  # noqa: F401
    from .score_rows import id_name  # noqa: F401
    from .scorer import PerceptScorer, load_model  # noqa: F401
