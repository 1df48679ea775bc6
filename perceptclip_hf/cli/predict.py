"""`perceptclip predict`: score images (files, folders, globs) into a CSV / JSONL file or stdout, resumable."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

from .common import (
    UsageError,
    add_model_arguments,
    add_tta_arguments,
    check_model_argument,
    collect_images,
    echo,
    load_scorer,
    progress,
)

OUTPUT_FORMATS = (".csv", ".jsonl")


NAME = "predict"
HELP = "score images (files, folders, globs)"
DESCRIPTION = ("Score images with a trained model. Folders are searched recursively for image files. "
               "Unreadable images become rows with an 'error' column and are counted in the final summary. "
               "Regression models write score, score_min, score_max, higher_is_better; emotion models the top "
               "label and one prob_<label> column per class.")


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    add_model_arguments(parser)
    add_tta_arguments(parser)
    parser.add_argument("--output", "-o", default=None, help="results file, .csv or .jsonl (default: CSV on stdout)")
    parser.add_argument("--resume", action="store_true",
                        help="append to --output, skipping images already in it (after an interrupted run)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")


def result_columns(scorer) -> list[str]:
    """CSV columns of a model's rows."""
    if scorer.is_classification:
        return ["path", "label", *(f"prob_{label}" for label in scorer.labels), "error"]
    return ["path", "score", "score_min", "score_max", "higher_is_better", "error"]


def result_row(scorer, path: str, result: dict[str, Any]) -> dict[str, Any]:
    """One output row: the path, the prediction (or error) and, for scores, their range and direction."""
    row = {"path": path, **result}
    if "error" not in result and not scorer.is_classification:
        low, high = scorer.score_range or (None, None)
        row.update(score_min=low, score_max=high, higher_is_better=scorer.higher_is_better)
    return row


class ResultWriter:
    """Appends rows to a ``.csv`` or ``.jsonl`` file (or CSV on stdout), flushing after each row."""

    def __init__(self, path: str | None, columns: list[str], append: bool):
        self.path, self.columns = path, columns
        self.is_jsonl = bool(path) and path.lower().endswith(".jsonl")
        self.handle = open(path, "a" if append else "w", newline="", encoding="utf-8") if path else sys.stdout
        self.csv = None if self.is_jsonl else csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore",
                                                            lineterminator="\n")
        if self.csv is not None and not (append and os.path.getsize(path) > 0):
            self.csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.is_jsonl:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            probabilities = row.pop("probabilities", {})
            self.csv.writerow({**row, **{f"prob_{label}": p for label, p in probabilities.items()}})
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not sys.stdout:
            self.handle.close()


def drop_partial_last_line(path: str) -> None:
    """Cut a last line left unfinished by an interrupted run (no final newline)."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def done_paths(path: str, columns: list[str]) -> set[str]:
    """Absolute paths of the images already in a previous output file (checked to have our columns)."""
    drop_partial_last_line(path)
    with open(path, newline="", encoding="utf-8") as handle:
        if path.lower().endswith(".jsonl"):
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            reader = csv.DictReader(handle)
            if reader.fieldnames and reader.fieldnames != columns:
                raise UsageError(f"--resume: {path} has columns {reader.fieldnames}, but this model writes "
                                 f"{columns}; use another --output")
            rows = list(reader)
    return {os.path.abspath(row["path"]) for row in rows if row.get("path")}


def check_output_argument(args: argparse.Namespace) -> None:
    if args.output is None:
        if args.resume:
            raise UsageError("--resume needs --output (the file of the interrupted run)")
        return
    if not args.output.lower().endswith(OUTPUT_FORMATS):
        raise UsageError(f"--output {args.output}: use a .csv or .jsonl file")
    if os.path.exists(args.output) and not (args.resume or args.overwrite):
        raise UsageError(f"--output {args.output} exists; pass --resume to continue it or --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    check_output_argument(args)
    check_model_argument(args.model)
    images = collect_images(args.paths)
    if not images:
        raise UsageError(f"no images found in {' '.join(args.paths)} (extensions: jpg, jpeg, png, bmp, tif, tiff, "
                         "webp, gif)")
    scorer = load_scorer(args)
    columns = result_columns(scorer)
    append = bool(args.resume and args.output and os.path.exists(args.output))
    done = done_paths(args.output, columns) if append else set()
    todo = [path for path in images if os.path.abspath(path) not in done]
    skipped = len(images) - len(todo)
    writer = ResultWriter(args.output, columns, append)
    failed = 0
    try:
        results = scorer.iter_predictions(todo, on_error="record")
        for path, result in zip(todo, progress(results, total=len(todo), desc="predict", unit="img")):
            if "error" in result:
                failed += 1
                echo(f"error: {path}: {result['error']}")
            writer.write(result_row(scorer, path, result))
    finally:
        writer.close()
    already = f" (already in {args.output})" if args.output else ""
    echo(f"summary: {len(todo) - failed} scored, {failed} failed, {skipped} skipped{already}; {len(images)} images; "
         f"results in {args.output or 'stdout'}")
    return 0
