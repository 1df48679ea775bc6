"""What the scoring benchmarks share: their AGIQA-3K options and a timed `perceptclip predict` (in-process)."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from perceptclip_hf.cli import main as perceptclip


def agiqa_parser(description: str, num_images: int, repeats: int) -> argparse.ArgumentParser:
    """--data-dir, --num-images, --batch-size, --workers, --repeats, --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default="../shared/data/agiqa3k", help="AGIQA-3K (data.csv + images/)")
    parser.add_argument("--num-images", type=int, default=num_images)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser


def agiqa_images(args: argparse.Namespace) -> list[Path]:
    """The first ``--num-images`` AGIQA-3K images, by name (progress bars off for the timed runs)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    return sorted(path.resolve() for path in Path(args.data_dir, "images").iterdir())[: args.num_images]


def predict_seconds(arguments: list[str], output: Path) -> float:
    """Wall time of `perceptclip predict ARGUMENTS --output OUTPUT` (a fresh output, a file or `--engine ray`'s
    folder; model loading included)."""
    shutil.rmtree(output, ignore_errors=True)
    for stale in (output, Path(f"{output}.meta.json")):
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    status = perceptclip(["predict", *arguments, "--output", str(output)])
    assert status == 0, f"perceptclip predict exited {status}"
    return time.perf_counter() - start


def run_header(benchmark: str, argv: list[str] | None) -> dict:
    """The fields each run's JSON starts with: which benchmark, when, on what machine, with which command."""
    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "command": f"python benchmarks/{benchmark}.py " + " ".join(argv or sys.argv[1:]),
    }
