"""The score-file formats, one class each, and the registry that picks one by the file's suffix.

A new format is a :class:`~.score_files.ScoreFile` subclass (how rows are written and read back) and one row of
:data:`FORMATS`; ownership, the record, resume and ``--retry-errors`` come from the base class. Besides files, rows
can go to a text stream as CSV (:class:`CsvStream`: stdout) or stay in memory (:class:`RowList`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ..errors import OutputError
from .score_files import Previous, ScoreFile, write_atomically

PARQUET_METADATA_KEY = b"perceptclip"


class CsvScoreFile(ScoreFile):
    """A ``.csv`` file: a header row, then one row per image (a classifier's probabilities in ``prob_<label>``
    columns)."""

    suffix = ".csv"

    def header(self) -> str:
        return csv_text([], self.columns, header=True)

    def serialize(self, rows: Iterable[dict[str, Any]]) -> str:
        return csv_text(rows, self.columns)

    def parse(self, text: str) -> list[dict[str, Any]]:
        reader = csv.reader(io.StringIO(text, newline=""))
        self.check_columns(next(reader, []))
        rows = []
        for values in reader:
            if len(values) != len(self.columns) or not values[0]:
                raise self.damaged(reader.line_num, f"has {len(values)} field(s), expected {len(self.columns)}")
            rows.append(dict(zip(self.columns, values)))
        return rows


class JsonlScoreFile(ScoreFile):
    """A ``.jsonl`` file: one JSON object per line (a classifier's probabilities as a mapping)."""

    suffix = ".jsonl"

    def serialize(self, rows: Iterable[dict[str, Any]]) -> str:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def parse(self, text: str) -> list[dict[str, Any]]:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or not row.get("id"):
                raise self.damaged(number, "is not a result row (invalid JSON or no 'id')")
            rows.append(row)
        return rows


class ParquetScoreFile(JsonlScoreFile):
    """A ``.parquet`` file. It cannot be appended to: rows wait as JSONL in ``<file>.pending.jsonl`` while the run
    goes and are written into the file (atomically) when it closes, the record in the file's own metadata too (key
    ``perceptclip``). A killed run leaves its rows in the pending file; a resume reads both."""

    suffix = ".parquet"
    pending = True

    def stored_rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path)
        except Exception as err:
            raise OutputError(
                f"--resume {self.path}: cannot read it as Parquet ({type(err).__name__}: {err}); the "
                "file was edited or damaged: use another --output (the file is left untouched)"
            ) from None
        self.check_columns(table.column_names)
        return table.to_pylist()

    def write_file(self, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [row.get(name) for row in map(csv_row, rows)] for name in self.columns}
        table = pa.table(columns).replace_schema_metadata(
            {PARQUET_METADATA_KEY: json.dumps({**self.identity, "runs": runs or []}, ensure_ascii=False)}
        )
        write_atomically(self.path, lambda path: pq.write_table(table, path))


FORMATS: dict[str, type[ScoreFile]] = {
    format_.suffix: format_ for format_ in (CsvScoreFile, JsonlScoreFile, ParquetScoreFile)
}


def score_file_class(path: str | os.PathLike) -> type[ScoreFile]:
    """The format of ``path``, by its suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        *others, last = FORMATS
        raise OutputError(f"--output {os.fspath(path)}: use a {', '.join(others)} or {last} file")
    return FORMATS[suffix]


def open_score_file(path: str | os.PathLike, *args: Any, **kwargs: Any) -> ScoreFile:
    """The score file at ``path`` in its format (arguments as for :class:`~.score_files.ScoreFile`)."""
    return score_file_class(path)(path, *args, **kwargs)


class CsvStream:
    """CSV rows on a text stream (stdout), flushed per batch; nothing to resume, no record."""

    def __init__(self, columns: list[str], stream: TextIO | None = None):
        self.columns, self.stream = columns, stream or sys.stdout
        self.stream.write(csv_text([], columns, header=True))

    def open(self) -> Previous:
        return Previous()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.stream.write(csv_text(rows, self.columns))
        self.stream.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.stream.flush()


class RowList(list):
    """Rows kept in memory (a scoring job without an output returns them)."""

    def __init__(self, columns: list[str]):
        super().__init__()
        self.columns = columns

    def open(self) -> Previous:
        return Previous()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.extend(rows)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        pass


def csv_text(rows: Iterable[dict[str, Any]], columns: list[str], header: bool = False) -> str:
    """Rows as CSV lines ending in ``\n``. A field holding ``\r`` (a file name may) is quoted: Python's writer quotes
    only the line terminator's characters, so each row is written with ``\r\n`` and its end made ``\n``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    lines = []
    for row in ([dict(zip(columns, columns))] if header else []) + [csv_row(row) for row in rows]:
        writer.writerow(row)
        lines.append(buffer.getvalue()[:-2] + "\n")
        buffer.seek(0)
        buffer.truncate()
    return "".join(lines)


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A result row for CSV: a classifier's ``probabilities`` (``<name>_probabilities`` with several models)
    spread over ``prob_<label>`` (``<name>_prob_<label>``) columns; JSONL rows keep the mapping."""
    if not any(key.endswith("probabilities") for key in row):
        return row
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("probabilities") and isinstance(value, dict):
            prefix = key[: -len("probabilities")]
            flat.update({f"{prefix}prob_{label}": p for label, p in value.items()})
        else:
            flat[key] = value
    return flat


__all__ = [
    "FORMATS",
    "CsvScoreFile",
    "CsvStream",
    "JsonlScoreFile",
    "ParquetScoreFile",
    "RowList",
    "csv_row",
    "open_score_file",
    "score_file_class",
]
