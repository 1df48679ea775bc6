"""Trainer glue: a recipe's datasets as Trainer inputs (the task's transforms, one `head` column for
multi-dataset training), the metrics callback, TrainingArguments per run, training with early stopping and the
multi-dataset stage 2 (paper sec. 3.1-3.2, A.1). The loop over splits and learning rates is `experiment`'s."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import ADAPTER_SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..data import repeat_dataset
from ..errors import corrupt_weights
from ..metrics import aggregate_splits
from ..preprocessing import transform_kwargs, with_image_transform
from ..tasks import build_transform
from .recipe import DataArguments
from .run_log import HistoryCallback
from .task import TrainingTask

logger = logging.getLogger(__name__)
TRAINER_STATE_FILE = TRAINER_STATE_NAME


class PerHeadTransform:
    """A batch transform that routes each row to its dataset's transform and passes the `head` index through,
    so one shuffled multi-dataset stream feeds every head (proportional sampling, paper sec. 3.2)."""

    image_column = "image"

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, batch):
        heads = [int(h) for h in batch["head"]]
        out: dict[str, list] = {}
        for head_index in sorted(set(heads)):
            rows = [i for i, h in enumerate(heads) if h == head_index]
            part = self.transforms[head_index]({k: [v[i] for i in rows] for k, v in batch.items()})
            for key, values in part.items():
                out.setdefault(key, [None] * len(heads))
                for row, value in zip(rows, values):
                    out[key][row] = value
        out["head"] = [torch.tensor(h) for h in heads]
        return out


SHARED_COLUMNS = ("image", "label", "image_name")


def prepare_splits(task: TrainingTask, data_args: DataArguments, split: int, model, seed: int) -> dict[str, Dataset]:
    """Train / validation / test sets with the paper's transforms; several datasets are concatenated with a
    `head` column (their index) and each row keeps its own dataset's transform."""
    base_kwargs = transform_kwargs(model.config)
    if data_args.crop_size:
        base_kwargs["crop_size"] = data_args.crop_size
    multi = len(task.datasets) > 1
    raw: dict[str, list[Dataset]] = {"train": [], "validation": [], "test": []}
    transforms: dict[str, list] = {"train": [], "validation": [], "test": []}
    for head_index, (name, data_dir) in enumerate(zip(task.datasets, data_args.data_dir)):
        info = data_args.dataset_info(name)
        splits = data_args.split_parts(name, data_dir, split)
        if data_args.max_train_samples and "train" in splits:
            train = splits["train"].shuffle(seed=seed)
            splits["train"] = train.select(range(min(len(train), data_args.max_train_samples)))
        replicas = data_args.replicas or info.replicas if task.spec.multi_crop_test else 1
        logger.info(
            "data: %s split %d (%s protocol): %s images%s",
            name,
            split,
            info.split_protocol,
            ", ".join(f"{part} {len(ds)}" for part, ds in splits.items()),
            f"; each train image {replicas} times per epoch" if replicas > 1 else "",
        )
        for part in raw:
            if part not in splits:
                continue
            kwargs = dict(base_kwargs, interpolation=info.interpolation)
            ds = splits[part]
            if task.spec.multi_crop_test:  # IQA: native-resolution crops after the protocol's resize, replicas
                kwargs["resize_short"] = data_args.resize_short_for(name)
                if part != "train":
                    kwargs.update(num_crops=data_args.test_crops if part == "test" else data_args.eval_crops, seed=seed)
                else:
                    ds = repeat_dataset(ds, replicas)
            if multi:
                label_type = Value(task.spec.label_dtype)
                ds = ds.select_columns(list(SHARED_COLUMNS)).cast_column("label", label_type)
                ds = ds.add_column("head", [head_index] * len(ds))
            raw[part].append(ds)
            transforms[part].append(build_transform(task.spec, part == "train", **kwargs))
    data = {}
    for part, sets in raw.items():
        if not sets:
            continue
        if multi:
            data[part] = with_image_transform(concatenate_datasets(sets), PerHeadTransform(transforms[part]))
        else:
            data[part] = with_image_transform(sets[0], transforms[part][0])
    return data


