"""A training recipe: the model, data and experiment options of `train.py` / `perceptclip train` (YAML files in
`configs/`, overridable on the command line), what its datasets imply (:class:`TrainingTask`) and the model it
builds. The model options are the config's own fields (`PerceptCLIPConfig`): declared, documented and validated
there once."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .data import get_dataset_info
from .modeling import PerceptCLIPConfig, PerceptCLIPPreTrainedModel, create_model
from .tasks import TaskSpec, get_task

# Config fields a recipe may set (the architecture and its adaptation); `loss` defaults to the task's.
MODEL_OPTIONS = ("adaptation", "head_type", "head_hidden_sizes", "head_dropout", "lora_r", "lora_alpha",
                 "lora_dropout", "lora_target_modules", "loss")
TASK_FILLED_OPTIONS = ("loss",)


def _config_help(name: str) -> str:
    """A field's entry in the config's docstring (its `Args:` section), on one line."""
    match = re.search(rf"^\s+{name} \(`[^`]*`[^)]*\)(?:\s*,\s*\*optional\*[^:]*)?:\s*(.+?)(?=\n\s+\w+ \(`|\n\n)",
                      PerceptCLIPConfig.__doc__, flags=re.M | re.S)
    return " ".join(match.group(1).split()) if match else ""


def _model_option(name: str, defaults: PerceptCLIPConfig) -> tuple[str, type, object]:
    config_field = PerceptCLIPConfig.__dataclass_fields__[name]
    annotation = float if name == "lora_alpha" else config_field.type  # `int | float`: a float on the command line
    default = None if name in TASK_FILLED_OPTIONS else getattr(defaults, name)
    metadata = {"help": _config_help(name)}
    if isinstance(default, list):
        return name, annotation, field(default_factory=lambda v=default: list(v), metadata=metadata)
    return name, annotation, field(default=default, metadata=metadata)


def _model_arguments_class() -> type:
    defaults = PerceptCLIPConfig()
    return make_dataclass("ModelArguments", [
        ("base_model_name_or_path", str | None, field(default="openai/clip-vit-large-patch14", metadata={
            "help": "Pretrained backbone (Hub id or local dir): CLIP ViT-B/32, B/16, L/14, DINOv2, ViT..."})),
        ("vision_config", str | None, field(default=None, metadata={
            "help": "Backbone config (YAML mapping or JSON string) of a randomly initialised backbone (offline runs); "
                    "used instead of base_model_name_or_path."})),
        *(_model_option(name, defaults) for name in MODEL_OPTIONS),
    ], namespace={"__doc__": "The model: a pretrained backbone (Hub id or local dir) or, offline, a randomly "
                             "initialised `vision_config`; the other options are `PerceptCLIPConfig` fields.",
                  "__module__": __name__})


ModelArguments = _model_arguments_class()


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


DATACLASSES = (ModelArguments, DataArguments, ExperimentArguments, TrainingArguments)


def load_config(path: str | Path) -> dict:
    """A recipe YAML as a flat dict of dataclass fields; unknown keys are an error naming the file."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}.")
    known = {f.name for cls in DATACLASSES for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; see `python train.py --help`.")
    return values


def parse_args(argv: list[str] | None = None, prog: str | None = None):
    """(model, data, experiment, training) arguments: YAML defaults, then command-line overrides."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(DATACLASSES, prog=prog)
    parser.add_argument("--config", help="YAML recipe (configs/<dataset>.yaml); command-line options override it.")
    if known.config:
        parser.set_defaults(**load_config(known.config))
    outputs = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    return outputs[: len(DATACLASSES)]  # the rest is the namespace holding `config`


@dataclass
class TrainingTask:
    """What a dataset (or a group of same-task datasets, one head each) implies for the model and the metrics.
    Per-dataset fields are in `datasets` order; `class_names` names the first head's classes."""

    spec: TaskSpec
    datasets: list[str]
    head_sizes: list[int]
    head_positive_classes: list[tuple[int, ...] | None]
    class_names: tuple[str, ...] | None = None
    higher_is_better: bool = True
    score_range: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def best_metric(self) -> str:
        return self.spec.best_metric

    @property
    def aggregation(self) -> str:
        return self.spec.aggregation


def resolve_task(dataset_names: list[str]) -> TrainingTask:
    infos = [get_dataset_info(name) for name in dataset_names]
    tasks = {info.task for info in infos}
    if len(tasks) != 1:
        raise ValueError(f"Multi-dataset training needs datasets of one task; got {dict(zip(dataset_names, tasks))}.")
    info = infos[0]
    return TrainingTask(
        spec=get_task(info.task), datasets=[i.name for i in infos],
        head_sizes=[len(i.class_names) if i.class_names else 1 for i in infos],
        head_positive_classes=[tuple(i.class_names.index(c) for c in i.positive_classes) if i.positive_classes
                               else None for i in infos],
        class_names=info.class_names, higher_is_better=info.higher_is_better, score_range=info.score_range,
    )


def model_config_kwargs(model_args, task: TrainingTask, test_resize_short: int | None = None) -> dict:
    """The `PerceptCLIPConfig` arguments a recipe describes, but the backbone (the config validates them)."""
    kwargs = {name: getattr(model_args, name) for name in MODEL_OPTIONS}
    kwargs.update(task=task.name, higher_is_better=task.higher_is_better, test_resize_short=test_resize_short,
                  heads=dict(zip(task.datasets, task.head_sizes)) if len(task.datasets) > 1 else None,
                  score_range=[float(v) for v in task.score_range] if task.score_range else None)
    if task.class_names:
        kwargs["id2label"] = dict(enumerate(task.class_names))
        kwargs["label2id"] = {c: i for i, c in enumerate(task.class_names)}
    return kwargs


def build_model(model_args, task: TrainingTask, test_resize_short: int | None = None):
    """A new model for `task`: pretrained backbone + LoRA (paper), or a random backbone when `vision_config`."""
    kwargs = model_config_kwargs(model_args, task, test_resize_short)
    if model_args.vision_config is None:
        return PerceptCLIPPreTrainedModel.from_backbone(model_args.base_model_name_or_path, **kwargs)
    vision = model_args.vision_config
    vision = json.loads(vision) if isinstance(vision, str) else dict(vision)
    return create_model(PerceptCLIPConfig(vision_config=vision, base_model_name_or_path=None, **kwargs))
