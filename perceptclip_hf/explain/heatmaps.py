"""The heatmap PNGs of ``perceptclip explain``: a map upsampled over the model's view of the image, with a colour
bar, a title (image, what the map is, the prediction) and a caption saying what the colours mean.

:class:`Panel` is one map of one image; :func:`attention_panels` and :func:`grad_cam_panels` make those of each
method, :func:`write_panels` draws them. Drawn with matplotlib's object API (``Figure`` + the Agg canvas: no pyplot,
no global backend). Title and caption are also stored in the PNG's ``Title`` and ``Description`` text chunks.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from ..geometry import center_crop

SEQUENTIAL = "jet"  # low (blue) → high (red)
DIVERGING = "RdBu_r"  # negative (blue) → 0 (white) → positive (red)
OPACITY = 0.5  # of the map over the image
DPI = 100
VIEW = "over the model's view of the image (resize + center crop), at 50% opacity"
MARGIN, BAR_WIDTH, BAR_LABELS = 8, 12, 72  # pixels: around the image, colour bar, its ticks and label


def display_view(image: Image.Image, size: int = 224) -> Image.Image:
    """The square region the model sees with resize + center crop, resized to ``size`` for display."""
    return center_crop(image, min(image.size)).resize((size, size), Image.BILINEAR).convert("RGB")


def upsample(heat: np.ndarray, size: int) -> np.ndarray:
    """``(h, w)`` → ``(size, size)``, bilinear (half-pixel centres, as an image resize)."""
    tensor = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()


SCALES = ("range", "from_zero", "symmetric")  # colour bar: min..max, 0..max (blue = 0), ±max|value| (white = 0)


def color_limits(heat: np.ndarray, scale: str) -> tuple[float, float]:
    """The colour bar's range for ``scale`` (one of :data:`SCALES`)."""
    if scale == "symmetric":
        limit = float(np.abs(heat).max()) or 1.0
        return -limit, limit
    low, high = (0.0 if scale == "from_zero" else float(heat.min())), float(heat.max())
    return (low, high) if high > low else (low, low + 1.0)


