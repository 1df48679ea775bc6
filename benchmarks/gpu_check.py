"""GPU readiness (issue #25): one script, one JSON, at most about 8 minutes on one H100 — what a lent GPU is for.

- training: ViT-L/14 + LoRA, one optimiser step as the Trainer takes it, images/s at bf16 autocast;
- the model's forward pass at batch ``--batch-size``: bf16 vs fp32, SDPA vs eager attention, ``torch.compile`` on
  and off (images/s);
- scoring through ``perceptclip predict`` (the console script, a fresh process, its decoding workers) on
  ``--num-images`` AGIQA-3K images (else as many procedural 512 px JPEGs, said so), single-crop and 15-crop, with the
  GPU's busy share sampled while it runs; and two models in one pass;
- ONNX Runtime's CUDA provider, when onnxruntime has it: the exported model's images/s (``--tiny``: the CPU
  provider, for the code path).

Each part is timed and its failure recorded (the rest still runs). ``--tiny`` runs the same code on the CPU with tiny
models and a few images (the suite runs it, so the script cannot rot): its numbers mean nothing.

    python benchmarks/gpu_check.py --json gpu_check.json                  # on the GPU machine
    python benchmarks/gpu_check.py --tiny --json /tmp/gpu_check_tiny.json  # anywhere, about 30 s
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
from throughput import SIZES, make_train_step, median_seconds  # noqa: E402 (a sibling script)

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression  # noqa: E402

TINY = dict(hidden_size=32, intermediate_size=64, projection_dim=24, num_hidden_layers=2, num_attention_heads=4)


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU, a few images: the suite's check")
    parser.add_argument("--data-dir", type=Path, default=None, help="AGIQA-3K (default: ../shared or shared/)")
    parser.add_argument("--num-images", type=int, default=None, help="images scored (default: 2000; --tiny 12)")
    parser.add_argument("--batch-size", type=int, default=None, help="forward batch (default: 64; --tiny 4)")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON here (it is printed too)")
    args = parser.parse_args(argv)
    args.num_images = args.num_images or (12 if args.tiny else 2000)
    args.batch_size = args.batch_size or (4 if args.tiny else 64)
    return args


def image_size(args) -> int:
    return 32 if args.tiny else 224


def vision_config(args) -> dict:
    shape = dict(TINY, patch_size=8) if args.tiny else SIZES["l14"]
    return {"model_type": "clip_vision_model", "image_size": image_size(args), **shape}


def build_model(args, attn: str = "sdpa", seed: int = 0, base: Path | None = None) -> PerceptCLIPForRegression:
    """A quality model (random weights, non-zero LoRA): ViT-L/14 at 224 px, or the tiny tower with ``--tiny``; on
    the saved backbone ``base`` if given."""
    torch.manual_seed(seed)
    if base is not None:
        model = PerceptCLIPForRegression.from_backbone(str(base), task="quality")
    else:
        config = PerceptCLIPConfig(vision_config=vision_config(args), task="quality")
        config._attn_implementation = attn
        model = PerceptCLIPForRegression(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    return model


def timed_part(results: dict, name: str, part, *part_args) -> None:
    """``results[name] = part(...)`` with its seconds; a failure is recorded as its traceback's last line."""
    start = time.perf_counter()
    try:
        results[name] = part(*part_args)
    except Exception as err:  # noqa: BLE001 - one part failing must not lose the others' figures
        results[name] = {"error": f"{type(err).__name__}: {err}", "where": traceback.format_exc().splitlines()[-3]}
    results[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {results[name]}", file=sys.stderr, flush=True)


def training(args, device) -> dict:
    model = build_model(args).to(device)
    batch = args.batch_size // 2 or 1
    step = make_train_step(model, batch, device, torch.bfloat16, image_size(args))
    seconds = median_seconds(step, 3 if args.tiny else 10, 2, device)
    return {"batch_size": batch, "dtype": "bf16", "images_per_s": round(batch / seconds, 1)}


def forward_variants(args, device) -> dict:
    """images/s of the forward pass: each dtype × attention × compile."""
    size = image_size(args)
    pixels = torch.randn(args.batch_size, 3, size, size, device=device)
    rates = {}
    for attn in ("sdpa", "eager"):
        model = build_model(args, attn).to(device).eval()
        for compiled in (False, True):
            run = torch.compile(model, backend="eager" if args.tiny else "inductor") if compiled else model
            for dtype in (torch.bfloat16, torch.float32):

                def forward(run=run, dtype=dtype):
                    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
                    with torch.inference_mode(), autocast:
                        return run(pixels).logits

                name = f"{attn}_{'compiled' if compiled else 'eager_mode'}_{str(dtype).split('.')[-1]}"
                rates[name] = round(args.batch_size / median_seconds(forward, 3 if args.tiny else 10, 3, device), 1)
        del model
    compiler = "eager backend (--tiny: the code path only)" if args.tiny else "inductor"
    return {"batch_size": args.batch_size, "compile": compiler, "images_per_s": rates}


def image_folder(args, root: Path) -> tuple[Path, str]:
    """A folder of ``--num-images`` images: AGIQA-3K's (symlinks), else procedural 512 px JPEGs."""
    folder = root / "images"
    folder.mkdir()
    candidates = [args.data_dir] if args.data_dir else [Path("../shared/data/agiqa3k"), Path("shared/data/agiqa3k")]
    source = next((path / "images" for path in candidates if (path / "images").is_dir()), None)
    if source is not None and not args.tiny:
        for path in sorted(source.iterdir())[: args.num_images]:
            os.symlink(path.resolve(), folder / path.name)
        return folder, f"AGIQA-3K ({source})"
    from perceptclip_hf.data.synthetic import procedural_images

    for index, image in enumerate(procedural_images(args.num_images, size=64 if args.tiny else 512)):
        image.save(folder / f"{index:05d}.jpg", quality=90)
    return folder, "procedural JPEGs (AGIQA-3K not found)" if not args.tiny else "procedural JPEGs (--tiny)"


class BusySampler:
    """The GPU's busy share (``torch.cuda.utilization``, NVML) sampled every 0.2 s while a run lasts."""

    def __init__(self, device):
        self.device, self.samples, self.stop = device, [], threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop.wait(0.2):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # noqa: BLE001 - no NVML: no figure
                return

    def __enter__(self):
        if self.device.type == "cuda":
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        return False

    def share(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def predict_runs(args, device, root: Path) -> dict:
    """`perceptclip predict` on the image folder: single-crop, 15-crop, two models in one pass."""
    folder, images = image_folder(args, root)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)  # a saved backbone: the local stand-in for openai/clip-vit-large-patch14
    CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config(args))).save_pretrained(root / "base")
    models = {}
    for name, seed in (("quality", 0), ("second", 1)):  # two models on one base, as users' quality + memorability
        build_model(args, seed=seed, base=root / "base").save_pretrained(root / name)
        models[name] = root / name
    script = shutil.which("perceptclip", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "perceptclip_hf.cli"]
    pair = ["--model", f"a={models['quality']}", "--model", f"b={models['second']}"]
    runs = {
        "single_crop": ["--model", str(models["quality"]), "--tta", "1"],
        "fifteen_crops": ["--model", str(models["quality"]), "--tta", "15"],
        "two_models_single_crop": [*pair, "--tta", "1"],
    }
    common = ["--device", str(device), "--batch-size", str(args.batch_size)]
    figures = {"images": args.num_images, "source": images}
    for name, options in runs.items():
        output = root / f"{name}.csv"
        with BusySampler(device) as busy:
            start = time.perf_counter()
            done = subprocess.run(
                [*command, "predict", str(folder), *options, *common, "--output", str(output)],
                capture_output=True,
                text=True,
                env={**os.environ, "TQDM_DISABLE": "1"},
            )
            seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"perceptclip predict ({name}) exited {done.returncode}: {done.stderr[-500:]}")
        figures[name] = {
            "images_per_s": round(args.num_images / seconds, 1),
            "seconds": round(seconds, 1),
            "gpu_busy_percent": busy.share(),
        }
    return figures


