"""The report's figures (matplotlib, Agg canvas): predicted vs human scores with the fitted 4-parameter logistic,
residuals, score distributions, image thumbnails with their scores, a confusion matrix, training curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..data.images import open_image
from ..metrics import logistic_4pl
from .document import new_figure

THUMBNAIL = 160


def scatter_with_fit(
    scores: np.ndarray, labels: np.ndarray, params: np.ndarray | None, score_name: str, label_name: str
) -> Figure:
    figure = new_figure()
    axes = figure.add_subplot()
    axes.scatter(scores, labels, s=10, alpha=0.5, color="tab:blue", label="images")
    if params is not None:
        grid = np.linspace(scores.min(), scores.max(), 200)
        axes.plot(grid, logistic_4pl(grid, *params), color="tab:red", label="fitted 4-parameter logistic")
    axes.set_xlabel(score_name)
    axes.set_ylabel(label_name)
    axes.set_title("Predicted vs human scores")
    axes.legend(loc="best")
    return figure


def residual_histogram(residuals: np.ndarray, label_name: str) -> Figure:
    figure = new_figure(6, 3.5)
    axes = figure.add_subplot()
    axes.hist(residuals, bins=30, color="tab:purple", alpha=0.8)
    axes.axvline(0, color="black", linewidth=1)
    axes.set_xlabel(f"fitted prediction − {label_name}")
    axes.set_ylabel("images")
    axes.set_title("Residuals (over-rated > 0 > under-rated)")
    return figure


def distributions(values: dict[str, np.ndarray]) -> Figure:
    """One histogram per named series (e.g. the human scores and the predictions), side by side."""
    figure = new_figure(4 * len(values), 3.5)
    for index, (name, series) in enumerate(values.items()):
        axes = figure.add_subplot(1, len(values), index + 1)
        axes.hist(series, bins=30, color=f"C{index}", alpha=0.8)
        axes.set_xlabel(name)
        axes.set_ylabel("images")
    figure.suptitle("Score distributions")
    return figure


def thumbnails(paths: Sequence[str], captions: Sequence[str], title: str, columns: int = 5) -> Figure:
    """The images in a grid, each with its caption (e.g. both scores)."""
    rows = max(1, -(-len(paths) // columns))
    figure = new_figure(2.4 * columns, 2.7 * rows)
    for index, (path, caption) in enumerate(zip(paths, captions)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(_thumbnail(path))
        axes.set_title(caption, fontsize=8)
        axes.set_axis_off()
    figure.suptitle(title)
    return figure


def _thumbnail(path: str) -> np.ndarray:
    try:
        image = open_image(path)
    except Exception:  # an image that cannot be read any more: a grey tile
        return np.full((THUMBNAIL, THUMBNAIL, 3), 200, dtype=np.uint8)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.BILINEAR)
    return np.asarray(image.convert("RGB"))


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str]) -> Figure:
    size = 2 + 0.6 * len(class_names)
    figure = new_figure(size + 1.5, size)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="images")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), count in np.ndenumerate(counts):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
            fontsize=8,
        )
    axes.set_title(f"Confusion matrix ({int(counts.sum())} images)")
    return figure


def training_curves(runs: dict[str, list[dict]], metric: str) -> Figure:
    """Per run (`split 0 · lr 1e-4`): training loss per logging step and validation `metric` per epoch, from the
    Trainer's `log_history`."""
    figure = new_figure(11, 4)
    loss_axes, metric_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (name, history) in enumerate(runs.items()):
        losses = [(row["epoch"], row["loss"]) for row in history if "loss" in row and "epoch" in row]
        scores = [(row["epoch"], row[f"eval_{metric}"]) for row in history if f"eval_{metric}" in row]
        if losses:
            loss_axes.plot(*zip(*losses), marker=".", color=f"C{index}", label=name)
        if scores:
            metric_axes.plot(*zip(*scores), marker="o", color=f"C{index}", label=name)
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    metric_axes.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"Validation {metric.upper()}")
    for axes in (loss_axes, metric_axes):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    return figure


__all__ = [
    "confusion_matrix_figure",
    "distributions",
    "residual_histogram",
    "scatter_with_fit",
    "thumbnails",
    "training_curves",
]
