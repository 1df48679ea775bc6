"""Scoring in several processes (``accelerate launch``, ``torchrun``; one machine or several sharing a folder).

Each process takes a contiguous share of every input (:mod:`.image_sources`: by shard for tar shards, by row group
for Parquet, by index otherwise) and writes its rows to its own part file,
``<output>.parts/part-RRRRR-of-NNNNN<suffix>`` (a score file like any other: resumable, never foreign). When all
are done the main process merges the parts into the output, in process order (for one input: the single-process
order), and removes them. A run killed before the
merge leaves its parts: with ``--resume`` each process continues its own (parts of a run with another number of
processes are merged into the output first), skipping what its part and the output hold.

The processes meet at two barriers of a ``gloo`` process group (CPU or GPU alike, only for the barriers), started
from the launcher's ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` variables; a barrier waits as long as the slowest
share takes (up to a week).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

from ..errors import OutputError
from .score_files import META_SUFFIX, PENDING_SUFFIX, WRITER, Previous, ScoreFile, read_record
from .score_formats import open_score_file

PART_NAME = re.compile(r"part-(\d{5})-of-(\d{5})(\.[a-z]+)$")
BARRIER_TIMEOUT = timedelta(days=7)


def process_part() -> tuple[int, int]:
    """``(this process, processes)`` from the launcher's environment; with several processes the ``gloo`` group
    for :func:`barrier` is started (once)."""
    parts = int(os.environ.get("WORLD_SIZE", "1"))
    if parts == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), parts


def barrier() -> None:
    """Wait for every scoring process (nothing to wait for in one process)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def local_device(device: str | None) -> str | None:
    """The device of this process: as given, else its own GPU (``LOCAL_RANK``) when there are GPUs."""
    import torch

    if device is not None or not torch.cuda.is_available():
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def parts_folder(output: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(output)}.parts")


def part_path(output: str | os.PathLike, part: tuple[int, int]) -> Path:
    """Where process ``part[0]`` of ``part[1]`` writes its rows."""
    return parts_folder(output) / f"part-{part[0]:05d}-of-{part[1]:05d}{Path(output).suffix.lower()}"


def leftover_parts(output: str | os.PathLike) -> list[Path]:
    """The part files an earlier run left (any number of processes), in process order; each one ours."""
    folder = parts_folder(output)
    if not folder.is_dir():
        return []
    parts = sorted(
        {
            Path(str(path)[: -len(META_SUFFIX)])
            for path in folder.glob(f"part-*{META_SUFFIX}")
            if PART_NAME.search(path.name[: -len(META_SUFFIX)])
        }
    )
    for part in parts:
        if (read_record(part) or {}).get("writer") != WRITER:
            raise OutputError(
                f"--output {output}: {part} is not a part file of {WRITER}; it is left untouched: "
                "move it away or choose another --output"
            )
    return parts


def merge_parts(target: ScoreFile, parts: list[Path]) -> int:
    """Append the rows of ``parts`` (each checked: same model, settings and columns) to ``target`` (written
    atomically), add their runs to its record, then remove them. Returns the number of rows merged."""
    rows = target.read_rows()
    runs = (read_record(target.path) or {}).get("runs", [])
    merged = 0
    for part in parts:
        part_rows = open_score_file(part, target.columns, target.identity, mode="resume").read_rows()
        rows += part_rows
        merged += len(part_rows)
        runs += [{**run, "part": part.name} for run in (read_record(part) or {}).get("runs", [])]
    target.replace_rows(rows, runs)
    remove_parts(parts)
    return merged


def remove_parts(parts: list[Path]) -> None:
    """Remove part files (ours: :func:`leftover_parts` checks them), and their folder once empty."""
    for part in parts:
        for path in (part, Path(f"{part}{META_SUFFIX}"), Path(f"{part}{PENDING_SUFFIX}")):
            path.unlink(missing_ok=True)
    folders = {part.parent for part in parts}
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def open_part(target: ScoreFile, part: tuple[int, int]) -> tuple[ScoreFile, Previous]:
    """One of several processes: the main one prepares the output ``target`` as one process would (resuming, the
    parts of a killed run with another number of processes are merged into it; else every leftover part is removed);
    then each process opens its part file (continuing its own when resuming) and reads what the output and its part
    already hold."""
    resume = target.mode == "resume"
    path = part_path(target.path, part)
    if part[0] == 0:
        target.check()
        leftovers = leftover_parts(target.path)
        if resume:
            merge_parts(target, [other for other in leftovers if f"-of-{part[1]:05d}" not in other.name])
        else:
            remove_parts(leftovers)
        target.open()
        target.release()
        path.parent.mkdir(exist_ok=True)
    barrier()
    output = open_score_file(
        path,
        target.columns,
        target.identity,
        target.recorded,
        mode="resume" if resume else "new",
        retry_errors=target.retry_errors,
    )
    own, merged = output.open(), target.previous()
    return output, Previous(done=own.done | merged.done, failed=own.failed | merged.failed)


def merge_part_files(target: ScoreFile, part: tuple[int, int]):
    """After every process is done: the main one merges the parts into ``target`` (the output); returns the run's
    totals (a :class:`.inputs.Tally`, empty in the other processes)."""
    from .inputs import Tally

    barrier()
    tally = Tally()
    if part[0] != 0:
        return tally
    parts = [part_path(target.path, (index, part[1])) for index in range(part[1])]
    for path in parts:
        run = ((read_record(path) or {}).get("runs") or [{}])[-1]
        for count in ("scored", "failed", "skipped", "failed_before"):
            setattr(tally, count, getattr(tally, count) + run.get(count, 0))
        tally.not_scored += [tuple(entry.split(": ", 1)) for entry in run.get("not_scored", [])]
    merge_parts(target, parts)
    return tally


__all__ = [
    "barrier",
    "leftover_parts",
    "local_device",
    "merge_part_files",
    "merge_parts",
    "open_part",
    "part_path",
    "parts_folder",
    "process_part",
    "remove_parts",
]
