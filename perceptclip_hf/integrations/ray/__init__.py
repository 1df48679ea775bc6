"""PerceptCLIP on Ray Data (extra ``[ray]``): the scorer as a callable class for ``map_batches``, and the scoring job
of ``perceptclip predict --engine ray``.

    >>> import ray
    >>> from perceptclip_hf.integrations.ray import PerceptCLIPPredictor
    >>> images = ray.data.read_binary_files("photos/", include_paths=True)
    >>> scores = images.map_batches(PerceptCLIPPredictor, fn_constructor_kwargs={"models": "quality"},
    ...                             batch_size=16, concurrency=1)
    >>> scores.write_parquet("scores/")

    >>> from perceptclip_hf.integrations.ray import score_with_ray
    >>> summary = score_with_ray(["photos/", "shards/{000000..000099}.tar"], ["quality", "emotion"], "scores/")

- :mod:`.predictor`: :class:`PerceptCLIPPredictor`, Ray batches in, ``perceptclip predict``'s columns out;
- :mod:`.reading`: the read tasks of :func:`score_with_ray` (inputs → decoded, cropped pixels);
- :mod:`.output_folder`: the folder of Parquet files it writes, its record and what a resume skips;
- :mod:`.job`: :func:`score_with_ray` itself.

The names below load on first use: importing this package loads neither Ray nor torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_NAMES = {"PerceptCLIPPredictor": "predictor", "score_with_ray": "job"}
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
    from .job import score_with_ray  # noqa: F401
    from .predictor import PerceptCLIPPredictor  # noqa: F401
