"""Bring your own data: a CSV/JSON table of (image, score|class) or an image folder (class = sub-folder)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from datasets import Dataset

from .errors import DatasetFormatError, LoadReport, OnError, RowErrors, row_error
from .records import Duplicates, PathLike, Record, build_dataset, records_from_rows, scan_class_folders
from .tables import read_csv_table, read_text, require_file


def load_table(
    path: PathLike,
    *,
    image_column: str = "path",
    label_column: str | None = None,
    group_column: str | None = None,
    image_root: PathLike | None = None,
    task: Literal["regression", "classification"] = "regression",
    class_names: Sequence[str] | None = None,
    name: str = "custom",
    on_error: OnError = "raise",
    verify_images: bool = False,
    duplicates: Duplicates = "error",
) -> Dataset:
    """A UTF-8 table of images and labels: ``.csv``, ``.tsv``, ``.json`` (objects or lists) or ``.jsonl``.

    Image paths are relative to ``image_root`` (default: the table's folder). ``label_column`` defaults
    to ``score`` (regression) or ``label`` (classification); ``group_column`` (e.g. a prompt or source photo) is
    kept as the ``group`` column, for content-disjoint splits. ``task="classification"``
    makes ``label`` a ``ClassLabel``: values are class names (``class_names`` defaults to the sorted
    distinct values) or integer indices into ``class_names``. An image listed twice is an error unless
    ``duplicates`` is ``"first"`` or ``"mean"`` (see :func:`.records.merge_duplicates`).
    """
    path = require_file(path, "table file")
    if label_column is None:
        label_column = "label" if task == "classification" else "score"
    rows = _read_table(path, [image_column, label_column, *([group_column] if group_column else [])])
    image_dir = Path(image_root) if image_root is not None else path.parent
    errors = RowErrors(LoadReport(name), on_error)
    columns = dict(
        image_dir=image_dir,
        name_column=image_column,
        label_column=label_column,
        meta_columns={"group": group_column} if group_column else None,
    )
    built = dict(name=name, root=image_dir, errors=errors, verify_images=verify_images, num_source_rows=len(rows))
    if task == "regression":
        return build_dataset(records_from_rows(rows, errors, **columns), duplicates=duplicates, **built)
    if task != "classification":
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    if class_names is None:
        class_names = sorted({str(row.get(label_column, "")).strip() for _, row in rows} - {""})
    names = list(class_names)
    records = records_from_rows(rows, errors, **columns, parse_label=lambda v, where: _class_index(v, names, where))
    return build_dataset(records, class_names=names, duplicates=duplicates, **built)


def load_imagefolder(
    data_dir: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    name: str = "imagefolder",
    on_error: OnError = "raise",
    verify_images: bool = False,
    duplicates: Duplicates = "error",
) -> Dataset:
    """``data_dir/<class>/[<sub>/...]<image>``: classes are the sorted sub-folders, or ``class_names`` (checked).

    Images are found as :func:`.files.walk_images` does (content sniffed, symlinked folders followed once);
    the other files found, and empty class folders, are listed in the load report's ``not_loaded``.
    """
    errors = RowErrors(LoadReport(name), on_error)
    names, samples = scan_class_folders(data_dir, class_names, report=errors.report)
    records = [Record(str(path), label, str(path), i) for i, (label, path) in enumerate(samples)]
    return build_dataset(
        records,
        name=name,
        root=data_dir,
        errors=errors,
        class_names=names,
        verify_images=verify_images,
        duplicates=duplicates,
    )


def _class_index(value, class_names: list[str], where: str) -> int:
    text = str(value).strip() if value is not None else ""
    if text in class_names:
        return class_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    raise row_error(where, f"label {value!r} is not one of the classes {class_names}")


def _read_table(path: Path, required: list[str]) -> list[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return read_csv_table(path, required, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix == ".jsonl":
        rows = []
        for line_no, line in enumerate(io.StringIO(read_text(path, "table file"), newline=None), start=1):
            if line.strip():
                rows.append((f"{path}: line {line_no}", _json_value(line, path, f"line {line_no}")))
    elif suffix == ".json":
        content = _json_value(read_text(path, "table file"), path, "content")
        if isinstance(content, dict):
            columns = {key: list(values) for key, values in content.items()}
            length = len(next(iter(columns.values()), []))
            if any(len(v) != length for v in columns.values()):
                raise DatasetFormatError(f"{path}: columns have different lengths")
            content = [{key: columns[key][i] for key in columns} for i in range(length)]
        rows = [(f"{path}: entry {i}", row) for i, row in enumerate(content)]
    else:
        raise DatasetFormatError(f"{path}: unsupported table format {suffix!r}; use .csv, .tsv, .json or .jsonl")
    bad = next((where for where, row in rows if not isinstance(row, dict)), None)
    if bad:
        raise DatasetFormatError(f"{bad}: expected an object with keys {required}")
    missing = [col for col in required if rows and all(col not in row for _, row in rows)]
    if missing:
        present = sorted({str(key) for _, row in rows for key in row})
        raise DatasetFormatError(
            f"{path}: missing column(s) {missing}, its columns are {present}; name yours with "
            "image_column= / label_column= / group_column= (train.py: --image_column ...)"
        )
    return rows


def _json_value(text: str, path: Path, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: {where}: invalid JSON ({err})") from err