def onnxruntime_cuda(args, device, root: Path) -> dict:
    """The exported model on ONNX Runtime's CUDA provider (fp32), when installed."""
    try:
        import onnxruntime
    except ImportError:
        return {"available": False, "why": "onnxruntime is not installed"}
    providers = onnxruntime.get_available_providers()
    provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in providers else None
    if args.tiny:  # the code path, on the CPU
        provider = provider or "CPUExecutionProvider"
    if provider is None:
        return {"available": False, "why": f"providers: {providers}"}
    from perceptclip_hf.backends.graph import export_onnx

    size = image_size(args)
    path = export_onnx(build_model(args).eval(), root / "onnx" / "model.onnx", (size, size))
    session = onnxruntime.InferenceSession(str(path), providers=[provider])
    pixels = np.random.default_rng(0).standard_normal((args.batch_size, 3, size, size), dtype=np.float32)
    seconds = median_seconds(lambda: session.run(None, {"pixel_values": pixels}), 10, 3, torch.device("cpu"))
    return {"provider": provider, "precision": "fp32", "images_per_s": round(args.batch_size / seconds, 1)}


def main(argv=None) -> dict:
    args = arguments(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    results = {
        "benchmark": "gpu_check",
        "tiny": args.tiny,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "model": "tiny CLIP tower" if args.tiny else "CLIP ViT-L/14 size, random weights",
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        timed_part(results, "training", training, args, device)
        timed_part(results, "forward", forward_variants, args, device)
        timed_part(results, "predict", predict_runs, args, device, root)
        timed_part(results, "onnxruntime_cuda", onnxruntime_cuda, args, device, root)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
