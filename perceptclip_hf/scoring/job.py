"""A scoring job: any mix of inputs scored by one model or several into a score file (or a stream, or memory),
resumable, in one process or in several (``accelerate launch``: each scores its share, the main one merges).

    >>> from perceptclip_hf.scoring import score
    >>> summary = score(["photos/", "shards/{000000..000009}.tar"], ["quality", "emotion"], "scores.parquet")
    >>> summary.scored, summary.failed, summary.not_scored

`perceptclip predict` is this function behind a command line: the same rows, the same record, the same checks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..errors import ConfigurationError, InputError
from ..hub.source import ModelSource, named_sources
from .score_files import ScoreFile
from .score_formats import CsvStream, RowList, open_score_file
from .score_rows import result_columns, result_row, row_id

logger = logging.getLogger(__name__)
Models = str | os.PathLike | ModelSource | Sequence[str | ModelSource] | Mapping[str, str | ModelSource]


@dataclass
class ScoringSummary:
    """What a job did: rows scored and failed (unreadable images: rows with an ``error``), inputs skipped (already in
    the output; ``failed_before`` of them rows holding an error), inputs not scored with the reason, where the rows
    are (``output``; ``rows`` when the job had none) and in how many processes."""

    scored: int
    failed: int
    skipped: int
    failed_before: int
    not_scored: list[tuple[str, str]]
    output: str | None
    processes: int = 1
    process: int = 0  # this process (under a launcher, only the main one, 0, holds the totals)
    rows: list[dict[str, Any]] | None = field(default=None, repr=False)
    where: str = ""  # where the rows are, in words: the output, "stdout", "summary.rows"

    def __str__(self) -> str:
        where = self.where or self.output
        parts = [f"summary: {self.scored} scored, {self.failed} failed, {self.skipped} skipped"]
        if self.skipped:
            again = f"; {self.failed_before} of them failed before: --retry-errors re-scores them"
            parts.append(f" (already in {where}{again if self.failed_before else ''})")
        if self.not_scored:
            from .inputs import reasons

            parts.append(f"; {len(self.not_scored)} not scored ({reasons(self.not_scored)})")
        processes = f" in {self.processes} processes" if self.processes > 1 else ""
        return "".join(parts) + processes + f"; results in {where}"


def score(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    models: Models,
    output: str | os.PathLike | TextIO | None = None,
    *,
    resume: bool = False,
    retry_errors: bool = False,
    overwrite: bool = False,
    num_workers: int | None = None,
    batch_size: int | None = None,
    tta: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "torch",
    fast_decode: bool = False,
    base_model: str | None = None,
    task: str | None = None,
    hf_dataset: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    image_column: str = "image",
    id_column: str | None = None,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
) -> ScoringSummary:
    """Score ``inputs`` (image files, folders, globs, WebDataset shards, Parquet files, ``save_to_disk`` folders;
    ``hf_dataset``: a dataset ``datasets.load_dataset`` reads) with ``models`` (a model, a list of ``[NAME=]MODEL``,
    or ``{name: model}``; aliases, official checkpoints, folders, Hub ids) into ``output``: a ``.csv`` / ``.jsonl`` /
    ``.parquet`` file with its ``.meta.json`` record, a text stream (CSV), or ``None`` (the rows come back in the
    summary). ``resume`` continues an output of the same models and settings (``retry_errors``: re-scoring its error
    rows); ``overwrite`` replaces one this function wrote. Under ``accelerate launch`` / ``torchrun`` each process
    scores its share into a part file and the main one merges them (its summary holds the totals).

    The other settings are :class:`.scorer.PerceptScorer`'s (``backend``: torch, or onnxruntime / openvino on
    the CPU); ``base_model``: a local copy of the base backbone;
    ``task``: an official one-output ``.pth``'s. ``report`` receives the messages for the user (unreadable images,
    what is not scored; default: this module's logger), ``progress`` shows a progress bar on stderr."""
    from .distributed import local_device, merge_part_files, open_part, process_part

    paths = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(path) for path in inputs]
    part = process_part()
    several = part[1] > 1
    to_file = output is not None and isinstance(output, (str, os.PathLike))
    if several and not to_file:
        raise ConfigurationError(
            f"{part[1]} processes each write a part of --output: pass --output (a .csv, .jsonl or .parquet file)"
        )
    mode = check_job(paths, hf_dataset, streaming, output if to_file else None, resume, overwrite, retry_errors)
    with ExitStack() as locks:  # one writer per output: a second run on it is refused
        for lock in output_locks(output, part, report) if to_file else []:
            locks.enter_context(lock)
        named = named_sources(models, task)
        from .inputs import Tally, collect_inputs, report_not_scored  # the data layer: once the models are known good

        tables = dict(split=split, streaming=streaming, image_column=image_column, id_column=id_column)
        image_sets, found = collect_inputs(paths, hf_dataset=hf_dataset, part=part, report=report, **tables)
        main = part[0] == 0
        if main:
            report_not_scored(found.not_scored, report)
        if not several and all(image_set.length == 0 for image_set in image_sets):
            others = f" ({len(found.not_scored)} files that are not images or duplicates: {found.reasons()})"
            raise InputError(f"no images found in {' '.join(paths)}" + (others if found.not_scored else ""))
        import torch

        from ..backends.runtimes import check_backend
        from .devices import check_device, precision_name, resolve_dtype
        from .model_set import ScorerSet  # torch: only once the arguments are known to be good

        check_backend(backend, precision_name(resolve_dtype(dtype, torch.device("cpu"))), device)
        check_device(device)
        if progress:  # ours is the bar: transformers' weight-loading bars are turned off
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        settings = dict(
            dtype=dtype, backend=backend, tta=tta, seed=seed, batch_size=batch_size, num_workers=num_workers
        )
        scorers = ScorerSet.from_pretrained(
            named,
            load_kwargs={"base_model_name_or_path": base_model} if base_model else None,
            device=local_device(device) if several else device,
            fast_decode=fast_decode,
            **settings,
        )
        if scorers.shared_bytes and main:
            held = scorers.shared_bytes / 2**20
            (report or logger.info)(f"{len(scorers.scorers)} models share their base weights: {held:.1f} MiB held once")
        columns = result_columns(scorers)
        if to_file:
            target = score_file(output, columns, scorers, named, seed, mode, retry_errors)
            sink, previous = open_part(target, part) if several else (target, target.open())
        else:
            sink = RowList(columns) if output is None else CsvStream(columns, output)
            previous = sink.open()
        tally = Tally(not_scored=list(found.not_scored) if main else [])
        description = f"predict {part[0]}/{part[1]}" if several else "predict"
        rows_at_once = scorers.engine.batch_size
        write_rows(scorers, image_sets, sink, previous, tally, rows_at_once, report, description if progress else None)
        if several:
            tally = merge_part_files(target, part)
        return ScoringSummary(
            tally.scored,
            tally.failed,
            tally.skipped,
            tally.failed_before,
            tally.not_scored,
            os.fspath(output) if to_file else None,
            part[1],
            part[0],
            rows=sink if isinstance(sink, RowList) else None,
            where=destination(output),
        )


