"""The evaluation protocol: every split of a dataset (IQA 10, LaMem 5, EmotionROI 5, EmoSet 1), an optional
learning-rate sweep chosen on validation, `results.json` + `results.md` with per-split values and the median (IQA)
or mean (others); and cross-dataset evaluation of a trained model."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
from transformers import TrainingArguments, set_seed

from .data import benchmark_splits, get_dataset_info, load_benchmark
from .metrics import aggregate_splits, classification_metrics, regression_metrics
from .training import (
    DataArguments,
    ExperimentArguments,
    ModelArguments,
    build_model,
    evaluate_parts,
    prepare_splits,
    resolve_task,
    stage2_heads,
    train_one,
    training_arguments,
)

logger = logging.getLogger(__name__)


def run_experiment(model_args: ModelArguments, data_args: DataArguments, experiment: ExperimentArguments,
                   base_args: TrainingArguments) -> dict:
    """Train and test on every requested split (and LR), write `results.json` / `results.md`, save models."""
    task = validate_arguments(model_args, data_args, experiment)
    output_dir = Path(base_args.output_dir)
    learning_rates = experiment.learning_rates or [base_args.learning_rate]
    multi = len(task.datasets) > 1
    split_results = []
    for split in data_args.splits:
        candidates = []
        for lr in learning_rates:
            run_dir = output_dir / f"split_{split}" / f"lr_{lr:g}"
            set_seed(base_args.seed)
            resize = data_args.resize_short_for(task.datasets[0]) if task.name == "quality" else None
            model = build_model(model_args, task, test_resize_short=resize)
            data = prepare_splits(task, data_args, split, model, base_args.seed)
            args = training_arguments(base_args, run_dir, task, lr, multi)
            trainer, validation, test = train_one(model, task, data, args, experiment.early_stopping_patience,
                                                  experiment.resume)
            if multi and experiment.stage2_epochs > 0:
                stage2_heads(model, task, data, args, experiment.stage2_epochs, run_dir)
                validation, test = evaluate_parts(trainer, data)
            candidates.append({"learning_rate": lr, "validation": validation, "test": test, "trainer": trainer})
            logger.info("split %s lr %g: validation %s test %s", split, lr, validation, test)
        best = max(candidates, key=lambda c: c["validation"].get(task.best_metric, float("-inf")))
        model_dir = output_dir / f"split_{split}" / "model"
        if experiment.save_model or experiment.cross_eval_dataset:
            best["trainer"].save_model(str(model_dir))
        row = {"split": split, "learning_rate": best["learning_rate"], "validation": best["validation"],
               "test": best["test"]}
        if experiment.cross_eval_dataset:
            row["cross_dataset"] = {
                name: cross_dataset_evaluation(str(model_dir), name, data_dir, seed=base_args.seed)
                for name, data_dir in zip(experiment.cross_eval_dataset, experiment.cross_eval_data_dir)
            }
        split_results.append(row)
    results = {
        "dataset": task.datasets[0] if not multi else "+".join(task.datasets),
        "task": task.name,
        "metric_aggregation": task.aggregation,
        "splits": split_results,
        "aggregate": aggregate_splits([r["test"] for r in split_results], how=task.aggregation),
        "training": {
            "learning_rates": learning_rates, "epochs": base_args.num_train_epochs,
            "batch_size": base_args.per_device_train_batch_size, "weight_decay": base_args.weight_decay,
            "base_model": model_args.base_model_name_or_path if model_args.vision_config is None else None,
            **{k: v for k, v in asdict(model_args).items() if k != "base_model_name_or_path"},
        },
    }
    if multi:  # each head's own metrics, in the single-dataset form
        results["datasets"] = {name: per_dataset_results(name, split_results, task) for name in task.datasets}
    if experiment.cross_eval_dataset:
        results["cross_dataset"] = {
            name: aggregate_splits([r["cross_dataset"][name] for r in split_results], how=task.aggregation)
            for name in experiment.cross_eval_dataset
        }
    write_results(results, output_dir)
    return results


def per_dataset_results(name: str, split_results: list[dict], task) -> dict:
    """One dataset's test metrics of a multi-dataset run (its head's `<name>_<metric>` entries)."""
    prefix = name + "_"
    splits = [{"split": row["split"], "test": {k[len(prefix):]: v for k, v in row["test"].items()
                                              if k.startswith(prefix)}} for row in split_results]
    return {"task": task.name, "metric_aggregation": task.aggregation, "splits": splits,
            "aggregate": aggregate_splits([row["test"] for row in splits], how=task.aggregation)}


def validate_arguments(model_args: ModelArguments, data_args: DataArguments, experiment: ExperimentArguments):
    """Check a recipe before any work: known datasets of one task, one data_dir each, valid choices and splits.
    Returns the task."""
    if len(data_args.data_dir) != len(data_args.dataset):
        raise ValueError(f"Give one data_dir per dataset: {len(data_args.dataset)} datasets "
                         f"{data_args.dataset}, {len(data_args.data_dir)} data_dir {data_args.data_dir}.")
    if len(experiment.cross_eval_data_dir) != len(experiment.cross_eval_dataset):
        raise ValueError("Give one cross_eval_data_dir per cross_eval_dataset.")
    task = resolve_task(data_args.dataset)
    for name in experiment.cross_eval_dataset:
        if get_dataset_info(name).task != task.name:
            raise ValueError(f"cross_eval_dataset {name!r} is not a {task.name} dataset.")
    for name in task.datasets:
        info = get_dataset_info(name)
        bad = [s for s in data_args.splits if not 0 <= s < info.num_splits]
        if bad:
            raise ValueError(f"splits {bad} out of range for {name} (0..{info.num_splits - 1}).")
    choices = {"adaptation": ("lora", "frozen", "full"), "head_type": ("mlp", "linear"),
               "loss": (None, "plcc", "mse", "cross_entropy")}
    for name, allowed in choices.items():
        if getattr(model_args, name) not in allowed:
            raise ValueError(f"{name}={getattr(model_args, name)!r}: expected one of {list(allowed)}.")
    if model_args.vision_config is None and not model_args.base_model_name_or_path:
        raise ValueError("Give base_model_name_or_path (pretrained backbone) or vision_config (random backbone).")
    if (model_args.loss == "cross_entropy") != (task.name == "emotion") and model_args.loss is not None:
        raise ValueError(f"loss {model_args.loss!r} does not fit the {task.name} task.")
    return task


def write_results(results: dict, output_dir: Path) -> None:
    """`results.json` and a markdown table of the per-split test metrics and their aggregate."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    names = list(results["aggregate"])
    lines = [f"# {results['dataset']} ({results['task']})", "",
             "| split | lr | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for row in results["splits"]:
        lines.append(f"| {row['split']} | {row['learning_rate']:g} | "
                     + " | ".join(f"{row['test'].get(n, float('nan')):.4f}" for n in names) + " |")
    lines.append(f"| **{results['metric_aggregation']}** | | "
                 + " | ".join(f"**{results['aggregate'][n]:.4f}**" for n in names) + " |")
    (output_dir / "results.md").write_text("\n".join(lines) + "\n")


def evaluate_benchmark(scorer, dataset: str, data_dir: str, split: int | None = None, part: str = "test",
                       progress=None) -> tuple[dict, int]:
    """The paper's metrics of a `PerceptScorer` on a benchmark part (`split=None`: the whole dataset, as THINGS in
    the paper) and its number of images. IQA: the scorer's 15 test crops, PLCC after the 4-parameter logistic fit;
    a model's score direction is matched to the dataset's (LIVE DMOS); emotion classes are matched by name."""
    info = get_dataset_info(dataset)
    ds = load_benchmark(info.name, data_dir)
    if split is not None:
        parts = benchmark_splits(info.name, ds, split, data_dir=data_dir)
        if part not in parts:
            raise ValueError(f"{info.name} split {split} has parts {list(parts)}, not {part!r}")
        ds = parts[part]
    predictions = scorer.iter_predictions(ds)
    results = list(progress(predictions, total=len(ds)) if progress else predictions)
    labels = ds["label"]
    if not scorer.is_classification:
        sign = 1.0 if scorer.higher_is_better == info.higher_is_better else -1.0
        return regression_metrics([sign * r["score"] for r in results], labels), len(ds)
    class_names = list(info.class_names or ds.features["label"].names)
    model_labels = [label.lower() for label in scorer.labels]
    missing = [name for name in class_names if name.lower() not in model_labels]
    if missing:
        raise ValueError(f"the model's labels {scorer.labels} lack the dataset's classes {missing}")
    order = [model_labels.index(name.lower()) for name in class_names]
    probabilities = np.array([[list(r["probabilities"].values())[i] for i in order] for r in results])
    positive = [class_names.index(c) for c in info.positive_classes] if info.positive_classes else None
    metrics = classification_metrics(probabilities, np.asarray(labels, dtype=np.int64), positive_classes=positive)
    return metrics, len(ds)


def cross_dataset_evaluation(model_dir: str, dataset: str, data_dir: str, split: int | None = None,
                             seed: int = 0) -> dict:
    """Metrics of a trained model on another dataset (e.g. train FLIVE, test KonIQ), PLCC after the 4-parameter
    logistic fit, with the dataset's test-time resize."""
    from .inference import PerceptScorer

    scorer = PerceptScorer.from_pretrained(model_dir, seed=seed, resize_short=get_dataset_info(dataset).test_resize_short)
    return evaluate_benchmark(scorer, dataset, data_dir, split)[0]
