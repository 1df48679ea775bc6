"""Training on the HF Trainer: the paper's recipe (sec. 3.1, A.1), its evaluation protocol and multi-dataset
training (sec. 3.2). `train.py` is a thin command line over `run_experiment`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .data import benchmark_splits, build_transform, get_dataset_info, load_benchmark, repeat_dataset
from .data.transforms import with_image_transform
from .inference import transform_kwargs
from .metrics import aggregate_splits, classification_metrics, regression_metrics
from .modeling import (
    PerceptCLIPConfig,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """The model: a pretrained backbone (Hub id or local dir) or, offline, a randomly initialised `vision_config`."""

    base_model_name_or_path: str | None = field(
        default="openai/clip-vit-large-patch14",
        metadata={"help": "Pretrained backbone (Hub id or local dir): CLIP ViT-B/32, B/16, L/14, DINOv2, ViT..."})
    vision_config: str | None = field(
        default=None, metadata={"help": "Backbone config (YAML mapping or JSON string) of a randomly initialised "
                                        "backbone (offline runs); used instead of base_model_name_or_path."})
    adaptation: str = field(default="lora", metadata={"help": "lora | frozen | full (paper sec. 7)."})
    head_type: str = field(default="mlp", metadata={"help": "mlp (768-512-256-out) | linear."})
    head_hidden_sizes: list[int] = field(default_factory=lambda: [512, 256])
    head_dropout: float = 0.5
    lora_r: int = 16
    lora_alpha: float = 8
    lora_dropout: float = 0.1
    loss: str | None = field(default=None, metadata={"help": "plcc | mse | cross_entropy (default: the task's)."})


@dataclass
class DataArguments:
    """The data: one dataset, or several for multi-dataset training (one head each), and the split protocol."""

    dataset: list[str] = field(default_factory=lambda: ["synthetic_iqa"],
                               metadata={"help": "Registry name(s); see `perceptclip list`."})
    data_dir: list[str] = field(default_factory=lambda: ["outputs/synthetic_iqa"],
                                metadata={"help": "Folder of each dataset in its original layout."})
    splits: list[int] = field(default_factory=lambda: [0], metadata={"help": "Split indices to run (protocol)."})
    validation_fraction: float = 0.1
    crop_size: int | None = field(default=None, metadata={"help": "Default: the backbone's image size."})
    test_crops: int = field(default=15, metadata={"help": "IQA test-time random crops averaged per image."})
    eval_crops: int = field(default=15, metadata={"help": "IQA validation crops (model selection)."})
    replicas: int | None = field(default=None, metadata={"help": "IQA train replicas per epoch (default: dataset's)."})
    resize_short: int | None = field(default=None, metadata={
        "help": "IQA: resize the short side before cropping (default: the dataset's protocol, e.g. 384 for KonIQ)."})
    max_train_samples: int | None = None

    def resize_short_for(self, name: str) -> int | None:
        """IQA short-side resize of dataset `name`: the override, else its protocol's."""
        return self.resize_short or get_dataset_info(name).test_resize_short


@dataclass
class ExperimentArguments:
    """Protocol options around the Trainer."""

    learning_rates: list[float] | None = field(
        default=None, metadata={"help": "LR sweep chosen on validation (paper: 5e-5 1e-4 5e-4 1e-3)."})
    early_stopping_patience: int = 12
    resume: bool = field(default=False, metadata={"help": "Resume each run from its last checkpoint."})
    stage2_epochs: float = field(default=0, metadata={"help": "Multi-dataset stage 2: epochs of head-only tuning."})
    cross_eval_dataset: list[str] = field(default_factory=list, metadata={
        "help": "Datasets to test each trained model on (cross-dataset generalisation, paper Table 2)."})
    cross_eval_data_dir: list[str] = field(default_factory=list)
    save_model: bool = True


@dataclass
class Task:
    """What a dataset (or a group of same-task datasets, one head each) implies for the model and the metrics.
    Per-dataset fields are in `datasets` order; `class_names` names the first head's classes."""

    name: str
    datasets: list[str]
    head_sizes: list[int]
    head_positive_classes: list[tuple[int, ...] | None]
    class_names: tuple[str, ...] | None = None
    higher_is_better: bool = True
    score_range: tuple[float, float] | None = None
    aggregation: str = "median"

    @property
    def best_metric(self) -> str:
        return "accuracy" if self.name == "emotion" else "srcc"


