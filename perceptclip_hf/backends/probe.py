"""``--backend auto``: the first time a model runs on a machine, measure the backends and precisions this machine has
on a few images, keep the fastest one that passes the agreement gate (:mod:`.agreement`), and remember it.

The candidates are torch bf16, ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / fp16 (those installed, and the
precisions the CPU computes natively), each timed against torch fp32 on the same batch. The choice is cached in
``$HF_HUB_CACHE/perceptclip-exports/choices.json`` per machine (CPU model and instruction sets, cores, library
versions) and model (fingerprint and export key); torch fp32 is the fallback when nothing else is installed or
passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache_folders import cache_root
from ..errors import ConfigurationError
from .agreement import Agreement
from .runtimes import EXTRAS, PRECISIONS
from .sessions import CACHE_DIR_NAME, backend_session, export_key

logger = logging.getLogger(__name__)
CHOICES_FILE = "choices.json"
# Instruction sets that decide which precision is fast: the machine's identity for the cache.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve")
TIMED_VIEWS = 32  # images per timed batch
TIMED_RUNS = 2  # the best of these, after one warm-up


@dataclass(frozen=True)
class Choice:
    """What ``auto`` chose: ``backend`` at ``precision``, ``speedup`` over torch fp32 on the probe batch and the
    agreement it passed with (``None``: the fallback, torch fp32 itself); ``measured``: every candidate's line."""

    backend: str
    precision: str
    speedup: float = 1.0
    spearman: float | None = None
    measured: tuple[str, ...] = ()

    def text(self) -> str:
        """``"openvino bf16 (2.3× torch fp32; Spearman 0.9971)"``."""
        if self.spearman is None:
            return f"{self.backend} {self.precision} (nothing faster passed the agreement gate)"
        return f"{self.backend} {self.precision} ({self.speedup:.1f}× torch fp32; Spearman {self.spearman:.4f})"


def choose_backend(
    model: torch.nn.Module,
    fingerprint: str,
    image_size: tuple[int, int],
    pixels: torch.Tensor,
    classification: bool,
    precision: str | None = None,
    folder: str | os.PathLike | None = None,
) -> Choice:
    """The cached choice for this machine and model, else a probe on ``pixels`` (normalised views ``(N, 3, H, W)``),
    cached. ``precision``: only candidates at that precision (``--dtype`` given with ``--backend auto``)."""
    key = f"{machine_key()}:{fingerprint}:{export_key(model, image_size)}:{precision or 'any'}"
    path = cache_root(CACHE_DIR_NAME) / CHOICES_FILE
    cached = read_choices(path).get(key)
    if cached:
        choice = Choice(**{**cached, "measured": tuple(cached.get("measured", ()))})
        logger.warning("backend: %s, as measured on this machine before (%s)", choice.text(), path)
        return choice
    choice = probe(model, fingerprint, image_size, pixels, classification, precision, folder)
    write_choice(path, key, choice)
    logger.warning("backend: %s, measured now and kept in %s", choice.text(), path)
    return choice


def candidates(precision: str | None) -> list[tuple[str, str]]:
    """The (backend, precision) pairs to try on this machine: installed, at ``precision`` if given, and (OpenVINO)
    computed natively by this CPU."""
    pairs = [("torch", "bf16")] if precision in (None, "bf16") else []
    for backend in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(EXTRAS[backend][0]) is None or importlib.util.find_spec("onnx") is None:
            continue
        native = openvino_precisions() if backend == "openvino" else PRECISIONS[backend]
        pairs += [(backend, kind) for kind in PRECISIONS[backend] if kind in native and precision in (None, kind)]
    return pairs


def openvino_precisions() -> tuple[str, ...]:
    """The precisions OpenVINO's CPU plugin computes natively here (fp32 always; bf16 / fp16 with the CPU's units)."""
    import openvino

    capabilities = set(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ("fp32", *(kind for kind, name in (("bf16", "BF16"), ("fp16", "FP16")) if name in capabilities))


def probe(model, fingerprint, image_size, pixels, classification, precision, folder) -> Choice:
    """Time torch fp32 and every candidate on the same views; keep the fastest that passes the gate."""
    batch = pixels[:TIMED_VIEWS].float().contiguous()
    with torch.inference_mode():
        reference = model(pixels.float()).logits.float().numpy()
        base = best_time(lambda views: model(views).logits, batch)
    measured, best = [f"torch fp32: 1.00× ({len(batch) / base:.1f} images/s)"], None
    for backend, kind in candidates(precision):
        try:
            run = runner(model, fingerprint, image_size, backend, kind, folder)
        except ConfigurationError as err:  # e.g. a precision OpenVINO would compute as another one
            measured.append(f"{backend} {kind}: not run ({err})")
            continue
        agreement = Agreement.measure(reference, run(pixels), classification)
        speedup = base / best_time(run, batch)
        problems = agreement.shortfalls(kind)
        verdict = f"refused: {'; '.join(problems)}" if problems else "passes"
        measured.append(f"{backend} {kind}: {speedup:.2f}× ({agreement.text()}; {verdict})")
        if not problems and speedup > 1 and (best is None or speedup > best.speedup):
            spearman = 1.0 if np.isnan(agreement.spearman) else agreement.spearman
            best = Choice(backend, kind, round(speedup, 2), round(spearman, 4))
    chosen = best or Choice("torch", "fp32" if precision in (None, "fp32") else precision)
    return Choice(**{**asdict(chosen), "measured": tuple(measured)})


def runner(model, fingerprint, image_size, backend: str, precision: str, folder):
    """``run(pixels)`` → logits (numpy) for a candidate."""
    if backend == "torch":

        def run(pixels):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(pixels).logits.float().numpy()

        return run
    session = backend_session(model, fingerprint, image_size, backend, precision, folder)
    return lambda pixels: session(pixels.numpy())


def best_time(run, batch: torch.Tensor) -> float:
    """The best wall time of :data:`TIMED_RUNS` calls of ``run(batch)``, after one warm-up."""
    return min(wall_times(run, batch, TIMED_RUNS))


def wall_times(run, batch: torch.Tensor, runs: int) -> list[float]:
    """The wall times of ``runs`` calls of ``run(batch)``, after one warm-up."""
    run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return times


def machine_key() -> str:
    """A short hash of what makes a backend fast here: the CPU model and its instruction sets, the CPUs this process
    may use, and the library versions."""
    from importlib.metadata import PackageNotFoundError, version

    flags, model_name = set(), platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
    versions = []
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append(None)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    identity = (platform.machine(), model_name, sorted(flags & set(CPU_FLAGS)), cpus, torch.get_num_threads(), versions)
    return hashlib.sha256(repr(identity).encode()).hexdigest()[:12]


def read_choices(path: Path) -> dict:
    try:
        choices = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def write_choice(path: Path, key: str, choice: Choice) -> None:
    """Add ``choice`` to the cache file (written whole, then renamed: a reader never sees half of it)."""
    choices = {**read_choices(path), key: asdict(choice)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(choices, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


__all__ = ["Choice", "candidates", "choose_backend", "machine_key", "wall_times"]
