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


def default_image_processor(config) -> CLIPImageProcessorPil:
    """Inference preprocessing: resize the short side to the backbone's input size, center crop, normalise.

    Resampling is bilinear (antialiased by PIL when shrinking), as the official release's torchvision `Resize(224)`;
    CLIP's own processor would use bicubic. Statistics are the backbone's own: CLIP's mean/std for CLIP, 0.5/0.5 for
    ViT, ImageNet's for the others (DINOv2, CNNs)."""
    size = getattr(config.vision_config, "image_size", None) or 224
    size = size if isinstance(size, int) else size[0]
    mean, std = {
        "clip_vision_model": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        "vit": (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD),
    }.get(config.vision_config.model_type, (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR,
        image_mean=mean,
        image_std=std,
    )


__all__ = ["default_image_processor"]
