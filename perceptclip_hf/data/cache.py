"""Optional pre-resize cache: decode each big image once, store a smaller encoded copy."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from datasets import Dataset
from datasets import Image as ImageFeature

from .images import open_image
from .transforms import resize_short_side


def preresize(
    ds: Dataset,
    short_side: int = 384,
    *,
    cache_dir: str | Path | None = None,
    image_format: Literal["JPEG", "PNG"] = "JPEG",
    quality: int = 95,
    num_proc: int | None = None,
) -> Dataset:
    """``ds`` with ``image`` replaced by encoded bytes resized so the short side is ``short_side``.

    Bilinear resize (LoDa's ``Resize(384)``; images smaller than ``short_side`` are enlarged too),
    stored as JPEG (``quality``) or lossless PNG. With ``cache_dir`` the result is written once to an
    Arrow file named after the input's fingerprint and reused by later calls.
    """
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        name = f"preresize-{ds._fingerprint}-{short_side}-{image_format.lower()}-{quality}.arrow"
        cache_file = str(Path(cache_dir) / name)

    def encode(example: dict) -> dict:
        image = resize_short_side(open_image(example["image"]), short_side)
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, **({"quality": quality} if image_format == "JPEG" else {}))
        return {"image": {"bytes": buffer.getvalue(), "path": None}}

    source = ds.cast_column("image", ImageFeature(decode=False))
    resized = source.map(encode, cache_file_name=cache_file, load_from_cache_file=True, num_proc=num_proc,
                         desc=f"pre-resizing to {short_side}px")
    return resized.cast_column("image", ImageFeature())
