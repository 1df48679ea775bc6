"""Records: rows of a label file as samples (values parsed, images checked, duplicates merged or refused) and the
record -> ``datasets.Dataset`` builder used by every loader. Reading the files themselves is :mod:`.tables`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from datasets import ClassLabel, Dataset, DatasetInfo, Features, Image, Value

from .errors import DatasetFormatError, LoadReport, RowErrors, logger, row_error
from .files import walk_images
from .images import verify_image
from .tables import PathLike, require_dir

Duplicates = Literal["error", "first", "mean"]
DUPLICATE_POLICIES = get_args(Duplicates)


@dataclass
class Record:
    """One sample before it becomes a dataset row.

    ``sample_id`` is the row's position in the dataset's canonical order (label-file order, after the
    documented drops); split indices refer to it, so skipping a bad row never shifts the others.
    """

    image_path: str
    label: Any
    where: str
    sample_id: int
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- values
def parse_score(value: Any, where: str, what: str = "label") -> float:
    """``value`` as a finite float, else an actionable :class:`DatasetFormatError`."""
    text = value.strip() if isinstance(value, str) else value
    if text is None or text == "":
        raise row_error(where, f"{what} is empty")
    try:
        score = float(text)
    except (TypeError, ValueError):
        raise row_error(where, f"{what} {value!r} is not a number") from None
    if not math.isfinite(score):
        raise row_error(where, f"{what} is {score} (not a finite number)")
    return score


def parse_name(value: Any, where: str, what: str = "image name") -> str:
    text = str(value).strip() if value is not None else ""
    if not text or text.lower() == "nan":
        raise row_error(where, f"{what} is empty")
    return text


def scan_class_folders(
    root: PathLike, class_names: Sequence[str] | None = None, *, report: LoadReport
) -> tuple[list[str], list[tuple[int, Path]]]:
    """``(class_names, [(class index, image path)])`` for ``root/<class>/[<sub>/...]<image>``.

    Without ``class_names`` the sorted sub-folder names are the classes. With them, every listed class
    folder must exist and any other sub-folder is an error (a misspelt or extra class). Images at any depth
    belong to their top-level class folder (torchvision's ``ImageFolder``), as :func:`.files.walk_images` finds
    them. Files found but not loaded, and class folders without images, go to ``report.not_loaded`` (logged).
    """
    root = require_dir(root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = folders
    unknown = [f for f in folders if f not in class_names]
    missing = [c for c in class_names if c not in folders]
    if unknown or missing:
        raise DatasetFormatError(
            f"{root}: class folders do not match the classes {list(class_names)}: "
            f"unexpected {unknown}, missing {missing}; rename or remove those folders"
        )
    walk = walk_images(root)
    index_of = {name: index for index, name in enumerate(class_names)}
    samples: list[tuple[int, Path]] = []
    not_loaded = [f"{path}: {reason}" for path, reason in walk.not_scored]
    for path in map(Path, walk.images):
        top = path.relative_to(root).parts[0]
        if top in index_of:
            samples.append((index_of[top], path))
        else:
            not_loaded.append(f"{path}: not in a class folder")
    samples.sort(key=lambda sample: sample[0])  # class order, walk order within a class
    if not_loaded:
        logger.warning(
            "%s: %d file(s) found but not loaded (see the load report), e.g. %s", root, len(not_loaded), not_loaded[0]
        )
    counts = Counter(index for index, _ in samples)
    for index, name in enumerate(class_names):
        if not counts[index]:
            logger.warning("%s: class folder %s has no images; the class gets no samples", report.dataset, root / name)
            not_loaded.append(f"{root / name}: class folder with no images")
    report.not_loaded += not_loaded
    return list(class_names), samples


# ----------------------------------------------------------------------------- builder
def build_dataset(
    records: Sequence[Record],
    *,
    name: str,
    root: PathLike,
    errors: RowErrors,
    class_names: Sequence[str] | None = None,
    verify_images: bool = False,
    num_source_rows: int | None = None,
    duplicates: Duplicates = "error",
) -> Dataset:
    """Check each record's image and build the dataset.

    Columns: ``image`` (``Image()``, the file path, decoded lazily), ``label`` (``float32``, or
    ``ClassLabel(class_names)``), ``image_path`` (absolute), ``image_name`` (relative to ``root``, POSIX),
    ``sample_id`` and the records' metadata. Missing images (and undecodable ones if ``verify_images``)
    are raised or skipped according to ``errors``. An image listed twice is an error naming both rows,
    unless ``duplicates`` is ``"first"`` (keep the first row) or ``"mean"`` (average the scores; classes
    must agree); see :func:`merge_duplicates`. The :class:`LoadReport` goes to ``ds.info.description``.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    bases = (Path(os.path.abspath(root)), Path(root).resolve())
    root = bases[1]
    report = errors.report
    report.num_source_rows = len(records) if num_source_rows is None else num_source_rows
    kept: list[Record] = []
    for record in records:
        with errors.guard():
            if not os.path.isfile(record.image_path):
                raise row_error(record.where, f"image file {record.image_path} not found")
            if verify_images:
                try:
                    verify_image(record.image_path)
                except DatasetFormatError as err:
                    raise row_error(record.where, str(err)) from None
            kept.append(record)
    kept = merge_duplicates(kept, duplicates, report, class_names)
    if not kept:
        found = (
            f"; {len(report.not_loaded)} file(s) or folder(s) not loaded, e.g. {report.not_loaded[0]}"
            if report.not_loaded
            else ""
        )
        raise DatasetFormatError(
            f"{name}: no usable rows under {root} ({report.num_skipped} skipped){found}; check the dataset folder"
        )
    paths = [os.path.abspath(r.image_path) for r in kept]
    columns: dict[str, list] = {
        "image": paths,
        "label": [r.label for r in kept],
        "image_path": paths,
        "image_name": [_relative_name(r.image_path, bases) for r in kept],
        "sample_id": [r.sample_id for r in kept],
    }
    for key in kept[0].meta:
        columns[key] = [r.meta[key] for r in kept]
    label_feature = ClassLabel(names=list(class_names)) if class_names is not None else Value("float32")
    features = Features(
        {
            "image": Image(),
            "label": label_feature,
            "image_path": Value("string"),
            "image_name": Value("string"),
            "sample_id": Value("int64"),
            **{key: _value_feature(columns[key]) for key in kept[0].meta},
        }
    )
    info = DatasetInfo(description=report.to_description(), features=features)
    return Dataset.from_dict(columns, features=features, info=info)


def merge_duplicates(
    records: Sequence[Record], duplicates: Duplicates, report: LoadReport, class_names: Sequence[str] | None = None
) -> list[Record]:
    """One record per image, in first-listed order. Images are the same when their absolute paths are, after
    resolving the folders' symlinks (not the file's own: content-addressed stores such as git-annex or the Hub
    cache link identical images to one file). Repeats raise (``"error"``), or keep the first row, with the
    average score for ``"mean"`` (classes must agree); each kept repeat is added to ``report.duplicates``."""
    groups: dict[str, list[Record]] = {}
    folders: dict[str, str] = {}
    for record in records:
        folder, file_name = os.path.split(os.path.abspath(record.image_path))
        real = folders.setdefault(folder, os.path.realpath(folder))
        groups.setdefault(os.path.join(real, file_name), []).append(record)
    repeated = sum(len(group) > 1 for group in groups.values())
    merged = []
    for group in groups.values():
        first = group[0]
        if len(group) > 1:
            labels = [record.label for record in group]
            shown = [class_names[label] if class_names is not None else label for label in labels]
            listed = f"image {first.image_path} is listed {len(group)} times: " + ", ".join(
                f"{record.where} (label {label})" for record, label in zip(group, shown)
            )
            conflict = class_names is not None and len(set(labels)) > 1
            if duplicates == "error" or (duplicates == "mean" and conflict):
                fix = (
                    "pass duplicates='first' to keep the first row"
                    if class_names is not None
                    else "pass duplicates='first' (keep the first row) or duplicates='mean' (average the scores)"
                )
                others = f"; {repeated} images in all are listed more than once" if repeated > 1 else ""
                raise DatasetFormatError(f"{listed}{others}; remove the extra rows, or {fix}")
            if duplicates == "mean" and class_names is None:
                first = dataclasses.replace(first, label=float(np.mean(labels)))
                report.duplicates.append(f"{listed}; averaged to {first.label:g}")
            else:
                report.duplicates.append(f"{listed}; kept the first")
        merged.append(first)
    if report.duplicates:
        logger.warning(
            "%s: %d image(s) listed more than once, %s (see the load report)",
            report.dataset,
            repeated,
            "averaged" if duplicates == "mean" else "first row kept",
        )
    return merged


def _relative_name(path: str, bases: tuple[Path, Path]) -> str:
    """``path`` relative to the root as given (a symlinked ``awe/`` keeps ``awe/1.jpg``), else to the resolved
    root, else its file name."""
    for base, target in zip(bases, (Path(os.path.abspath(path)), Path(path).resolve())):
        try:
            return target.relative_to(base).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _value_feature(values: list) -> Value:
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, bool):
        return Value("bool")
    if isinstance(sample, (int, np.integer)):
        return Value("int64")
    if isinstance(sample, (float, np.floating)):
        return Value("float32")
    return Value("string")


def records_from_rows(
    rows: Sequence[tuple[str, dict]],
    errors: RowErrors,
    *,
    image_dir: PathLike,
    name_column: str,
    label_column: str,
    meta_columns: dict[str, str] | None = None,
    parse_label=parse_score,
) -> list[Record]:
    """Records from table rows: ``image_dir / row[name_column]``, ``parse_label(row[label_column])``.

    ``meta_columns`` maps output column -> table column (kept as text). Bad rows are raised or skipped.
    """
    image_dir = Path(image_dir)
    records = []
    for sample_id, (where, row) in enumerate(rows):
        with errors.guard():
            name = parse_name(row.get(name_column), where)
            label = parse_label(row.get(label_column), where)
            meta = {out: "" if row.get(col) is None else str(row.get(col)) for out, col in (meta_columns or {}).items()}
            records.append(Record(str(image_dir / name), label, where, sample_id, meta))
    return records
