"""The paper's datasets: metadata, loaders and split protocols by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import Dataset, DatasetDict

from ..errors import UnknownNameError
from . import emotion, iqa_authentic, iqa_synthetic, memorability, synthetic
from .splits import (
    LODA_SEED,
    SplitTooSmallError,
    column_splits,
    fraction_splits,
    grouped_splits,
    lamem_splits,
    loda_splits,
)

Task = str  # a task of `perceptclip_hf.tasks` (quality, memorability, emotion, or a registered one)
SplitProtocol = Literal["random", "reference", "group", "official", "lamem", "random_75_20_5", "test_only"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the paper's pipeline needs to know about a dataset.

    ``label`` always holds the published value; ``higher_is_better`` says whether to negate it (LIVE DMOS).
    ``replicas``: times each training image is repeated per epoch (IQA). ``test_resize_short``: short
    side the test (and train) images are resized to before cropping (``None``: native size). ``interpolation``:
    the filter of every resize of its images (LoDa: bicubic for FLIVE and LIVE, bilinear elsewhere).
    ``n_train_groups``: references/groups in train for grouped splits (``None``: 80%).
    """

    name: str
    task: Task
    loader: Callable[..., Dataset]
    split_protocol: SplitProtocol
    score_range: tuple[float, float] | None = None
    higher_is_better: bool = True
    replicas: int = 1
    class_names: tuple[str, ...] | None = None
    positive_classes: tuple[str, ...] | None = None
    group_column: str | None = None
    n_train_groups: int | None = None
    test_resize_short: int | None = None
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    num_splits: int = 10


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


# fmt: off
_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("koniq10k", "quality", iqa_authentic.load_koniq10k, "random", (1.0, 5.0), replicas=3,
                    test_resize_short=384),
        DatasetInfo("livec", "quality", iqa_authentic.load_livec, "random", (0.0, 100.0), replicas=5),
        DatasetInfo("spaq", "quality", iqa_authentic.load_spaq, "random", (0.0, 100.0), replicas=3,
                    test_resize_short=384),
        DatasetInfo("flive", "quality", iqa_authentic.load_flive, "random", (0.0, 100.0), replicas=1,
                    test_resize_short=384, interpolation="bicubic"),
        DatasetInfo("live", "quality", iqa_synthetic.load_live, "reference", (0.0, 100.0),
                    higher_is_better=False, replicas=5, group_column="reference", n_train_groups=23,
                    test_resize_short=384, interpolation="bicubic"),
        DatasetInfo("tid2013", "quality", iqa_synthetic.load_tid2013, "reference", (0.0, 9.0), replicas=10,
                    group_column="reference", n_train_groups=20),
        DatasetInfo("kadid10k", "quality", iqa_synthetic.load_kadid10k, "reference", (1.0, 5.0), replicas=3,
                    group_column="reference", n_train_groups=65, test_resize_short=384),
        DatasetInfo("agiqa3k", "quality", iqa_authentic.load_agiqa3k, "group", (0.0, 5.0), replicas=3,
                    group_column="group"),
        DatasetInfo("synthetic_iqa", "quality", synthetic.load_synthetic_iqa, "group", (1.0, 5.0), replicas=1,
                    group_column="group"),
        DatasetInfo("lamem", "memorability", memorability.load_lamem, "lamem", (0.0, 1.0), num_splits=5),
        DatasetInfo("things", "memorability", memorability.load_things, "test_only", (0.0, 1.0), num_splits=1),
        DatasetInfo("emoset", "emotion", emotion.load_emoset, "official", class_names=emotion.EMOSET_CLASSES,
                    positive_classes=emotion.EMOSET_POSITIVE, num_splits=1),
        DatasetInfo("emotionroi", "emotion", emotion.load_emotionroi, "random_75_20_5",
                    class_names=emotion.EMOTIONROI_CLASSES, positive_classes=emotion.EMOTIONROI_POSITIVE,
                    num_splits=5),
    )
}
# fmt: on


