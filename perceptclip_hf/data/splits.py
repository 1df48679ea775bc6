"""Reproducible train/validation/test splits, returned as ``datasets.DatasetDict`` via ``Dataset.select``.

Protocols (``split`` is 0-based everywhere; LaMem's files are numbered ``split + 1``):

- LoDa random splits (KonIQ, LIVEC, SPAQ, FLIVE): ``random.seed(3407)``; ``idx = list(range(N))``;
  ``random.shuffle(idx)`` ``split + 1`` times in sequence; train = ``idx[:round(0.8 * N)]``, test = rest.
  Indices are ``sample_id`` values (label-file rows), so skipped rows never shift the others.
- Reference / group splits (KADID, LIVE, TID2013, AGIQA-3K): the *sorted* distinct values of a column are
  shuffled by the same procedure; the first ``n`` go to train (KADID 65, LIVE 23, TID2013 20, default
  ``round(0.8 * n_groups)``). No reference (or prompt) is in two splits.
- Validation (the paper's 10%, our deterministic rule): the **last** ``round_half_up(0.1 * len(train))``
  items of the shuffled train list (sample ids, or references/groups for grouped splits) become
  ``validation``. ``validation_fraction=0`` gives only train/test.
- EmotionROI: 5 random 75/20/5 splits (same permutation procedure; train, test, then validation).
- Official splits: a ``split`` column (EmoSet json files), LaMem's split files, or a user split file.
- Too small: a random or grouped split that would leave train or test empty raises :class:`SplitTooSmallError`
  with the counts and the fewest images (groups) it needs.

Only ``random.Random(seed)`` and sorted lists are used: results never depend on ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from datasets import Dataset, DatasetDict

from .errors import DatasetFormatError, get_load_report
from .memorability import LAMEM_SPLIT_NAMES, lamem_split_file, read_lamem_split
from .tables import read_text

logger = logging.getLogger("perceptclip_hf.data")
T = TypeVar("T")

LODA_SEED = 3407
SPLIT_ORDER = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}


class SplitTooSmallError(DatasetFormatError):
    """Too few images (or groups) for a split with a train and a test part."""


# ----------------------------------------------------------------------------- pure index functions
def loda_permutation(items: Sequence[T], split: int = 0, seed: int = LODA_SEED) -> list[T]:
    """``items`` after ``split + 1`` successive ``random.shuffle`` calls from ``random.seed(seed)``."""
    if split < 0:
        raise ValueError(f"split must be >= 0, got {split}")
    rng = random.Random(seed)
    order = list(items)
    for _ in range(split + 1):
        rng.shuffle(order)
    return order


def loda_split_indices(
    n: int, split: int = 0, seed: int = LODA_SEED, train_fraction: float = 0.8
) -> tuple[list[int], list[int]]:
    """LoDa's ``(train, test)`` row indices for ``n`` rows (train = ``idx[:round(0.8 * n)]``)."""
    sizes = _train_test_sizes(train_fraction)
    _require_train_and_test(n, sizes, f"{n} images")
    order = loda_permutation(range(n), split, seed)
    cut = sizes(n)[0]
    return order[:cut], order[cut:]


def group_split_names(
    groups: Iterable[Hashable],
    n_train: int | None = None,
    split: int = 0,
    seed: int = LODA_SEED,
    train_fraction: float = 0.8,
) -> tuple[list, list]:
    """``(train groups, test groups)``: sorted distinct groups, LoDa-shuffled, first ``n_train`` in train."""
    values = list(groups)
    distinct = sorted(set(values))
    sizes = _train_test_sizes(train_fraction, n_train)
    _require_train_and_test(len(distinct), sizes, f"{len(values)} images in {len(distinct)} groups", grouped=True)
    order = loda_permutation(distinct, split, seed)
    cut = sizes(len(order))[0]
    return order[:cut], order[cut:]


def validation_size(n: int, fraction: float) -> int:
    """``round_half_up(fraction * n)``, at least 1 when ``fraction > 0`` and ``n > 1``."""
    if fraction <= 0:
        return 0
    return min(max(int(fraction * n + 0.5), 1), n - 1)


def hold_out(items: Sequence[T], fraction: float) -> tuple[list[T], list[T]]:
    """``(kept, held_out)``: the last ``validation_size(len(items), fraction)`` items are held out."""
    k = validation_size(len(items), fraction)
    return list(items[: len(items) - k]), list(items[len(items) - k :])


