"""Training and inference throughput of PerceptCLIP, against the official release's inference path (issue #7).

Not a test: run by hand. One run measures, for a randomly initialised CLIP backbone of ``--size``:

(a) LoRA training steps/s and images/s at ``--batch-size`` and at the largest batch that fits (doubling search,
    capped by ``--max-batch``), and peak training memory of LoRA vs full fine-tuning (one fresh subprocess each);
(b) inference images/s with :class:`~perceptclip_hf.scoring.scorer.PerceptScorer`, single crop and 15-crop TTA;
(c) the official-style path on the same model: fp32, one image at a time, crops in a Python loop, per crop a PIL
    crop + to-tensor + normalise and one model call;
(d) ours / official-style ratios, and model FLOP utilisation (CUDA only).

    python benchmarks/throughput.py --size b32 --json outputs/benchmarks/throughput_cpu_b32.json
    python benchmarks/throughput.py --size l14 --device cuda --dtype bf16 \
        --json outputs/benchmarks/throughput_cuda_l14.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.geometry import center_crop, random_crop_box
from perceptclip_hf.preprocessing import to_normalized_tensor, transform_kwargs
from perceptclip_hf.scoring.devices import resolve_dtype
from perceptclip_hf.scoring.scorer import PerceptScorer

# CLIP vision towers (all at 224 px). "tiny" measures the pipeline overhead more than the model.
# fmt: off
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=256, projection_dim=64, num_hidden_layers=2,
                 num_attention_heads=4, patch_size=32),
    "b32": dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
                num_attention_heads=12, patch_size=32),
    "b16": dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
                num_attention_heads=12, patch_size=16),
    "l14": dict(hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
                num_attention_heads=16, patch_size=14),
}
# fmt: on
IMAGE_SIZE = 224
# Dense tensor-core peak TFLOP/s (no sparsity) for MFU, by device-name substring; `--peak-tflops` overrides.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}


def build_model(size: str, adaptation: str = "lora") -> PerceptCLIPForRegression:
    vision = {"model_type": "clip_vision_model", "image_size": IMAGE_SIZE, **SIZES[size]}
    torch.manual_seed(0)
    return PerceptCLIPForRegression(PerceptCLIPConfig(vision_config=vision, adaptation=adaptation, task="quality"))


def forward_flops(config: PerceptCLIPConfig) -> float:
    """Matmul FLOPs of one 224 px crop through backbone (+ LoRA), projection and head (2 per multiply-add)."""
    v = config.vision_config
    h, inter, patches = v.hidden_size, v.intermediate_size, (IMAGE_SIZE // v.patch_size) ** 2
    tokens = patches + 1
    lora = 2 * len(config.lora_target_modules) * 2 * h * config.lora_r if config.adaptation == "lora" else 0
    layer = tokens * (2 * 4 * h * h + 2 * 2 * h * inter + lora) + 2 * 2 * tokens * tokens * h
    widths = [v.projection_dim, *config.head_hidden_sizes, 1]
    head = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return 2 * patches * 3 * v.patch_size**2 * h + v.num_hidden_layers * layer + 2 * h * v.projection_dim + head


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- training
def make_train_step(model, batch_size: int, device: torch.device, dtype: torch.dtype, image_size: int = IMAGE_SIZE):
    """One optimiser step (forward with PLCC loss, backward, AdamW) on a fixed random batch, as the Trainer does."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.rand(batch_size, generator=generator).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def train_throughput(model, batch_size: int, args, device, dtype) -> dict:
    seconds = median_seconds(make_train_step(model, batch_size, device, dtype), args.train_steps, 2, device)
    return {
        "batch_size": batch_size,
        "steps_per_s": 1 / seconds,
        "images_per_s": batch_size / seconds,
        "seconds_per_step": seconds,
    }


