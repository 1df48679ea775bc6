"""The rows a scoring run writes (`perceptclip predict`'s files, the demo's table): each model's name (from
`--model [NAME=]MODEL`), the columns, and one row per image with each model's prediction; a regression row says its
score's scale (`tasks.score_scale`).

Ids are text in every format. A file name that is not valid UTF-8 (a Latin-1 name from an old archive: Python holds
its undecodable bytes as lone surrogates) is written with each such byte as ``\\xNN`` and a backslash as ``\\x5c``
(:func:`row_id`), and so is a name that holds such an escape itself, so that no two names share an id;
:func:`id_name` turns an id back into the name the OS knows (``os.fsencode`` of it: the exact bytes).
"""

from __future__ import annotations

import os
import re
from typing import Any

ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


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


def row_id(id_: str) -> str:
    """An input's id as a row holds it: as it is, unless it is a name that is not valid UTF-8 (it holds lone
    surrogates) or that holds an escape itself (``\\xNN``): then its bytes as UTF-8, with each byte that does not
    decode as ``\\xNN`` and every backslash as ``\\x5c`` — so an id holding ``\\xNN`` is always such a name."""
    try:
        if not ESCAPED_BYTE.search(id_.encode("utf-8")):
            return id_
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes of a name
        pass
    return os.fsencode(id_).replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def id_name(id_: str) -> str:
    """The input name a row's id stands for (the inverse of :func:`row_id`; ``os.fsencode`` of it gives a file
    name's bytes)."""
    raw = id_.encode("utf-8", "surrogateescape")
    if not ESCAPED_BYTE.search(raw):
        return id_
    return os.fsdecode(ESCAPED_BYTE.sub(lambda match: bytes([int(match[1], 16)]), raw))


def result_row(models, id_: str, results: dict[str, Any]) -> dict[str, Any]:
    """One output row: the input's id (:func:`row_id`), each model's prediction (scores with their range and
    direction), or the error of an unreadable input."""
    from ..tasks import score_scale  # (imports the model code: not at the command line's start)

    if "error" in results:
        return {"id": row_id(id_), "error": row_id(results["error"])}
    row = {"id": row_id(id_)}
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


__all__ = ["id_name", "model_columns", "result_columns", "result_row", "row_id"]
