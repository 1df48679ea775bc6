"""Scoring throughput of the input engine (issue #13): images/s of `perceptclip predict` over AGIQA-3K.

Not a test: run by hand, on an otherwise idle machine. One run measures:

(a) decode + test transform alone (no model), in 0, 1, 2 ... worker processes (``iter_prepared_batches``), for the
    quickstart model's transform (15 native 48 px crops), the official IQA one (``Resize((512, 384))`` + 15 random
    224 crops) and the single 224 crop of memorability / emotion; the last also with ``--fast-decode`` (JPEG draft),
    with the score difference it causes on the quickstart-shaped model;
(b) the quickstart-shaped model (tiny ResNet, random weights: speed does not depend on them): its rate on batches
    prepared beforehand (with every torch thread, and with one), and `perceptclip predict` (in-process
    ``cli.main``: model loading and the folder walk included, interpreter start-up not) at each worker count;
    0 workers is the serial path (median of 3 runs each, the worker counts alternating). Overlap = the engine's
    rate / the slower stage's own rate (decode with those workers, or the model on ready batches). Where both
    stages need every core, the stages cannot both run at
    their own rate: the CPU ceiling ``cores / (1 / decode rate of one worker + 1 / model rate on one thread)`` is
    the most any overlap can reach, and the engine's rate is also given as a fraction of it;
(c) a CLIP ViT-B/32 with LoRA (random, LoRA non-zero) on ready 224 px batches, LoRA merged vs unmerged;
(d) from (a), the projected decode rate of a 16-core GPU machine (15 workers, one core for the main process).

    python benchmarks/scoring.py --data-dir ../shared/data/agiqa3k --json outputs/benchmarks/scoring_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from throughput import build_model, emit  # sibling script (benchmarks/ is on sys.path when run as a script)

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.cli import main as perceptclip
from perceptclip_hf.preprocessing import IQATestTransform, ResizeCenterCropTransform
from perceptclip_hf.scoring.input_pipeline import TorchThreads, iter_prepared_batches, prepare_image
from perceptclip_hf.scoring.scorer import PerceptScorer

# The quickstart recipe's backbone and head (configs/quickstart.yaml), random weights.
QUICKSTART = dict(
    vision_config=dict(
        model_type="resnet",
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
        image_size=48,
    ),
    adaptation="full",
    head_hidden_sizes=[64, 32],
    task="quality",
)
PROJECTED_WORKERS = 15


def decode_rate(
    paths: list[str], transform, workers: int, batch_size: int, fast_decode: bool = False, repeats: int = 3
) -> float:
    """Images/s of decode + transform alone, timed from the first batch on (worker start-up excluded); median of
    ``repeats`` passes."""
    rates = []
    for _ in range(repeats):
        batches = iter_prepared_batches(
            [(path, None) for path in paths], transform, batch_size, workers, fast_decode=fast_decode
        )
        next(batches)
        start, count = time.perf_counter(), 0
        for batch in batches:
            count += batch.size
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def model_rate(scorer: PerceptScorer, paths: list[str], threads: int, batches: int = 8, repeats: int = 3) -> float:
    """Images/s of the model alone (normalisation included) on ``threads`` torch threads, on batches of uint8
    pixels prepared beforehand (median of ``repeats`` passes)."""
    ready = [
        batch.pixel_values
        for batch in iter_prepared_batches(
            [(path, None) for path in paths[: batches * scorer.batch_size]], scorer.transform, scorer.batch_size
        )
    ]
    with TorchThreads(threads):
        scorer.predict_logits(ready[0])  # warm-up
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for pixels in ready:
                scorer.predict_logits(pixels)
            rates.append(sum(len(pixels) for pixels in ready) / (time.perf_counter() - start))
    return statistics.median(rates)


def predict_rate(folder: str, model_dir: str, workers: int, batch_size: int, out: Path, count: int) -> float:
    """Images/s of ``perceptclip predict FOLDER --model M --output out.csv --num-workers W`` (in-process)."""
    output = out / f"predict_workers{workers}.csv"
    output.unlink(missing_ok=True)
    Path(f"{output}.meta.json").unlink(missing_ok=True)
    start = time.perf_counter()
    status = perceptclip(
        [
            "predict",
            folder,
            "--model",
            model_dir,
            "--output",
            str(output),
            "--num-workers",
            str(workers),
            "--batch-size",
            str(batch_size),
        ]
    )
    seconds = time.perf_counter() - start
    assert status == 0, f"perceptclip predict exited {status}"
    return count / seconds


def fast_decode_difference(model_dir: str, paths: list[str], workers: int) -> dict:
    """What --fast-decode changes: the 224 px model inputs (uint8 levels) and the scores of a memorability-style
    model (Resize(224) + CenterCrop(224)) on the quickstart backbone, full vs draft decoding of the same JPEGs. The
    backbone is random, so its scores vary little: the change is also given relative to their spread."""
    from scipy.stats import spearmanr

    scores, pixels = {}, {}
    for fast in (False, True):
        scorer = PerceptScorer.from_pretrained(model_dir, num_workers=workers, fast_decode=fast)
        scores[fast] = [result["score"] for result in scorer(paths)]
        pixels[fast] = torch.stack([prepare_image(scorer.transform, path, fast_decode=fast) for path in paths[:50]])
    differences = [abs(a - b) for a, b in zip(scores[False], scores[True])]
    spread = statistics.pstdev(scores[False])
    levels = (pixels[True].float() - pixels[False].float()).abs()
    return {
        "pixel_mean_abs_levels": float(levels.mean()),
        "pixel_p99_abs_levels": float(levels.quantile(0.99)),
        "score_max_abs": max(differences),
        "score_mean_abs": statistics.fmean(differences),
        "score_std": spread,
        "score_mean_abs_over_std": statistics.fmean(differences) / spread,
        "srcc_full_vs_fast": float(spearmanr(scores[False], scores[True])[0]),
    }


def lora_merge(batch_size: int, repeats: int) -> dict:
    """CLIP ViT-B/32 + LoRA on ready 224 px batches: images/s unmerged vs merged (timed alternately, so drift in
    the machine's speed hits both alike; median of ``repeats``), and the largest output change."""
    generator = torch.Generator().manual_seed(0)
    scorers = {}
    for merged in (False, True):
        model = build_model("b32")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
        scorers[merged] = PerceptScorer(model, merge_lora=merged, num_workers=0, tta=1, batch_size=batch_size)
    pixels = torch.randn(batch_size, 3, 224, 224, generator=generator)
    outputs = {merged: scorer.predict_logits(pixels) for merged, scorer in scorers.items()}  # also the warm-up
    times = {False: [], True: []}
    for _ in range(repeats):
        for merged, scorer in scorers.items():
            start = time.perf_counter()
            scorer.predict_logits(pixels)
            times[merged].append(time.perf_counter() - start)
    rates = {merged: batch_size / statistics.median(seconds) for merged, seconds in times.items()}
    return {
        "unmerged_images_per_s": rates[False],
        "merged_images_per_s": rates[True],
        "layers_merged": scorers[True].lora_merged,
        "speedup": rates[True] / rates[False],
        "max_abs_output_change": float((outputs[True] - outputs[False]).abs().max()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/agiqa3k", help="AGIQA-3K (data.csv + images/)")
    parser.add_argument("--num-images", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--merge-repeats", type=int, default=9)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    all_paths = sorted(str(path.resolve()) for path in Path(args.data_dir, "images").iterdir())[: args.num_images]
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        folder = temporary / "images"  # the subset, as a folder to predict
        folder.mkdir()
        for path in all_paths:
            os.symlink(path, folder / Path(path).name)
        paths = sorted(str(folder / Path(path).name) for path in all_paths)
        torch.manual_seed(0)
        quickstart_dir = str(temporary / "quickstart")
        PerceptCLIPForRegression(PerceptCLIPConfig(**QUICKSTART)).eval().save_pretrained(quickstart_dir)
        single_crop_dir = str(temporary / "single_crop")
        single_crop = {
            **QUICKSTART,
            "task": "memorability",
            "vision_config": {**QUICKSTART["vision_config"], "image_size": 224},
        }
        PerceptCLIPForRegression(PerceptCLIPConfig(**single_crop)).eval().save_pretrained(single_crop_dir)

        transforms = {
            "quickstart_15x48_native": PerceptScorer.from_pretrained(quickstart_dir).transform,
            "official_iqa_512x384_15x224": IQATestTransform(224, num_crops=15, resize_size=(512, 384)),
            "single_crop_224": ResizeCenterCropTransform(224),
        }
        decode = {
            name: {f"workers_{w}": decode_rate(paths, transform, w, args.batch_size) for w in args.workers}
            for name, transform in transforms.items()
        }
        decode["single_crop_224_fast_decode"] = {
            f"workers_{w}": decode_rate(paths, transforms["single_crop_224"], w, args.batch_size, fast_decode=True)
            for w in args.workers
        }

        scorer = PerceptScorer.from_pretrained(quickstart_dir, batch_size=args.batch_size, num_workers=0)
        model_alone = model_rate(scorer, paths, torch.get_num_threads())
        model_one_thread = model_rate(scorer, paths, 1)
        cores = len(os.sched_getaffinity(0))
        ceiling = cores / (1 / decode["quickstart_15x48_native"]["workers_1"] + 1 / model_one_thread)
        runs = {w: [] for w in args.workers}
        for _ in range(3):  # worker counts alternate, so drift in the machine's speed hits each alike
            for w in args.workers:
                runs[w].append(predict_rate(str(folder), quickstart_dir, w, args.batch_size, temporary, len(paths)))
        predict = {f"workers_{w}": statistics.median(rates) for w, rates in runs.items()}
        overlap = {}
        for w in args.workers:
            slower = min(decode["quickstart_15x48_native"][f"workers_{w}"], model_alone)
            overlap[f"workers_{w}"] = predict[f"workers_{w}"] / slower
        fast = fast_decode_difference(single_crop_dir, paths[:300], max(args.workers))

    one_worker = {name: rates.get("workers_1") for name, rates in decode.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads",
        "num_images": len(paths),
        "image_size": [512, 512],
        "batch_size": args.batch_size,
        "a_decode_transform_images_per_s": decode,
        "a_worker_scaling": {
            name: rates["workers_2"] / rates["workers_1"]
            for name, rates in decode.items()
            if "workers_1" in rates and "workers_2" in rates
        },
        "b_quickstart_model_alone_images_per_s": model_alone,
        "b_quickstart_model_alone_one_thread_images_per_s": model_one_thread,
        "b_cpu_ceiling_images_per_s": ceiling,
        "b_predict_images_per_s": predict,
        "b_overlap_of_slower_stage": overlap,
        "b_predict_over_cpu_ceiling": {name: rate / ceiling for name, rate in predict.items()},
        "b_over_serial_path": {name: rate / predict["workers_0"] for name, rate in predict.items()},
        "b_fast_decode_score_change_single_crop": fast,
        "c_lora_merge_b32": lora_merge(args.batch_size, args.merge_repeats),
        "d_projected_decode_images_per_s_16_core": {
            name: rate * PROJECTED_WORKERS for name, rate in one_worker.items() if rate
        },
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