def largest_batch(model, args, device, dtype) -> dict:
    """Double the batch from ``--batch-size`` until CUDA runs out of memory or ``--max-batch`` is reached."""
    best, batch = None, args.batch_size * 2
    while batch <= args.max_batch:
        try:
            best = train_throughput(model, batch, args, device, dtype)
        except torch.OutOfMemoryError:
            break
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    capped = batch > args.max_batch
    return {
        **(best or {}),
        "capped_at_max_batch": capped,
        "max_batch": args.max_batch,
        "note": "search stopped at --max-batch, not at a memory limit" if capped else "next doubling ran out of memory",
    }


def rss_bytes(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process, from ``/proc/self/status`` (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def memory_probe(args) -> dict:
    """Run in a fresh process (``--memory-probe MODE``): peak training memory above the built model + optimiser.

    CPU: the peak-RSS mark is reset (``/proc/self/clear_refs`` ← 5) once model, batch and optimiser exist, so
    import- and build-time transients do not hide the training peak; peak = ``VmHWM`` after the steps, baseline =
    ``VmRSS`` before them. CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``."""
    device, dtype = torch.device(args.device), resolve_dtype(args.dtype, torch.device(args.device))
    model = build_model(args.size, args.memory_probe).to(device)
    step = make_train_step(model, args.batch_size, device, dtype)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        baseline = rss_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    for _ in range(args.probe_steps):
        step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss_bytes("VmHWM")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "adaptation": args.memory_probe,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "training_peak_above_baseline_bytes": peak - baseline,
        "trainable_parameters": trainable,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def training_memory(args) -> dict:
    """Peak memory of LoRA vs full fine-tuning, each in a fresh subprocess (peak RSS is per process)."""
    results = {}
    for mode in ("lora", "full"):
        command = [
            sys.executable,
            __file__,
            "--memory-probe",
            mode,
            "--size",
            args.size,
            "--device",
            args.device,
            "--dtype",
            args.dtype or "",
            "--batch-size",
            str(args.batch_size),
            "--probe-steps",
            str(args.probe_steps),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    delta = {mode: r["training_peak_above_baseline_bytes"] for mode, r in results.items()}
    peak = {mode: r["peak_bytes"] for mode, r in results.items()}
    method = (
        "torch.cuda.max_memory_allocated after the steps minus memory_allocated after building model + optimiser"
        if args.device.startswith("cuda")
        else "peak RSS (VmHWM, peak mark reset via /proc/self/clear_refs after building model + optimiser) "
        "minus the RSS at that point"
    )
    return {
        **results,
        "method": f"one fresh subprocess per mode, {args.probe_steps} steps at batch "
        f"{args.batch_size}; {method} (AdamW states are created by the first step).",
        "lora_over_full_peak_above_baseline": delta["lora"] / delta["full"],
        "lora_over_full_total_peak": peak["lora"] / peak["full"],
    }


# ----------------------------------------------------------------------------- inference
def test_images(count: int, width: int, height: int) -> list[Image.Image]:
    """Deterministic random RGB images, already decoded (decoding costs the same on both paths)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def official_style_scores(model, images, num_crops: int, mean, std, crop_size: int = IMAGE_SIZE) -> list[float]:
    """The official release's inference: fp32 eager, one image at a time, ``num_crops`` times a PIL random crop
    (center crop for one crop) → to-tensor → normalise → one batch-of-1 model call; the crop scores averaged."""
    generator = torch.Generator().manual_seed(0)
    scores = []
    with torch.no_grad():
        for image in images:
            crop_scores = []
            for _ in range(num_crops):
                crop = (
                    center_crop(image, crop_size)
                    if num_crops == 1
                    else image.crop(random_crop_box(image.size, crop_size, generator))
                )
                pixels = to_normalized_tensor(crop, mean, std).unsqueeze(0).to(model.device)
                crop_scores.append(model(pixels).logits.item())
            scores.append(sum(crop_scores) / num_crops)
    return scores


def inference_benchmark(model, args, device, dtype) -> dict:
    images = test_images(args.infer_images, *args.image_size)
    common = transform_kwargs(model.config)
    results = {}
    for crops in (1, 15):
        scorer = PerceptScorer(model, device=device, dtype=dtype, tta=crops, batch_size=args.infer_batch)
        ours = median_seconds(lambda scorer=scorer: scorer(images), args.repeats, 1, device)
        # Same model (fp32 parameters; --dtype only sets our autocast), official-style path always in fp32.
        official = median_seconds(
            lambda crops=crops: official_style_scores(model, images, crops, common["mean"], common["std"]),
            args.repeats,
            1,
            device,
        )
        results[f"crops_{crops}"] = {
            "ours_images_per_s": len(images) / ours,
            "official_style_images_per_s": len(images) / official,
            "speedup_ours_over_official": official / ours,
        }
    return results


# ----------------------------------------------------------------------------- MFU and main
def mfu(flops_per_s: float, device: torch.device, dtype: torch.dtype, args) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "null on CPU: MFU needs a peak FLOP/s, which is only tabulated for CUDA GPUs (issue #7)."
    name = torch.cuda.get_device_name(device)
    key = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    peak = args.peak_tflops or next((p[key] for gpu, p in PEAK_TFLOPS.items() if gpu in name), None)
    if not peak:
        return None, f"unknown peak for {name!r}; pass --peak-tflops."
    return flops_per_s / (peak * 1e12), f"vs {peak} TFLOP/s dense {key} peak of {name}"


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["lscpu_head"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--size", choices=sorted(SIZES), default="l14" if cuda else "b32")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument(
        "--max-batch", type=int, default=None, help="cap of the largest-batch search (default 1024 on CUDA, 64 on CPU)"
    )
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (after 2 warm-up)")
    parser.add_argument("--probe-steps", type=int, default=2, help="training steps of each memory probe")
    parser.add_argument(
        "--infer-images", type=int, default=None, help="images per inference run (default 64 on CUDA, 8 on CPU)"
    )
    parser.add_argument("--infer-batch", type=int, default=16, help="PerceptScorer batch (images)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(512, 384), metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) per inference figure")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    parser.add_argument("--skip-largest-batch", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--memory-probe", choices=("lora", "frozen", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or None
    on_cuda = args.device.startswith("cuda")
    args.max_batch = args.max_batch or (1024 if on_cuda else 64)
    args.infer_images = args.infer_images or (64 if on_cuda else 8)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return {}
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = build_model(args.size).to(device)
    flops = forward_flops(model.config)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "size": args.size,
        "dtype": str(dtype).replace("torch.", ""),
        "attention": model.config.vision_config._attn_implementation,
        "forward_gflops_per_crop": flops / 1e9,
    }

    print(f"[{args.size} on {device}, {result['dtype']}] training …", flush=True)
    train = {"batch": train_throughput(model, args.batch_size, args, device, dtype)}
    if not args.skip_largest_batch:
        train["largest_batch"] = largest_batch(model, args, device, dtype)
    model.zero_grad(set_to_none=True)
    gc.collect()
    print("peak training memory, LoRA vs full (subprocesses) …", flush=True)
    train["memory"] = training_memory(args)
    result["training_lora"] = train

    print("inference: ours vs official-style …", flush=True)
    model.eval()
    result["inference"] = inference_benchmark(model, args, device, dtype)

    # LoRA training: forward + input gradients through frozen weights ≈ 2 × forward FLOPs (no weight gradients).
    train_flops_per_s = 2 * flops * train["batch"]["images_per_s"]
    infer_flops_per_s = 15 * flops * result["inference"]["crops_15"]["ours_images_per_s"]
    train_mfu, note = mfu(train_flops_per_s, device, dtype, args)
    infer_mfu, _ = mfu(infer_flops_per_s, device, dtype, args)
    result["flop_utilisation"] = {
        "training_achieved_tflops": train_flops_per_s / 1e12,
        "inference_15crop_achieved_tflops": infer_flops_per_s / 1e12,
        "training_mfu": train_mfu,
        "inference_15crop_mfu": infer_mfu,
        "note": note,
        "counting": "analytic matmul FLOPs (2 per multiply-add); LoRA training step = 2 × forward",
    }

    return emit(result, args.json)


def emit(result: dict, path: Path | None) -> dict:
    """Print the result as JSON and write it to `path` when given."""
    print(json.dumps(result, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
