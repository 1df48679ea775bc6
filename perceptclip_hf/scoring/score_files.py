"""Score files: the results of scoring images, safe to resume and never foreign. This module is what every format
shares (the record, ownership, resume, repair); :mod:`.score_formats` holds one class per format (CSV, JSONL,
Parquet) and the registry that picks it by suffix.

Every score file has a record beside it, ``<file>.meta.json``: who wrote it, the model (id and fingerprint), the
settings that change scores (crops, seed, resize), its columns and a summary of each run. Each row's ``id`` names its
input (a file's absolute path, a shard sample's key, a table row's id). A file without that
record, or with a record of another model or other settings, is never touched: resuming or overwriting it is an
error naming the file and the difference, and the file stays byte-identical. Rows are appended a batch at a time
(one write, then flush), so an interrupted run leaves at most one partial last line — its own — which a resume
cuts before appending. File ids are absolute paths, so a resume from another folder skips what is done.

A format that cannot be appended to (Parquet) appends its rows to a pending JSONL file beside it
(``<file>.pending.jsonl``) while the run goes, and writes them into the file when the run closes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..output_safety import check_not_read_only, check_writable, disk_full, is_disk_full
from .score_rows import id_name, row_id

META_SUFFIX = ".meta.json"
PENDING_SUFFIX = ".pending.jsonl"
WRITER = "perceptclip predict"
FORMAT_VERSION = 3  # 2: rows are named by "id" (was "path": files only); 3: regression rows say their score_scale


def meta_path(path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(path)}{META_SUFFIX}")


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

    def add(self, id_: str, error: str | None) -> None:
        """A row the output holds: its id (as a row holds it) among the failed inputs or the done ones."""
        (self.failed if error else self.done).add(input_key(id_name(id_)))


class ScoreFile:
    """A score file of one format (a subclass: :mod:`.score_formats`) opened for writing: ``mode`` is ``"new"`` (the
    file must not exist), ``"overwrite"`` (replace a file this command wrote) or ``"resume"`` (continue it;
    ``retry_errors`` re-scores its failed rows).

    ``identity`` holds what must match to continue a file (model, fingerprint, task, settings); ``recorded`` what is
    only noted (device, dtype, batch size). Call :meth:`open` to validate and read the previous rows, then
    :meth:`write` per batch and :meth:`close` with the run's summary. A format says how rows are written and read
    (:meth:`serialize`, :meth:`parse`, a CSV's :meth:`header`); one that cannot be appended to sets ``pending``
    and overrides :meth:`stored_rows` and :meth:`write_file`."""

    suffix = ""
    pending = False  # rows wait in <file>.pending.jsonl until the run closes

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
        self.rows_path = pending_path(self.path) if self.pending else self.path  # where rows are appended
        self.handle = None
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    # ----- before anything is written -------------------------------------------------------------------------

    def check(self) -> None:
        """Validate the location and, for an existing file, that this command wrote it (reads only; before the
        model is loaded). :meth:`open` also checks that the same model and settings wrote it."""
        check_writable(self.path)
        check_not_read_only((self.path, meta_path(self.path), pending_path(self.path)), "--output", self.path)
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
        check_same_identity(read_record(self.path) or {}, self.identity, self.path)

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
        with self.writing():
            self._write_record(runs=(read_record(self.path) or {}).get("runs", []) if resuming else [])
            self.handle = open(self.rows_path, "a" if resuming else "w", newline="", encoding="utf-8")
            if not resuming and self.header():
                self.handle.write(self.header())
                self.handle.flush()
        return previous

    def _load_rows(self) -> tuple[list[dict[str, Any]], bool]:
        """Every row (a pending format: the file's, then the pending ones) and whether a partial last line was left out;
        raises (without touching the file) on anything this command would not have written."""
        data = self.rows_path.read_bytes() if self.rows_path.exists() else b""
        partial_line = bool(data) and not data.endswith(b"\n")
        if partial_line:
            data = data[: data.rfind(b"\n") + 1]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise self.damaged(line, f"is not UTF-8 (byte {data[err.start]:#04x})") from None
        return self.stored_rows() + self.parse(text), partial_line

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
        with self.writing():
            self.write_file(rows, runs)
            if self.pending:
                self.rows_path.unlink(missing_ok=True)
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
            previous.add(row["id"], row.get("error"))
        previous.rows = len(rows)
        if not (self.retry_errors and previous.failed):
            return previous, None
        previous.rows -= sum(bool(row.get("error")) for row in rows)
        previous.failed = set()
        return previous, [row for row in rows if not row.get("error")]

    def check_columns(self, found: list[str]) -> None:
        if found != self.columns:
            raise OutputError(
                f"--resume {self.path}: columns {found}, but this model writes {self.columns}; use another --output"
            )

    def damaged(self, line: int, problem: str) -> OutputError:
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
        with self.writing():
            self.handle.write(self.serialize(rows))
            self.handle.flush()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A full disk while writing is one line naming the file, the space left and ``--resume``: the rows written
        so far stay (a partial last line is cut by the resume), the rows not written are let go with the handle."""
        try:
            yield
        except OSError as err:
            if not is_disk_full(err):
                raise
            if self.handle is not None:
                try:
                    self.handle.close()  # its buffer cannot be written either: closed without it
                except OSError:
                    pass
                self.handle = None
            where = f" (in {self.rows_path.name})" if self.pending else ""
            kept = f"the rows written so far are kept{where}: free some space, then rerun with --resume"
            raise disk_full(self.path, kept) from None

    # ----- what a format defines -----------------------------------------------------------------------------

    def header(self) -> str:
        """What a new file starts with (a CSV's column names)."""
        return ""

    def serialize(self, rows: Iterable[dict[str, Any]]) -> str:
        """Rows as the text appended to :attr:`rows_path`."""
        raise NotImplementedError

    def parse(self, text: str) -> list[dict[str, Any]]:
        """The rows of :attr:`rows_path`'s text (whole lines); raises :meth:`damaged` on a line it did not write."""
        raise NotImplementedError

    def stored_rows(self) -> list[dict[str, Any]]:
        """A pending format's rows already in the file (the pending ones follow)."""
        return []

    def write_file(self, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
        """``rows`` as the whole file, atomically."""
        text = self.header() + self.serialize(rows)
        write_atomically(self.path, lambda path: path.write_text(text, encoding="utf-8", newline=""))

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Close the file (Parquet: write the pending rows into it) and add this run's summary to the record."""
        if self.handle is None:
            return
        with self.writing():
            self.handle.close()
            self.handle = None
            record = read_record(self.path) or {}
            runs = record.get("runs", []) + [{"started": self.started, **self.recorded, **(summary or {})}]
            if self.pending:
                self.write_file(self.stored_rows() + self.parse(self.rows_path.read_text(encoding="utf-8")), runs)
                self.rows_path.unlink()
            self._write_record(runs=runs)

    def _write_record(self, runs: list[dict[str, Any]]) -> None:
        record = {**self.identity, "file": self.path.name, "runs": runs}
        text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
        write_atomically(meta_path(self.path), lambda path: path.write_text(text, encoding="utf-8"))


def check_same_identity(recorded: dict[str, Any], identity: dict[str, Any], output) -> None:
    """Refuse to continue ``output`` unless this run's identity is the one recorded (one line naming what differs)."""
    differences = identity_differences(recorded, identity)
    if differences:
        raise OutputError(
            f"--resume {output}: it was written with another model or settings ({'; '.join(differences)}); use the "
            "same ones, or another --output"
        )


def identity_differences(recorded: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What differs, one phrase each: ``key old → new``; with several models, per model by name (``emotion:
    settings ... → ...``), or the names when the set of models differs (their columns follow from them)."""
    old_models, new_models = recorded.get("models"), identity.get("models")
    if isinstance(old_models, dict) or isinstance(new_models, dict):
        if not (isinstance(old_models, dict) and isinstance(new_models, dict)) or set(old_models) != set(new_models):
            return [f"models {model_names(old_models)} → {model_names(new_models)}"]
    differences = []
    for key, value in identity.items():
        if recorded.get(key) == value:
            continue
        if key == "models":
            for name in value:
                differences += [f"{name}: {phrase}" for phrase in identity_differences(old_models[name], value[name])]
        elif key != "columns" or "models" not in identity:
            differences.append(f"{key} {recorded.get(key)!r} → {value!r}")
    return differences


def model_names(models: Any) -> str:
    return ", ".join(models) if isinstance(models, dict) else "(one model)"


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` then a rename onto ``target``; the temporary file is removed if writing fails."""
    temporary = target.with_name(target.name + ".tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def input_key(id_: str) -> str:
    """What makes two inputs the same (``id_`` as an input names it; a row's id: :func:`.score_rows.id_name` of it):
    a file's real path (another path to it, a symlink, is the same file), any other id as it is."""
    return row_id(os.path.realpath(id_) if os.path.isabs(id_) else id_)


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``.meta.json`` record of a score file, or ``None`` if there is none (or it is not ours)."""
    try:
        record = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


__all__ = [
    "META_SUFFIX",
    "PENDING_SUFFIX",
    "Previous",
    "ScoreFile",
    "input_key",
    "meta_path",
    "pending_path",
    "read_record",
    "write_atomically",
]
