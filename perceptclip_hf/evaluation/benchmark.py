"""Evaluation of a trained model on a benchmark: the paper's metrics of a `PerceptScorer` on a split, and
cross-dataset evaluation (paper Table 2). Serving-side code: no Trainer is imported."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..data import benchmark_splits, get_dataset_info, load_benchmark
from ..metrics import (
    LogisticFit,
    MetricNotes,
    classification_metrics,
    metric_label,
    metric_notes,
    regression_metrics,
)
from ..scoring.scorer import PerceptScorer

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkPredictions:
    """A model's predictions of a benchmark part, in the dataset's terms: `scores` with the dataset's direction
    (LIVE DMOS: lower is better), or `probabilities` over the dataset's classes in its order."""

    dataset: str
    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    class_names: list[str] | None = None
    positive_classes: list[int] | None = None

    def metrics(self, fit: LogisticFit = "robust") -> dict:
        """The paper's metrics; why one is undefined (or fell back) is logged in words (:func:`notes_in_words`)."""
        with metric_notes() as notes:
            if self.scores is not None:
                values = regression_metrics(self.scores, self.labels, fit=fit)
            else:
                values = classification_metrics(self.probabilities, self.labels, positive_classes=self.positive_classes)
        for line in notes_in_words(values, notes):
            logger.warning("%s: %s", self.dataset, line)
        return values


def notes_in_words(metrics: Mapping[str, float], notes: MetricNotes) -> list[str]:
    """One line for the undefined metrics and why (``"SRCC, KRCC: undefined (constant targets)"``), then the
    metrics' other remarks."""
    undefined = [metric_label(name) for name, value in metrics.items() if math.isnan(value)]
    return ([f"{', '.join(undefined)}: undefined ({notes.undefined})"] if undefined else []) + notes.remarks


def predict_benchmark(
    scorer, dataset: str, data_dir: str, split: int | None = None, part: str = "test", progress=None
) -> BenchmarkPredictions:
    """A `PerceptScorer`'s predictions of a benchmark part (`split=None`: the whole dataset, as THINGS in the
    paper). IQA: the scorer's 15 test crops; a model's score direction is matched to the dataset's (LIVE DMOS);
    emotion classes are matched by name."""
    info = get_dataset_info(dataset)
    ds = load_benchmark(info.name, data_dir)
    if split is not None:
        parts = benchmark_splits(info.name, ds, split, data_dir=data_dir)
        if part not in parts:
            raise ValueError(f"{info.name} split {split} has parts {list(parts)}, not {part!r}")
        ds = parts[part]
    predictions = scorer.iter_predictions(ds)
    results = list(progress(predictions, total=len(ds)) if progress else predictions)
    paths, labels = list(ds["image_path"]), np.asarray(ds["label"])
    if not scorer.is_classification:
        sign = 1.0 if scorer.higher_is_better == info.higher_is_better else -1.0
        return BenchmarkPredictions(info.name, paths, labels, scores=np.array([sign * r["score"] for r in results]))
    class_names = list(info.class_names or ds.features["label"].names)
    model_labels = [label.lower() for label in scorer.labels]
    missing = [name for name in class_names if name.lower() not in model_labels]
    if missing:
        raise ValueError(f"the model's labels {scorer.labels} lack the dataset's classes {missing}")
    order = [model_labels.index(name.lower()) for name in class_names]
    probabilities = np.array([[list(r["probabilities"].values())[i] for i in order] for r in results])
    positive = [class_names.index(c) for c in info.positive_classes] if info.positive_classes else None
    return BenchmarkPredictions(
        info.name,
        paths,
        labels.astype(np.int64),
        probabilities=probabilities,
        class_names=class_names,
        positive_classes=positive,
    )


def evaluate_benchmark(
    scorer,
    dataset: str,
    data_dir: str,
    split: int | None = None,
    part: str = "test",
    progress=None,
    fit: LogisticFit = "robust",
) -> tuple[dict, int]:
    """The paper's metrics of a `PerceptScorer` on a benchmark part (:func:`predict_benchmark`) and its number of
    images; PLCC after the 4-parameter logistic fit (`fit`: "robust", or "loda" for LoDa's exact fit, see
    `metrics.fit_logistic_4pl`)."""
    predictions = predict_benchmark(scorer, dataset, data_dir, split, part, progress)
    return predictions.metrics(fit), len(predictions.labels)


def benchmark_report(
    predictions: BenchmarkPredictions,
    out_dir,
    title: str,
    context: str = "",
    score_meaning: str = "",
    fit: LogisticFit = "robust",
):
    """The report (:mod:`..reports`) of a model's predictions of a benchmark part; returns the `Report`."""
    from ..reports import classification_report, regression_report

    if predictions.scores is not None:
        return regression_report(
            out_dir,
            title,
            predictions.paths,
            predictions.scores,
            predictions.labels,
            score_meaning=score_meaning,
            context=context,
            fit=fit,
            label_name=f"human score ({predictions.dataset})",
        )
    return classification_report(
        out_dir,
        title,
        predictions.paths,
        predictions.probabilities,
        predictions.labels,
        predictions.class_names,
        positive_classes=predictions.positive_classes,
        context=context,
    )


def cross_dataset_evaluation(
    model_dir: str, dataset: str, data_dir: str, split: int | None = None, seed: int = 0
) -> dict:
    """Metrics of a trained model on another dataset (e.g. train FLIVE, test KonIQ), PLCC after the 4-parameter
    logistic fit, with the dataset's test-time resize and filter."""
    info = get_dataset_info(dataset)
    scorer = PerceptScorer.from_pretrained(model_dir, seed=seed, dataset=info)
    return evaluate_benchmark(scorer, dataset, data_dir, split)[0]


__all__ = [
    "BenchmarkPredictions",
    "benchmark_report",
    "cross_dataset_evaluation",
    "evaluate_benchmark",
    "notes_in_words",
    "predict_benchmark",
]
