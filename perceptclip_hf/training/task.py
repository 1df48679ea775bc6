"""What a recipe's datasets imply (:class:`TrainingTask`: the task, one head per dataset, the metrics' direction) and
the model it builds: a pretrained backbone + LoRA (paper), or a random backbone for offline runs."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data import DatasetInfo, get_dataset_info
from ..errors import ConfigurationError, loading_model
from ..modeling import PerceptCLIPConfig, PerceptCLIPPreTrainedModel, create_model
from ..tasks import TaskSpec, get_task
from .recipe import MODEL_OPTIONS


@dataclass
class TrainingTask:
    """What a dataset (or a group of same-task datasets, one head each) implies for the model and the metrics.
    Per-dataset fields are in `datasets` order; `class_names` and `interpolation` (the resize filter of its
    images) are the first dataset's."""

    spec: TaskSpec
    datasets: list[str]
    head_sizes: list[int]
    head_positive_classes: list[tuple[int, ...] | None]
    class_names: tuple[str, ...] | None = None
    higher_is_better: bool = True
    score_range: tuple[float, float] | None = None
    interpolation: str = "bilinear"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def best_metric(self) -> str:
        return self.spec.best_metric

    @property
    def aggregation(self) -> str:
        return self.spec.aggregation


def resolve_task(datasets: list[str | DatasetInfo]) -> TrainingTask:
    """What the datasets (registry names, or rows such as `DataArguments.dataset_info`'s) imply."""
    infos = [d if isinstance(d, DatasetInfo) else get_dataset_info(d) for d in datasets]
    tasks = {info.task for info in infos}
    if len(tasks) != 1:
        names = [info.name for info in infos]
        raise ConfigurationError(
            f"--dataset {' '.join(names)}: multi-dataset training needs datasets of "
            f"one task, got {dict(zip(names, (i.task for i in infos)))}"
        )
    info = infos[0]
    return TrainingTask(
        spec=get_task(info.task),
        datasets=[i.name for i in infos],
        head_sizes=[len(i.class_names) if i.class_names else 1 for i in infos],
        head_positive_classes=[
            tuple(i.class_names.index(c) for c in i.positive_classes) if i.positive_classes else None for i in infos
        ],
        class_names=info.class_names,
        higher_is_better=info.higher_is_better,
        score_range=info.score_range,
        interpolation=info.interpolation,
    )


def model_config_kwargs(model_args, task: TrainingTask, test_resize_short: int | None = None) -> dict:
    """The `PerceptCLIPConfig` arguments a recipe describes, but the backbone (the config validates them); the
    resize filter is the training data's."""
    kwargs = {name: getattr(model_args, name) for name in MODEL_OPTIONS}
    kwargs.update(
        task=task.name,
        higher_is_better=task.higher_is_better,
        test_resize_short=test_resize_short,
        resize_interpolation=task.interpolation,
        heads=dict(zip(task.datasets, task.head_sizes)) if len(task.datasets) > 1 else None,
        score_range=[float(v) for v in task.score_range] if task.score_range else None,
    )
    if task.class_names:
        kwargs["id2label"] = dict(enumerate(task.class_names))
        kwargs["label2id"] = {c: i for i, c in enumerate(task.class_names)}
    return kwargs


def vision_config_of(model_args) -> dict | None:
    """The random backbone's config (`vision_config`: a mapping, or its JSON text); `None` for a pretrained one."""
    vision = model_args.vision_config
    if isinstance(vision, str):
        try:
            vision = json.loads(vision)
        except ValueError as err:
            raise ConfigurationError(
                f"--vision_config {vision!r}: not JSON ({err}); give a mapping such as "
                '\'{"model_type": "resnet", "hidden_sizes": [16, 32]}\''
            ) from None
    if vision is not None and not isinstance(vision, dict):
        raise ConfigurationError(f"--vision_config {vision!r}: expected a mapping of backbone config fields")
    return None if vision is None else dict(vision)


def build_model(model_args, task: TrainingTask, test_resize_short: int | None = None):
    """A new model for `task`: pretrained backbone + LoRA (paper), or a random backbone when `vision_config`. A
    backbone that cannot be loaded (unreachable Hub, corrupt weights) is a ModelLoadError naming it."""
    kwargs = model_config_kwargs(model_args, task, test_resize_short)
    vision = vision_config_of(model_args)
    if vision is None:
        with loading_model(model_args.base_model_name_or_path, "--base_model_name_or_path"):
            return PerceptCLIPPreTrainedModel.from_backbone(model_args.base_model_name_or_path, **kwargs)
    return create_model(PerceptCLIPConfig(vision_config=vision, base_model_name_or_path=None, **kwargs))


__all__ = ["TrainingTask", "build_model", "model_config_kwargs", "resolve_task", "vision_config_of"]
