"""Interpretability (paper sec. 6): what a prediction rests on.

* :func:`head_importance`: for each (layer, head), replace the CLS query's attention row by a uniform map
  (1 / seq_len over all tokens) and measure the mean absolute change of the prediction over the images.
* :func:`cls_attention_maps`: the CLS token's attention over the patch grid, of the fine-tuned model or of
  the base backbone (LoRA disabled).
* :func:`explain`: for a set of images (the ``perceptclip explain`` command), a report dict and heatmap PNGs
  (:mod:`.heatmaps`): attention-head masking on attention backbones with a CLS token (CLIP, ViT, DINOv2), Grad-CAM
  (:mod:`.gradcam`) on convolutional ones (ResNet, ConvNeXt); fine-tuned − base maps only where LoRA gives a base.

Mechanism: during a probe, the backbone's attention implementation is switched to :func:`probe_attention`,
a registered ``AttentionInterface`` function computing eager attention that can mask heads and record the
CLS rows. It works for every backbone that dispatches through ``ALL_ATTENTION_FUNCTIONS`` (CLIP, ViT, DINOv2);
the previous implementation (SDPA by default) is restored afterwards. Not thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from PIL import Image
from torch import nn
from transformers.modeling_utils import AttentionInterface

from ..preprocessing import center_view_transform
from .gradcam import NotConvolutional, grad_cam, target_description
from .heatmaps import Panel, attention_panels, grad_cam_panels, save_heatmaps, write_panels

PROBE_ATTENTION = "perceptclip_probe"


@dataclass
class ProbeState:
    """What the probe attention does in one forward pass. ``masked_layer[i]``/``masked_head[i]``: the head whose
    CLS row is made uniform for batch row ``i`` (layer -1: none). ``cls_attention``: recorded rows per layer."""

    masked_layer: torch.Tensor | None = None
    masked_head: torch.Tensor | None = None
    record: bool = False
    layer: int = 0
    cls_attention: list[torch.Tensor] = field(default_factory=list)
    num_heads: int = 0


_ACTIVE: list[ProbeState] = []


def probe_attention(
    module: nn.Module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs
):
    """Eager attention (as transformers' ``eager_attention_forward``) with CLS-row masking and recording."""
    if not _ACTIVE:
        raise RuntimeError(f"attention {PROBE_ATTENTION!r} runs only inside `attention_probe(model)`.")
    state = _ACTIVE[-1]
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32)
    if state.masked_layer is not None:
        rows = (state.masked_layer == state.layer).nonzero().flatten()
        if rows.numel():
            weights = weights.clone()
            weights[rows, state.masked_head[rows], 0, :] = 1.0 / weights.shape[-1]
    if state.record:
        state.cls_attention.append(weights[:, :, 0, :].detach().cpu())
    state.layer += 1
    state.num_heads = weights.shape[1]
    weights = nn.functional.dropout(weights.to(query.dtype), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(PROBE_ATTENTION, probe_attention)


@contextmanager
def attention_probe(model: nn.Module, state: ProbeState | None = None) -> Iterator[ProbeState]:
    """Run ``model`` with :func:`probe_attention` driven by ``state``; restore its attention implementation."""
    state = state or ProbeState()
    previous = model.config._attn_implementation
    model.set_attn_implementation(PROBE_ATTENTION)
    _ACTIVE.append(state)
    try:
        yield state
    finally:
        _ACTIVE.pop()
        model.set_attn_implementation(previous)


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The base backbone: every enabled LoRA layer disabled, re-enabled afterwards."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.disable_adapters]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def _forward_logits(model: nn.Module, pixel_values: torch.Tensor, state: ProbeState) -> torch.Tensor:
    state.layer = 0
    with attention_probe(model, state):
        return model(pixel_values).logits.float()


def prediction(model: nn.Module, logits: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The prediction whose change is measured, per image: the score (regression, mean over outputs) or the
    probability of the reference (baseline) top class (classification)."""
    if not model.config.is_classification:
        return logits.mean(dim=-1)
    probabilities = logits.softmax(dim=-1)
    reference = probabilities.argmax(dim=-1) if reference is None else reference
    return probabilities.gather(-1, reference[:, None]).squeeze(-1)


@torch.no_grad()
def masked_logits(model: nn.Module, pixel_values: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """Logits with the CLS attention row of ``head`` in ``layer`` replaced by a uniform map."""
    batch = pixel_values.shape[0]
    state = ProbeState(
        masked_layer=torch.full((batch,), layer, device=pixel_values.device),
        masked_head=torch.full((batch,), head, device=pixel_values.device),
    )
    return _forward_logits(model, pixel_values, state)


@torch.no_grad()
def head_importance(
    model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 64, progress: bool = False
) -> torch.Tensor:
    """``(num_layers, num_heads)``: mean over images of |prediction(masked) − prediction(baseline)| when one
    head's CLS attention row is uniform. Several masked copies of the images share a forward pass
    (about ``batch_size`` rows each). ``pixel_values``: ``(B, 3, H, W)``."""
    if pixel_values.dim() != 4:
        raise ValueError(f"head_importance takes images of shape (B, 3, H, W), got {tuple(pixel_values.shape)}.")
    model.eval()
    baseline_state = ProbeState()
    baseline_logits = _forward_logits(model, pixel_values, baseline_state)
    num_layers, num_heads = baseline_state.layer, baseline_state.num_heads
    reference = baseline_logits.argmax(dim=-1) if model.config.is_classification else None
    baseline = prediction(model, baseline_logits, reference)
    pairs = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    images = pixel_values.shape[0]
    pairs_per_pass = max(1, batch_size // images)
    importance = torch.zeros(num_layers * num_heads)
    chunks = range(0, len(pairs), pairs_per_pass)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="head importance", unit="pass")
    for start in chunks:
        chunk = torch.tensor(pairs[start : start + pairs_per_pass], device=pixel_values.device)
        state = ProbeState(
            masked_layer=chunk[:, 0].repeat_interleave(images), masked_head=chunk[:, 1].repeat_interleave(images)
        )
        logits = _forward_logits(model, pixel_values.repeat(len(chunk), 1, 1, 1), state)
        repeated_reference = None if reference is None else reference.repeat(len(chunk))
        change = (prediction(model, logits, repeated_reference) - baseline.repeat(len(chunk))).abs()
        importance[start : start + len(chunk)] = change.view(len(chunk), images).mean(dim=1).cpu()
    return importance.view(num_layers, num_heads)


def rank_heads(importance: torch.Tensor) -> list[tuple[int, int, float]]:
    """``(layer, head, importance)`` from the most to the least important head."""
    order = importance.flatten().argsort(descending=True).tolist()
    num_heads = importance.shape[1]
    return [(i // num_heads, i % num_heads, float(importance.flatten()[i])) for i in order]


@torch.no_grad()
def cls_attention_maps(model: nn.Module, pixel_values: torch.Tensor, base: bool = False) -> torch.Tensor:
    """``(num_layers, B, num_heads, grid_h, grid_w)``: the CLS token's attention to each patch (CLS and register
    tokens dropped), of the fine-tuned model or, with ``base=True``, of the backbone with LoRA disabled."""
    model.eval()
    state = ProbeState(record=True)
    with adapters_disabled(model) if base else nullcontext():
        _forward_logits(model, pixel_values, state)
    rows = torch.stack(state.cls_attention)  # (layers, B, heads, seq)
    num_patches = patch_grid(model.config, pixel_values.shape[-2:])
    return rows[..., -num_patches[0] * num_patches[1] :].unflatten(-1, num_patches)


def patch_grid(config, image_hw: Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of patches for an input of ``image_hw`` pixels."""
    patch = config.vision_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    return image_hw[0] // patch, image_hw[1] // patch


# ----- explain ---------------------------------------------------------------------------------------------------

ATTENTION_METHOD, GRAD_CAM_METHOD = "attention-head masking", "grad-cam"
SUPPORTED = (
    "explain supports backbones with a CLS token and attention (CLIP, ViT, DINOv2: attention-head masking) "
    "and convolutional backbones (ResNet, ConvNeXt, ...: Grad-CAM on the last feature map)"
)
REPORT_FILE = "head_importance.json"
IMPORTANCE_MEASURE = " when a head's CLS attention row is replaced by a uniform map"


class UnsupportedBackbone(ValueError):
    """The backbone has neither CLS attention nor a convolutional feature map to explain."""


def explanation_method(model: nn.Module) -> str:
    """Attention-head masking for attention backbones with a CLS token (CLIP, ViT, DINOv2), else Grad-CAM (for
    which :func:`explain` raises :class:`UnsupportedBackbone` when the backbone has no feature map)."""
    backbone = model.backbone
    has_cls = any(name.endswith(("cls_token", "class_embedding")) for name, _ in backbone.named_parameters())
    return ATTENTION_METHOD if has_cls and getattr(backbone, "_supports_attention_backend", False) else GRAD_CAM_METHOD


def base_comparison(model: nn.Module) -> tuple[bool, str]:
    """Whether fine-tuned − base maps mean something (the model has LoRA adapters to switch off; merged ones are
    unmerged by peft when disabled), and the report's sentence about them."""
    if any(isinstance(module, LoraLayer) for module in model.modules()):
        return True, "_diff maps: the fine-tuned model minus the base backbone (LoRA adapters disabled, same head)"
    return False, (
        f"no _diff maps: the model has no LoRA adapters (adaptation {model.config.adaptation!r}), so there "
        "is no base to compare with"
    )


def prediction_text(config, logits: torch.Tensor) -> str:
    """One image's prediction on the explained view, for titles: ``score 3.21`` or ``awe (p=0.42)``."""
    if not config.is_classification:
        return f"score {float(logits.mean()):.4g}"
    probabilities = logits.sigmoid() if config.problem_type == "multi_label_classification" else logits.softmax(-1)
    top = int(probabilities.argmax())
    return f"{config.id2label.get(top, str(top))} (p={float(probabilities[top]):.2f})"


def explain_attention(
    model: nn.Module, pixel_values: torch.Tensor, top_k: int, batch_size: int, progress: bool, compare: bool, draw: bool
) -> tuple[dict, list[list[Panel]]]:
    """Head importance, its ranking and (``draw``) the CLS-attention panels of the ``top_k`` heads per image."""
    importance = head_importance(model, pixel_values, batch_size=batch_size, progress=progress)
    ranking = rank_heads(importance)
    heads = [(layer, head) for layer, head, _ in ranking[:top_k]]
    measure = (
        "mean |change of the baseline top-class probability|"
        if model.config.is_classification
        else "mean |change of the score|"
    )
    fields = dict(
        num_layers=importance.shape[0],
        num_heads=importance.shape[1],
        measure=measure + IMPORTANCE_MEASURE,
        importance=importance.tolist(),
        top_heads=[list(pair) for pair in heads],
        ranking=[{"layer": layer, "head": head, "importance": value} for layer, head, value in ranking],
    )
    if not draw:
        return fields, []
    tuned = cls_attention_maps(model, pixel_values)
    base = cls_attention_maps(model, pixel_values, base=True) if compare else None
    return fields, [
        attention_panels(tuned[:, i], None if base is None else base[:, i], heads) for i in range(len(pixel_values))
    ]


def explain_grad_cam(
    model: nn.Module, pixel_values: torch.Tensor, batch_size: int, compare: bool, draw: bool
) -> tuple[dict, list[list[Panel]]]:
    """Grad-CAM of each image's prediction: where it comes from (report fields) and (``draw``) its panels."""
    try:
        cam = grad_cam(model, pixel_values, batch_size)
    except NotConvolutional:
        raise UnsupportedBackbone(
            f"{SUPPORTED}; this model's backbone is {type(model.backbone).__name__} "
            f"({model.config.vision_config.model_type})"
        ) from None
    target, (height, width) = target_description(model), cam.maps.shape[1:]
    fields = dict(
        target=target,
        feature_map={"module": cam.module, "channels": cam.channels, "size": [height, width]},
        measure=f"Grad-CAM: relu(sum over channels of the feature map weighted by the spatial mean of "
        f"d({target})/d(feature map)); no head ranking: the backbone has no attention heads",
    )
    if not draw:
        return fields, []
    base = None
    if compare:
        with adapters_disabled(model):
            base = grad_cam(model, pixel_values, batch_size).maps
    feature_map = f"the last feature map ({cam.module or 'backbone output'}, {cam.channels} channels, {height}×{width})"
    return fields, [
        grad_cam_panels(cam.maps[i], None if base is None else base[i], target, feature_map)
        for i in range(len(pixel_values))
    ]


def explain(
    model: nn.Module,
    images: Sequence[Image.Image],
    *,
    names: Sequence[str] | None = None,
    top_k: int = 4,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
    metadata: dict | None = None,
) -> dict:
    """Explain the predictions on ``images`` (PIL, whole-image view: resize + center crop), by
    :func:`explanation_method`: head importance, its ranking and the ``top_k`` heads' CLS attention maps, or
    Grad-CAM. With ``out_dir``: heatmaps per image and ``head_importance.json``. Returns the report, which starts
    with ``metadata`` (e.g. the model's name). Raises :class:`UnsupportedBackbone` for other backbones."""
    if not images:
        raise ValueError("explain needs at least one image.")
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    transform = center_view_transform(model.config)
    device = next(model.parameters()).device
    pixel_values = torch.stack([transform.transform_image(image, None) for image in images]).to(device)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk).logits.float().cpu() for chunk in pixel_values.split(batch_size)])
    method = explanation_method(model)
    compare, diff_note = base_comparison(model)
    draw = out_dir is not None
    if method == ATTENTION_METHOD:
        fields, panels = explain_attention(
            model, pixel_values, top_k, max(batch_size, len(images)), progress, compare, draw
        )
    else:
        fields, panels = explain_grad_cam(model, pixel_values, batch_size, compare, draw)
    predictions = [prediction_text(model.config, row) for row in logits]
    written: list[Path] = []
    for index, (image, name, image_panels) in enumerate(zip(images, names, panels)):
        written += write_panels(
            image,
            image_panels,
            out_dir,
            f"{index:03d}_{Path(name).stem}",
            name=Path(name).name,
            prediction=predictions[index],
        )
    report = {
        **(metadata or {}),
        "method": method,
        "images": names,
        "predictions": predictions,
        **fields,
        "diff_maps": diff_note,
        "heatmaps": [path.name for path in written],
    }
    if draw:
        (Path(out_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


__all__ = [
    "ATTENTION_METHOD",
    "GRAD_CAM_METHOD",
    "ProbeState",
    "UnsupportedBackbone",
    "adapters_disabled",
    "attention_probe",
    "base_comparison",
    "cls_attention_maps",
    "explain",
    "explanation_method",
    "head_importance",
    "masked_logits",
    "rank_heads",
    "save_heatmaps",
]