def heatmap_figure(
    view: Image.Image, heat: np.ndarray, *, title: str, caption: str, colorbar_label: str, scale: str = "range"
) -> Figure:
    """``view`` (square) with ``heat`` (``(h, w)``, any units) upsampled over it at 50% opacity, shown at one
    screen pixel per view pixel; the colour bar (full-strength colours, ``scale``) gives the units."""
    size = view.size[0]
    width = max(size + 2 * MARGIN + BAR_WIDTH + BAR_LABELS, 320)
    title_lines = textwrap.wrap(title, width=(width - 2 * MARGIN) // 8) or [""]  # about 8 pixels a character
    caption_lines = textwrap.wrap(caption, width=int((width - 2 * MARGIN) / 5.5))
    title_height, caption_height = 15 * len(title_lines) + MARGIN, 12 * len(caption_lines) + MARGIN
    height = title_height + size + MARGIN + caption_height
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    bottom = (caption_height + MARGIN) / height
    axes = figure.add_axes((MARGIN / width, bottom, size / width, size / height))
    low, high = color_limits(heat, scale)
    colors = ScalarMappable(Normalize(low, high), DIVERGING if scale == "symmetric" else SEQUENTIAL)
    axes.imshow(np.asarray(view), interpolation="nearest")
    axes.imshow(upsample(heat, size), cmap=colors.cmap, norm=colors.norm, alpha=OPACITY, interpolation="nearest")
    axes.set_axis_off()
    bar = figure.add_axes(((2 * MARGIN + size) / width, bottom, BAR_WIDTH / width, size / height))
    figure.colorbar(colors, cax=bar)
    bar.tick_params(labelsize=7)
    bar.set_ylabel(colorbar_label, fontsize=7)
    figure.text(0.5, 1 - 4 / height, "\n".join(title_lines), ha="center", va="top", fontsize=9)
    figure.text(MARGIN / width, (caption_height - 4) / height, "\n".join(caption_lines), va="top", fontsize=6.5)
    return figure


def save_heatmap(
    path: str | Path,
    view: Image.Image,
    heat: np.ndarray,
    *,
    title: str,
    caption: str,
    colorbar_label: str,
    scale: str = "range",
) -> Path:
    """Write :func:`heatmap_figure` to ``path`` (PNG; title and caption also in its text chunks)."""
    figure = heatmap_figure(view, heat, title=title, caption=caption, colorbar_label=colorbar_label, scale=scale)
    figure.savefig(path, dpi=DPI, metadata={"Title": title, "Description": caption})
    return Path(path)


@dataclass
class Panel:
    """One heatmap of one image: file-name ``suffix``, the map ``(h, w)``, what it shows (title), its legend and
    colour scale (:data:`SCALES`)."""

    suffix: str
    heat: np.ndarray
    subject: str
    caption: str
    colorbar_label: str
    scale: str = "range"


def attention_panels(tuned: torch.Tensor, base: torch.Tensor | None, heads: Sequence[tuple[int, int]]) -> list[Panel]:
    """CLS-attention panels of one image (maps ``(num_layers, num_heads, grid_h, grid_w)``) for ``heads``, each
    followed by its fine-tuned − base difference when ``base`` is given."""
    panels = []
    for layer, head in heads:
        name, tuned_map = f"L{layer} H{head}", tuned[layer, head].float().numpy()
        panels.append(
            Panel(
                f"_L{layer}_H{head}",
                tuned_map,
                name,
                "Colour: the share of the CLS token's attention "
                f"that goes to each image patch in this head (red = most attended), {VIEW}.",
                "CLS attention weight",
            )
        )
        if base is not None:
            panels.append(
                Panel(
                    f"_L{layer}_H{head}_diff",
                    tuned_map - base[layer, head].float().numpy(),
                    f"{name} fine-tuned − base",
                    "Colour: CLS attention of the fine-tuned model minus that "
                    "of the base backbone (LoRA disabled): red = attended more after fine-tuning, blue = "
                    f"less, white = unchanged; {VIEW}.",
                    "attention difference",
                    "symmetric",
                )
            )
    return panels


def grad_cam_panels(tuned: torch.Tensor, base: torch.Tensor | None, target: str, feature_map: str) -> list[Panel]:
    """Grad-CAM panel of one image (``(h, w)``), and its fine-tuned − base difference when ``base`` is given."""
    panels = [
        Panel(
            "_gradcam",
            tuned.numpy(),
            "Grad-CAM",
            f"Colour: Grad-CAM of {target} on {feature_map}: red = "
            f"regions whose features raise {target} most, blue = little or no positive contribution; {VIEW}.",
            "Grad-CAM (a.u.)",
            "from_zero",
        )
    ]
    if base is not None:
        panels.append(
            Panel(
                "_gradcam_diff",
                (tuned - base).numpy(),
                "Grad-CAM fine-tuned − base",
                "Colour: Grad-CAM "
                f"of the fine-tuned model minus that of the base backbone (LoRA disabled, same head): red = "
                f"more, blue = less, white = unchanged; {VIEW}.",
                "Grad-CAM difference",
                "symmetric",
            )
        )
    return panels


def write_panels(
    image: Image.Image,
    panels: Sequence[Panel],
    out_dir: str | Path,
    stem: str,
    *,
    name: str = "",
    prediction: str = "",
    display_size: int = 224,
) -> list[Path]:
    """``{stem}{suffix}.png`` per panel, titled ``name · subject · prediction``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = display_view(image, display_size)
    return [
        save_heatmap(
            out_dir / f"{stem}{panel.suffix}.png",
            view,
            panel.heat,
            title=" · ".join(part for part in (name, panel.subject, prediction) if part),
            caption=panel.caption,
            colorbar_label=panel.colorbar_label,
            scale=panel.scale,
        )
        for panel in panels
    ]


def save_heatmaps(
    image: Image.Image,
    tuned: torch.Tensor,
    base: torch.Tensor | None,
    heads: Sequence[tuple[int, int]],
    out_dir: str | Path,
    stem: str,
    display_size: int = 224,
    **titles: str,
) -> list[Path]:
    """Write, for each ``(layer, head)`` in ``heads``, ``{stem}_L{layer}_H{head}.png`` (fine-tuned CLS attention)
    and, with ``base``, ``{stem}_L{layer}_H{head}_diff.png`` (fine-tuned − base). ``tuned``/``base``: one image's
    maps ``(num_layers, num_heads, grid_h, grid_w)``; ``titles``: ``name`` and ``prediction`` for the titles."""
    return write_panels(image, attention_panels(tuned, base, heads), out_dir, stem, display_size=display_size, **titles)


__all__ = [
    "Panel",
    "attention_panels",
    "display_view",
    "grad_cam_panels",
    "heatmap_figure",
    "save_heatmap",
    "save_heatmaps",
    "upsample",
    "write_panels",
]
