"""Scoring rate by input kind (issue #13): the same AGIQA-3K JPEGs as a folder, as WebDataset tar shards, as one
Parquet file and as a ``save_to_disk`` folder, scored by `perceptclip predict` (in-process ``cli.main``; model
loading included) with the quickstart-shaped model (random weights) at 15 crops and ``--num-workers`` workers.

Not a test: run by hand, on an otherwise idle machine. The kinds alternate within each of ``--repeats`` rounds (so
drift in the machine's speed hits each alike); the median is reported, with each kind's rate relative to the folder.
Shards and Parquet are read in the main process and decoded in the workers; folders and ``save_to_disk`` are read by
the workers (``perceptclip_hf.scoring.image_sources``).

    python benchmarks/input_kinds.py --data-dir ../shared/data/agiqa3k --json benchmarks/results/input_kinds_cpu.json
"""

from __future__ import annotations

import io
import os
import statistics
import tarfile
import tempfile
from pathlib import Path

import torch
from agiqa_runs import (  # sibling scripts (benchmarks/ is on sys.path)
    agiqa_images,
    agiqa_parser,
    predict_seconds,
    run_header,
)
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from scoring import QUICKSTART
from throughput import emit

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression

SHARD_SIZE = 250


def write_inputs(paths: list[Path], root: Path) -> dict[str, list[str]]:
    """The images as each input kind; returns the `perceptclip predict` arguments of each."""
    folder = root / "folder"
    folder.mkdir()
    for path in paths:
        os.symlink(path, folder / path.name)
    shards = root / "shards"
    shards.mkdir()
    for start in range(0, len(paths), SHARD_SIZE):
        with tarfile.open(shards / f"{start // SHARD_SIZE:06d}.tar", "w") as tar:
            for index, path in enumerate(paths[start : start + SHARD_SIZE], start=start):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{index:06d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    last = (len(paths) - 1) // SHARD_SIZE
    table = Dataset.from_dict(
        {
            "image": [{"bytes": path.read_bytes(), "path": None} for path in paths],
            "name": [path.name for path in paths],
        },
        features=Features({"image": ImageFeature(), "name": Value("string")}),
    )
    table.to_parquet(str(root / "table.parquet"))
    table.save_to_disk(str(root / "saved"))
    return {
        "folder": [str(folder)],
        "shards": [str(shards / f"{{000000..{last:06d}}}.tar")],
        "parquet": [str(root / "table.parquet")],
        "save_to_disk": [str(root / "saved")],
    }


def main(argv=None) -> dict:
    args = agiqa_parser(__doc__.split("\n\n")[0], num_images=1000, repeats=3).parse_args(argv)
    paths = agiqa_images(args)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        kinds = write_inputs(paths, root)
        torch.manual_seed(0)
        model_dir = str(root / "quickstart")
        PerceptCLIPForRegression(PerceptCLIPConfig(**QUICKSTART)).eval().save_pretrained(model_dir)
        runs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind, arguments in kinds.items():
                seconds = predict_seconds(
                    [
                        *arguments,
                        "--model",
                        model_dir,
                        "--num-workers",
                        str(args.workers),
                        "--batch-size",
                        str(args.batch_size),
                    ],
                    root / f"{kind}.csv",
                )
                runs[kind].append(len(paths) / seconds)
    rates = {kind: statistics.median(values) for kind, values in runs.items()}
    return emit(
        {
            **run_header("input_kinds", argv),
            "num_images": len(paths),
            "workers": args.workers,
            "batch_size": args.batch_size,
            "crops": 15,
            "images_per_s": rates,
            "runs": runs,
            "relative_to_folder": {kind: rate / rates["folder"] for kind, rate in rates.items()},
        },
        args.json,
    )


if __name__ == "__main__":
    main()
