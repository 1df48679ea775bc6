"""Shared parsing helpers and the record -> ``datasets.Dataset`` builder used by every loader."""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import math
import os
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, get_args

import numpy as np
from datasets import ClassLabel, Dataset, DatasetInfo, Features, Image, Value

from .errors import DatasetFormatError, LoadReport, RowErrors, logger, row_error
from .files import IMAGE_EXTENSIONS, walk_images  # noqa: F401 (IMAGE_EXTENSIONS re-exported)
from .images import verify_image

PathLike = str | os.PathLike
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


# ----------------------------------------------------------------------------- files
def require_file(path: PathLike, what: str = "label file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: {what} not found; check the dataset folder (see docs/datasets.md)")
    return path


def require_dir(path: PathLike, what: str = "image folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: {what} not found; check the dataset folder (see docs/datasets.md)")
    return path


def read_text(path: PathLike, what: str = "label file") -> str:
    """The text of a UTF-8 file (a BOM is dropped); any other encoding is a :class:`DatasetFormatError` naming
    the file, the line and the first byte that is not UTF-8, with the command that converts the file."""
    path = require_file(path, what)
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        position, problem = err.start, f"byte 0x{data[err.start]:02x} is not UTF-8"
    else:
        if "\x00" not in text:
            return text
        position, problem = data.index(b"\0"), "NUL byte (text files hold none)"
    before = data[:position]
    line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
    encoding, label = _likely_encoding(data)
    quoted = shlex.quote(str(path))
    raise DatasetFormatError(
        f"{path}: line {line}: {problem}; the file is probably {label}. Save it as UTF-8 in its place, e.g. "
        f"`iconv -f {encoding} -t utf-8 {quoted} > utf8.tmp && mv utf8.tmp {quoted}`"
    )


def _likely_encoding(data: bytes) -> tuple[str, str]:
    """``(iconv name, name)`` of the encoding a text file that is not UTF-8 most likely has."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data[:2]:
        return "utf-16", "UTF-16 (Excel's 'Unicode text')"
    if re.search(rb"[\x80-\x9f]", data):  # printable in Windows-1252, control codes in Latin-1
        return "cp1252", "Windows-1252"
    return "latin1", "Latin-1"


class CaseInsensitiveDir:
    """Find files in one folder ignoring the case of their names (TID2013 mixes ``.bmp``/``.BMP``)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        names = sorted(os.listdir(self.folder)) if self.folder.is_dir() else []
        self._by_lower = {name.lower(): name for name in names}

    def resolve(self, name: str) -> Path:
        """The existing file matching ``name`` case-insensitively, else ``folder/name`` (absent)."""
        return self.folder / self._by_lower.get(name.lower(), name)


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


# ----------------------------------------------------------------------------- tables
def _check_columns(path: Path, header: Sequence[str], required: Iterable[str]) -> None:
    missing = [col for col in required if col not in header]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing column(s) {missing}; found {list(header)}. "
            "Pass the right column name(s) or fix the header."
        )


def read_csv_header(path: PathLike, delimiter: str = ",") -> list[str]:
    """The stripped column names of a CSV file."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    return [col.strip() for col in next(reader, [])]


def read_csv_table(path: PathLike, required: Iterable[str], delimiter: str = ",") -> list[tuple[str, dict]]:
    """Rows of a CSV file as ``(where, row)``; ``where`` is ``"<file>: line <n>"`` (1-based, header = 1)."""
    path = require_file(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    header = [col.strip() for col in next(reader, [])]
    _check_columns(path, header, required)
    rows = []
    for line_no, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        rows.append((f"{path}: line {line_no}", dict(zip(header, values))))
    return rows


def read_xlsx_table(path: PathLike, required: Iterable[str]) -> list[tuple[str, dict]]:
    """Rows of the first sheet of an ``.xlsx`` file as ``(where, row)`` with Excel row numbers."""
    import openpyxl

    path = require_file(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:
        raise DatasetFormatError(f"{path}: cannot read the spreadsheet ({err})") from err
    try:
        sheet_rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = [str(col).strip() if col is not None else "" for col in next(sheet_rows, ())]
        _check_columns(path, header, required)
        rows = []
        for row_no, values in enumerate(sheet_rows, start=2):
            if all(v is None or str(v).strip() == "" for v in values):
                continue
            rows.append((f"{path}: row {row_no}", dict(zip(header, values))))
    finally:
        workbook.close()
    return rows


def read_text_lines(path: PathLike, fields: int) -> list[tuple[str, list[str]]]:
    """Whitespace-separated lines with exactly ``fields`` fields as ``(where, parts)``; blanks skipped."""
    path = require_file(path)
    rows = []
    for line_no, line in enumerate(io.StringIO(read_text(path), newline=None), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != fields:
            raise DatasetFormatError(
                f"{path}: line {line_no}: expected {fields} whitespace-separated field(s), got {line.strip()!r}"
            )
        rows.append((f"{path}: line {line_no}", parts))
    return rows


def load_mat_variable(path: PathLike, name: str) -> np.ndarray:
    """Variable ``name`` of a MATLAB file, with an error listing the variables present if it is absent."""
    import scipy.io

    path = require_file(path)
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:
        raise DatasetFormatError(f"{path}: cannot read the .mat file ({err})") from err
    if name not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetFormatError(f"{path}: variable {name!r} not found; variables present: {found}")
    return content[name]


def mat_strings(array: np.ndarray) -> list[str]:
    """Flatten a MATLAB cell array of strings (any 1xN / Nx1 shape) to a list of str."""
    out = []
    for item in np.asarray(array, dtype=object).ravel():
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item))
    return out


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
        logger.warning("%s: %d file(s) found but not loaded (see the load report), e.g. %s", root,
                       len(not_loaded), not_loaded[0])
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
        found = (f"; {len(report.not_loaded)} file(s) or folder(s) not loaded, e.g. {report.not_loaded[0]}"
                 if report.not_loaded else "")
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
                f"{record.where} (label {label})" for record, label in zip(group, shown))
            conflict = class_names is not None and len(set(labels)) > 1
            if duplicates == "error" or (duplicates == "mean" and conflict):
                fix = ("pass duplicates='first' to keep the first row" if class_names is not None else
                       "pass duplicates='first' (keep the first row) or duplicates='mean' (average the scores)")
                others = f"; {repeated} images in all are listed more than once" if repeated > 1 else ""
                raise DatasetFormatError(f"{listed}{others}; remove the extra rows, or {fix}")
            if duplicates == "mean" and class_names is None:
                first = dataclasses.replace(first, label=float(np.mean(labels)))
                report.duplicates.append(f"{listed}; averaged to {first.label:g}")
            else:
                report.duplicates.append(f"{listed}; kept the first")
        merged.append(first)
    if report.duplicates:
        logger.warning("%s: %d image(s) listed more than once, %s (see the load report)", report.dataset,
                       repeated, "averaged" if duplicates == "mean" else "first row kept")
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
