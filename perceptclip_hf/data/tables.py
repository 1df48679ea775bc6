"""Reading label files: required files and folders, text decoding (one error for any non-UTF-8 file, naming the
line and byte), CSV / TSV / XLSX tables, whitespace-separated lines and MATLAB variables, each row with its
``where`` (file and line) for error messages."""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError

PathLike = str | os.PathLike


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