def output_locks(output, part: tuple[int, int], report=None) -> list:
    """The locks a process holds while it writes: the output's (the main process: it writes the output and merges
    the parts into it) and, one of several processes, its part file's (beside the output); ``report`` hears of a
    killed run's lock taken over."""
    from ..output_lock import OutputLock, lock_path

    fix = "wait for it to end, or stop it (--resume then continues its rows)"
    locks = [OutputLock(lock_path(output), f"--output {os.fspath(output)}", fix, report)] if part[0] == 0 else []
    if part[1] > 1:
        name = f"{os.fspath(output)}.part-{part[0]:05d}-of-{part[1]:05d}"
        what = f"--output {os.fspath(output)} (part {part[0]} of {part[1]})"
        locks.append(OutputLock(lock_path(name), what, fix, report))
    return locks


def destination(output) -> str:
    if output is None:
        return "summary.rows"
    if isinstance(output, (str, os.PathLike)):
        return os.fspath(output)
    return "stdout" if output is sys.stdout else str(getattr(output, "name", "the stream"))


def check_job(paths, hf_dataset, streaming, output, resume, overwrite, retry_errors) -> str:
    """Everything that can be checked before the models load: the inputs named, the options, the output's location
    and owner. Returns the output's mode (``"new"``, ``"overwrite"`` or ``"resume"``)."""
    if output is None and (resume or overwrite or retry_errors):
        check_inputs_named(paths, hf_dataset, streaming)
        raise ConfigurationError(
            "--resume, --overwrite and --retry-errors need --output (a .csv, .jsonl or .parquet file)"
        )
    mode = check_options(paths, hf_dataset, streaming, resume, overwrite, retry_errors)
    if output is not None:
        open_score_file(output, [], {}, mode=mode).check()
    return mode


def check_options(paths, hf_dataset, streaming, resume, overwrite, retry_errors) -> str:
    """The options every engine checks alike; returns the output's mode (``"new"``, ``"overwrite"`` or
    ``"resume"``)."""
    check_inputs_named(paths, hf_dataset, streaming)
    if resume and overwrite:
        raise ConfigurationError("--resume and --overwrite exclude each other")
    if retry_errors and not resume:
        raise ConfigurationError("--retry-errors continues an output: pass --resume too")
    return "resume" if resume else "overwrite" if overwrite else "new"


