"""The Ray Data engine against the local engine (issue #26): the same AGIQA-3K JPEGs (a folder) scored by
`perceptclip predict` (in-process ``cli.main``; model loading included) with the quickstart-shaped model (random
weights) at 15 crops — ``--engine local`` (``--workers`` decoding workers) and ``--engine ray`` on a Ray of this
machine's CPUs started once before the rounds (as a curator's cluster is already running; its start-up is timed
apart).

Not a test: run by hand, on an otherwise idle machine. The engines alternate within each of ``--repeats`` rounds;
medians are reported, and the Ray engine's rate relative to the local one.

    python benchmarks/ray_engine.py --data-dir ../shared/data/agiqa3k --json benchmarks/results/ray_engine_cpu.json
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from agiqa_runs import (
    agiqa_images,
    agiqa_parser,
    predict_seconds,
    run_header,
)  # sibling scripts (benchmarks/ is on sys.path)
from scoring import QUICKSTART
from throughput import emit

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression


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
        engines = {"local": ["--engine", "local", "--num-workers", str(args.workers)], "ray": ["--engine", "ray"]}
        outputs = {"local": root / "local.parquet", "ray": root / "ray_scores"}
        runs: dict[str, list[float]] = {engine: [] for engine in engines}
        for _ in range(args.repeats):
            for engine, extra in engines.items():
                runs[engine].append(len(paths) / predict_seconds([*common, *extra], outputs[engine]))
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
