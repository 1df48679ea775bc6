"""Grad-CAM (Selvaraju et al. 2017) for convolutional backbones (ResNet, ConvNeXt, ...).

The feature map is the backbone's ``last_hidden_state`` when it is ``(B, C, h, w)``: the output of the last
convolutional stage, before pooling, whatever the architecture. With ``y`` the prediction of each image (the score
for regression, the logit of the predicted class for classification), the map is
``relu(sum_c w_c A_c)`` with ``w_c`` the spatial mean of ``dy / dA_c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class NotConvolutional(ValueError):
    """The backbone's last hidden state is not a ``(B, C, h, w)`` feature map."""


@dataclass
class GradCAM:
    """``maps``: ``(B, h, w)``, non-negative, at the feature map's resolution. ``module``: the backbone module that
    produced the feature map (``""`` if none returns it as is). ``channels``: ``C``."""

    maps: torch.Tensor
    module: str
    channels: int


def grad_cam_target(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What Grad-CAM explains, per image: the score (mean over outputs) or the logit of the top class."""
    if not model.config.is_classification:
        return logits.mean(dim=-1)
    return logits.gather(-1, logits.argmax(dim=-1, keepdim=True)).squeeze(-1)


def target_description(model: nn.Module) -> str:
    return "the logit of the predicted class" if model.config.is_classification else "the score"


def last_feature_map(model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(logits, feature_map, module)`` of one forward pass, the feature map kept in the autograd graph; ``module``
    names the outermost backbone module that returns it (e.g. ``encoder.stages.2`` of a ResNet). Raises
    :class:`NotConvolutional` when the backbone's last hidden state is not a ``(B, C, h, w)`` map."""
    tensors: list[tuple[str, torch.Tensor]] = []  # kept alive, so identities cannot be reused during the pass
    captured = {}

    def keep_tensor(name):
        return lambda module, args, output: tensors.append((name, output)) if torch.is_tensor(output) else None

    def keep_feature_map(module, args, output):
        captured["map"] = output.last_hidden_state

    hooks = [module.register_forward_hook(keep_tensor(name)) for name, module in model.backbone.named_modules() if name]
    hooks.append(model.backbone.register_forward_hook(keep_feature_map))
    try:
        logits = model(pixel_values).logits
    finally:
        for hook in hooks:
            hook.remove()
    feature_map = captured["map"]
    if feature_map.dim() != 4:
        raise NotConvolutional(
            f"Grad-CAM needs a convolutional backbone (a last hidden state of shape (B, C, h, w)); "
            f"{type(model.backbone).__name__} gives {tuple(feature_map.shape)}."
        )
    module = [name for name, output in tensors if output is feature_map][-1:]  # hooks run innermost first
    return logits, feature_map, module[0] if module else ""


def grad_cam(model: nn.Module, pixel_values: torch.Tensor, batch_size: int | None = None) -> GradCAM:
    """Grad-CAM of ``model``'s prediction over its last feature map, for images ``(B, 3, H, W)``, ``batch_size`` at
    a time (each image's map from its own prediction: the model is in eval mode, images do not interact)."""
    model.eval()
    maps = []
    for chunk in pixel_values.split(batch_size or len(pixel_values)):
        with torch.enable_grad():
            chunk = chunk.detach().requires_grad_(True)  # a graph even when no weight trains
            logits, feature_map, module = last_feature_map(model, chunk)
            (gradient,) = torch.autograd.grad(grad_cam_target(model, logits.float()).sum(), feature_map)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        maps.append(torch.relu((weights * feature_map.detach()).sum(dim=1)).float().cpu())
    return GradCAM(maps=torch.cat(maps), module=module, channels=feature_map.shape[1])


__all__ = ["GradCAM", "NotConvolutional", "grad_cam", "grad_cam_target", "last_feature_map", "target_description"]