_BY_KEY = {_key(name): info for name, info in _DATASETS.items()}


def register_dataset(info: DatasetInfo, exist_ok: bool = False) -> DatasetInfo:
    """Add a dataset to the registry (then `train`, `evaluate` and `list` know it by name), e.g.
    `register_dataset(DatasetInfo("my_aesthetics", "aesthetics", my_loader, "random", (1, 10), num_splits=1))`.
    `loader(data_dir)` returns a Dataset with `image` and `label` columns (see `load_table`)."""
    key = _key(info.name)
    if key in _BY_KEY and not exist_ok:
        raise ValueError(f"dataset {info.name!r} is already registered; pass exist_ok=True to replace it.")
    _DATASETS[info.name] = _BY_KEY[key] = info
    return info


def list_datasets(task: Task | None = None) -> list[str]:
    """Registered dataset names (optionally of one task)."""
    return [info.name for info in _DATASETS.values() if task is None or info.task == task]


def get_dataset_info(name: str) -> DatasetInfo:
    """Info by name, ignoring case, ``-``, ``_`` and spaces (``"KonIQ-10k"`` -> ``koniq10k``)."""
    try:
        return _BY_KEY[_key(name)]
    except KeyError:
        raise UnknownNameError(
            f"unknown dataset {name!r}; known: {list_datasets()} (add one with register_dataset)"
        ) from None


def load_benchmark(name: str, data_dir: str | Path, **kwargs) -> Dataset:
    """Load dataset ``name`` from its original layout in ``data_dir`` (``kwargs`` go to its loader)."""
    return get_dataset_info(name).loader(data_dir, **kwargs)


def benchmark_splits(
    name: str | DatasetInfo,
    ds: Dataset,
    split: int = 0,
    *,
    data_dir: str | Path | None = None,
    validation_fraction: float = 0.1,
    seed: int = LODA_SEED,
) -> DatasetDict:
    """Split ``split`` (0-based) of dataset ``name`` (or its info) under its protocol (see :mod:`.splits`).

    ``validation_fraction`` applies where the protocol has no official validation set; LaMem needs
    ``data_dir`` (its split files). A dataset too small for its split raises :class:`SplitTooSmallError` naming it
    (and ``data_dir``), its images (and groups) and the fewest the split needs.
    """
    info = name if isinstance(name, DatasetInfo) else get_dataset_info(name)
    if not 0 <= split < info.num_splits:
        raise ValueError(f"{info.name} has splits 0..{info.num_splits - 1}, got {split}")
    try:
        return _protocol_splits(info, ds, split, data_dir, validation_fraction, seed)
    except SplitTooSmallError as err:
        where = f"{info.name} in {data_dir}" if data_dir is not None else info.name
        raise SplitTooSmallError(f"{where}: {err}") from None


def _protocol_splits(
    info: DatasetInfo, ds: Dataset, split: int, data_dir: str | Path | None, validation_fraction: float, seed: int
) -> DatasetDict:
    """Split ``split`` of ``ds`` under ``info``'s protocol (see :func:`benchmark_splits`)."""
    protocol = info.split_protocol
    if protocol == "random":
        return loda_splits(ds, split, seed=seed, validation_fraction=validation_fraction)
    if protocol in ("reference", "group"):
        return grouped_splits(
            ds,
            info.group_column,
            split,
            n_train_groups=info.n_train_groups,
            seed=seed,
            validation_fraction=validation_fraction,
        )
    if protocol == "official":
        return column_splits(ds, "split")
    if protocol == "lamem":
        if data_dir is None:
            raise ValueError("LaMem splits are read from its split files: pass data_dir=")
        return lamem_splits(ds, data_dir, split)
    if protocol == "random_75_20_5":
        return fraction_splits(ds, split, seed=seed)
    return DatasetDict({"test": ds})