# ----------------------------------------------------------------------------- dataset splits
def loda_splits(
    ds: Dataset,
    split: int = 0,
    *,
    seed: int = LODA_SEED,
    train_fraction: float = 0.8,
    validation_fraction: float = 0.1,
) -> DatasetDict:
    """LoDa's random split ``split`` of ``ds`` (by ``sample_id``) plus the validation hold-out."""
    train, test = loda_split_indices(_num_source_rows(ds), split, seed, train_fraction)
    train, validation = hold_out(train, validation_fraction)
    return _select_ids(ds, {"train": train, "validation": validation, "test": test})


def grouped_splits(
    ds: Dataset,
    column: str = "reference",
    split: int = 0,
    *,
    n_train_groups: int | None = None,
    train_fraction: float = 0.8,
    seed: int = LODA_SEED,
    validation_fraction: float = 0.1,
) -> DatasetDict:
    """Content-disjoint split by ``column`` (``reference`` or ``group``); validation holds out groups."""
    _require_column(ds, column)
    values = _column(ds, column)
    train, test = group_split_names(values, n_train_groups, split, seed, train_fraction)
    train, validation = hold_out(train, validation_fraction)
    split_of = {
        g: name for name, groups in (("train", train), ("validation", validation), ("test", test)) for g in groups
    }
    positions: dict[str, list[int]] = {name: [] for name in SPLIT_ORDER}
    for position, value in enumerate(values):
        positions[split_of[value]].append(position)
    return DatasetDict({name: ds.select(rows) for name, rows in positions.items() if rows})


def fraction_splits(
    ds: Dataset,
    split: int = 0,
    *,
    train_fraction: float = 0.75,
    test_fraction: float = 0.20,
    seed: int = LODA_SEED,
) -> DatasetDict:
    """Random train/test/validation split (EmotionROI: 75/20/5); the remainder is validation."""
    n = _num_source_rows(ds)

    def sizes(count: int) -> tuple[int, int]:
        return round(train_fraction * count), round(test_fraction * count)

    _require_train_and_test(n, sizes, f"{n} images")
    order = loda_permutation(range(n), split, seed)
    n_train, n_test = sizes(n)
    return _select_ids(
        ds,
        {"train": order[:n_train], "validation": order[n_train + n_test :], "test": order[n_train : n_train + n_test]},
    )


def column_splits(ds: Dataset, column: str = "split") -> DatasetDict:
    """Official splits stored in a column (``train``/``val(idation)``/``test``; empty values ignored)."""
    _require_column(ds, column)
    positions: dict[str, list[int]] = {}
    for position, value in enumerate(_column(ds, column)):
        if value:
            positions.setdefault(_split_name(value, f"column {column!r}"), []).append(position)
    if not positions:
        raise DatasetFormatError(f"column {column!r} assigns no row to a split")
    return DatasetDict({name: ds.select(positions[name]) for name in SPLIT_ORDER if name in positions})


def lamem_splits(ds: Dataset, data_dir: str | Path, split: int = 0) -> DatasetDict:
    """LaMem's official split ``split`` (0-4 -> ``splits/{train,val,test}_{split+1}.txt``)."""
    names = {
        part: [name for _, name, _ in read_lamem_split(lamem_split_file(data_dir, part, split + 1))]
        for part in LAMEM_SPLIT_NAMES
    }
    return splits_from_names(ds, names, missing="skip")


def splits_from_names(
    ds: Dataset,
    names: Mapping[str, Sequence[str]],
    *,
    column: str = "image_name",
    missing: Literal["raise", "skip"] = "raise",
    source: str = "split",
) -> DatasetDict:
    """Select rows whose ``column`` value is listed under each split name."""
    _require_column(ds, column)
    position_of = {value: position for position, value in enumerate(_column(ds, column))}
    selected: dict[str, list[int]] = {}
    for split, values in names.items():
        unknown = [v for v in values if v not in position_of]
        if unknown and missing == "raise":
            example = next(iter(position_of), "")
            raise DatasetFormatError(
                f"{source}: {split}: {len(unknown)} name(s) not in the dataset's {column!r} column "
                f"(misspelt, or skipped at load time), e.g. {unknown[:3]}; names look like {example!r}"
            )
        if unknown:
            logger.warning("%s: %s: %d listed image(s) not in the dataset, left out", source, split, len(unknown))
        selected[_split_name(split, source)] = [position_of[v] for v in values if v in position_of]
    return DatasetDict({name: ds.select(selected[name]) for name in SPLIT_ORDER if selected.get(name)})


