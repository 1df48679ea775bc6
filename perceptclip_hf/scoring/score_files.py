"""Score files: the ``.csv`` / ``.jsonl`` / ``.parquet`` results of scoring images, safe to resume and never foreign.

Every score file has a record beside it, ``<file>.meta.json``: who wrote it, the model (id and fingerprint), the
settings that change scores (crops, seed, resize), its columns and a summary of each run. Each row's ``id`` names its
input (a file's absolute path, a shard sample's key, a table row's id). A file without that
record, or with a record of another model or other settings, is never touched: resuming or overwriting it is an
error naming the file and the difference, and the file stays byte-identical. Rows are appended a batch at a time
(one write, then flush), so an interrupted run leaves at most one partial last line — its own — which a resume
cuts before appending. File ids are absolute paths, so a resume from another folder skips what is done.

A Parquet file cannot be appended to, so its rows are appended to a pending JSONL file beside it
(``<file>.pending.jsonl``) while the run goes, and written into the Parquet file (atomically: a temporary file,
then a rename) when the run closes, with the record in the file's own metadata too (key ``perceptclip``). A
killed run leaves its rows in the pending file; a resume reads both.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..output_safety import check_not_read_only, check_writable

FORMATS = (".csv", ".jsonl", ".parquet")
META_SUFFIX = ".meta.json"
PENDING_SUFFIX = ".pending.jsonl"
PARQUET_METADATA_KEY = b"perceptclip"
WRITER = "perceptclip predict"
FORMAT_VERSION = 3  # 2: rows are named by "id" (was "path": files only); 3: regression rows say their score_scale


def meta_path(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}{META_SUFFIX}")


def check_location(path: str | os.PathLike) -> None:
    """Fail before any work on a score file that cannot be written: unknown format, missing or read-only folder."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise OutputError(f"--output {path}: use a .csv, .jsonl or .parquet file")
    check_writable(path)
    check_not_read_only((path, meta_path(path), pending_path(path)), "--output", path)


def pending_path(path: str | os.PathLike) -> Path:
    """Where a Parquet score file's rows wait until the run closes."""
    return Path(f"{os.fspath(path)}{PENDING_SUFFIX}")


@dataclass
class Previous:
    """What an earlier run of the same model and settings left in a score file."""

    done: set[str] = field(default_factory=set)  # input keys (:func:`input_key`) of inputs with a result
    failed: set[str] = field(default_factory=set)  # input keys of inputs whose row holds an error
    rows: int = 0
    partial_line: bool = False


