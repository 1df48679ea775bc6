"""`perceptclip predict`: score images (files, folders, globs) into a CSV / JSONL file or stdout, resumable."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any

from .common import (
    UsageError,
    add_model_arguments,
    add_tta_arguments,
    add_input_arguments,
    check_model_argument,
    collect_images,
    echo,
    load_scorer,
    progress,
)


NAME = "predict"
HELP = "score images (files, folders, globs)"
DESCRIPTION = ("Score images with a trained model. Folders are searched recursively (symlinked folders once; images "
               "by extension or content); what is found but not scored is listed with its reason. Unreadable images "
               "become rows with an 'error' column and are counted in the final summary. Paths are stored absolute; "
               "<output>.meta.json records the model, the settings and each run, and makes --resume / --overwrite "
               "refuse files this command did not write. "
               "Regression models write score, score_min, score_max, higher_is_better; emotion models the top "
               "label and one prob_<label> column per class.")


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    add_model_arguments(parser)
    add_tta_arguments(parser)
    add_input_arguments(parser)
    parser.add_argument("--output", "-o", default=None,
                        help="results file, .csv, .jsonl or .parquet (default: CSV on stdout)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --output (written by this command with the same model and settings), "
                             "skipping the images already in it")
    parser.add_argument("--retry-errors", action="store_true",
                        help="with --resume: score again the images whose rows hold an error")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output (only one this command wrote)")


def result_columns(scorer) -> list[str]:
    """CSV columns of a model's rows."""
    if scorer.is_classification:
        return ["path", "label", *(f"prob_{label}" for label in scorer.labels), "error"]
    return ["path", "score", "score_min", "score_max", "higher_is_better", "error"]


def result_row(scorer, path: str, result: dict[str, Any]) -> dict[str, Any]:
    """One output row: the path, the prediction (or error) and, for scores, their range and direction."""
    row = {"path": os.path.abspath(path), **result}
    if "error" not in result and not scorer.is_classification:
        low, high = scorer.score_range or (None, None)
        row.update(score_min=low, score_max=high, higher_is_better=scorer.higher_is_better)
    return row


class StdoutRows:
    """CSV rows on stdout, flushed per batch (no record: nothing to resume)."""

    def __init__(self, columns: list[str]):
        self.writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        self.writer.writeheader()

    def open(self):
        from ..score_files import Previous

        return Previous()  # nothing written before

    def write(self, rows: list[dict[str, Any]]) -> None:
        from ..score_files import csv_row

        self.writer.writerows(map(csv_row, rows))
        sys.stdout.flush()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        sys.stdout.flush()


def score_file(args: argparse.Namespace, columns: list[str] | None = None, scorer=None):
    """The output file of the arguments; without a scorer only its location and owner can be checked."""
    from ..score_files import ScoreFile

    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    if scorer is None:
        return ScoreFile(args.output, [], {}, mode=mode)
    identity = {"model_fingerprint": scorer.fingerprint(), "task": scorer.config.task,
                "base_model": scorer.config.base_model_name_or_path,
                "settings": {"crops": scorer.num_crops, "seed": args.seed if scorer.num_crops > 1 else None,
                             **({"fast_decode": True} if scorer.fast_decode else {})}}
    recorded = {"model": os.path.abspath(args.model) if os.path.isdir(args.model) else args.model,
                "device": str(scorer.device), "dtype": str(scorer.dtype).replace("torch.", ""),
                "batch_size": args.batch_size, "num_workers": scorer.num_workers,
                "lora_merged": scorer.lora_merged, "version": package_version()}
    return ScoreFile(args.output, columns, identity, recorded, mode=mode, retry_errors=args.retry_errors)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perceptclip-hf")
    except PackageNotFoundError:
        return "unknown"


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads: options and the output's location and owner."""
    if args.output is None:
        if args.resume or args.overwrite or args.retry_errors:
            raise UsageError("--resume, --overwrite and --retry-errors need --output (a .csv, .jsonl or .parquet "
                             "file)")
        return
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.retry_errors and not args.resume:
        raise UsageError("--retry-errors continues a file: pass --resume too")
    score_file(args).check()


def report_not_scored(found, shown: int = 20) -> None:
    for path, reason in found.not_scored[:shown]:
        echo(f"not scored: {path}: {reason}")
    if len(found.not_scored) > shown:
        echo(f"not scored: ... and {len(found.not_scored) - shown} more (all listed in the output's .meta.json)")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    check_model_argument(args.model)
    found = collect_images(args.paths)
    report_not_scored(found)
    if not found.images:
        raise UsageError(f"no images found in {' '.join(args.paths)}"
                         + (f" ({len(found.not_scored)} files that are not images or duplicates: {found.reasons()})"
                            if found.not_scored else ""))
    scorer = load_scorer(args)
    columns = result_columns(scorer)
    output = score_file(args, columns, scorer) if args.output else StdoutRows(columns)
    previous = output.open()
    real_paths = {path: os.path.realpath(path) for path in found.images}
    already = previous.done | previous.failed
    todo = [path for path, real in real_paths.items() if real not in already]
    skipped = len(found.images) - len(todo)
    failed_before = len(set(real_paths.values()) & previous.failed)
    counts = {"scored": 0, "failed": 0}
    try:
        rows: list[dict[str, Any]] = []
        results = scorer.iter_predictions(todo, on_error="record")
        for path, result in zip(todo, progress(results, total=len(todo), desc="predict", unit="img")):
            counts["failed" if "error" in result else "scored"] += 1
            if "error" in result:
                echo(f"error: {result['error']}" if path in result["error"] else f"error: {path}: {result['error']}")
            rows.append(result_row(scorer, path, result))
            if len(rows) == args.batch_size:
                output.write(rows)
                rows = []
        output.write(rows)
    finally:
        output.close({**counts, "skipped": skipped, "completed": counts["scored"] + counts["failed"] == len(todo),
                      "not_scored": [f"{path}: {reason}" for path, reason in found.not_scored]})
    where = args.output or "stdout"
    parts = [f"summary: {counts['scored']} scored, {counts['failed']} failed, {skipped} skipped"]
    if skipped:
        parts.append(f" (already in {where}" + (f"; {failed_before} of them failed before: --retry-errors re-scores "
                                                "them" if failed_before else "") + ")")
    if found.not_scored:
        parts.append(f"; {len(found.not_scored)} not scored ({found.reasons()})")
    echo("".join(parts) + f"; {len(found.images)} images; results in {where}")
    return 0