def splits_from_file(ds: Dataset, path: str | Path, *, column: str = "image_name") -> DatasetDict:
    """A user split file: json ``{"train": [...], "validation": [...], "test": [...]}``.

    Entries are either all integers (``sample_id`` = row number of the label file) or all image names
    (matched against ``column``). Duplicates, unknown names, out-of-range indices and an item in two
    splits are errors naming the file and split.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: split file not found")
    try:
        content = json.loads(read_text(path, "split file"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(content, dict) or not content:
        raise DatasetFormatError(f'{path}: expected {{"train": [...], "validation": [...], "test": [...]}}')
    content = {_split_name(key, str(path)): value for key, value in content.items()}
    seen: dict = {}
    for split, items in content.items():
        if not isinstance(items, list):
            raise DatasetFormatError(f"{path}: {split}: expected a list")
        for item in items:
            if not isinstance(item, (int, str)) or isinstance(item, bool):
                raise DatasetFormatError(f"{path}: {split}: {item!r} is neither a row number nor an image name")
            if item in seen:
                where = "twice" if seen[item] == split else f"also in {seen[item]!r}"
                raise DatasetFormatError(f"{path}: {split}: {item!r} is listed {where}")
            seen[item] = split
    items = list(seen)
    if all(isinstance(i, str) for i in items):
        return splits_from_names(ds, content, column=column, source=str(path))
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise DatasetFormatError(f"{path}: entries must be all integers (row numbers) or all image names")
    n = _num_source_rows(ds)
    bad = [i for i in items if not 0 <= i < n]
    if bad:
        raise DatasetFormatError(f"{path}: row index/indices {bad[:5]} out of range 0..{n - 1}")
    return _select_ids(ds, content, source=str(path))


# ----------------------------------------------------------------------------- helpers
def _train_test_sizes(train_fraction: float, n_train: int | None = None) -> Callable[[int], tuple[int, int]]:
    """``count -> (train, test)``: the first ``n_train`` (default ``round(train_fraction * count)``) go to train."""

    def sizes(count: int) -> tuple[int, int]:
        cut = round(train_fraction * count) if n_train is None else n_train
        return cut, count - cut

    return sizes


def _require_train_and_test(
    count: int, sizes: Callable[[int], tuple[int, int]], counted: str, grouped: bool = False
) -> None:
    """Raise :class:`SplitTooSmallError` unless ``sizes(count)``, the split's ``(train, test)`` sizes for ``count``
    images (``grouped``: groups), are both positive; the message says what was ``counted`` and the fewest that do."""
    if min(sizes(count)) > 0:
        return
    unit = "groups" if grouped else "images"
    minimum = next((n for n in range(count + 1, count + 10_000) if min(sizes(n)) > 0), None)
    if minimum is None:
        raise ValueError(f"the split's settings leave train or test empty for any number of {unit}")
    raise SplitTooSmallError(
        f"{counted}: too few for a train/test split{' by group' if grouped else ''}, which needs at least "
        f"{minimum} {unit}; add images{' of other groups' if grouped else ''}"
    )


def _num_source_rows(ds: Dataset) -> int:
    report = get_load_report(ds)
    if report is not None and "sample_id" in ds.column_names:
        return report.num_source_rows
    return len(ds)


def _select_ids(ds: Dataset, ids: Mapping[str, Sequence[int]], source: str = "split") -> DatasetDict:
    """Rows by ``sample_id`` (row position when absent); ids of skipped rows are dropped with a warning."""
    if "sample_id" in ds.column_names:
        position_of = {sample_id: position for position, sample_id in enumerate(_column(ds, "sample_id"))}
    else:
        position_of = {i: i for i in range(len(ds))}
    out = {}
    for split in SPLIT_ORDER:
        wanted = ids.get(split, [])
        rows = [position_of[i] for i in wanted if i in position_of]
        if len(rows) < len(wanted):
            logger.warning(
                "%s: %s: %d row(s) skipped at load time are left out", source, split, len(wanted) - len(rows)
            )
        if rows:
            out[split] = ds.select(rows)
    return DatasetDict(out)


def _column(ds: Dataset, column: str) -> list:
    """All values of ``column`` as a list, bypassing any transform set on ``ds``."""
    return ds.with_format(None)[column][:]


def _split_name(name: str, source: str) -> str:
    try:
        return _SPLIT_ALIASES[str(name).lower()]
    except KeyError:
        raise DatasetFormatError(f"{source}: unknown split name {name!r}; use train, validation or test") from None


def _require_column(ds: Dataset, column: str) -> None:
    if column not in ds.column_names:
        raise DatasetFormatError(f"dataset has no column {column!r}; columns: {ds.column_names}")
