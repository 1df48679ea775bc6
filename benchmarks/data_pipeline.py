"""Images/s of the IQA training input pipeline (decode + augment), original JPEGs vs the pre-resized cache (issue #7).

Not a test: run by hand. The pipeline is the training one — ``load_agiqa3k`` → ``with_image_transform`` with
``IQATrainTransform(resize_short=384)`` (short-side resize, flips, random 224 crop, normalise) → ``DataLoader`` with
``default_data_collator`` — read from the original files, and from ``preresize(ds, 384)`` (where the resize is a
no-op). Given ``--throughput-json`` (from ``throughput.py``), it says whether loading keeps up with training.

    python benchmarks/data_pipeline.py --data-dir ../shared/data/agiqa3k \
        --throughput-json outputs/benchmarks/throughput_cpu_b32.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from throughput import emit  # sibling script (benchmarks/ is on sys.path when run as a script)
from torch.utils.data import DataLoader
from transformers import default_data_collator

from perceptclip_hf.data import load_agiqa3k
from perceptclip_hf.preprocessing import IQATrainTransform, preresize, with_image_transform


def images_per_s(ds, workers: int, batch_size: int, resize_short: int, repeats: int) -> float:
    """Median over ``repeats`` epochs of images/s, timed from the first batch on (worker start-up excluded)."""
    loader = DataLoader(
        with_image_transform(ds, IQATrainTransform(resize_short=resize_short)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=default_data_collator,
        shuffle=True,
    )
    rates = []
    for _ in range(repeats):
        batches = iter(loader)
        next(batches)  # the first batch waits for worker start-up
        start, count = time.perf_counter(), 0
        for batch in batches:
            count += len(batch["pixel_values"])
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def training_images_per_s(path: Path) -> dict:
    """LoRA training images/s recorded by ``throughput.py`` (at ``--batch-size`` and the largest batch)."""
    train = json.loads(path.read_text())["training_lora"]
    rates = {f"batch_{train['batch']['batch_size']}": train["batch"]["images_per_s"]}
    if train.get("largest_batch", {}).get("images_per_s"):
        rates[f"batch_{train['largest_batch']['batch_size']}"] = train["largest_batch"]["images_per_s"]
    return rates


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/agiqa3k", help="AGIQA-3K (data.csv + images/)")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--resize-short", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per figure (median)")
    parser.add_argument("--throughput-json", type=Path, help="throughput.py's JSON, to compare with training")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    ds = load_agiqa3k(args.data_dir)
    ds = ds.select(range(min(args.num_images, len(ds))))
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cached = preresize(ds, args.resize_short, cache_dir=cache_dir)
        cache_seconds = time.perf_counter() - start
        sources = {"original_jpeg": ds, f"preresized_{args.resize_short}": cached}
        rates = {
            name: {
                f"workers_{w}": images_per_s(source, w, args.batch_size, args.resize_short, args.repeats)
                for w in args.workers
            }
            for name, source in sources.items()
        }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "num_images": len(ds),
        "image_size": list(ds[0]["image"].size),
        "batch_size": args.batch_size,
        "images_per_s": rates,
        "preresize_build": {"seconds": cache_seconds, "images_per_s": len(ds) / cache_seconds},
    }
    if args.throughput_json:
        training = training_images_per_s(args.throughput_json)
        best = max(rate for per_source in rates.values() for rate in per_source.values())
        result["training_images_per_s"] = training
        result["loading_over_training"] = {k: best / v for k, v in training.items()}
        result["note"] = (
            "ratio < 1: the best loader configuration cannot feed training (it starves); > 1: "
            "loading keeps up. On CPU the loader workers share the cores with training itself."
        )
    return emit(result, args.json)


if __name__ == "__main__":
    main()
