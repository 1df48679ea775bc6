"""Where and at what precision a scorer computes: the device (CUDA when available), the compute dtype named the
same on every backend (``fp32``, ``bf16``, ``fp16``, ``int8``), and the batch size that fits the device."""

from __future__ import annotations

import torch

from ..errors import ConfigurationError

DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "int8": torch.int8,  # int8 weights: the exported backends' (ONNX Runtime)
}
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int8: "int8"}
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE_PER_10_GIB, MAX_GPU_BATCH_SIZE = 16, 128


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu'.")
    return device


def check_device(device: str | torch.device | None) -> None:
    """Fail before any model loads on a device that cannot be used (one line naming it)."""
    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigurationError(f"--device {device}: {err}") from err


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: as given (``"bf16"``, ``"fp16"``, ``"fp32"``, ``"int8"`` or a torch dtype), else bf16 on GPU,
    fp32 on CPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}.")
    return DTYPES[dtype.lower()]


def precision_name(dtype: torch.dtype) -> str:
    """``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``: a compute dtype as every backend names it."""
    if dtype not in PRECISION_NAMES:
        raise ValueError(f"Unknown compute dtype {dtype}; use one of {', '.join(PRECISION_NAMES.values())}.")
    return PRECISION_NAMES[dtype]


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when none is given: 16 on the CPU; on a GPU 16 per 10 GiB of its memory, 16 to 128
    (128 on an 80 GiB H100: 1,920 ViT-L/14 crops at 15 crops an image, bf16)."""
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return int(min(MAX_GPU_BATCH_SIZE, max(CPU_BATCH_SIZE, GPU_BATCH_SIZE_PER_10_GIB * (gib // 10))))


__all__ = [
    "DTYPES",
    "check_device",
    "default_batch_size",
    "precision_name",
    "resolve_device",
    "resolve_dtype",
]
