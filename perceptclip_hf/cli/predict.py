"""`perceptclip predict`: score images (files, folders, globs, shards, tables) with one model or several into a
CSV / JSONL / Parquet file or stdout, resumable."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any

from ..hub.source import ModelSource, named_sources
from ..scoring.score_rows import result_columns, result_row
from .common import (
    UsageError,
    add_input_arguments,
    add_model_arguments,
    add_tta_arguments,
    echo,
    load_options,
    progress,
    scorer_options,
)
from .inputs import Tally, collect_inputs, predictions, reasons, report_not_scored

NAME = "predict"
HELP = "score images (files, folders, globs, WebDataset shards, Parquet, datasets)"
DESCRIPTION = (
    "Score images with a trained model. Folders are searched recursively (symlinked folders once; images "
    "by extension or content); what is found but not scored is listed with its reason. Unreadable images "
    "become rows with an 'error' column and are counted in the final summary. Each row's 'id' names its "
    "input: the absolute path of a file, the __key__ of a shard sample, the --id-column value (default: "
    "the row index) of a table row. <output>.meta.json records the model, the settings and each run, and "
    "makes --resume / --overwrite refuse files this command did not write. "
    "Regression models write score, score_scale (calibrated: trained to the labels' values, with their "
    "range in score_min / score_max; relative: PLCC-trained, it ranks images on a scale of its own, no "
    "range), higher_is_better; emotion models the top "
    "label and one prob_<label> column per class. Several --model score in one pass, their columns "
    "prefixed with each model's name."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="INPUT",
        help="image files, folders or glob patterns; WebDataset shards (.tar, brace patterns like "
        "shards/{000000..000099}.tar); Parquet files (.parquet, globs); save_to_disk folders",
    )
    add_model_arguments(parser, several=True)
    add_tta_arguments(parser)
    add_input_arguments(parser)
    tables = parser.add_argument_group("datasets (Parquet files, save_to_disk folders, --hf-dataset)")
    tables.add_argument(
        "--hf-dataset",
        metavar="NAME",
        default=None,
        help="a dataset datasets.load_dataset reads: a Hub id or a local dataset folder",
    )
    tables.add_argument(
        "--split", default=None, help="split of --hf-dataset or of a save_to_disk DatasetDict (default: its only split)"
    )
    tables.add_argument(
        "--streaming", action="store_true", help="stream --hf-dataset (read once in order, never downloaded whole)"
    )
    tables.add_argument("--image-column", default="image", help="column holding the images (default: image)")
    tables.add_argument(
        "--id-column",
        default=None,
        help="column whose values name the rows in the output (default: the row index, counted over "
        "all Parquet files in order)",
    )
    parser.add_argument(
        "--output", "-o", default=None, help="results file, .csv, .jsonl or .parquet (default: CSV on stdout)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --output (written by this command with the same model and settings), "
        "skipping the inputs already in it",
    )
    parser.add_argument(
        "--retry-errors", action="store_true", help="with --resume: score again the inputs whose rows hold an error"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (only one this command wrote)"
    )


def check_models(args: argparse.Namespace) -> dict[str, ModelSource]:
    """The named --model arguments, each checked before anything loads."""
    named = named_sources(args.model, args.task)
    if len(named) > 1 and args.task:
        raise UsageError(
            "--task names the task of one official checkpoint; with several --model, use their aliases "
            "(quality, memorability, emotion) or folders"
        )
    for source in named.values():
        source.check()
    return named


class StdoutRows:
    """CSV rows on stdout, flushed per batch (no record: nothing to resume)."""

    def __init__(self, columns: list[str]):
        self.writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        self.writer.writeheader()

    def open(self):
        from ..scoring.score_files import Previous

        return Previous()  # nothing written before

    def write(self, rows: list[dict[str, Any]]) -> None:
        from ..scoring.score_files import csv_row

        self.writer.writerows(map(csv_row, rows))
        sys.stdout.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        sys.stdout.flush()


def score_file(args: argparse.Namespace, columns: list[str] | None = None, models=None, named=None):
    """The output file of the arguments; without models only its location and owner can be checked."""
    from ..scoring.score_files import ScoreFile

    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    if models is None:
        return ScoreFile(args.output, [], {}, mode=mode)
    identities = {name: model_identity(scorer, args.seed) for name, scorer in models.scorers.items()}
    sources = {
        name: os.path.abspath(source.location) if os.path.isdir(source.location) else source.location
        for name, source in named.items()
    }
    merged = {name: scorer.lora_merged for name, scorer in models.scorers.items()}
    engine = models.engine
    recorded = {
        "device": str(engine.device),
        "dtype": str(engine.dtype).replace("torch.", ""),
        "batch_size": args.batch_size,
        "num_workers": engine.num_workers,
        "version": package_version(),
    }
    if len(identities) == 1:  # one model: the record of a single-model file
        identity = next(iter(identities.values()))
        recorded.update(model=next(iter(sources.values())), lora_merged=next(iter(merged.values())))
    else:
        identity = {"models": identities}
        recorded.update(models=sources, lora_merged=merged, shared_base_bytes=models.shared_bytes)
    return ScoreFile(args.output, columns, identity, recorded, mode=mode, retry_errors=args.retry_errors)


def model_identity(scorer, seed: int) -> dict[str, Any]:
    """What must match to continue a file: the model's fingerprint, task, base and score-changing settings."""
    return {
        "model_fingerprint": scorer.fingerprint(),
        "task": scorer.config.task,
        "base_model": scorer.config.base_model_name_or_path,
        "settings": {
            "crops": scorer.num_crops,
            "seed": seed if scorer.num_crops > 1 else None,
            **({"fast_decode": True} if scorer.fast_decode else {}),
        },
    }


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perceptclip-hf")
    except PackageNotFoundError:
        return "unknown"


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads: options and the output's location and owner."""
    if not args.paths and not args.hf_dataset:
        raise UsageError(
            "name the images to score: files, folders, globs, shards, Parquet files, save_to_disk "
            "folders, or --hf-dataset NAME"
        )
    if args.streaming and not args.hf_dataset:
        raise UsageError("--streaming streams --hf-dataset; pass --hf-dataset NAME too")
    if args.output is None:
        if args.resume or args.overwrite or args.retry_errors:
            raise UsageError("--resume, --overwrite and --retry-errors need --output (a .csv, .jsonl or .parquet file)")
        return
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.retry_errors and not args.resume:
        raise UsageError("--retry-errors continues a file: pass --resume too")
    score_file(args).check()


