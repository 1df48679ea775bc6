"""The task table: everything a perceptual task means outside the remote code, one row per task.

A :class:`TaskSpec` says how a task's images are preprocessed (the crop policy of :mod:`.preprocessing`), how its
predictions are scored (metrics, the metric that selects a model, median or mean over splits), what its labels and
outputs are, and how its model card describes it. The head, loss and score range start from the minimal presets of
the remote code (`modeling.TASK_PRESETS`), so a saved model needs nothing from this table to load.

    >>> from perceptclip_hf.tasks import get_task, register_task
    >>> get_task("quality").preprocessing
    'iqa_random_crops'
    >>> spec = register_task("aesthetics", loss="mse", score_range=(1, 10))   # then train / evaluate / predict it
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnknownNameError
from .metrics import classification_metrics, regression_metrics
from .modeling import CLASSIFICATION_PROBLEM_TYPES, TASK_PRESETS, PerceptCLIPConfig, check_config
from .preprocessing import POLICIES, ImageTransform, IQATestTransform

logger = logging.getLogger(__name__)

AGGREGATIONS = ("median", "mean")
# What training supports: scores (any loss but cross-entropy) and one class per image (cross-entropy).
PROBLEM_TYPES = ("regression", "single_label_classification")


def _regression_metrics(predictions: np.ndarray, labels: np.ndarray, positive_classes=None) -> dict[str, float]:
    return regression_metrics(np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1))


def _classification_metrics(logits: np.ndarray, labels: np.ndarray, positive_classes=None) -> dict[str, float]:
    return classification_metrics(logits, np.asarray(labels).astype(np.int64), positive_classes)


@dataclass(frozen=True)
class TaskSpec:
    """One perceptual task.

    Args:
        name: the config's `task` value.
        problem_type: `"regression"` or `"single_label_classification"` (the model class follows from it;
            multi-label training is not supported).
        loss: `"plcc"`, `"mse"` or `"cross_entropy"`.
        labels: output names (class names in logit order; one name per regression output).
        score_range: `(low, high)` of the scores (documentation, cards, CSV columns).
        preprocessing: crop policy: `"iqa_random_crops"` (train: flips + random crop at native resolution;
            test: seeded random crops averaged), `"resize_center_crop"` (short side to the input size, center crop)
            or `"random_resized_crop"` (train: random resized crop + flip; test: resize + center crop).
        metrics: `(predictions, labels, positive_classes) -> {name: value}` on numpy arrays.
        best_metric: the metric (higher is better) that selects a model on validation.
        aggregation: how per-split test metrics are summarised: `"median"` (IQA, LoDa) or `"mean"`.
        title, card_tags, card_task_type, card_template: how model cards describe the task.
    """

    name: str
    problem_type: str = "regression"
    loss: str = "mse"
    labels: tuple[str, ...] | None = None
    score_range: tuple[float, float] | None = None
    preprocessing: str = "resize_center_crop"
    metrics: Callable[..., dict[str, float]] | None = None
    best_metric: str | None = None
    aggregation: str = "mean"
    title: str | None = None
    card_tags: tuple[str, ...] = ()
    card_task_type: str = "image-classification"
    card_template: str = "custom.md"

    def __post_init__(self):
        for field_name, value, allowed in (
            ("problem_type", self.problem_type, PROBLEM_TYPES),
            ("preprocessing", self.preprocessing, list(POLICIES)),
            ("aggregation", self.aggregation, AGGREGATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"task {self.name!r}: {field_name}={value!r}; expected one of {list(allowed)}.")
        # The loss and its fit to the problem type: validated by the config, as for any model.
        check_config(task=self.name, problem_type=self.problem_type, loss=self.loss)
        classification = self.is_classification
        if classification and not self.labels:
            raise ValueError(f"task {self.name!r}: a classification task needs its class names (labels=...).")
        defaults = {
            "metrics": _classification_metrics if classification else _regression_metrics,
            "best_metric": "accuracy" if classification else "srcc",
            "title": self.name.replace("_", " ").capitalize(),
        }
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    @property
    def is_classification(self) -> bool:
        return self.problem_type in CLASSIFICATION_PROBLEM_TYPES

    @property
    def label_dtype(self) -> str:
        """The dtype of a label column: class ids or float scores."""
        return "int64" if self.is_classification else "float32"

    @property
    def multi_crop_test(self) -> bool:
        """Whether test-time predictions average random crops at native resolution (the IQA protocol)."""
        return issubclass(POLICIES[self.preprocessing][1], IQATestTransform)

    def config_preset(self) -> dict:
        """The minimal preset the remote config reads (`modeling.TASK_PRESETS`)."""
        preset = {"problem_type": self.problem_type, "loss": self.loss}
        if self.labels:
            preset["labels"] = tuple(self.labels)
        if self.score_range:
            preset["score_range"] = [float(v) for v in self.score_range]
        return preset


def _spec_from_preset(name: str, **kwargs) -> TaskSpec:
    preset = TASK_PRESETS[name]
    score_range = preset.get("score_range")
    return TaskSpec(
        name=name,
        problem_type=preset["problem_type"],
        loss=preset["loss"],
        labels=tuple(preset["labels"]),
        score_range=tuple(score_range) if score_range else None,
        **kwargs,
    )


_TASKS: dict[str, TaskSpec] = {
    "quality": _spec_from_preset(
        "quality",
        preprocessing="iqa_random_crops",
        aggregation="median",
        title="Image quality assessment",
        card_tags=("image-quality-assessment", "no-reference-iqa"),
        card_task_type="image-quality-assessment",
        card_template="quality.md",
    ),
    "memorability": _spec_from_preset(
        "memorability",
        preprocessing="resize_center_crop",
        title="Image memorability",
        card_tags=("image-memorability",),
        card_task_type="image-memorability",
        card_template="memorability.md",
    ),
    "emotion": _spec_from_preset(
        "emotion",
        preprocessing="random_resized_crop",
        title="Visual emotion analysis",
        card_tags=("visual-emotion-analysis", "emotion-recognition"),
        card_template="emotion.md",
    ),
    "custom": TaskSpec("custom", title="Perceptual prediction"),
}


def register_task(
    name: str,
    *,
    problem_type: str = "regression",
    loss: str | None = None,
    labels: Sequence[str] | None = None,
    score_range: Sequence[float] | None = None,
    exist_ok: bool = False,
    **spec_kwargs,
) -> TaskSpec:
    """Add a task to the table (and its preset to the remote config), e.g.
    `register_task("aesthetics", loss="mse", score_range=(1, 10))`. `spec_kwargs` are :class:`TaskSpec` fields
    (preprocessing, best_metric, aggregation, metrics, title...). The saved models of the task load anywhere: their
    config carries problem_type, loss and labels."""
    if name in _TASKS and not exist_ok:
        raise ValueError(f"task {name!r} is already registered; pass exist_ok=True to replace it.")
    loss = loss or ("cross_entropy" if problem_type in CLASSIFICATION_PROBLEM_TYPES else "mse")
    spec = TaskSpec(
        name=name,
        problem_type=problem_type,
        loss=loss,
        labels=tuple(labels) if labels else (name,) if problem_type == "regression" else None,
        score_range=tuple(float(v) for v in score_range) if score_range else None,
        **spec_kwargs,
    )
    _TASKS[name] = spec
    TASK_PRESETS[name] = spec.config_preset()
    return spec


def get_task(name: str) -> TaskSpec:
    """The spec of a registered task."""
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown task {name!r}; registered: {list_tasks()} (add one with register_task)."
        ) from None


def list_tasks() -> list[str]:
    return list(_TASKS)


def task_of_config(config: PerceptCLIPConfig) -> TaskSpec:
    """The spec of a model's task: the registered one, else (a model of a task registered elsewhere) a spec built
    from what its config records, with resize + center-crop preprocessing (a warning says so: register the task,
    e.g. with `perceptclip --plugin`, to serve it with its own crop policy)."""
    if config.task in _TASKS:
        return _TASKS[config.task]
    logger.warning(
        "Task %r is not registered in this process: its model is served with resize + center crop. "
        "Register the task (register_task, or `perceptclip --plugin MODULE`) for its own preprocessing.",
        config.task,
    )
    labels = tuple(str(config.id2label[i]) for i in sorted(config.id2label)) if config.id2label else None
    return TaskSpec(
        name=config.task,
        problem_type=config.problem_type,
        loss=config.loss,
        labels=labels,
        score_range=tuple(config.score_range) if config.score_range else None,
    )


def score_scale(config: PerceptCLIPConfig) -> str | None:
    """`"calibrated"` (trained to the labels' values: MSE), `"relative"` (trained to correlate with them: PLCC, whose
    score ranks images on a scale of its own), or `None` for a classifier."""
    if config.is_classification:
        return None
    return "relative" if config.loss == "plcc" else "calibrated"


def score_meaning(config: PerceptCLIPConfig) -> str:
    """One sentence on what a model's output means, the same in reports, CSV notes, cards and the demo."""
    if config.is_classification:
        labels = [str(config.id2label[i]) for i in sorted(config.id2label)]
        return f"class probabilities over {len(labels)} classes ({', '.join(labels)}); the label is the most probable."
    direction = "higher is better" if config.higher_is_better else "lower is better"
    span = f"{config.score_range[0]:.3g}–{config.score_range[1]:.3g}" if config.score_range else None
    if score_scale(config) == "relative":
        return (
            f"a relative score ({direction}): trained with the PLCC loss, it ranks images but its scale is its "
            "own" + (f", not the training labels' {span}" if span else "") + "; compare scores of this model "
            "with each other, not with human ratings."
        )
    return f"a calibrated score ({direction}): trained with {config.loss.upper()} to the training labels' values" + (
        f", on their scale {span}." if span else "."
    )


def build_transform(task, train: bool, **kwargs: Any) -> ImageTransform:
    """The paper's training or evaluation transform of ``task`` (a registered name or a ``TaskSpec``); ``kwargs``
    go to the transform: crop_size, mean, std, seed, interpolation and, for multi-crop (IQA) policies, resize_short
    or resize_size, and num_crops."""
    if isinstance(task, str):
        task = get_task(task)
    return POLICIES[task.preprocessing][0 if train else 1](**kwargs)


__all__ = [
    "TaskSpec",
    "build_transform",
    "get_task",
    "list_tasks",
    "register_task",
    "score_meaning",
    "score_scale",
    "task_of_config",
]
