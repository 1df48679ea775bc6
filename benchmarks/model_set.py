"""Several models in one pass (issue #13): three CLIP ViT-B/32 + LoRA models on one base (random weights, LoRA
non-zero; speed and memory do not depend on the values) over AGIQA-3K JPEGs.

Not a test: run by hand, on an otherwise idle machine. Measures
- images/s of `perceptclip predict --model Q --model M --model E` (one pass: each image decoded once) against the
  three separate `perceptclip predict --model X` runs it replaces (in-process ``cli.main``, model loading included;
  the two alternate in each of ``--repeats`` rounds, medians reported);
- resident memory (peak, and after scoring) of a fresh process that loads the three models and scores 32 images,
  with the base shared (``ScorerSet.from_pretrained``) and not shared (``share_base=False``), and the bytes the
  sharing reports.

    python benchmarks/model_set.py --data-dir ../shared/data/agiqa3k --json benchmarks/results/model_set_cpu.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from agiqa_runs import (  # sibling scripts (benchmarks/ is on sys.path)
    agiqa_images,
    agiqa_parser,
    predict_seconds,
    run_header,
)
from throughput import IMAGE_SIZE, SIZES, emit
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPForClassification, PerceptCLIPForRegression

TASKS = {
    "quality": PerceptCLIPForRegression,
    "memorability": PerceptCLIPForRegression,
    "emotion": PerceptCLIPForClassification,
}
MEMORY_PROBE = """
import json, resource, sys
from perceptclip_hf.scoring.model_set import ScorerSet
models, images, share = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
scorers = ScorerSet.from_pretrained(models, share_base=share, tta=1, num_workers=0, batch_size=16)
scorers(images)
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_scoring_mib": rss / 1024, "shared_bytes": scorers.shared_bytes}))
"""


def save_models(root: Path) -> dict[str, str]:
    """A random B/32 base saved as the backbone, and three adapter-only models on it (non-zero LoRA)."""
    torch.manual_seed(0)
    base = root / "base"
    CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=IMAGE_SIZE, **SIZES["b32"])).save_pretrained(base)
    models = {}
    for seed, (task, cls) in enumerate(TASKS.items()):
        model = cls.from_backbone(str(base), task=task)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        model.save_pretrained(root / task)
        models[task] = str(root / task)
    return models


def peak_memory(models: dict[str, str], images: list[str], share: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(models), json.dumps(images), "1" if share else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = agiqa_parser(__doc__.split("\n\n")[0], num_images=200, repeats=2).parse_args(argv)
    paths = agiqa_images(args)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        folder = root / "images"
        folder.mkdir()
        for path in paths:
            os.symlink(path, folder / path.name)
        models = save_models(root)
        one_pass, separate = [], []
        settings = ["--tta", "1", "--batch-size", str(args.batch_size), "--num-workers", str(args.workers)]
        for _ in range(args.repeats):
            together = [value for model in models.values() for value in ("--model", model)]
            one_pass.append(predict_seconds([str(folder), *together, *settings], root / "all.csv"))
            separate.append(
                sum(
                    predict_seconds([str(folder), "--model", model, *settings], root / f"{name}.csv")
                    for name, model in models.items()
                )
            )
        probe = [str(path) for path in paths[:32]]
        memory = {"shared": peak_memory(models, probe, True), "not_shared": peak_memory(models, probe, False)}
    rates = {
        "one_pass": len(paths) / statistics.median(one_pass),
        "three_separate_runs": len(paths) / statistics.median(separate),
    }
    return emit(
        {
            **run_header("model_set", argv),
            "num_images": len(paths),
            "models": list(models),
            "backbone": "CLIP ViT-B/32 (random) + LoRA r=16",
            "crops": 1,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "images_per_s": rates,
            "speedup": rates["one_pass"] / rates["three_separate_runs"],
            "seconds": {"one_pass": one_pass, "three_separate_runs": separate},
            "memory": memory,
            "memory_saved_mib": {
                key: memory["not_shared"][key] - memory["shared"][key]
                for key in ("peak_rss_mib", "rss_after_scoring_mib")
            },
        },
        args.json,
    )


if __name__ == "__main__":
    main()