def run(args: argparse.Namespace) -> int:
    from ..scoring.distributed import local_device, process_part

    part = process_part()
    several = part[1] > 1
    if several and args.output is None:
        raise UsageError(
            f"{part[1]} processes each write a part of --output: pass --output (a .csv, .jsonl or .parquet file)"
        )
    check_arguments(args)
    named = check_models(args)
    image_sets, found = collect_inputs(args, part)
    main = part[0] == 0
    if main:
        report_not_scored(found.not_scored)
    if not several and all(image_set.length == 0 for image_set in image_sets):
        raise UsageError(
            f"no images found in {' '.join(args.paths)}"
            + (
                f" ({len(found.not_scored)} files that are not images or duplicates: {found.reasons()})"
                if found.not_scored
                else ""
            )
        )
    if several:
        args.device = local_device(args.device)
    from ..scoring.model_set import ScorerSet

    models = ScorerSet.from_pretrained(named, load_kwargs=load_options(args), **scorer_options(args))
    if models.shared_bytes and main:
        echo(f"{len(models.scorers)} models share their base weights: {models.shared_bytes / 2**20:.1f} MiB held once")
    columns = result_columns(models)
    if several:
        target, output, previous = open_part(args, columns, models, named, part)
    else:
        output = score_file(args, columns, models, named) if args.output else StdoutRows(columns)
        previous = output.open()
    tally = Tally(not_scored=list(found.not_scored) if main else [])
    score(
        args, models, image_sets, output, previous, tally, desc=f"predict {part[0]}/{part[1]}" if several else "predict"
    )
    if several:
        tally = merge_part_files(args, target, part)
        if not main:
            return 0
    where = args.output or "stdout"
    parts = [f"summary: {tally.scored} scored, {tally.failed} failed, {tally.skipped} skipped"]
    if tally.skipped:
        parts.append(
            f" (already in {where}"
            + (
                f"; {tally.failed_before} of them failed before: --retry-errors re-scores them"
                if tally.failed_before
                else ""
            )
            + ")"
        )
    if tally.not_scored:
        parts.append(f"; {len(tally.not_scored)} not scored ({reasons(tally.not_scored)})")
    echo("".join(parts) + (f" in {part[1]} processes" if several else "") + f"; results in {where}")
    return 0