def make_compute_metrics(task: TrainingTask):
    """EvalPrediction → the task's metrics; for multi-dataset sets, per-head metrics and their mean."""

    def metrics_of(logits, labels, head: int = 0):
        logits = logits[:, : task.head_sizes[head]]  # a smaller head's padding columns (-inf) are dropped
        return task.spec.metrics(logits, labels, task.head_positive_classes[head])

    def compute_metrics(eval_prediction):
        logits = np.asarray(eval_prediction.predictions)
        labels = eval_prediction.label_ids
        if isinstance(labels, (tuple, list)):  # (labels, head)
            labels, heads = np.asarray(labels[0]), np.asarray(labels[1]).reshape(-1)
            per_head = {
                task.datasets[h]: metrics_of(logits[heads == h], labels[heads == h], h) for h in np.unique(heads)
            }
            merged = {f"{name}_{k}": v for name, m in per_head.items() for k, v in m.items()}
            merged.update(aggregate_splits(list(per_head.values()), how="mean"))
            return merged
        return metrics_of(logits, np.asarray(labels))

    return compute_metrics


def training_arguments(
    base: TrainingArguments, output_dir: Path, task: TrainingTask, learning_rate: float, multi: bool
) -> TrainingArguments:
    """The run's TrainingArguments: the recipe's best-model selection on validation, per run directory."""
    values = base.to_dict()
    values.update(
        output_dir=str(output_dir),
        learning_rate=learning_rate,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=task.best_metric,
        greater_is_better=True,
        remove_unused_columns=False,
        label_names=["labels", "head"] if multi else ["labels"],
    )
    for key in [k for k in values if k.startswith("_") or k in ("push_to_hub_token",)]:
        values.pop(key)
    return TrainingArguments(
        **{
            k: v
            for k, v in values.items()
            if k in TrainingArguments.__dataclass_fields__ and TrainingArguments.__dataclass_fields__[k].init
        }
    )


def train_one(
    model,
    task: TrainingTask,
    data: dict[str, Dataset],
    args: TrainingArguments,
    patience: int,
    resume: bool,
    outputs: dict | None = None,
) -> tuple[Trainer, dict, dict]:
    """Train with early stopping, keep the best checkpoint on validation, return validation and test metrics (and
    in `outputs`, the predictions of each part: :func:`evaluate_parts`)."""
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data.get("validation"),
        compute_metrics=make_compute_metrics(task),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience), HistoryCallback()],
    )
    for line in start_summary(model, args):
        logger.info(line)
    checkpoint = last_complete_checkpoint(args.output_dir) if resume else None
    if resume and checkpoint is None:
        logger.info("--resume: no complete checkpoint in %s yet, training from scratch", args.output_dir)
    elif checkpoint is not None:
        state = json.loads((Path(checkpoint) / TRAINER_STATE_FILE).read_text())
        logger.info(
            "resuming from %s (epoch %g, step %d)",
            Path(checkpoint).name,
            round(state.get("epoch") or 0, 4),
            state.get("global_step", 0),
        )
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer, *evaluate_parts(trainer, data, outputs=outputs)


