"""`perceptclip list`: the benchmark registry (and the registered tasks)."""

from __future__ import annotations

import argparse

from ..tasks import list_tasks


NAME = "list"
HELP = "the benchmark registry"
DESCRIPTION = "List the benchmarks 'perceptclip evaluate' knows."


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=list_tasks(), default=None, help="only this task's datasets")


def run(args: argparse.Namespace) -> int:
    from ..data import get_dataset_info, list_datasets

    rows = [("dataset", "task", "splits", "score range", "direction")]
    for name in list_datasets(args.task):
        info = get_dataset_info(name)
        score_range = "-" if info.score_range is None else f"{info.score_range[0]:g}-{info.score_range[1]:g}"
        direction = ("classes: " + ", ".join(info.class_names) if info.class_names
                     else "higher is better" if info.higher_is_better else "lower is better")
        rows.append((name, info.task, f"{info.split_protocol} x{info.num_splits}", score_range, direction))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0
