# Copyright 2026 The perceptclip-hf authors. Licensed under the MIT licence.
"""The PerceptCLIP inference image processor (remote code): the backbone's input size and normalisation."""

from transformers import CLIPImageProcessorPil
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
)

# The paper's crop side, for backbones that declare no input size (CNNs) or declare their pretraining resolution
# while reading any size (DINOv2: 518).
DEFAULT_IMAGE_SIZE = 224
# Backbones whose declared `image_size` is a pretraining resolution, not a limit: they interpolate position embeddings.
INTERPOLATING_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
# Each backbone's own pretraining statistics (`model_type` → mean, std); others get ImageNet's (DINOv2, CNNs).
NORMALIZATION = {
    "clip_vision_model": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "vit": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
    "siglip_vision_model": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
}


def crop_size(config) -> int:
    """Side of the square crops the model reads: `config.image_size` when set, else the backbone's declared input
    size (CLIP, ViT, SigLIP: fixed by their position embeddings; a CNN's only if its config sets one), else 224 (and
    224 for DINOv2, whose declared 518 is its pretraining resolution)."""
    if getattr(config, "image_size", None):
        return config.image_size
    vision = config.vision_config
    if vision.model_type in INTERPOLATING_MODEL_TYPES or not getattr(vision, "image_size", None):
        return DEFAULT_IMAGE_SIZE
    return vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]


def default_image_processor(config) -> CLIPImageProcessorPil:
    """Inference preprocessing: resize the short side to the crop size (`crop_size`), center crop, normalise with
    the backbone's own statistics (`NORMALIZATION`).

    Resampling is the config's `resize_interpolation`: bilinear by default (antialiased by PIL when shrinking), as
    the official release's torchvision `Resize(224)` (CLIP's own processor would use bicubic); bicubic for models
    trained on LoDa's bicubic datasets (FLIVE, LIVE)."""
    size = crop_size(config)
    mean, std = NORMALIZATION.get(config.vision_config.model_type, (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC
        if getattr(config, "resize_interpolation", None) == "bicubic"
        else PILImageResampling.BILINEAR,
        image_mean=mean,
        image_std=std,
    )


__all__ = ["crop_size", "default_image_processor"]
