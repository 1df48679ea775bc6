"""Attention-head interpretability (paper sec. 6).

* :func:`head_importance`: for each (layer, head), replace the CLS query's attention row by a uniform map
  (1 / seq_len over all tokens) and measure the mean absolute change of the prediction over the images.
* :func:`cls_attention_maps`: the CLS token's attention over the patch grid, of the fine-tuned model or of
  the base backbone (LoRA disabled).
* :func:`save_heatmaps`: PNG overlays of those maps for chosen heads, and of the fine-tuned − base difference.
* :func:`explain`: all of it for a set of images (the ``perceptclip explain`` command), as a report dict.

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

import numpy as np
import torch
from PIL import Image
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.modeling_utils import AttentionInterface

from .geometry import center_crop
from .preprocessing import center_view_transform

PROBE_ATTENTION = "perceptclip_probe"
JET = np.array([[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]])  # blue → red
DIVERGING = np.array([[0.02, 0.19, 0.38], [0.57, 0.77, 0.87], [0.97, 0.97, 0.97], [0.96, 0.65, 0.51],
                      [0.4, 0.0, 0.12]])  # negative (blue) → 0 (white) → positive (red)


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


def probe_attention(module: nn.Module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                    **kwargs):
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
    state = ProbeState(masked_layer=torch.full((batch,), layer, device=pixel_values.device),
                       masked_head=torch.full((batch,), head, device=pixel_values.device))
    return _forward_logits(model, pixel_values, state)


@torch.no_grad()
def head_importance(model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor:
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
        chunk = torch.tensor(pairs[start:start + pairs_per_pass], device=pixel_values.device)
        state = ProbeState(masked_layer=chunk[:, 0].repeat_interleave(images),
                           masked_head=chunk[:, 1].repeat_interleave(images))
        logits = _forward_logits(model, pixel_values.repeat(len(chunk), 1, 1, 1), state)
        repeated_reference = None if reference is None else reference.repeat(len(chunk))
        change = (prediction(model, logits, repeated_reference) - baseline.repeat(len(chunk))).abs()
        importance[start:start + len(chunk)] = change.view(len(chunk), images).mean(dim=1).cpu()
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
    return rows[..., -num_patches[0] * num_patches[1]:].unflatten(-1, num_patches)


def patch_grid(config, image_hw: Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of patches for an input of ``image_hw`` pixels."""
    patch = config.vision_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    return image_hw[0] // patch, image_hw[1] // patch


# ----- heatmaps --------------------------------------------------------------------------------------------------

def colorize(values: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` → uint8 RGB by piecewise-linear interpolation of ``colormap`` stops."""
    positions = np.linspace(0.0, 1.0, len(colormap))
    values = np.clip(values, 0.0, 1.0)
    channels = [np.interp(values, positions, colormap[:, c]) for c in range(3)]
    return (np.stack(channels, axis=-1) * 255.0 + 0.5).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, colormap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` blended with ``heat`` (values in ``[0, 1]``, upsampled bilinearly to the image size)."""
    heat_image = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    colored = Image.fromarray(colorize(np.asarray(heat_image, dtype=np.float32) / 255.0, colormap))
    return Image.blend(image.convert("RGB"), colored, alpha)


def display_view(image: Image.Image, size: int = 224) -> Image.Image:
    """The square region the model sees with resize + center crop, resized to ``size`` for display."""
    return center_crop(image, min(image.size)).resize((size, size), Image.BILINEAR)


def save_heatmaps(
    image: Image.Image,
    tuned: torch.Tensor,
    base: torch.Tensor,
    heads: Sequence[tuple[int, int]],
    out_dir: str | Path,
    stem: str,
    display_size: int = 224,
) -> list[Path]:
    """Write, for each ``(layer, head)`` in ``heads``, ``{stem}_L{layer}_H{head}.png`` (fine-tuned CLS attention,
    min-max scaled, jet) and ``{stem}_L{layer}_H{head}_diff.png`` (fine-tuned − base, blue < 0 < red, scaled by
    the largest |difference|). ``tuned``/``base``: one image's maps ``(num_layers, num_heads, grid_h, grid_w)``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = display_view(image, display_size)
    written = []
    for layer, head in heads:
        tuned_map = tuned[layer, head].float().numpy()
        difference = tuned_map - base[layer, head].float().numpy()
        spread = tuned_map.max() - tuned_map.min()
        scaled = (tuned_map - tuned_map.min()) / spread if spread > 0 else np.zeros_like(tuned_map)
        limit = np.abs(difference).max()
        centered = 0.5 + 0.5 * difference / limit if limit > 0 else np.full_like(difference, 0.5)
        for suffix, heat, colormap in (("", scaled, JET), ("_diff", centered, DIVERGING)):
            path = out_dir / f"{stem}_L{layer}_H{head}{suffix}.png"
            overlay(view, heat, colormap).save(path)
            written.append(path)
    return written


IMPORTANCE_MEASURE = " when a head's CLS attention row is replaced by a uniform map"
REPORT_FILE = "head_importance.json"


def explain(model: nn.Module, images: Sequence[Image.Image], *, names: Sequence[str] | None = None, top_k: int = 4,
            out_dir: str | Path | None = None, batch_size: int = 64, progress: bool = False,
            metadata: dict | None = None) -> dict:
    """Head importance over ``images`` (PIL, whole-image view: resize + center crop), the ranking, and with
    ``out_dir`` the heatmaps of the ``top_k`` heads per image and ``head_importance.json``. Returns the report,
    which starts with ``metadata`` (e.g. the model's name)."""
    if not images:
        raise ValueError("explain needs at least one image.")
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    transform = center_view_transform(model.config)
    device = next(model.parameters()).device
    pixel_values = torch.stack([transform.transform_image(image, None) for image in images]).to(device)
    importance = head_importance(model, pixel_values, batch_size=max(batch_size, len(images)), progress=progress)
    ranking = rank_heads(importance)
    top_heads = [(layer, head) for layer, head, _ in ranking[:top_k]]
    written: list[Path] = []
    if out_dir is not None:
        tuned = cls_attention_maps(model, pixel_values)
        base = cls_attention_maps(model, pixel_values, base=True)
        for index, (image, name) in enumerate(zip(images, names)):
            stem = f"{index:03d}_{Path(name).stem}"
            written += save_heatmaps(image, tuned[:, index], base[:, index], top_heads, out_dir, stem)
    measure = ("mean |change of the baseline top-class probability|" if model.config.is_classification
               else "mean |change of the score|")
    report = {
        **(metadata or {}),
        "images": names,
        "num_layers": importance.shape[0],
        "num_heads": importance.shape[1],
        "measure": measure + IMPORTANCE_MEASURE,
        "importance": importance.tolist(),
        "ranking": [{"layer": layer, "head": head, "importance": value} for layer, head, value in ranking],
        "top_heads": [list(pair) for pair in top_heads],
        "heatmaps": [path.name for path in written],
    }
    if out_dir is not None:
        (Path(out_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


__all__ = [
    "ProbeState",
    "explain",
    "adapters_disabled",
    "attention_probe",
    "cls_attention_maps",
    "head_importance",
    "masked_logits",
    "rank_heads",
    "save_heatmaps",
]
