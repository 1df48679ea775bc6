"""An experiment: every split of a dataset (IQA 10, LaMem 5, EmotionROI 5, EmoSet 1), an optional learning-rate
sweep chosen on validation, `results.json` + `results.md` with per-split values and the task's median (IQA) or mean,
and cross-dataset evaluation of each trained model, written in the run layout of :mod:`perceptclip_hf.run_layout`.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

from transformers import TrainingArguments, set_seed

from ..data import get_dataset_info
from ..errors import ConfigurationError, one_line
from ..evaluation.benchmark import cross_dataset_evaluation
from ..metrics import aggregate_splits
from ..modeling import check_config
from ..output_lock import RUN_FOLDER_LOCK, OutputLock
from ..output_safety import check_writable_folder
from ..reports import HTML_FILE
from ..run_layout import REPORT_DIR, RESULTS_FILE, RESULTS_TABLE, STAGE2_DIR, lr_dir, split_dir, split_model_dir
from ..tasks import score_meaning
from .recipe import DataArguments, ExperimentArguments, ModelArguments
from .run_log import run_log
from .run_reports import write_split_reports, write_summary_report
from .task import build_model, model_config_kwargs, resolve_task, vision_config_of
from .trainer import evaluate_parts, prepare_splits, stage2_heads, train_one, training_arguments

logger = logging.getLogger(__name__)


def run_experiment(
    model_args, data_args: DataArguments, experiment: ExperimentArguments, base_args: TrainingArguments
) -> dict:
    """Train and test on every requested split (and LR), write `results.json` / `results.md`, save models; the
    main process logs it all to `<output_dir>/train.log`."""
    task = validate_arguments(model_args, data_args, experiment, base_args)
    main = base_args.process_index == 0
    with (
        run_log(base_args.output_dir, main) as log_path,  # (opens the log: writes nothing yet)
        run_folder_lock(base_args.output_dir) if main else nullcontext(),
    ):
        logger.info(
            "experiment: %s (%s), split(s) %s, learning rate(s) %s; log %s",
            "+".join(task.datasets),
            task.name,
            data_args.splits,
            experiment.learning_rates or [base_args.learning_rate],
            log_path,
        )
        results = _run_experiment(task, model_args, data_args, experiment, base_args)
        logger.info("results (%s over splits): %s", task.aggregation, rounded(results["aggregate"]))
    return results


def run_folder_lock(output_dir: str) -> OutputLock:
    """One run per ``output_dir`` (taken as the block starts): a second one is refused while this one writes there;
    a killed run's lock is taken over, with a warning in the log."""
    fix = "wait for it to end, or stop it; or give another --output_dir"
    return OutputLock(Path(output_dir) / RUN_FOLDER_LOCK, f"--output_dir {output_dir}", fix)