class ScoreFile:
    """A score file opened for writing: ``mode`` is ``"new"`` (the file must not exist), ``"overwrite"`` (replace a
    file this command wrote) or ``"resume"`` (continue it; ``retry_errors`` re-scores its failed rows).

    ``identity`` holds what must match to continue a file (model, fingerprint, task, settings); ``recorded`` what is
    only noted (device, dtype, batch size). Call :meth:`open` to validate and read the previous rows, then
    :meth:`write` per batch and :meth:`close` with the run's summary."""

    def __init__(
        self,
        path: str | os.PathLike,
        columns: list[str],
        identity: dict[str, Any],
        recorded: dict[str, Any] | None = None,
        mode: str = "new",
        retry_errors: bool = False,
    ):
        if mode not in ("new", "overwrite", "resume"):
            raise ValueError(f"mode must be 'new', 'overwrite' or 'resume', got {mode!r}")
        self.path, self.columns, self.mode, self.retry_errors = Path(path), list(columns), mode, retry_errors
        self.identity = {"writer": WRITER, "format_version": FORMAT_VERSION, "columns": self.columns, **identity}
        self.recorded = recorded or {}
        self.is_parquet = self.path.suffix.lower() == ".parquet"
        self.is_jsonl = self.path.suffix.lower() == ".jsonl" or self.is_parquet  # Parquet rows wait as JSONL
        self.rows_path = pending_path(self.path) if self.is_parquet else self.path  # where rows are appended
        self.handle = None
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    # ----- before anything is written -------------------------------------------------------------------------

    def check(self) -> None:
        """Validate the location and, for an existing file, that this command wrote it (reads only; before the
        model is loaded). :meth:`open` also checks that the same model and settings wrote it."""
        check_location(self.path)
        if not self._exists():
            return
        if self.mode == "new":
            raise OutputError(f"--output {self.path} exists; pass --resume to continue it or --overwrite to replace it")
        self._check_owner()

    def _exists(self) -> bool:
        return self.path.exists() or self.rows_path.exists()

    def _check_owner(self) -> None:
        record = read_record(self.path)
        if record is None or record.get("writer") != WRITER:
            raise OutputError(
                f"--output {self.path}: not written by {WRITER} (no {meta_path(self.path).name} beside it); it is "
                "left untouched: choose another --output"
            )

    def _check_identity(self) -> None:
        record = read_record(self.path) or {}
        differences = [
            f"{key} {record.get(key)!r} → {value!r}" for key, value in self.identity.items() if record.get(key) != value
        ]
        if differences:
            raise OutputError(
                f"--resume {self.path}: it was written with another model or settings "
                f"({'; '.join(differences)}); use the same ones, or another --output"
            )

    def open(self) -> Previous:
        """Check, read what a previous run left (resume), then open for appending; returns the previous rows."""
        self.check()
        previous = Previous()
        # an empty file of ours: killed before its header was written
        resuming = self.mode == "resume" and any(
            path.exists() and path.stat().st_size > 0 for path in {self.path, self.rows_path}
        )
        if resuming:
            self._check_identity()
            previous, keep = self._read_previous()
            self._repair(previous, keep)
        else:
            for stale in {self.path, self.rows_path}:  # ours (checked): a new run replaces it
                stale.unlink(missing_ok=True)
        self._write_record(runs=(read_record(self.path) or {}).get("runs", []) if resuming else [])
        self.handle = open(self.rows_path, "a" if resuming else "w", newline="", encoding="utf-8")
        if not resuming and not self.is_jsonl:
            self.handle.write(self._header())
            self.handle.flush()
        return previous

    def _load_rows(self) -> tuple[list[dict[str, Any]], bool]:
        """Every row (Parquet: the file's, then the pending ones) and whether a partial last line was left out;
        raises (without touching the file) on anything this command would not have written."""
        data = self.rows_path.read_bytes() if self.rows_path.exists() else b""
        partial_line = bool(data) and not data.endswith(b"\n")
        if partial_line:
            data = data[: data.rfind(b"\n") + 1]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise self._damaged(line, f"is not UTF-8 (byte {data[err.start]:#04x})") from None
        rows = self._parse_jsonl(text) if self.is_jsonl else self._parse_csv(text)
        if self.is_parquet and self.path.exists():
            rows = self._read_parquet() + rows
        return rows, partial_line

    def read_rows(self) -> list[dict[str, Any]]:
        """The rows of a file of this model and settings (read only; an absent file holds none)."""
        if not self._exists():
            return []
        self._check_owner()
        self._check_identity()
        return self._load_rows()[0]

    def previous(self) -> Previous:
        """What the file holds (read only; an absent file holds nothing)."""
        if not self._exists():
            return Previous()
        self._check_owner()
        self._check_identity()
        return self._read_previous()[0]

    def replace_rows(self, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
        """``rows`` as the whole file (written atomically, any pending rows folded in) and ``runs`` as its record."""
        if self.is_parquet:
            self._write_parquet(rows, runs)
            self.rows_path.unlink(missing_ok=True)
        else:
            temporary = self.path.with_name(self.path.name + ".tmp")
            header = "" if self.is_jsonl else self._header()
            temporary.write_text(header + self._serialize(rows), encoding="utf-8", newline="")
            os.replace(temporary, self.path)
        self._write_record(runs)

    def release(self) -> None:
        """Close the file without recording a run (the file was prepared for other writers)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def _read_previous(self) -> tuple[Previous, list[dict[str, Any]] | None]:
        """Parse the file (see :meth:`_load_rows`). Returns the previous rows' summary and, with ``retry_errors``,
        the rows to keep."""
        rows, partial_line = self._load_rows()
        previous = Previous(partial_line=partial_line)
        for row in rows:
            (previous.failed if row.get("error") else previous.done).add(input_key(row["id"]))
        previous.rows = len(rows)
        if not (self.retry_errors and previous.failed):
            return previous, None
        previous.rows -= sum(bool(row.get("error")) for row in rows)
        previous.failed = set()
        return previous, [row for row in rows if not row.get("error")]

    def _read_parquet(self) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path)
        except Exception as err:
            raise OutputError(
                f"--resume {self.path}: cannot read it as Parquet ({type(err).__name__}: {err}); the "
                "file was edited or damaged: use another --output (the file is left untouched)"
            ) from None
        self._check_columns(table.column_names)
        return table.to_pylist()

    def _parse_jsonl(self, text: str) -> list[dict[str, Any]]:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or not row.get("id"):
                raise self._damaged(number, "is not a result row (invalid JSON or no 'id')")
            rows.append(row)
        return rows

    def _parse_csv(self, text: str) -> list[dict[str, Any]]:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        self._check_columns(header)
        rows = []
        for values in reader:
            if len(values) != len(self.columns) or not values[0]:
                raise self._damaged(reader.line_num, f"has {len(values)} field(s), expected {len(self.columns)}")
            rows.append(dict(zip(self.columns, values)))
        return rows

    def _check_columns(self, found: list[str]) -> None:
        if found != self.columns:
            raise OutputError(
                f"--resume {self.path}: columns {found}, but this model writes {self.columns}; use another --output"
            )

    def _damaged(self, line: int, problem: str) -> OutputError:
        return OutputError(
            f"--resume {self.path}: line {line} {problem}; the file was edited or damaged: fix or "
            "remove that line, or use another --output (the file is left untouched)"
        )

    def _repair(self, previous: Previous, keep: list[dict[str, Any]] | None) -> None:
        """Our own file only: rewrite it without the rows to retry (atomically), or cut the partial last line."""
        if keep is not None:
            self.replace_rows(keep, (read_record(self.path) or {}).get("runs", []))
        elif previous.partial_line:
            with open(self.rows_path, "rb+") as handle:
                data = handle.read()
                handle.truncate(data.rfind(b"\n") + 1)

    # ----- writing -------------------------------------------------------------------------------------------

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows in one write, then flush."""
        self.handle.write(self._serialize(rows))
        self.handle.flush()

    def _header(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(self.columns)
        return buffer.getvalue()

    def _serialize(self, rows: Iterable[dict[str, Any]]) -> str:
        if self.is_jsonl:
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerows(
            map(csv_row, rows)
        )
        return buffer.getvalue()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Close the file (Parquet: write the pending rows into it) and add this run's summary to the record."""
        if self.handle is None:
            return
        self.handle.close()
        self.handle = None
        record = read_record(self.path) or {}
        runs = record.get("runs", []) + [{"started": self.started, **self.recorded, **(summary or {})}]
        if self.is_parquet:
            rows = self._read_parquet() if self.path.exists() else []
            self._write_parquet(rows + self._parse_jsonl(self.rows_path.read_text(encoding="utf-8")), runs)
            self.rows_path.unlink()
        self._write_record(runs=runs)

    def _write_parquet(self, rows: list[dict[str, Any]], runs: list[dict[str, Any]] | None = None) -> None:
        """All ``rows`` as the Parquet file, written atomically, the record in its metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [row.get(name) for row in map(csv_row, rows)] for name in self.columns}
        table = pa.table(columns).replace_schema_metadata(
            {PARQUET_METADATA_KEY: json.dumps({**self.identity, "runs": runs or []}, ensure_ascii=False)}
        )
        temporary = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, self.path)

    def _write_record(self, runs: list[dict[str, Any]]) -> None:
        record = {**self.identity, "file": self.path.name, "runs": runs}
        target = meta_path(self.path)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, target)


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


def input_key(id_: str) -> str:
    """What makes two row ids the same input: a file's real path (another path to it, a symlink, is the same
    file), any other id as it is."""
    return os.path.realpath(id_) if os.path.isabs(id_) else id_


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``.meta.json`` record of a score file, or ``None`` if there is none (or it is not ours)."""
    try:
        record = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


__all__ = [
    "FORMATS",
    "META_SUFFIX",
    "PENDING_SUFFIX",
    "Previous",
    "ScoreFile",
    "check_location",
    "csv_row",
    "input_key",
    "meta_path",
    "pending_path",
    "read_record",
]