def start_summary(model, args: TrainingArguments) -> list[str]:
    """What a run is about to do: its model (backbone, adaptation, trainable parameters), device and folder (its data
    sizes are logged by :func:`prepare_splits`)."""
    config = model.config
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    adaptation = config.adaptation
    if adaptation == "lora":
        adaptation += f" (r={config.lora_r}, alpha={config.lora_alpha:g}, on {'/'.join(config.lora_target_modules)})"
    precision = "bf16 mixed" if args.bf16 else "fp16 mixed" if args.fp16 else str(next(model.parameters()).dtype)
    epochs = f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
    return [
        f"run: {args.output_dir}",
        f"  model: {config.vision_config.model_type} backbone "
        f"({config.base_model_name_or_path or 'randomly initialised'}), adaptation {adaptation}, head "
        f"{config.head_hidden_sizes} → {config.num_labels}, loss {config.loss}; "
        f"{trainable:,} trainable of {total:,} parameters",
        f"  device: {args.device.type} ({precision}), {args.world_size} process(es), batch "
        f"{args.per_device_train_batch_size} per device, {epochs}, learning rate {args.learning_rate:g}",
    ]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint whose files are all there and whole (:func:`checkpoint_problem`); `None` if there is
    none. A kill can leave newer ones incomplete: while `Trainer._save_checkpoint` writes (weights, optimizer,
    scheduler, RNG state, `trainer_state.json` last; `torch.save` truncated mid-file) or while its rotation deletes an
    older folder (`shutil.rmtree`, in no set order). Each one skipped is a warning naming it and what is wrong."""

    def step(path: Path) -> int:
        suffix = path.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        return int(suffix) if suffix.isdigit() else -1

    for checkpoint in sorted(Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"), key=step, reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning(
            "Not resuming from %s: %s (an interrupted save or deletion left it incomplete).", checkpoint, problem
        )
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What makes a Trainer checkpoint unusable for resuming, or `None`. Cheap checks: `trainer_state.json` parses,
    the weights' safetensors headers read, and the `torch.save` files (optimizer, scheduler, RNG state) are
    non-empty zip archives with their end record (what a truncated file lacks); nothing is loaded."""
    try:
        json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE_FILE} is missing or unreadable ({type(err).__name__})"
    try:
        weights = _weights_files(checkpoint)
    except (OSError, ValueError, KeyError) as err:
        return f"{SAFE_WEIGHTS_INDEX_NAME} is unreadable ({type(err).__name__})"
    absent = [path.name for path in weights if not path.is_file()]
    if not weights or absent:
        return f"its weights are missing ({', '.join(absent) or SAFE_WEIGHTS_NAME})"
    corrupt = next(corrupt_weights([checkpoint]), None)
    if corrupt:
        return f"{Path(corrupt[0]).name} is corrupt or truncated ({corrupt[1]})"
    rng_states = sorted(checkpoint.glob("rng_state*.pth"))  # rng_state.pth, or rng_state_<rank>.pth with DDP
    for path in [checkpoint / OPTIMIZER_NAME, checkpoint / SCHEDULER_NAME, *rng_states]:
        if not path.is_file() or path.stat().st_size == 0 or not zipfile.is_zipfile(path):
            return f"{path.name} is missing, empty or truncated"
    return None if rng_states else "rng_state.pth is missing"


def _weights_files(checkpoint: Path) -> list[Path]:
    """The safetensors files the checkpoint's model was saved to: its index's shards, else the single file
    (`model.safetensors`, or a PEFT model's `adapter_model.safetensors`)."""
    index = checkpoint / SAFE_WEIGHTS_INDEX_NAME
    if index.exists():
        return [checkpoint / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [checkpoint / n for n in (SAFE_WEIGHTS_NAME, ADAPTER_SAFE_WEIGHTS_NAME) if (checkpoint / n).exists()]


def evaluate_parts(
    trainer: Trainer, data: dict[str, Dataset], parts=("validation", "test"), outputs: dict | None = None
) -> list[dict]:
    """The task metrics of each part present in `data` (empty dict for an absent part), without the prefix; with
    `outputs`, each part's `PredictionOutput` (predictions, label ids) is kept there under its name."""
    results = []
    for part in parts:
        metrics = {}
        if part in data:
            output = trainer.predict(data[part], metric_key_prefix=part)
            metrics = output.metrics
            if outputs is not None:
                outputs[part] = output
        results.append(
            {
                k[len(part) + 1 :]: v
                for k, v in metrics.items()
                if k.startswith(part + "_")
                and isinstance(v, float)
                and not k.endswith(("_runtime", "_per_second", "_loss"))
            }
        )
    return results


def stage2_heads(
    model, task: TrainingTask, data: dict[str, Dataset], base_args: TrainingArguments, epochs: float, output_dir: Path
) -> None:
    """Multi-dataset stage 2 (paper sec. 3.2): encoder frozen, each head tuned on its own dataset (checkpoints in
    `output_dir/<dataset>`)."""
    model.freeze_backbone()
    for param in model.heads.parameters():
        param.requires_grad = False
    for head_index, name in enumerate(task.datasets):
        head_params = list(model.heads[name].parameters())
        for param in head_params:
            param.requires_grad = True
        own = {part: _rows_of_head(ds, head_index) for part, ds in data.items()}
        args = training_arguments(base_args, output_dir / name, task, base_args.learning_rate, True)
        args.num_train_epochs = epochs
        Trainer(
            model=model,
            args=args,
            train_dataset=own["train"],
            eval_dataset=own.get("validation"),
            compute_metrics=make_compute_metrics(task),
        ).train()
        for param in head_params:
            param.requires_grad = False


def _rows_of_head(ds: Dataset, head_index: int) -> Dataset:
    """The rows of one dataset in a multi-dataset set (its transform is kept by `select`)."""
    heads = ds.with_format(None)["head"]
    return ds.select([i for i, h in enumerate(heads) if h == head_index])