def check_inputs_named(paths, hf_dataset, streaming) -> None:
    if not paths and not hf_dataset:
        raise ConfigurationError(
            "name the images to score: files, folders, globs, shards, Parquet files, save_to_disk "
            "folders, or --hf-dataset NAME"
        )
    if streaming and not hf_dataset:
        raise ConfigurationError("--streaming streams --hf-dataset; pass --hf-dataset NAME too")


def score_file(output, columns, scorers, named, seed, mode, retry_errors) -> ScoreFile:
    """The output file, with what must match to continue it (each model's identity) and what is only noted."""
    identity, recorded = job_record(scorers, named, seed)
    return open_score_file(output, columns, identity, recorded, mode=mode, retry_errors=retry_errors)


def job_record(scorers, named, seed) -> tuple[dict[str, Any], dict[str, Any]]:
    """What must match to continue an output (each model's identity) and what is only noted (the run's settings, the
    models as given)."""
    identities = {name: model_identity(scorer, seed) for name, scorer in scorers.scorers.items()}
    sources = {  # as given (a folder: its absolute path)
        name: os.path.abspath(source.given) if os.path.isdir(source.given) else source.given
        for name, source in named.items()
    }
    merged = {name: scorer.lora_merged for name, scorer in scorers.scorers.items()}
    chosen = {name: scorer.choice.text() for name, scorer in scorers.scorers.items() if scorer.choice}
    recorded = {
        "device": str(scorers.engine.device),
        "dtype": str(scorers.dtype).replace("torch.", ""),
        "batch_size": scorers.engine.batch_size,
        "num_workers": scorers.engine.num_workers,
        "decode": "reduced (JPEG draft, --fast-decode)" if scorers.engine.fast_decode else "full",
        "version": package_version(),
    }
    if len(identities) == 1:  # one model: the record of a single-model file
        identity = next(iter(identities.values()))
        recorded.update(model=next(iter(sources.values())), lora_merged=next(iter(merged.values())))
        recorded.update({"backend_auto": next(iter(chosen.values()))} if chosen else {})
    else:
        identity = {"models": identities}
        recorded.update(models=sources, lora_merged=merged, shared_base_bytes=scorers.shared_bytes)
        recorded.update({"backend_auto": chosen} if chosen else {})
    return identity, recorded


def model_identity(scorer, seed: int) -> dict[str, Any]:
    """What must match to continue a file: the model's fingerprint, task, base and score-changing settings (the
    backend and precision among them, and the exported file a backend other than torch runs)."""
    runtime = {"backend": scorer.backend, "precision": scorer.precision}
    if scorer.export_fingerprint:
        runtime["export"] = scorer.export_fingerprint
    return {
        "model_fingerprint": scorer.fingerprint(),
        "task": scorer.config.task,
        "base_model": scorer.config.base_model_name_or_path,
        "settings": {
            "crops": scorer.num_crops,
            "seed": seed if scorer.num_crops > 1 else None,
            **({"fast_decode": True} if scorer.fast_decode else {}),
        },
        "runtime": runtime,
    }


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perceptclip-hf")
    except PackageNotFoundError:
        return "unknown"


def write_rows(scorers, image_sets, sink, previous, tally, batch_size: int, report, description) -> None:
    """Score the image sets into ``sink`` a batch of rows at a time; a file's record gets the run's summary.
    ``description``: the progress bar's (``None``: no bar)."""
    from .inputs import predictions

    known = [image_set.length for image_set in image_sets]
    results = predictions(scorers, image_sets, previous, tally, report)
    if description is not None:
        total = sum(known) if None not in known else None
        results = progress_bar(results, total=total, desc=description, unit="img")
    completed = False
    try:
        rows: list[dict[str, Any]] = []
        for id_, result in results:
            rows.append(result_row(scorers, id_, result))
            if "error" in result:
                tally.failed += 1
                error, shown = rows[-1]["error"], rows[-1]["id"]
                (report or logger.warning)(f"error: {error}" if shown in error else f"error: {shown}: {error}")
            else:
                tally.scored += 1
            if len(rows) == batch_size:
                sink.write(rows)
                rows = []
        sink.write(rows)
        completed = True
    finally:
        sink.close(
            {
                "scored": tally.scored,
                "failed": tally.failed,
                "skipped": tally.skipped,
                "failed_before": tally.failed_before,
                "completed": completed,
                "not_scored": [row_id(f"{what}: {why}") for what, why in tally.not_scored],
            }
        )


def progress_bar(iterable, **kwargs: Any):
    """A progress bar on stderr (tqdm)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


__all__ = ["ScoringSummary", "progress_bar", "score"]
