"""`perceptclip list`: the benchmark registry."""

from __future__ import annotations

import argparse

from .common import UsageError

NAME = "list"
HELP = "the benchmark registry"
DESCRIPTION = "List the benchmarks 'perceptclip evaluate' knows."


def add_arguments(parser) -> None:
    parser.add_argument(
        "--task", default=None, help="only this task's datasets (quality, memorability, emotion, or a registered task)"
    )


def run(args: argparse.Namespace) -> int:
    from ..data import get_dataset_info, list_datasets
    from ..tasks import list_tasks

    if args.task is not None and args.task not in list_tasks():
        raise UsageError(f"--task {args.task}: unknown task; registered tasks: {', '.join(list_tasks())}")

    rows = [("dataset", "task", "splits", "score range", "direction")]
    for name in list_datasets(args.task):
        info = get_dataset_info(name)
        score_range = "-" if info.score_range is None else f"{info.score_range[0]:g}-{info.score_range[1]:g}"
        direction = (
            "classes: " + ", ".join(info.class_names)
            if info.class_names
            else "higher is better"
            if info.higher_is_better
            else "lower is better"
        )
        rows.append((name, info.task, f"{info.split_protocol} x{info.num_splits}", score_range, direction))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0
