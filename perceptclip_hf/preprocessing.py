"""Preprocessing: every image → tensor policy, shared by training, evaluation and serving (PIL + torch, no
torchvision).

A task's crop policy (:mod:`.tasks`: ``TaskSpec.preprocessing``) picks the transforms; crop size and normalisation
come from the model's image processor (:func:`transform_kwargs`). ``POLICIES`` maps each policy to its training and
evaluation transforms (a task's: :func:`perceptclip_hf.tasks.build_transform`), :func:`build_inference_transform`
gives the serving one, :func:`center_view_transform` the
whole-image view (interpretability), :func:`preresize` an optional pre-resized copy of a dataset.

Each transform maps a batch ``{"image": [...], "label": [...], ...}`` to ``{"pixel_values": [...],
"labels": [...]}`` (``labels`` only when the batch has labels): float32 tensors of shape
``(3, crop_size, crop_size)`` normalised with the model's mean/std (default CLIP's); ``IQATestTransform`` gives
``(num_crops, 3, crop_size, crop_size)`` per image. ``labels`` is float32 for scores, int64 for classes.

Choices: the geometry is torchvision's, re-implemented without it (:mod:`.geometry`), so pixels equal
torchvision's on PIL images; resizes use ``interpolation`` (bilinear, the official release's, or LoDa's bicubic for
FLIVE/LIVE). IQA images are first resized by the protocol (``resize_short`` or a
fixed ``resize_size``); one whose short side is still below ``crop_size`` is then enlarged (aspect kept) so the crop
fits (where torchvision would pad or fail). Training randomness comes from torch's global RNG (which
``DataLoader`` re-seeds per worker) unless a ``seed`` is given. Use :func:`with_image_transform` so images are
opened by :func:`.data.images.open_image` (RGB conversion, EXIF, errors naming the file).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .data.images import open_image
from .geometry import (
    _coin,
    center_crop,
    ensure_min_side,
    random_crop_box,
    random_resized_crop_box,
    resample_filter,
    resize_exact,
    resize_short_side,
)
from .modeling import default_image_processor

Interpolation = Literal["bilinear", "bicubic"]
DEFAULT_IQA_CROPS = 15


# ----------------------------------------------------------------------------- tensor helpers
def normalize_uint8(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(..., 3, H, W)`` uint8 → float32 in ``[0, 1]``, then ``(x - mean) / std`` per channel (on the pixels'
    device)."""
    tensor = pixels.float() / 255.0
    mean, std = (torch.tensor(values, device=pixels.device).view(3, 1, 1) for values in (mean, std))
    return ((tensor - mean) / std).contiguous()


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as ``(3, H, W)`` uint8."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def to_normalized_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(3, H, W)`` float32 in ``[0, 1]``, then ``(x - mean) / std`` per channel."""
    return normalize_uint8(to_uint8_tensor(image), mean, std)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` via BLAKE2b: identical in every process (no ``hash()``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


# ----------------------------------------------------------------------------- batch transforms
class ImageTransform:
    """Base: opens images, applies :meth:`transform_image`, converts labels. ``interpolation`` is the filter of
    every resize (``"bilinear"`` or ``"bicubic"``). Subclasses give the geometry as uint8 pixels (:meth:`pixels`);
    :meth:`normalize` makes them model inputs, so serving can ship uint8 and normalise on the device."""

    def __init__(
        self,
        crop_size: int = 224,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        image_column: str = "image",
        label_column: str = "label",
        interpolation: Interpolation = "bilinear",
    ):
        self.crop_size, self.mean, self.std = crop_size, tuple(mean), tuple(std)
        self.image_column, self.label_column = image_column, label_column
        self.interpolation, self.resample = interpolation, resample_filter(interpolation)

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        """``image`` → uint8 ``(3, H, W)``, or ``(crops, 3, H, W)`` for multi-crop transforms."""
        raise NotImplementedError

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (any leading dims, any device) → float32 normalised with the model's mean/std."""
        return normalize_uint8(pixels, self.mean, self.std)

    def transform_image(self, image: Image.Image, key: str | None) -> torch.Tensor:
        """``image`` → normalised float32 ``(3, H, W)`` or ``(crops, 3, H, W)``."""
        return self.normalize(self.pixels(image, key))

    def min_decode_scale(self, size: tuple[int, int]) -> float | None:
        """The smallest scale of a ``(width, height)`` image (either orientation) that this transform's first resize
        still shrinks, so a reduced decode cannot change its geometry; ``None``: it needs every pixel."""
        return None

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        keys = batch.get("image_name") or [None] * len(batch[self.image_column])
        out = {
            "pixel_values": [
                self.transform_image(open_image(image), key) for image, key in zip(batch[self.image_column], keys)
            ]
        }
        if self.label_column in batch:
            out["labels"] = [_label_tensor(label) for label in batch[self.label_column]]
        return out


class IQATransform(ImageTransform):
    """Base of the IQA transforms: the protocol's resize, ``resize_short`` (short side, aspect kept) or
    ``resize_size`` (exactly ``(height, width)``), then an enlargement only if the short side is below the crop."""

    def __init__(
        self, crop_size: int = 224, *, resize_short: int | None = None, resize_size: Sequence[int] | None = None, **kw
    ):
        super().__init__(crop_size, **kw)
        if resize_short and resize_size:
            raise ValueError("give resize_short (short side) or resize_size ((height, width)), not both.")
        self.resize_short, self.resize_size = resize_short, tuple(resize_size) if resize_size else None

    def min_decode_scale(self, size: tuple[int, int]) -> float | None:
        if self.resize_size:
            return max(self.resize_size) / min(size)
        return self.resize_short / min(size) if self.resize_short else None

    def fit(self, image: Image.Image) -> Image.Image:
        """``image`` resized by the protocol, large enough for the crop."""
        if self.resize_size:
            image = resize_exact(image, self.resize_size, self.resample)
        elif self.resize_short:
            image = resize_short_side(image, self.resize_short, self.resample)
        return ensure_min_side(image, self.crop_size, self.resample)


class IQATrainTransform(IQATransform):
    """Protocol resize, random horizontal then vertical flip (p=0.5 each), random crop."""

    def __init__(self, crop_size: int = 224, *, seed: int | None = None, **kw):
        super().__init__(crop_size, **kw)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        image = self.fit(image)
        if _coin(self.generator):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if _coin(self.generator):
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        return to_uint8_tensor(image.crop(random_crop_box(image.size, self.crop_size, self.generator)))


class IQATestTransform(IQATransform):
    """Protocol resize, then ``num_crops`` random crops per image, deterministic for ``(seed, image)``.

    The image key is its ``image_name`` column when the batch has one (machine-independent), else a
    hash of its pixels. Output per image: ``(num_crops, 3, crop_size, crop_size)``.
    """

    def __init__(self, crop_size: int = 224, *, num_crops: int = 15, seed: int = 0, **kw):
        super().__init__(crop_size, **kw)
        self.num_crops, self.seed = num_crops, seed

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        image = self.fit(image)
        if key is None:
            key = hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()
        generator = torch.Generator().manual_seed(stable_seed(self.seed, key))
        pixels = torch.from_numpy(np.array(image))  # (H, W, 3) uint8: crops are views
        boxes = [random_crop_box(image.size, self.crop_size, generator) for _ in range(self.num_crops)]
        return torch.stack([pixels[top:bottom, left:right] for left, top, right, bottom in boxes]).permute(0, 3, 1, 2)


class IQACenterCropTransform(IQATransform):
    """Protocol resize, then one center crop: the deterministic single-view counterpart of
    :class:`IQATestTransform`'s random crops."""

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        return to_uint8_tensor(center_crop(self.fit(image), self.crop_size))


class ResizeCenterCropTransform(ImageTransform):
    """torchvision ``Resize(crop_size)`` + ``CenterCrop(crop_size)``: memorability, emotion test.

    Deterministic; ``seed`` is accepted (and unused) so every transform takes the same arguments.
    """

    def __init__(self, crop_size: int = 224, *, seed: int | None = None, **kw):
        super().__init__(crop_size, **kw)

    def min_decode_scale(self, size: tuple[int, int]) -> float | None:
        return self.crop_size / min(size)

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        return to_uint8_tensor(center_crop(resize_short_side(image, self.crop_size, self.resample), self.crop_size))


class EmotionTrainTransform(ImageTransform):
    """torchvision ``RandomResizedCrop(crop_size, scale)`` (ratio 3/4-4/3) + ``RandomHorizontalFlip()``."""

    def __init__(
        self, crop_size: int = 224, *, scale: tuple[float, float] = (0.08, 1.0), seed: int | None = None, **kw
    ):
        super().__init__(crop_size, **kw)
        self.scale = scale
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def pixels(self, image: Image.Image, key: str | None) -> torch.Tensor:
        box = random_resized_crop_box(image.size, self.generator, self.scale)
        image = image.crop(box).resize((self.crop_size, self.crop_size), self.resample)
        if _coin(self.generator):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_uint8_tensor(image)


# ----------------------------------------------------------------------------- policies
# Crop policy (``TaskSpec.preprocessing``) → (training transform, evaluation transform).
POLICIES: dict[str, tuple[type[ImageTransform], type[ImageTransform]]] = {
    "iqa_random_crops": (IQATrainTransform, IQATestTransform),
    "resize_center_crop": (ResizeCenterCropTransform, ResizeCenterCropTransform),
    "random_resized_crop": (EmotionTrainTransform, ResizeCenterCropTransform),
}


def transform_kwargs(model_config) -> dict[str, Any]:
    """Crop size and normalisation of a model (its image processor's: the crop honours ``config.image_size``) and
    its resize filter (``config.resize_interpolation``)."""
    processor = default_image_processor(model_config)
    return dict(
        crop_size=processor.crop_size["height"],
        mean=processor.image_mean,
        std=processor.image_std,
        interpolation=getattr(model_config, "resize_interpolation", "bilinear"),
    )


def center_view_transform(model_config) -> ResizeCenterCropTransform:
    """Resize the short side to the model's input size and center-crop: the whole-image view."""
    return ResizeCenterCropTransform(**transform_kwargs(model_config))


def build_inference_transform(
    model_config,
    spec,
    tta: int | None = None,
    seed: int = 0,
    resize_short: int | None = None,
    interpolation: Interpolation | None = None,
    dataset=None,
) -> ImageTransform:
    """The serving transform of a model of task ``spec`` (a ``TaskSpec``): the one place it is decided, for the
    scorer and so for evaluation, ``perceptclip predict`` / ``evaluate`` and the demo. Crop size, mean/std and filter
    come from :func:`transform_kwargs` (the config; ``interpolation`` overrides the filter). Tasks whose policy
    averages random crops (IQA) get ``tta`` crops (default 15; 1 = center crop) after the resize they were trained
    with: ``resize_short`` if given, else ``config.test_resize_short`` or ``config.test_resize_size`` (an official
    release's usage-code resize is written there when it is converted: ``hub.official.OFFICIAL_PREPROCESSING``);
    others the evaluation transform. ``dataset``: a benchmark's ``DatasetInfo`` whose protocol applies (its test
    resize, where it has one, and its filter), unless ``resize_short`` / ``interpolation`` are given."""
    if dataset is not None:
        resize_short = resize_short or dataset.test_resize_short
        interpolation = interpolation or dataset.interpolation
    common = transform_kwargs(model_config)
    if interpolation:
        common["interpolation"] = interpolation
    if not spec.multi_crop_test:
        return POLICIES[spec.preprocessing][1](**common)
    if resize_short:
        common["resize_short"] = resize_short
    else:
        common.update(
            resize_short=getattr(model_config, "test_resize_short", None),
            resize_size=getattr(model_config, "test_resize_size", None),
        )
    tta = DEFAULT_IQA_CROPS if tta is None else tta
    if tta < 1:
        raise ValueError(f"tta must be ≥ 1 (number of crops per image), got {tta}.")
    if tta == 1:
        return IQACenterCropTransform(**common)
    return POLICIES[spec.preprocessing][1](num_crops=tta, seed=seed, **common)


def undecoded(ds: Dataset, column: str = "image") -> Dataset:
    """``ds`` with its ``Image`` column read as ``{"path", "bytes"}`` (which :func:`.data.images.open_image`
    decodes)."""
    if isinstance(ds.features.get(column), ImageFeature) and ds.features[column].decode:
        ds = ds.cast_column(column, ImageFeature(decode=False))
    return ds


def with_image_transform(ds: Dataset, transform: ImageTransform) -> Dataset:
    """``ds`` with ``transform`` applied on access; images are read by :func:`.data.images.open_image`."""
    return undecoded(ds, transform.image_column).with_transform(transform)


def _label_tensor(label: Any) -> torch.Tensor:
    if isinstance(label, (bool, np.bool_)):
        raise TypeError("boolean labels are not supported; use 0/1 integers")
    if isinstance(label, (int, np.integer)):
        return torch.tensor(int(label), dtype=torch.long)
    return torch.tensor(float(label), dtype=torch.float32)


def preresize(
    ds: Dataset,
    short_side: int = 384,
    *,
    cache_dir: str | Path | None = None,
    image_format: Literal["JPEG", "PNG"] = "JPEG",
    quality: int = 95,
    num_proc: int | None = None,
    interpolation: Interpolation = "bilinear",
) -> Dataset:
    """``ds`` with ``image`` replaced by encoded bytes resized so the short side is ``short_side``: decode each big
    image once. torchvision ``Resize(short_side)`` (LoDa's ``Resize(384)``; smaller images are enlarged too) with
    ``interpolation``, then JPEG (``quality``) or lossless PNG. With ``cache_dir`` the result is written once to an
    Arrow file named after the input's fingerprint and these options."""
    resample = resample_filter(interpolation)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        name = f"preresize-{ds._fingerprint}-{short_side}-{interpolation}-{image_format.lower()}-{quality}.arrow"
        cache_file = str(Path(cache_dir) / name)

    def encode(example: dict) -> dict:
        image = resize_short_side(open_image(example["image"]), short_side, resample)
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, **({"quality": quality} if image_format == "JPEG" else {}))
        return {"image": {"bytes": buffer.getvalue(), "path": None}}

    source = ds.cast_column("image", ImageFeature(decode=False))
    resized = source.map(
        encode,
        cache_file_name=cache_file,
        load_from_cache_file=True,
        num_proc=num_proc,
        desc=f"pre-resizing to {short_side}px",
    )
    return resized.cast_column("image", ImageFeature())
