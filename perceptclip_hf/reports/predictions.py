"""The report on a model's predictions of a labelled set (`perceptclip evaluate --report`, each `train.py` split):
metrics with bootstrap intervals, predicted vs human scores, residuals, distributions and the most over- and
under-rated images (scores); confusion matrix, per-class precision / recall / F1 and the most confident mistakes
(classes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import (
    LogisticFitError,
    MetricNotes,
    bootstrap_intervals,
    classification_metrics,
    fit_logistic_4pl,
    logistic_4pl,
    metric_label,
    metric_notes,
    regression_metrics,
)
from . import plots
from .document import Report

EXTREMES = 10  # images shown at each end


def regression_report(
    out_dir: str | Path,
    title: str,
    paths: Sequence[str],
    scores,
    labels,
    *,
    score_meaning: str = "",
    label_name: str = "human score (MOS)",
    context: str = "",
    fit: str = "robust",
    resamples: int = 1000,
) -> Report:
    """Write the report of scores against human labels; over- and under-rated are judged after mapping the scores
    onto the labels' scale with the fitted 4-parameter logistic (the IQA protocol's), so a relative score
    (PLCC-trained) is judged by its ranking, not its scale."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    report = Report(out_dir, title)
    report.paragraph(f"{len(scores)} images. {context}".strip())
    if score_meaning:
        report.paragraph(f"Score: {score_meaning}")
    with metric_notes() as notes:
        metrics = regression_metrics(scores, labels, fit=fit)
        intervals = bootstrap_intervals(scores, labels, resamples=resamples, fit=fit)
    report.heading("Metrics")
    report.table(
        ["metric", "value", "95% bootstrap interval"],
        [
            [
                metric_label(name),
                _value(metrics[name], notes),
                _interval(intervals[name], notes) if name in intervals else "",
            ]
            for name in metrics
        ],
    )
    _remarks(report, notes)
    report.paragraph(
        f"Intervals: percentile bootstrap over {resamples} resamplings of the images; PLCC after the "
        "4-parameter logistic fit (fitted once on all images). MSE compares the raw scores with the labels."
    )
    try:
        params = fit_logistic_4pl(scores, labels, fit=fit)
        fitted = logistic_4pl(scores, *params)
    except LogisticFitError:
        params, fitted = None, scores
    report.heading("Predicted vs human scores")
    report.figure(
        "scatter",
        plots.scatter_with_fit(scores, labels, params, "predicted score", label_name),
        "Each image's predicted score against its human score, with the fitted 4-parameter logistic.",
    )
    residuals = fitted - labels
    report.figure(
        "residuals", plots.residual_histogram(residuals, label_name), "Fitted prediction minus human score, per image."
    )
    report.figure(
        "distributions",
        plots.distributions({label_name: labels, "predicted score": scores}),
        "The human scores and the predictions.",
    )
    order = np.argsort(residuals)
    for name, rows, what in (
        ("over_rated", order[::-1][:EXTREMES], "Most over-rated"),
        ("under_rated", order[:EXTREMES], "Most under-rated"),
    ):
        captions = [
            f"{Path(paths[i]).name[:22]}\npred {scores[i]:.3g} (fit {fitted[i]:.3g}) · human {labels[i]:.3g}"
            for i in rows
        ]
        report.figure(
            name,
            plots.thumbnails([paths[i] for i in rows], captions, what),
            f"{what} images: the fitted prediction is furthest {'above' if name == 'over_rated' else 'below'}"
            " the human score.",
        )
    report.values.update(metrics=metrics, intervals=intervals)
    report.save()
    return report


def classification_report(
    out_dir: str | Path,
    title: str,
    paths: Sequence[str],
    probabilities,
    labels,
    class_names: Sequence[str],
    *,
    positive_classes: Sequence[int] | None = None,
    context: str = "",
) -> Report:
    """Write the report of class probabilities `(N, C)` against true class ids (in `class_names` order)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # on use, as in `metrics`

    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(class_names)))
    report = Report(out_dir, title)
    report.paragraph(f"{len(labels)} images. {context}".strip())
    with metric_notes() as notes:
        metrics = classification_metrics(probabilities, labels, positive_classes)
    report.heading("Metrics")
    report.table(["metric", "value"], [[name, value] for name, value in metrics.items()])
    _remarks(report, notes)
    counts = confusion_matrix(labels, predicted, labels=classes)
    report.figure(
        "confusion_matrix",
        plots.confusion_matrix_figure(counts, class_names),
        "Rows: the true class; columns: the predicted one.",
    )
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    report.heading("Per class")
    report.table(
        ["class", "precision", "recall", "F1", "images"],
        [
            [name, float(precision[i]), float(recall[i]), float(f1[i]), int(support[i])]
            for i, name in enumerate(class_names)
        ],
    )
    wrong = np.flatnonzero(predicted != labels)
    rows = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:EXTREMES]
    if len(rows):
        captions = [
            f"{Path(paths[i]).name[:22]}\ntrue {class_names[labels[i]]} · predicted "
            f"{class_names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f})"
            for i in rows
        ]
        report.figure(
            "confident_mistakes",
            plots.thumbnails([paths[i] for i in rows], captions, "Most confident mistakes"),
            "The wrong predictions the model was surest of.",
        )
    else:
        report.paragraph("No mistakes.")
    report.values.update(metrics=metrics, confusion_matrix=counts.tolist())
    report.save()
    return report


def _value(value: float, notes: MetricNotes) -> float | str:
    """A metric's cell: the value, or why it is undefined."""
    return value if not math.isnan(value) else f"undefined ({notes.undefined})"


def _interval(interval: tuple[float, float], notes: MetricNotes) -> str:
    """An interval's cell: ``low – high``, or why it is undefined."""
    if math.isnan(interval[0]):
        return f"undefined ({notes.undefined})"
    return "{:.4f} – {:.4f}".format(*interval)


def _remarks(report: Report, notes: MetricNotes) -> None:
    """What else the metrics warned about (a fit that fell back, absent classes), one paragraph each."""
    for remark in notes.remarks:
        report.paragraph(f"{remark}.")


__all__ = ["classification_report", "regression_report"]