def resolve_task(dataset_names: list[str]) -> Task:
    infos = [get_dataset_info(name) for name in dataset_names]
    tasks = {info.task for info in infos}
    if len(tasks) != 1:
        raise ValueError(f"Multi-dataset training needs datasets of one task; got {dict(zip(dataset_names, tasks))}.")
    info = infos[0]
    return Task(
        name=info.task, datasets=[i.name for i in infos],
        head_sizes=[len(i.class_names) if i.class_names else 1 for i in infos],
        head_positive_classes=[tuple(i.class_names.index(c) for c in i.positive_classes) if i.positive_classes
                               else None for i in infos],
        class_names=info.class_names, higher_is_better=info.higher_is_better, score_range=info.score_range,
        aggregation="median" if info.task == "quality" else "mean",
    )


def build_model(model_args: ModelArguments, task: Task, test_resize_short: int | None = None):
    """A new model for `task`: pretrained backbone + LoRA (paper), or a random backbone when `vision_config`."""
    heads = dict(zip(task.datasets, task.head_sizes)) if len(task.datasets) > 1 else None
    config_kwargs = dict(
        task=task.name, adaptation=model_args.adaptation, head_type=model_args.head_type,
        head_hidden_sizes=list(model_args.head_hidden_sizes), head_dropout=model_args.head_dropout,
        lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        loss=model_args.loss, heads=heads, higher_is_better=task.higher_is_better,
        score_range=list(task.score_range) if task.score_range else None, test_resize_short=test_resize_short,
    )
    if task.class_names:
        config_kwargs["id2label"] = dict(enumerate(task.class_names))
        config_kwargs["label2id"] = {c: i for i, c in enumerate(task.class_names)}
    model_class = PerceptCLIPForClassification if task.name == "emotion" else PerceptCLIPForRegression
    if model_args.vision_config is not None:
        vision_config = model_args.vision_config
        vision_config = json.loads(vision_config) if isinstance(vision_config, str) else dict(vision_config)
        config = PerceptCLIPConfig(vision_config=vision_config, base_model_name_or_path=None, **config_kwargs)
        return model_class(config)
    return model_class.from_backbone(model_args.base_model_name_or_path, **config_kwargs)


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


def prepare_splits(task: Task, data_args: DataArguments, split: int, model, seed: int) -> dict[str, Dataset]:
    """Train / validation / test sets with the paper's transforms; several datasets are concatenated with a
    `head` column (their index) and each row keeps its own dataset's transform."""
    base_kwargs = transform_kwargs(model.config)
    if data_args.crop_size:
        base_kwargs["crop_size"] = data_args.crop_size
    multi = len(task.datasets) > 1
    raw: dict[str, list[Dataset]] = {"train": [], "validation": [], "test": []}
    transforms: dict[str, list] = {"train": [], "validation": [], "test": []}
    for head_index, (name, data_dir) in enumerate(zip(task.datasets, data_args.data_dir)):
        info = get_dataset_info(name)
        splits = benchmark_splits(name, load_benchmark(name, data_dir), split, data_dir=data_dir,
                                  validation_fraction=data_args.validation_fraction)
        if data_args.max_train_samples and "train" in splits:
            train = splits["train"].shuffle(seed=seed)
            splits["train"] = train.select(range(min(len(train), data_args.max_train_samples)))
        for part in raw:
            if part not in splits:
                continue
            kwargs = dict(base_kwargs)
            if task.name == "quality":
                kwargs["resize_short"] = data_args.resize_short_for(name)
                if part != "train":
                    kwargs.update(num_crops=data_args.test_crops if part == "test" else data_args.eval_crops,
                                  seed=seed)
            ds = splits[part]
            if part == "train" and task.name == "quality":
                ds = repeat_dataset(ds, data_args.replicas or info.replicas)
            if multi:
                label_type = Value("int64") if task.name == "emotion" else Value("float32")
                ds = ds.select_columns(list(SHARED_COLUMNS)).cast_column("label", label_type)
                ds = ds.add_column("head", [head_index] * len(ds))
            raw[part].append(ds)
            transforms[part].append(build_transform(task.name, part == "train", **kwargs))
    data = {}
    for part, sets in raw.items():
        if not sets:
            continue
        if multi:
            data[part] = with_image_transform(concatenate_datasets(sets), PerHeadTransform(transforms[part]))
        else:
            data[part] = with_image_transform(sets[0], transforms[part][0])
    return data