def score(args, models, image_sets, output, previous, tally: Tally, desc: str) -> None:
    """Score the image sets into ``output`` a batch of rows at a time; its record gets the run's summary."""
    known = [image_set.length for image_set in image_sets]
    total = sum(known) if None not in known else None
    completed = False
    try:
        rows: list[dict[str, Any]] = []
        results = predictions(models, image_sets, previous, tally)
        for id_, result in progress(results, total=total, desc=desc, unit="img"):
            if "error" in result:
                tally.failed += 1
                echo(f"error: {result['error']}" if id_ in result["error"] else f"error: {id_}: {result['error']}")
            else:
                tally.scored += 1
            rows.append(result_row(models, id_, result))
            if len(rows) == args.batch_size:
                output.write(rows)
                rows = []
        output.write(rows)
        completed = True
    finally:
        output.close(
            {
                "scored": tally.scored,
                "failed": tally.failed,
                "skipped": tally.skipped,
                "completed": completed,
                "not_scored": [f"{what}: {why}" for what, why in tally.not_scored],
            }
        )


def open_part(args: argparse.Namespace, columns: list[str], models, named, part: tuple[int, int]):
    """One of several processes: the main one prepares --output (``target``, returned) as one process would (with
    --resume, the parts of a killed run with another number of processes are merged into it; without, every
    leftover part is removed); then each process opens its part file (continuing its own with --resume) and reads
    what --output and its part already hold."""
    from ..scoring.distributed import barrier, leftover_parts, merge_parts, part_path, remove_parts
    from ..scoring.score_files import Previous, ScoreFile

    target = score_file(args, columns, models, named)
    path = part_path(args.output, part)
    if part[0] == 0:
        target.check()
        leftovers = leftover_parts(args.output)
        if args.resume:
            merge_parts(target, [other for other in leftovers if f"-of-{part[1]:05d}" not in other.name])
        else:
            remove_parts(leftovers)
        target.open()
        target.release()
        path.parent.mkdir(exist_ok=True)
    barrier()
    output = ScoreFile(
        path,
        columns,
        target.identity,
        target.recorded,
        mode="resume" if args.resume else "new",
        retry_errors=args.retry_errors,
    )
    own, merged = output.open(), target.previous()
    return target, output, Previous(done=own.done | merged.done, failed=own.failed | merged.failed)


def merge_part_files(args: argparse.Namespace, target, part: tuple[int, int]) -> Tally:
    """After every process is done: the main one merges the parts into ``target`` (--output); returns the run's
    totals."""
    from ..scoring.distributed import barrier, merge_parts, part_path
    from ..scoring.score_files import read_record

    barrier()
    tally = Tally()
    if part[0] != 0:
        return tally
    parts = [part_path(args.output, (index, part[1])) for index in range(part[1])]
    for path in parts:
        run = ((read_record(path) or {}).get("runs") or [{}])[-1]
        tally.scored, tally.failed = tally.scored + run.get("scored", 0), tally.failed + run.get("failed", 0)
        tally.skipped += run.get("skipped", 0)
        tally.not_scored += [tuple(entry.split(": ", 1)) for entry in run.get("not_scored", [])]
    merge_parts(target, parts)
    return tally
