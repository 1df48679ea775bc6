"""The Ray Data engine against the local engine (issue #26): the same AGIQA-3K JPEGs (a folder) scored by
`perceptclip predict` as a user runs it (the console script, a fresh process each time: start-up, imports and model
loading included) with the quickstart-shaped model (random weights) at 15 crops — ``--engine local`` (``--workers``
decoding workers) and ``--engine ray --ray-address ADDR`` on a Ray of this machine's CPUs started once before the
rounds (as a curator's cluster is already running; its start-up is timed apart).

Not a test: run by hand, on an otherwise idle machine. The engines alternate within each of ``--repeats`` rounds;
medians are reported, and the Ray engine's rate relative to the local one.

    python benchmarks/ray_engine.py --data-dir ../shared/data/agiqa3k --json benchmarks/results/ray_engine_cpu.json
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from agiqa_runs import (
    agiqa_images,
    agiqa_parser,
    run_header,
)  # sibling scripts (benchmarks/ is on sys.path)
from scoring import QUICKSTART
from throughput import emit

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression


def seconds(arguments: list[str], output: Path) -> float:
    """Wall time of the `perceptclip predict ARGUMENTS --output OUTPUT` process (a fresh output)."""
    shutil.rmtree(output, ignore_errors=True)
    for stale in (output, Path(f"{output}.meta.json")):
        stale.unlink(missing_ok=True)
    script = shutil.which("perceptclip", path=os.path.dirname(sys.executable))
    start = time.perf_counter()
    subprocess.run([script, "predict", *arguments, "--output", str(output)], check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = agiqa_parser(__doc__.split("\n\n")[0], num_images=1000, repeats=3).parse_args(argv)
    paths = agiqa_images(args)
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning", log_to_driver=False)
    ray_start = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = root / "folder"
        folder.mkdir()
        for path in paths:
            os.symlink(path, folder / path.name)
        torch.manual_seed(0)
        model_dir = str(root / "quickstart")
        PerceptCLIPForRegression(PerceptCLIPConfig(**QUICKSTART)).eval().save_pretrained(model_dir)
        common = [str(folder), "--model", model_dir, "--batch-size", str(args.batch_size)]
        address = ray.get_runtime_context().gcs_address
        engines = {
            "local": ["--engine", "local", "--num-workers", str(args.workers)],
            "ray": ["--engine", "ray", "--ray-address", address],
        }
        outputs = {"local": root / "local.parquet", "ray": root / "ray_scores"}
        runs: dict[str, list[float]] = {engine: [] for engine in engines}
        for _ in range(args.repeats):
            for engine, extra in engines.items():
                runs[engine].append(len(paths) / seconds([*common, *extra], outputs[engine]))
    ray.shutdown()
    rates = {engine: statistics.median(values) for engine, values in runs.items()}
    return emit(
        {
            **run_header("ray_engine", argv),
            "num_images": len(paths),
            "batch_size": args.batch_size,
            "crops": 15,
            "ray_init_seconds": ray_start,
            "images_per_s": rates,
            "runs": runs,
            "ray_relative_to_local": rates["ray"] / rates["local"],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