def make_compute_metrics(task: Task):
    """EvalPrediction → the paper's metrics; for multi-dataset sets, per-head metrics and their mean."""

    def metrics_of(logits, labels, head: int = 0):
        if task.name == "emotion":  # a smaller head's padding columns (-inf) are dropped
            logits = logits[:, : task.head_sizes[head]]
            return classification_metrics(logits, labels.astype(np.int64), task.head_positive_classes[head])
        return regression_metrics(logits.reshape(-1), labels.reshape(-1))

    def compute_metrics(eval_prediction):
        logits = np.asarray(eval_prediction.predictions)
        labels = eval_prediction.label_ids
        if isinstance(labels, (tuple, list)):  # (labels, head)
            labels, heads = np.asarray(labels[0]), np.asarray(labels[1]).reshape(-1)
            per_head = {task.datasets[h]: metrics_of(logits[heads == h], labels[heads == h], h)
                        for h in np.unique(heads)}
            merged = {f"{name}_{k}": v for name, m in per_head.items() for k, v in m.items()}
            merged.update(aggregate_splits(list(per_head.values()), how="mean"))
            return merged
        return metrics_of(logits, np.asarray(labels))

    return compute_metrics


def training_arguments(base: TrainingArguments, output_dir: Path, task: Task, learning_rate: float,
                       multi: bool) -> TrainingArguments:
    """The run's TrainingArguments: the recipe's best-model selection on validation, per run directory."""
    values = base.to_dict()
    values.update(
        output_dir=str(output_dir), learning_rate=learning_rate, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=task.best_metric, greater_is_better=True,
        remove_unused_columns=False, label_names=["labels", "head"] if multi else ["labels"],
    )
    for key in [k for k in values if k.startswith("_") or k in ("push_to_hub_token",)]:
        values.pop(key)
    return TrainingArguments(**{k: v for k, v in values.items() if k in TrainingArguments.__dataclass_fields__
                                and TrainingArguments.__dataclass_fields__[k].init})


def train_one(model, task: Task, data: dict[str, Dataset], args: TrainingArguments, patience: int,
              resume: bool) -> tuple[Trainer, dict, dict]:
    """Train with early stopping, keep the best checkpoint on validation, return validation and test metrics."""
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data.get("validation"),
        compute_metrics=make_compute_metrics(task),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)],
    )
    checkpoint = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer, *evaluate_parts(trainer, data)


def evaluate_parts(trainer: Trainer, data: dict[str, Dataset], parts=("validation", "test")) -> list[dict]:
    """The task metrics of each part present in `data` (empty dict for an absent part), without the prefix."""
    results = []
    for part in parts:
        metrics = trainer.evaluate(data[part], metric_key_prefix=part) if part in data else {}
        results.append({k[len(part) + 1:]: v for k, v in metrics.items() if k.startswith(part + "_")
                        and isinstance(v, float) and not k.endswith(("_runtime", "_per_second", "_loss"))})
    return results


def stage2_heads(model, task: Task, data: dict[str, Dataset], base_args: TrainingArguments, epochs: float,
                 output_dir: Path) -> None:
    """Multi-dataset stage 2 (paper sec. 3.2): encoder frozen, each head tuned on its own dataset."""
    model.freeze_backbone()
    for param in model.heads.parameters():
        param.requires_grad = False
    for head_index, name in enumerate(task.datasets):
        head_params = list(model.heads[name].parameters())
        for param in head_params:
            param.requires_grad = True
        own = {part: _rows_of_head(ds, head_index) for part, ds in data.items()}
        args = training_arguments(base_args, output_dir / f"stage2_{name}", task, base_args.learning_rate, True)
        args.num_train_epochs = epochs
        Trainer(model=model, args=args, train_dataset=own["train"], eval_dataset=own.get("validation"),
                compute_metrics=make_compute_metrics(task)).train()
        for param in head_params:
            param.requires_grad = False


def _rows_of_head(ds: Dataset, head_index: int) -> Dataset:
    """The rows of one dataset in a multi-dataset set (its transform is kept by `select`)."""
    heads = ds.with_format(None)["head"]
    return ds.select([i for i, h in enumerate(heads) if h == head_index])
