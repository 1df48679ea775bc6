"""The reports of a `train.py` run (:mod:`..reports`): one per split on its test part (`split_<k>/report/`; a folder
per dataset in a multi-dataset run) and a summary (`report/`): training loss and validation metric per epoch, the
learning-rate sweep, per-split test metrics with their median and mean, cross-dataset results."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..evaluation.benchmark import BenchmarkPredictions, benchmark_report
from ..metrics import aggregate_splits, softmax
from ..preprocessing import undecoded
from ..reports import Report
from ..reports.plots import training_curves
from ..run_layout import REPORT_DIR

logger = logging.getLogger(__name__)


def test_predictions(task, data_args, ds, output) -> list[BenchmarkPredictions]:
    """The Trainer's predictions of a test set (`PredictionOutput`) as one :class:`BenchmarkPredictions` per
    dataset (head), with the image files they came from."""
    images = undecoded(ds.with_format(None))["image"]
    paths = np.array([item.get("path") or "" if isinstance(item, dict) else str(item) for item in images])
    labels, heads = output.label_ids, None
    if isinstance(labels, (tuple, list)):  # multi-dataset: (labels, head)
        labels, heads = np.asarray(labels[0]), np.asarray(labels[1]).reshape(-1)
    labels = np.asarray(labels).reshape(len(paths), -1)[:, 0]
    logits = np.asarray(output.predictions, dtype=np.float64)
    found = []
    for head, name in enumerate(task.datasets):
        rows = np.ones(len(paths), bool) if heads is None else heads == head
        head_logits = logits[rows, : task.head_sizes[head]]
        info = data_args.dataset_info(name)
        if task.spec.is_classification:
            positive = list(task.head_positive_classes[head]) if task.head_positive_classes[head] else None
            found.append(
                BenchmarkPredictions(
                    name,
                    list(paths[rows]),
                    labels[rows].astype(np.int64),
                    probabilities=softmax(head_logits),
                    class_names=list(info.class_names),
                    positive_classes=positive,
                )
            )
        else:
            found.append(BenchmarkPredictions(name, list(paths[rows]), labels[rows], scores=head_logits.mean(axis=1)))
    return found


def write_split_reports(
    split_dir: Path, split: int, learning_rate: float, task, data_args, ds, output, meaning: str
) -> list[Report]:
    """`split_<k>/report/` (one sub-folder per dataset of a multi-dataset run)."""
    predictions = test_predictions(task, data_args, ds, output)
    reports = []
    for item in predictions:
        out = split_dir / REPORT_DIR / (item.dataset if len(predictions) > 1 else "")
        reports.append(
            benchmark_report(
                item,
                out,
                f"{item.dataset} · split {split} · test",
                context=f"The model selected on validation (learning rate {learning_rate:g})"
                " on the held-out test part.",
                score_meaning=meaning,
            )
        )
    return reports


def write_summary_report(
    output_dir: Path, results: dict, histories: dict[str, list[dict]], candidates: list[dict], best_metric: str
) -> Report:
    """`report/`: the run's curves, sweep and per-split metrics (`histories`: the Trainer's `log_history` per
    `split k · lr x`; `candidates`: `{split, learning_rate, validation}` per trained model)."""
    report = Report(Path(output_dir) / REPORT_DIR, f"Training run: {results['dataset']} ({results['task']})")
    report.heading("Training")
    report.figure(
        "training_curves",
        training_curves(histories, best_metric),
        f"Training loss per logging step and validation {best_metric.upper()} per epoch, per run.",
    )
    report.heading("Learning rates (chosen on validation)")
    report.table(
        ["split", "learning rate", f"validation {best_metric}", "chosen"],
        [
            [
                c["split"],
                f"{c['learning_rate']:g}",
                c["validation"].get(best_metric, float("nan")),
                "✓" if c["chosen"] else "",
            ]
            for c in candidates
        ],
    )
    report.heading("Test metrics per split")
    names = list(results["aggregate"])
    rows = [[row["split"], *(row["test"].get(n, float("nan")) for n in names)] for row in results["splits"]]
    for how in ("median", "mean"):
        marker = " (reported)" if how == results["metric_aggregation"] else ""
        aggregate = aggregate_splits([r["test"] for r in results["splits"]], how=how)
        rows.append([how + marker, *(aggregate[n] for n in names)])
    report.table(["split", *names], rows)
    for name, metrics in results.get("cross_dataset", {}).items():
        report.heading(f"Cross-dataset: {name}")
        report.table(["metric", "value"], [[k, v] for k, v in metrics.items()])
    report.paragraph(
        "Each split's own report (its test images, figures and worst cases) is in split_<k>/report/report.html."
    )
    report.save()
    return report


__all__ = ["test_predictions", "write_split_reports", "write_summary_report"]
