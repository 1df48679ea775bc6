"""The scorer on the CPU backends (issue #25): torch fp32 / bf16, ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16
(/ fp16 where the CPU computes it), side by side in one run.

1. The model alone, at ViT-B/32 and ViT-L/14 size and the quickstart recipe's shape (random weights: speed does not
   depend on them; the agreement with fp32 does a little): images/s on a batch of ``--batch-size`` 224 px views, the
   ratio to torch fp32 measured in the same run, and the agreement with fp32 on ``--calibration`` real AGIQA-3K
   images (one center view each) — max |Δ|, Spearman, and whether the package's gate passes it.
2. End to end, as a user runs it: ``perceptclip predict`` (the console script, a fresh process: imports and model
   loading included) on ``--num-images`` AGIQA-3K images with a B/32-size quality model at its default 15 crops,
   ``--backend auto`` against ``--backend torch --dtype fp32``: the first auto run (probe and exports included),
   then a later one (the choice cached), and the Spearman of auto's scores with fp32's.

Not a test: run by hand on an otherwise idle machine. The exports and the auto choice go to a temporary Hub cache.

    python benchmarks/cpu_backends.py --json benchmarks/results/cpu_backends.json
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from agiqa_runs import agiqa_images, agiqa_parser, run_header  # sibling scripts (benchmarks/ is on sys.path)
from scipy import stats
from scoring import QUICKSTART
from throughput import IMAGE_SIZE, SIZES, emit
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.backends.agreement import Agreement
from perceptclip_hf.backends.probe import candidates, runner, wall_times
from perceptclip_hf.scoring.scorer import PerceptScorer, merge_lora_weights


def random_model(shape: str) -> PerceptCLIPForRegression:
    """A quality model of ``shape`` (b32, l14: CLIP towers at 224 px; quickstart: the recipe's ResNet), random
    weights, LoRA non-zero as after training, merged as the scorer merges it."""
    torch.manual_seed(0)
    if shape == "quickstart":
        model = PerceptCLIPForRegression(PerceptCLIPConfig(**QUICKSTART))
    else:
        vision = {"model_type": "clip_vision_model", "image_size": IMAGE_SIZE, **SIZES[shape]}
        model = PerceptCLIPForRegression(PerceptCLIPConfig(vision_config=vision, task="quality"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    merge_lora_weights(model)
    return model.eval()


def images_per_second(run, batch: torch.Tensor, repeats: int) -> float:
    """Median rate of ``run(batch)`` over ``repeats`` calls, after one warm-up."""
    return len(batch) / float(np.median(wall_times(run, batch, repeats)))


def model_table(shape: str, paths: list[Path], args) -> list[dict]:
    """One row per backend and precision for the model of ``shape``."""
    model = random_model(shape)
    scorer = PerceptScorer(model, tta=1, num_workers=0)
    size = (scorer.transform.crop_size, scorer.transform.crop_size)
    views = torch.stack([scorer.preprocess(path) for path in paths[: args.calibration]])
    batch = views[: args.batch_size] if len(views) >= args.batch_size else views.repeat(args.batch_size, 1, 1, 1)
    batch = batch[: args.batch_size].contiguous()
    fingerprint = f"bench-{shape}"
    with torch.inference_mode():
        reference = model(views).logits.numpy()
        torch_rate = images_per_second(lambda pixels: model(pixels).logits, batch, args.repeats)
    rows = [{"model": shape, "backend": "torch", "precision": "fp32", "images_per_s": round(torch_rate, 2)}]
    for backend, precision in candidates(None):
        started = time.perf_counter()
        run = runner(model, fingerprint, size, backend, precision, None)
        ready = time.perf_counter() - started
        agreement = Agreement.measure(reference, run(views), classification=False)
        rate = images_per_second(run, batch, args.repeats)
        rows.append(
            {
                "model": shape,
                "backend": backend,
                "precision": precision,
                "images_per_s": round(rate, 2),
                "vs_torch_fp32": round(rate / torch_rate, 2),
                "max_abs_diff": float(f"{agreement.max_abs:.3g}"),
                "spearman": round(agreement.spearman, 4),
                "pearson": round(float(stats.pearsonr(reference[:, 0], run(views)[:, 0]).statistic), 4),
                "gate": "passes" if not agreement.shortfalls(precision) else "; ".join(agreement.shortfalls(precision)),
                "export_and_load_s": round(ready, 1),
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def predict(arguments: list[str], output: Path, env: dict) -> tuple[float, str]:
    """Wall time and stderr of a fresh `perceptclip predict ARGUMENTS --output OUTPUT` process."""
    for stale in (output, Path(f"{output}.meta.json")):
        stale.unlink(missing_ok=True)
    script = shutil.which("perceptclip", path=os.path.dirname(sys.executable))
    start = time.perf_counter()
    done = subprocess.run(
        [script, "predict", *arguments, "--output", str(output)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start, done.stderr


def scores(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["id"]: float(row["score"]) for row in csv.DictReader(handle)}


def end_to_end(paths: list[Path], root: Path, env: dict) -> dict:
    """`perceptclip predict --backend auto` against `--backend torch --dtype fp32` on ``paths``, B/32-size model."""
    folder = root / "images"
    folder.mkdir()
    for path in paths:
        os.symlink(path, folder / path.name)
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, **SIZES["b32"])
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(vision).save_pretrained(root / "b32-base")  # the local stand-in for a Hub backbone
    model = PerceptCLIPForRegression.from_backbone(str(root / "b32-base"), task="quality")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    model.save_pretrained(root / "b32-quality")
    common = [str(folder), "--model", str(root / "b32-quality")]
    torch_s, _ = predict([*common, "--backend", "torch", "--dtype", "fp32"], root / "torch.csv", env)
    first_s, first_log = predict([*common, "--backend", "auto"], root / "auto-first.csv", env)
    later_s, later_log = predict([*common, "--backend", "auto"], root / "auto.csv", env)
    fp32, auto = scores(root / "torch.csv"), scores(root / "auto.csv")
    ids = sorted(fp32)
    chosen = [line for line in later_log.splitlines() if line.startswith("backend:")]
    return {
        "images": len(paths),
        "crops": 15,
        "torch_fp32_s": round(torch_s, 1),
        "auto_first_run_s": round(first_s, 1),
        "auto_s": round(later_s, 1),
        "auto_vs_torch_fp32": round(torch_s / later_s, 2),
        "auto_first_run_vs_torch_fp32": round(torch_s / first_s, 2),
        "spearman_auto_vs_fp32": round(
            float(stats.spearmanr([fp32[i] for i in ids], [auto[i] for i in ids]).statistic), 4
        ),
        "auto_choice": chosen[0] if chosen else None,
        "probe": [line for line in first_log.splitlines() if line.startswith("backend:")],
    }


def main(argv=None) -> dict:
    parser = agiqa_parser(__doc__.split("\n\n")[0], num_images=300, repeats=3)
    parser.add_argument("--calibration", type=int, default=64, help="real images the agreement is measured on")
    parser.add_argument("--models", default="b32,l14,quickstart", help="model shapes of part 1 (comma-separated)")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args(argv)
    paths = agiqa_images(args)
    results = {**run_header("cpu_backends", argv), "cpu_flags": cpu_flags(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        env = {**os.environ, "HF_HUB_CACHE": str(root / "hub-cache"), "TQDM_DISABLE": "1"}
        os.environ["HF_HUB_CACHE"] = env["HF_HUB_CACHE"]  # (read by huggingface_hub at import: set before it)
        from huggingface_hub import constants

        constants.HF_HUB_CACHE = env["HF_HUB_CACHE"]
        results["models"] = [row for shape in args.models.split(",") for row in model_table(shape, paths, args)]
        if not args.skip_end_to_end:
            results["end_to_end"] = end_to_end(paths, root, env)
    emit(results, args.json)
    return results


def cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in wanted if flag in flags]


if __name__ == "__main__":
    main()
