"""Start-up of the `perceptclip` command beside huggingface_hub's `hf --help`, measured side by side.

Each command runs as a fresh process (the console scripts of this environment), the commands alternating round by
round so that the machine's drift hits them alike; the figure is the median wall time of the rounds. The criterion
(issue "A real package"): `perceptclip --help`, `perceptclip predict --help` and a usage error that needs no model
(`perceptclip predict missing.jpg --model missing`, exit 2) each take at most 1.5x `hf --help`. `perceptclip train
--help` and `import perceptclip_hf.scoring.scorer` (the model stack) are shown for comparison.

    python benchmarks/startup.py --rounds 7 --json outputs/benchmarks/startup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

LIMIT = 1.5  # x `hf --help`
CRITERION = ("perceptclip --help", "perceptclip predict --help", "perceptclip predict missing.jpg --model missing")


def commands() -> dict[str, tuple[list[str], int]]:
    """name → (argv, expected exit status)."""
    bin_dir = Path(sys.executable).parent
    hf = shutil.which("hf", path=str(bin_dir)) or shutil.which("hf")
    perceptclip = shutil.which("perceptclip", path=str(bin_dir)) or shutil.which("perceptclip")
    if not hf or not perceptclip:
        raise SystemExit("needs the `hf` and `perceptclip` console scripts (pip install -e .)")
    return {
        "hf --help": ([hf, "--help"], 0),
        "perceptclip --help": ([perceptclip, "--help"], 0),
        "perceptclip predict --help": ([perceptclip, "predict", "--help"], 0),
        "perceptclip predict missing.jpg --model missing": (
            [perceptclip, "predict", "missing.jpg", "--model", "missing"],
            2,
        ),
        "perceptclip train --help": ([perceptclip, "train", "--help"], 0),
        "python -c 'import perceptclip_hf.scoring.scorer'": (
            [sys.executable, "-c", "import perceptclip_hf.scoring.scorer"],
            0,
        ),
    }


def wall_time(argv: list[str], expected: int, cwd: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != expected:
        raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}, expected {expected}\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    table = commands()
    times: dict[str, list[float]] = {name: [] for name in table}
    with tempfile.TemporaryDirectory() as cwd:  # no checkout on sys.path: the installed package, as users run it
        for argv, expected in table.values():  # one warm-up round (page cache)
            wall_time(argv, expected, cwd)
        for _ in range(args.rounds):
            for name, (argv, expected) in table.items():
                times[name].append(wall_time(argv, expected, cwd))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["hf --help"]
    rows = {
        name: {
            "median_s": round(medians[name], 3),
            "min_s": round(min(times[name]), 3),
            "max_s": round(max(times[name]), 3),
            "ratio_to_hf_help": round(medians[name] / reference, 2),
        }
        for name in table
    }
    held = {name: rows[name]["ratio_to_hf_help"] <= LIMIT for name in CRITERION}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
        "rounds": args.rounds,
        "commands": rows,
        "criterion": {"limit_ratio_to_hf_help": LIMIT, "held": held},
    }
    width = max(map(len, table))
    print(f"{'command':<{width}}  median s  (min-max)        x hf --help")
    for name, row in rows.items():
        spread = f"({row['min_s']:.3f}-{row['max_s']:.3f})"
        print(f"{name:<{width}}  {row['median_s']:8.3f}  {spread}  {row['ratio_to_hf_help']:6.2f}")
    print("criterion (<= 1.5x hf --help):", "held" if all(held.values()) else f"NOT held: {held}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
