"""The output of ``perceptclip predict --engine ray``: a folder of Parquet files (Ray's ``write_parquet``, any
number of them, each a set of whole rows with the ``id`` column), read as one table by ``pyarrow``, ``pandas``,
``datasets`` and ``ray.data.read_parquet``. Beside them ``_perceptclip.json`` (a name Parquet readers skip)
records what must match to continue the folder (the models' fingerprints and score-changing settings, as a score
file's ``.meta.json``), the run's settings and each run's summary.

A run killed before its end leaves the files its write tasks finished, and perhaps one that a write task had not
finished: ``--resume`` removes such a file (it cannot be read as Parquet; its rows are scored again) and skips the
ids the others hold.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ...errors import OutputError
from ...output_safety import check_writable_folder
from ...scoring.score_files import WRITER, Previous, check_same_identity, write_atomically

RECORD = "_perceptclip.json"
FILE_PREFIX = "scores-"  # the files this command writes (others in the folder are never touched)
ENGINE = "ray"


class OutputFolder:
    """``path`` opened as ``mode``: ``"new"`` (absent or empty), ``"overwrite"`` (its Parquet files and record go:
    only a folder this command wrote) or ``"resume"`` (continue it; ``retry_errors``: its error rows go, so that
    their inputs are scored again)."""

    def __init__(self, path: str | os.PathLike, mode: str = "new", retry_errors: bool = False):
        self.path, self.mode, self.retry_errors = Path(path), mode, retry_errors
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    def files(self) -> list[Path]:
        """The Parquet files this command wrote in the folder (named by :func:`file_names`), by name."""
        return sorted(self.path.glob(f"{FILE_PREFIX}*.parquet")) if self.path.is_dir() else []

    def record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("writer") == WRITER else None

    def check(self) -> None:
        """The location, and for a folder that holds anything, that this command wrote it (reads only)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"--output {self.path} is a file; --engine ray writes a folder of Parquet files")
        check_writable_folder(self.path, "--output")
        names = (
            sorted(path.name for path in self.path.iterdir() if not path.name.startswith("."))
            if self.path.is_dir()
            else []
        )
        if not names or (names == [RECORD] and not self.files()):  # (nothing scored: a run that could not start)
            return
        if self.mode == "new":
            raise OutputError(
                f"--output {self.path} is not empty (it holds {', '.join(names[:3])}); pass --resume to continue a "
                "run of --engine ray, --overwrite to replace it, or choose a new folder"
            )
        record = self.record()
        if record is None or record.get("engine") != ENGINE:
            raise OutputError(
                f"--output {self.path}: not written by {WRITER} --engine ray (no {RECORD} in it); it is left "
                "untouched: choose another --output"
            )

    def open(self, identity: dict[str, Any], recorded: dict[str, Any], report) -> Previous:
        """Check, clear (overwrite) or read (resume) the folder, and record this run's start; returns what the
        output already holds."""
        self.check()
        self.identity = {"writer": WRITER, "engine": ENGINE, **identity}
        record = self.record()
        previous = Previous()
        if record is not None and self.mode == "resume":
            check_same_identity(record, self.identity, self.path)
            previous = self.read_previous(report)
        elif record is not None:  # --overwrite: ours (checked)
            for path in self.files():
                path.unlink()
        self.runs = record.get("runs", []) if record is not None and self.mode == "resume" else []
        self.recorded = {**recorded, "started": self.started}
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_record({"completed": False})
        return previous

    def read_previous(self, report) -> Previous:
        """The ids the folder's files hold (error rows apart); a file a killed run left unfinished is removed; with
        ``retry_errors`` each file holding error rows is rewritten without them."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        previous = Previous()
        for path in self.files():
            try:
                table = pq.read_table(path, columns=["id", "error"])
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
                report(
                    f"removed {path.name}: a file a killed run left unfinished ({type(err).__name__}); its rows "
                    "are scored again"
                )
                path.unlink()
                continue
            if self.retry_errors and table.column("error").null_count < table.num_rows:
                whole = pq.read_table(path)
                kept = whole.filter(pc.is_null(whole.column("error")))
                write_atomically(path, lambda temporary, kept=kept: pq.write_table(kept, temporary))
                table = kept.select(["id", "error"])
            for id_, error in zip(table.column("id").to_pylist(), table.column("error").to_pylist()):
                previous.add(id_, error)
            previous.rows += table.num_rows
        return previous

    def write_record(self, run: dict[str, Any]) -> None:
        """The record, this run's entry (its settings and ``run``) last."""
        runs = [*self.runs, {**self.recorded, **run}]
        text = json.dumps({**self.identity, "runs": runs}, indent=1, ensure_ascii=False) + "\n"
        write_atomically(self.record_path, lambda path: path.write_text(text, encoding="utf-8"))

    def close(self, summary: dict[str, Any]) -> None:
        """Record the run's summary."""
        self.write_record({"completed": True, **summary, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def file_names():
    """Ray's ``write_parquet`` names for this command's files: ``scores-<write id>_<task>.parquet``."""
    from ray.data.datasource import FilenameProvider

    class ScoreFileNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"{FILE_PREFIX}{write_uuid}_{task_index:06}.parquet"

    return ScoreFileNames(file_format="parquet")


__all__ = ["ENGINE", "RECORD", "OutputFolder"]