def _run_experiment(
    task, model_args, data_args: DataArguments, experiment: ExperimentArguments, base_args: TrainingArguments
) -> dict:
    output_dir = Path(base_args.output_dir)
    learning_rates = experiment.learning_rates or [base_args.learning_rate]
    multi = len(task.datasets) > 1
    split_results, histories, sweep = [], {}, []
    for split in data_args.splits:
        candidates = []
        for lr in learning_rates:
            run_dir = lr_dir(output_dir, split, lr)
            set_seed(base_args.seed)
            resize = data_args.resize_short_for(task.datasets[0]) if task.spec.multi_crop_test else None
            model = build_model(model_args, task, test_resize_short=resize)
            data = prepare_splits(task, data_args, split, model, base_args.seed)
            args = training_arguments(base_args, run_dir, task, lr, multi)
            outputs: dict = {}
            trainer, validation, test = train_one(
                model, task, data, args, experiment.early_stopping_patience, experiment.resume, outputs
            )
            if multi and experiment.stage2_epochs > 0:
                stage2_heads(model, task, data, args, experiment.stage2_epochs, run_dir / STAGE2_DIR)
                validation, test = evaluate_parts(trainer, data, outputs=outputs)
            candidates.append(
                {
                    "learning_rate": lr,
                    "validation": validation,
                    "test": test,
                    "trainer": trainer,
                    "test_set": data.get("test"),
                    "test_output": outputs.get("test"),
                }
            )
            histories[f"split {split} · lr {lr:g}"] = list(trainer.state.log_history)
            logger.info("split %s lr %g: validation %s; test %s", split, lr, rounded(validation), rounded(test))
        best = max(candidates, key=lambda c: c["validation"].get(task.best_metric, float("-inf")))
        sweep += [
            {"split": split, "learning_rate": c["learning_rate"], "validation": c["validation"], "chosen": c is best}
            for c in candidates
        ]
        model_dir = split_model_dir(output_dir, split)
        if experiment.save_model or experiment.cross_eval_dataset:
            best["trainer"].save_model(str(model_dir))
        if experiment.report and base_args.process_index == 0 and best["test_output"] is not None:
            write_split_reports(
                split_dir(output_dir, split),
                split,
                best["learning_rate"],
                task,
                data_args,
                best["test_set"],
                best["test_output"],
                score_meaning(best["trainer"].model.config),
            )
        row = {
            "split": split,
            "learning_rate": best["learning_rate"],
            "validation": best["validation"],
            "test": best["test"],
        }
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
            "learning_rates": learning_rates,
            "epochs": base_args.num_train_epochs,
            "batch_size": base_args.per_device_train_batch_size,
            "weight_decay": base_args.weight_decay,
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
    if experiment.report and base_args.process_index == 0:
        summary = write_summary_report(output_dir, results, histories, sweep, task.best_metric)
        logger.info("report: %s (and split_<k>/%s/report.html per split)", summary.out_dir / HTML_FILE, REPORT_DIR)
    return results


def rounded(metrics: dict) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "none"


def per_dataset_results(name: str, split_results: list[dict], task) -> dict:
    """One dataset's test metrics of a multi-dataset run (its head's `<name>_<metric>` entries)."""
    prefix = name + "_"
    splits = [
        {"split": row["split"], "test": {k[len(prefix) :]: v for k, v in row["test"].items() if k.startswith(prefix)}}
        for row in split_results
    ]
    return {
        "task": task.name,
        "metric_aggregation": task.aggregation,
        "splits": splits,
        "aggregate": aggregate_splits([row["test"] for row in splits], how=task.aggregation),
    }


def validate_arguments(
    model_args,
    data_args: DataArguments,
    experiment: ExperimentArguments,
    training_args: TrainingArguments | None = None,
):
    """Check a recipe before any work (one place): known datasets of one task, one data_dir each, splits in range,
    valid model options, and with `training_args` a run that can learn and write its output. A problem is a
    :class:`ConfigurationError` naming the option(s). Returns the task."""
    if len(data_args.data_dir) != len(data_args.dataset):
        raise ConfigurationError(
            f"--data_dir: give one folder per --dataset: {len(data_args.dataset)} dataset(s) "
            f"{data_args.dataset}, {len(data_args.data_dir)} data_dir {data_args.data_dir}"
        )
    if len(experiment.cross_eval_data_dir) != len(experiment.cross_eval_dataset):
        raise ConfigurationError(
            "--cross_eval_data_dir: give one folder per --cross_eval_dataset "
            f"{experiment.cross_eval_dataset}, got {experiment.cross_eval_data_dir}"
        )
    data_args.check_own_data_options()
    task = resolve_task([data_args.dataset_info(name) for name in data_args.dataset])
    for name in experiment.cross_eval_dataset:
        if get_dataset_info(name).task != task.name:
            raise ConfigurationError(f"--cross_eval_dataset {name}: not a {task.name} dataset, as --dataset is")
    if not data_args.splits:
        raise ConfigurationError("--splits: give at least one split index, e.g. --splits 0")
    for name in task.datasets:
        info = data_args.dataset_info(name)
        bad = [s for s in data_args.splits if not 0 <= s < info.num_splits]
        if bad:
            raise ConfigurationError(
                f"--splits {bad}: out of range for {name}, whose splits are 0..{info.num_splits - 1}"
            )
    if not 0 < data_args.validation_fraction < 1:
        raise ConfigurationError(
            f"--validation_fraction {data_args.validation_fraction}: the share of the "
            "training content held out for model selection must be between 0 and 1 (e.g. 0.1)"
        )
    if model_args.vision_config is None and not model_args.base_model_name_or_path:
        raise ConfigurationError(
            "Give --base_model_name_or_path (pretrained backbone) or --vision_config (random backbone)."
        )
    config = check_model_options(model_args, task)
    if training_args is not None:
        check_run(config.loss, data_args, experiment, training_args)
    return task


