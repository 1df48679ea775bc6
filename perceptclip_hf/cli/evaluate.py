"""`perceptclip evaluate`: the paper's metrics of a model on a benchmark split (no Trainer involved)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..metrics import LOGISTIC_FITS
from ..output_safety import check_own_folder, check_own_json, check_writable
from .common import (
    UsageError,
    add_input_arguments,
    add_model_arguments,
    add_tta_arguments,
    echo,
    load_scorer,
    progress,
)

NAME = "evaluate"
HELP = "metrics on a benchmark's test split"
DESCRIPTION = (
    "Predict a benchmark split (original dataset layout in --data-dir, see 'perceptclip list') and "
    "print the paper's metrics as JSON: SRCC/PLCC (4PL)/KRCC/MSE for scores, accuracy/mAP/F1 "
    "for emotions."
)


WRITER = "perceptclip evaluate"
REPORT_JSON = "evaluation.json"  # the metrics, in a --report folder (marks it as this command's)


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", "-d", required=True, help="benchmark name (see 'perceptclip list')")
    parser.add_argument("--data-dir", required=True, help="folder of the dataset in its original layout")
    parser.add_argument("--split-index", type=int, default=0, help="which of the benchmark's splits (default: 0)")
    parser.add_argument("--split", default="test", help="part of the split to evaluate (default: test)")
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="also write the metrics JSON to this file (replaces only a report of this command)",
    )
    parser.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write a report to this folder: figures (PNG), report.html and report.md "
        "(a new or empty folder, or an earlier report of this command)",
    )
    parser.add_argument(
        "--plcc-fit",
        choices=LOGISTIC_FITS,
        default="robust",
        help="4-parameter logistic fit before PLCC: robust (default: two starts) or loda (LoDa's and "
        "pyiqa's single start, to compare with their published numbers); see docs/protocol.md",
    )
    add_model_arguments(parser)
    add_tta_arguments(parser)
    add_input_arguments(parser, fast_decode=False)  # the protocol's pixels


def run(args: argparse.Namespace) -> int:
    from ..data import get_dataset_info
    from ..evaluation.benchmark import benchmark_report, predict_benchmark
    from ..tasks import score_meaning

    try:
        info = get_dataset_info(args.dataset)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    if not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    if args.output:
        check_writable(args.output)
        check_own_json(args.output, WRITER)
    if args.report:
        check_own_folder(Path(args.report), REPORT_JSON, WRITER, "--report")
    scorer = load_scorer(args, dataset=info)
    try:
        predictions = predict_benchmark(
            scorer,
            info.name,
            args.data_dir,
            args.split_index,
            args.split,
            progress=lambda it, total: progress(it, total=total, desc="evaluate", unit="img"),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    report = {
        "writer": WRITER,
        "model": args.model,
        "dataset": info.name,
        "split_index": args.split_index,
        "split": args.split,
        "num_images": len(predictions.labels),
        "plcc_fit": args.plcc_fit,
        "metrics": {  # an undefined metric (the reason is said on stderr) is null: strict JSON has no NaN
            name: None if value != value else value for name, value in predictions.metrics(args.plcc_fit).items()
        },
    }
    text = json.dumps(report, indent=2, allow_nan=False)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    if args.report:
        (Path(args.report) / REPORT_JSON).write_text(text + "\n", encoding="utf-8")
        document = benchmark_report(
            predictions,
            args.report,
            f"{args.model} on {info.name}",
            context=f"The {args.split} part of split {args.split_index}.",
            score_meaning=score_meaning(scorer.config),
            fit=args.plcc_fit,
        )
        echo(f"report: {Path(args.report) / 'report.html'} ({len(document.figures)} figures)")
    print(text)
    return 0
