"""torchvision's resize and crop arithmetic (``torchvision.transforms.functional``, PIL path), re-implemented with
PIL and torch, without torchvision: ``Resize(int)`` (short side to ``size``, long side ``int(size * long / short)``,
truncated; an image already that size is left as is), ``Resize((h, w))`` (exact size, aspect not kept),
``CenterCrop`` (offsets ``int(round((H - size) / 2))``, Python's half-to-even ``round``), ``RandomCrop`` and
``RandomResizedCrop`` boxes (same draws in the same order from a ``torch.Generator``, so a seed gives torchvision's
boxes under ``torch.manual_seed``) and the flips (``torch.rand(1) < 0.5``). Resizes use PIL's bilinear (default, the
official release) or bicubic filter (LoDa's FLIVE/LIVE protocol), as torchvision's PIL path does, so pixels equal
torchvision's on PIL images. :mod:`.preprocessing` builds the transforms from these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image

RESAMPLE_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
BILINEAR = RESAMPLE_FILTERS["bilinear"]


def resample_filter(interpolation: str) -> Image.Resampling:
    """PIL filter of ``"bilinear"`` or ``"bicubic"`` (the filters torchvision's PIL path uses)."""
    try:
        return RESAMPLE_FILTERS[interpolation]
    except KeyError:
        raise ValueError(f"interpolation must be one of {list(RESAMPLE_FILTERS)}, got {interpolation!r}.") from None


def resize_exact(image: Image.Image, size: Sequence[int], resample: Image.Resampling = BILINEAR) -> Image.Image:
    """torchvision ``Resize((height, width))``: exactly ``size = (height, width)``, aspect not kept."""
    height, width = size
    return image if image.size == (width, height) else image.resize((width, height), resample)


def resize_short_side(image: Image.Image, size: int, resample: Image.Resampling = BILINEAR) -> Image.Image:
    """torchvision ``Resize(size)``: short side ``size``, long side ``int(size * long / short)`` (truncated)."""
    width, height = image.size
    if width <= height:
        return resize_exact(image, (int(size * height / width), size), resample)
    return resize_exact(image, (size, int(size * width / height)), resample)


def ensure_min_side(image: Image.Image, size: int, resample: Image.Resampling = BILINEAR) -> Image.Image:
    """Resize up (aspect kept) only if the short side is below ``size``."""
    return resize_short_side(image, size, resample) if min(image.size) < size else image


def center_crop_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    """torchvision ``CenterCrop(crop)`` box of a ``(width, height)`` image: offsets ``int(round((side - crop) /
    2.0))`` (half to even)."""
    width, height = size
    left, top = int(round((width - crop) / 2.0)), int(round((height - crop) / 2.0))
    return left, top, left + crop, top + crop


def center_crop(image: Image.Image, size: int) -> Image.Image:
    return image.crop(center_crop_box(image.size, size))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def _coin(generator: torch.Generator | None) -> bool:
    return bool(torch.rand(1, generator=generator) < 0.5)


def random_crop_box(size: tuple[int, int], crop: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """torchvision ``RandomCrop.get_params`` box of a ``(width, height)`` image: the top is drawn first, then the
    left; an image of exactly the crop size draws nothing."""
    width, height = size
    if width == height == crop:
        return 0, 0, crop, crop
    top = _randint(height - crop, generator)
    left = _randint(width - crop, generator)
    return left, top, left + crop, top + crop


def random_resized_crop_box(
    size: tuple[int, int],
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` box (same draws, float32 log-ratio, top before left): 10 tries
    of random area/aspect, else a center crop."""
    width, height = size
    area = width * height
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h, generator)
            left = _randint(width - w, generator)
            return left, top, left + w, top + h
    in_ratio = width / height
    w, h = (
        (width, int(round(width / min(ratio))))
        if in_ratio < min(ratio)
        else ((int(round(height * max(ratio))), height) if in_ratio > max(ratio) else (width, height))
    )
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h
