"""The rows a scoring run writes (`perceptclip predict`'s files, the demo's table): each model's name (from
`--model [NAME=]MODEL`), the columns, and one row per image with each model's prediction; a regression row says its
score's scale (`tasks.score_scale`)."""

from __future__ import annotations

from typing import Any


def model_columns(scorer) -> list[str]:
    """A model's columns (after ``id``, before ``error``)."""
    if scorer.is_classification:
        return ["label", *(f"prob_{label}" for label in scorer.labels)]
    return ["score", "score_scale", "score_min", "score_max", "higher_is_better"]


def result_columns(models) -> list[str]:
    """The output's columns: ``id``, each model's (prefixed ``<name>_`` when there are several), ``error``."""
    prefixes = column_prefixes(models)
    return [
        "id",
        *(prefixes[name] + column for name, scorer in models.scorers.items() for column in model_columns(scorer)),
        "error",
    ]


def column_prefixes(models) -> dict[str, str]:
    return {name: f"{name}_" if len(models.scorers) > 1 else "" for name in models.scorers}


def result_row(models, id_: str, results: dict[str, Any]) -> dict[str, Any]:
    """One output row: the input's id, each model's prediction (scores with their range and direction), or the
    error of an unreadable input."""
    from ..tasks import score_scale  # (imports the model code: not at the command line's start)

    if "error" in results:
        return {"id": id_, "error": results["error"]}
    row = {"id": id_}
    for (name, result), prefix in zip(results.items(), column_prefixes(models).values()):
        scorer = models.scorers[name]
        if not scorer.is_classification:  # a relative score has no range: its scale is its own (tasks.score_meaning)
            scale = score_scale(scorer.config)
            low, high = scorer.score_range if scorer.score_range and scale == "calibrated" else (None, None)
            result = {
                **result,
                "score_scale": scale,
                "score_min": low,
                "score_max": high,
                "higher_is_better": scorer.higher_is_better,
            }
        row.update({prefix + key: value for key, value in result.items()})
    return row


__all__ = ["model_columns", "result_columns", "result_row"]