def check_model_options(model_args, task):
    """The model config the options describe; the config's ValueError becomes a ConfigurationError naming the
    option (`--adaptation: PerceptCLIPConfig.adaptation='x': expected one of [...]`)."""
    vision = vision_config_of(model_args)
    try:
        return check_config(vision_config=vision, **model_config_kwargs(model_args, task))
    except ValueError as err:
        cause = one_line(err)
        named = re.search(r"PerceptCLIPConfig\.(\w+)|field '(\w+)'", cause)
        name = next((n for n in (named.groups() if named else ()) if n), None)
        option = (
            f"--{name}"
            if name in {f.name for f in fields(ModelArguments)}
            else "--vision_config"
            if vision is not None
            else "model options"
        )
        raise ConfigurationError(f"{option}: {cause if len(cause) < 300 else cause[:300] + '…'}") from None


def check_run(
    loss: str, data_args: DataArguments, experiment: ExperimentArguments, training_args: TrainingArguments
) -> None:
    """Refuse a run that cannot learn (no positive learning rate, no steps, a PLCC batch of one image) or that
    cannot write its `output_dir`."""
    name, rates = (
        ("learning_rates", experiment.learning_rates)
        if experiment.learning_rates
        else ("learning_rate", [training_args.learning_rate])
    )
    if any(rate <= 0 for rate in rates):
        raise ConfigurationError(
            f"--{name} {' '.join(f'{r:g}' for r in rates)}: every learning rate must be > 0 "
            "(0 leaves the model untrained, < 0 climbs the loss); e.g. 1e-4"
        )
    if training_args.num_train_epochs <= 0 and training_args.max_steps <= 0:
        raise ConfigurationError(
            f"--num_train_epochs {training_args.num_train_epochs:g} with --max_steps "
            f"{training_args.max_steps}: trains nothing; give --num_train_epochs > 0 "
            "(or --max_steps > 0)"
        )
    batch = training_args.per_device_train_batch_size
    if batch < 1:
        raise ConfigurationError(f"--per_device_train_batch_size {batch}: must be ≥ 1")
    samples = data_args.max_train_samples
    if samples is not None and samples < 1:
        raise ConfigurationError(f"--max_train_samples {samples}: must be ≥ 1 (or unset for every image)")
    if loss == "plcc" and batch < 2:
        raise ConfigurationError(
            f"--loss plcc with --per_device_train_batch_size {batch}: PLCC correlates the "
            "scores of a batch, one image has none (loss 0, gradient 0 at every step); use a "
            "batch ≥ 2 (the recipes use 32) or --loss mse"
        )
    if loss == "plcc" and samples is not None and samples < batch:
        raise ConfigurationError(
            f"--loss plcc with --max_train_samples {samples} < --per_device_train_batch_size "
            f"{batch}: PLCC needs full batches of images to correlate; raise "
            "--max_train_samples or lower the batch"
        )
    check_writable_folder(training_args.output_dir)


def write_results(results: dict, output_dir: Path) -> None:
    """`results.json` and a markdown table of the per-split test metrics and their aggregate."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    names = list(results["aggregate"])
    lines = [
        f"# {results['dataset']} ({results['task']})",
        "",
        "| split | lr | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for row in results["splits"]:
        lines.append(
            f"| {row['split']} | {row['learning_rate']:g} | "
            + " | ".join(f"{row['test'].get(n, float('nan')):.4f}" for n in names)
            + " |"
        )
    lines.append(
        f"| **{results['metric_aggregation']}** | | "
        + " | ".join(f"**{results['aggregate'][n]:.4f}**" for n in names)
        + " |"
    )
    (output_dir / RESULTS_TABLE).write_text("\n".join(lines) + "\n")
