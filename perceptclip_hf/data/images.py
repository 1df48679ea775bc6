"""Robust image opening: any file or PIL mode to an upright RGB image.

Conversions (documented choices):
- EXIF orientation is applied (``ImageOps.exif_transpose``), e.g. SPAQ phone photos.
- Transparency (``RGBA``, ``LA``, ``P``/``L`` with a ``transparency`` entry) is composited on white.
- 16/32-bit grayscale (``I;16``, ``I``, ``F``) is rescaled linearly from its full range to 8 bit.
- ``CMYK``, ``YCbCr``, ``L``, ``1`` and palette images use Pillow's conversion to RGB.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import DatasetFormatError

WHITE = (255, 255, 255)
_HIGH_BIT_DEPTH_RANGE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}


def to_rgb(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Return ``image`` upright and in RGB (see the module docstring for each mode)."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH_RANGE:
        array = np.asarray(image, dtype=np.float64) / _HIGH_BIT_DEPTH_RANGE[image.mode]
        image = Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")
    if image.mode in ("P", "L", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


IN_MEMORY = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def open_image(source: Any, draft_scale: Callable[[tuple[int, int]], float | None] | None = None) -> Image.Image:
    """Open ``source`` (a path, bytes, a ``{"path", "bytes"}`` dict or a PIL image) as upright RGB.

    ``draft_scale(size)``, when given, is the smallest scale of the stored ``(width, height)`` that the caller needs:
    a JPEG is then decoded in the DCT domain at the smallest power-of-two reduction (1/2, 1/4, 1/8) that is still at
    least that large (PIL's draft mode): several times faster, but the pixels differ from a full decode.
    Raises :class:`DatasetFormatError` naming the file when it is missing or cannot be decoded.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    path, data = _path_and_bytes(source)
    name = path or "<image bytes>"
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            scale = draft_scale(image.size) if draft_scale and image.format == "JPEG" else None
            if scale is not None and scale < 0.5:
                image.draft(None, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise DatasetFormatError(f"{name}: image file not found") from None
    except Exception as err:  # PIL raises many types for bad files
        reason = IN_MEMORY.sub("<image bytes>", str(err))  # (not the buffer's address: the same text every run)
        raise DatasetFormatError(f"{name}: cannot decode image ({type(err).__name__}: {reason})") from err


def verify_image(path: str) -> None:
    """Fully decode ``path``; raise :class:`DatasetFormatError` if it is missing or corrupt."""
    open_image(path)


def _path_and_bytes(source: Any) -> tuple[str | None, bytes | None]:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), None
    if isinstance(source, (bytes, bytearray)):
        return None, bytes(source)
    if isinstance(source, dict) and ("path" in source or "bytes" in source):
        if source.get("bytes") is None and source.get("path") is None:
            raise DatasetFormatError(f"image entry has neither 'path' nor 'bytes': {source!r}")
        return source.get("path"), source.get("bytes")
    raise TypeError(f"cannot open an image from {type(source).__name__}")
