"""The official checkpoints: what the first use (conversion into the cache) and later uses (the cached folder) cost,
at the real ViT-L/14 size, as `perceptclip predict` runs them (a subprocess each, import included).

No pretrained weights are reachable on the machines this was written on, so a randomly initialised CLIP ViT-L/14
vision tower (`CLIPVisionModelWithProjection`, saved with `save_pretrained`) stands in for
`openai/clip-vit-large-patch14`, and the official-layout `.pth` (the keys of the official `clip_lora_model`:
`model.base_model.model.*`, `proj.*`, `mlp.fc1-3.*`, LoRA randomised) is written from it with `torch.save`.

    python benchmarks/official_cache.py --work-dir outputs/benchmarks/official \
        --json benchmarks/results/official_cache_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perceptclip_hf.hub.official import OFFICIAL_KEY_PREFIXES


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our model's tensors under the official `clip_lora_model`'s names (the inverse of the conversion)."""
    out = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("heads.default.layers."):
            index, kind = key[len("heads.default.layers.") :].split(".")
            out[f"mlp.fc{int(index) + 1}.{kind}"] = tensor
            continue
        for theirs, ours in OFFICIAL_KEY_PREFIXES:
            if key.startswith(ours):
                out[theirs + key[len(ours) :]] = tensor
                break
    return out


def build_fixture(work: Path) -> tuple[Path, Path, Path]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from perceptclip_hf import PerceptCLIPForRegression
    from perceptclip_hf.modeling.configuration_perceptclip import VIT_L14_VISION_KWARGS

    base, official, image = work / "clip-vit-large-patch14-random", work / "PerceptCLIP_IQA", work / "photo.jpg"
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14_VISION_KWARGS)).save_pretrained(base)
    model = PerceptCLIPForRegression.from_backbone(str(base), task="quality")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    official.mkdir()
    torch.save(official_state_dict(model), official / "perceptCLIP_IQA.pth")
    (official / "modeling.py").write_text("# the official release's hand-written module (not needed to load)\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)).save(image, quality=90)
    return base, official, image


def timed_predict(official: Path, base: Path, image: Path, output: Path, env: dict) -> tuple[float, str]:
    command = [
        "perceptclip",
        "predict",
        str(image),
        "--model",
        str(official),
        "--base-model",
        str(base),
        "--task",
        "quality",
        "--device",
        "cpu",
        "--output",
        str(output),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return seconds, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="outputs/benchmarks/official")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    base, official, image = build_fixture(work)
    fixture_s = time.perf_counter() - start
    env = dict(os.environ, HF_HUB_CACHE=str(work / "hf-cache"))
    first_s, first_log = timed_predict(official, base, image, work / "first.csv", env)
    second_s, second_log = timed_predict(official, base, image, work / "second.csv", env)
    cached = next((work / "hf-cache" / "perceptclip-official").iterdir())
    scores = [(work / name).read_text().splitlines()[1] for name in ("first.csv", "second.csv")]
    figures = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "torch": torch.__version__,
        "fixture_seconds": round(fixture_s, 1),
        "pth_mib": round((official / "perceptCLIP_IQA.pth").stat().st_size / 2**20, 1),
        "cached_folder_mib": round(sum(f.stat().st_size for f in cached.rglob("*") if f.is_file()) / 2**20, 1),
        "first_call_seconds": round(first_s, 1),
        "second_call_seconds": round(second_s, 1),
        "first_call_converted": "Converting the official checkpoint" in first_log,
        "second_call_converted": "Converting the official checkpoint" in second_log,
        "same_row": scores[0].split(",")[1:] == scores[1].split(",")[1:],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
