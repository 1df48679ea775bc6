"""A training recipe: the model, data and experiment options of `train.py` / `perceptclip train` (YAML files in
`configs/`, overridable on the command line), what its datasets imply (:class:`TrainingTask`) and the model it
builds. The model options are the config's own fields (`PerceptCLIPConfig`): declared, documented and validated
there once."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import types
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .data import DatasetInfo, benchmark_splits, get_dataset_info
from .data.own_data import OWN_DATA_TASKS, OWN_DATASETS, OwnData, own_dataset_info
from .errors import ConfigurationError, loading_model, one_line
from .modeling import PerceptCLIPConfig, PerceptCLIPPreTrainedModel, create_model
from .recipe_help import TRAINER_GROUP, USAGE, group_options
from .tasks import TaskSpec, get_task

# Config fields a recipe may set (the architecture and its adaptation); `loss` defaults to the task's.
MODEL_OPTIONS = ("adaptation", "head_type", "head_hidden_sizes", "head_dropout", "lora_r", "lora_alpha",
                 "lora_dropout", "lora_target_modules", "loss")
TASK_FILLED_OPTIONS = ("loss",)
# Options that choose one thing in two ways (what, options): the command line's choice drops the recipe's other.
ALTERNATIVE_OPTIONS = (("the backbone: pretrained weights, or a random one of that config",
                        ("base_model_name_or_path", "vision_config")),)

logger = logging.getLogger(__name__)


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
        ("vision_config", dict | str | None, field(default=None, metadata={
            "help": "Backbone config (YAML mapping or JSON string) of a randomly initialised backbone (offline runs); "
                    "used instead of base_model_name_or_path."})),
        *(_model_option(name, defaults) for name in MODEL_OPTIONS),
    ], namespace={"__doc__": "The model: a pretrained backbone (Hub id or local dir) or, offline, a randomly "
                             "initialised `vision_config`; the other options are `PerceptCLIPConfig` fields.",
                  "__module__": __name__})


ModelArguments = _model_arguments_class()


@dataclass
class DataArguments:
    """The data: one dataset, or several for multi-dataset training (one head each), and the split protocol. Besides
    the registry's datasets, `table` (your CSV / TSV / JSON(L) of images and labels) and `imagefolder` (one
    sub-folder per class)."""

    dataset: list[str] = field(default_factory=lambda: ["synthetic_iqa"], metadata={
        "help": "Registry name(s) (see `perceptclip list`), or your own data: table (with --table) or imagefolder."})
    data_dir: list[str] = field(default_factory=lambda: ["outputs/synthetic_iqa"], metadata={
        "help": "Folder of each dataset in its original layout (table: the folder its image paths start from)."})
    table: str | None = field(default=None, metadata={
        "help": "--dataset table: the CSV / TSV / JSON / JSONL file of images and labels (in --data_dir, or a path)."})
    image_column: str = field(default="path", metadata={"help": "--dataset table: the column of image paths."})
    label_column: str | None = field(default=None, metadata={
        "help": "--dataset table: the column of labels (default: score, or label for a classification task)."})
    group_column: str | None = field(default=None, metadata={
        "help": "--dataset table: a column of shared content (prompt, source photo): splits keep each group on one "
                "side (default: random 80/20 splits)."})
    task: str | None = field(default=None, metadata={
        "help": "Your own data's task: quality (table's default), memorability, emotion (imagefolder's default) "
                "or a registered one."})
    splits: list[int] = field(default_factory=lambda: [0], metadata={"help": "Split indices to run (protocol)."})
    validation_fraction: float = 0.1
    crop_size: int | None = field(default=None, metadata={"help": "Default: the backbone's image size."})
    test_crops: int = field(default=15, metadata={"help": "IQA test-time random crops averaged per image."})
    eval_crops: int = field(default=15, metadata={"help": "IQA validation crops (model selection)."})
    replicas: int | None = field(default=None, metadata={"help": "IQA train replicas per epoch (default: dataset's)."})
    resize_short: int | None = field(default=None, metadata={
        "help": "IQA: resize the short side before cropping (default: the dataset's protocol, e.g. 384 for KonIQ)."})
    max_train_samples: int | None = None
    _own_infos: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def dataset_info(self, name: str) -> DatasetInfo:
        """The registry's row of dataset `name`, or of your own data (`table`, `imagefolder`: read once)."""
        if name not in OWN_DATASETS:
            return get_dataset_info(name)
        if name not in self._own_infos:
            data_dir = self.data_dir[self.dataset.index(name)] if name in self.dataset else None
            if data_dir is None or len(self.data_dir) != len(self.dataset):
                raise ConfigurationError(f"--dataset {name}: give its folder as --data_dir (one per --dataset)")
            if name == "table" and not self.table:
                raise ConfigurationError("--dataset table: give --table FILE, your CSV / TSV / JSON(L) of images "
                                         "and labels (image paths relative to --data_dir)")
            task = get_task(self.task or OWN_DATA_TASKS[name])
            own = OwnData(name, data_dir, self.table, self.image_column, self.label_column, self.group_column)
            self._own_infos[name] = own_dataset_info(own, task.name, task.is_classification)
        return self._own_infos[name]

    def split_parts(self, name: str, data_dir: str, split: int) -> dict:
        """Dataset `name`'s parts (train / validation / test) of split `split`, read from `data_dir`."""
        info = self.dataset_info(name)
        return benchmark_splits(info, info.loader(data_dir), split, data_dir=data_dir,
                                validation_fraction=self.validation_fraction)

    def check_own_data_options(self) -> None:
        """The own-data options go with their dataset: `--table` etc. with `--dataset table`, `--task` with either."""
        defaults = {f.name: f.default for f in fields(self)}
        table_options = [f"--{name}" for name in ("table", "image_column", "label_column", "group_column")
                         if getattr(self, name) != defaults[name]]
        if table_options and "table" not in self.dataset:
            raise ConfigurationError(f"{' '.join(table_options)}: read with --dataset table only, not with "
                                     f"--dataset {' '.join(self.dataset)}")
        if self.task and not set(OWN_DATASETS) & set(self.dataset):
            raise ConfigurationError(f"--task {self.task}: the task of your own data (--dataset table or "
                                     f"imagefolder); {' '.join(self.dataset)} has its own task")

    def resize_short_for(self, name: str) -> int | None:
        """IQA short-side resize of dataset `name`: the override, else its protocol's."""
        return self.resize_short or self.dataset_info(name).test_resize_short


@dataclass
class ExperimentArguments:
    """Protocol options around the Trainer."""

    learning_rates: list[float] | None = field(
        default=None, metadata={"help": "LR sweep chosen on validation (paper: 5e-5 1e-4 5e-4 1e-3)."})
    early_stopping_patience: int = 12
    resume: bool = field(default=False, metadata={
        "help": "Resume each run from its newest complete checkpoint; a run without one starts from scratch."})
    stage2_epochs: float = field(default=0, metadata={"help": "Multi-dataset stage 2: epochs of head-only tuning."})
    cross_eval_dataset: list[str] = field(default_factory=list, metadata={
        "help": "Datasets to test each trained model on (cross-dataset generalisation, paper Table 2)."})
    cross_eval_data_dir: list[str] = field(default_factory=list)
    save_model: bool = True
    report: bool = field(default=True, metadata={
        "help": "Write the run's reports: report/ (curves, sweep, per-split metrics) and split_<k>/report/ (test "
                "figures and worst cases), each as PNGs, report.html and report.md."})


DATACLASSES = (ModelArguments, DataArguments, ExperimentArguments, TrainingArguments)


def packaged_recipes() -> list[str]:
    """Names of the recipes installed with the package (the repository's `configs/`)."""
    return sorted(entry.name.removesuffix(".yaml") for entry in files("perceptclip_hf.configs").iterdir()
                  if entry.name.endswith(".yaml"))


def recipe_file(config: str | Path) -> Path:
    """The recipe file `config` names: the file itself when it exists, else the installed recipe of that name
    (`quickstart`, `quickstart.yaml` or `configs/quickstart.yaml`), so a `pip install`ed package trains from any
    folder."""
    path = Path(config)
    if path.exists() or path.parent not in (Path("."), Path("configs")):
        return path
    packaged = files("perceptclip_hf.configs") / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if not packaged.is_file():
        return path
    logger.info("--config %s: the recipe installed with the package, %s", config, packaged)
    return Path(str(packaged))


def load_config(path: str | Path) -> dict:
    """A recipe YAML (:func:`recipe_file`) as a flat dict of dataclass fields; a missing file, bad YAML, or unknown
    key is a :class:`ConfigurationError` naming the file (and line, key)."""
    try:
        values = yaml.safe_load(recipe_file(path).read_text()) or {}
    except OSError as err:
        raise ConfigurationError(f"--config {path}: cannot read it ({err.strerror or err}); give the path of a "
                                 "recipe YAML or the name of an installed one "
                                 f"({', '.join(packaged_recipes())})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        cause = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigurationError(f"{path}: not valid YAML{where} ({cause}); fix the syntax there") from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{path}: expected a mapping of option: value, got a {type(values).__name__}; "
                                 "write one `option: value` per line")
    known = {f.name for cls in DATACLASSES for f in fields(cls) if f.init}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        hints = [f"{close[0]} for {name}" for name in unknown if (close := difflib.get_close_matches(name, known, 1))]
        raise ConfigurationError(f"{path}: unknown option(s) {unknown}" + (f" (did you mean {', '.join(hints)}?)"
                                 if hints else "") + "; see `python train.py --help` for the options")
    return values


class RecipeParser(HfArgumentParser):
    """The recipe's `HfArgumentParser` (and `--config`); a usage error is a :class:`ConfigurationError` (one line,
    exit 2), prefixed with `source` (`<recipe>: <option>`) for a recipe's value."""

    def __init__(self, prog: str | None = None, source: str | None = None, **kwargs):
        super().__init__(DATACLASSES, prog=prog, usage=USAGE, **kwargs)
        self.add_argument("--config", help="YAML recipe (configs/<dataset>.yaml); command-line options override it.")
        self.source = source
        if self.add_help:
            group_options(self, [("Model", ModelArguments), ("Data", DataArguments),
                                 ("Experiment", ExperimentArguments), (TRAINER_GROUP, TrainingArguments)])

    def error(self, message: str):
        if self.source:
            message = f"{self.source}: " + re.sub(r"^argument \S+: ", "", message)
        raise ConfigurationError(f"{message}; see `{self.prog} --help`")


def _given_parser(prog: str | None) -> RecipeParser:
    """A parser whose namespace holds only the options its arguments set (no defaults, no --help)."""
    parser = RecipeParser(prog, add_help=False)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return parser


@cache
def _container_types(name: str) -> set[type]:
    """`list` / `dict` if the field `name`'s annotation accepts them (e.g. `report_to`, `vision_config`)."""
    hint = next(typing.get_type_hints(cls)[name] for cls in DATACLASSES if name in cls.__dataclass_fields__)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return {typing.get_origin(t) or t for t in (typing.get_args(hint) if union else (hint,))} & {list, dict}


def recipe_values(path: str | Path, prog: str | None = None) -> dict:
    """The recipe's values, typed as the command line types them (`key: value` means `--key value`); a value the
    command line cannot spell (null, a mapping, an empty list) is kept when its field accepts it."""
    parser = _given_parser(prog)
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, value in load_config(path).items():
        many = actions[key].nargs in ("+", "*")
        if value is None or value == [] and many or type(value) in _container_types(key) and not many:
            values[key] = value
            continue
        if isinstance(value, (list, dict)) and not many:
            raise ConfigurationError(f"{path}: {key}: expected one value, got {value!r}; fix the value there")
        parser.source = f"{path}: {key}"
        tokens = [str(v).lower() if isinstance(v, bool) else str(v) for v in (value if isinstance(value, list)
                                                                              else [value])]
        arguments = [f"--{key}", *tokens] if many else [f"--{key}={tokens[0]}"]  # `=`: a value may start with -
        values.update(vars(parser.parse_known_args(arguments)[0]))
    return values


def _choose_alternatives(recipe: dict, given: dict, config: str | None) -> None:
    """Drop from `recipe` the alternatives of what the command line (`given`) chose; two at once are an error."""
    for what, names in ALTERNATIVE_OPTIONS:
        on_command_line = [name for name in names if name in given]
        in_recipe = [name for name in names if recipe.get(name) is not None]
        chosen = on_command_line or in_recipe
        if len(chosen) > 1:
            where = "" if on_command_line else f"{config}: "
            raise ConfigurationError(f"{where}{' and '.join('--' + n for n in chosen)} both choose {what}; "
                                     "give only one of them")
        for name in set(in_recipe) - set(chosen):
            del recipe[name]
            logger.info("--%s on the command line replaces %s's %s (dropped)", chosen[0], config, name)


def parse_args(argv: list[str] | None = None, prog: str | None = None):
    """(model, data, experiment, training) arguments: the recipe (`--config`), then the command line, which wins
    (also over a recipe's alternative to an option it sets, e.g. its `vision_config` over `--base_model_name_or_path`).
    Usage errors and invalid values are :class:`ConfigurationError`."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--config")
    try:
        known, rest = pre.parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise ConfigurationError(f"{err}; give --config <recipe.yaml>") from None
    parser = RecipeParser(prog)
    recipe = recipe_values(known.config, parser.prog) if known.config else {}
    _choose_alternatives(recipe, vars(_given_parser(parser.prog).parse_known_args(rest)[0]), known.config)
    parser.set_defaults(**recipe)
    try:
        *outputs, unused = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False,
                                                             return_remaining_strings=True)
    except ConfigurationError:
        raise
    except ValueError as err:  # a dataclass's own validation (e.g. TrainingArguments.__post_init__)
        raise ConfigurationError(one_line(err)) from None
    if unused:
        parser.error(f"unrecognized arguments: {' '.join(unused)}")
    return outputs[: len(DATACLASSES)]  # the rest is the namespace holding `config`


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
        raise ConfigurationError(f"--dataset {' '.join(names)}: multi-dataset training needs datasets of "
                                 f"one task, got {dict(zip(names, (i.task for i in infos)))}")
    info = infos[0]
    return TrainingTask(
        spec=get_task(info.task), datasets=[i.name for i in infos],
        head_sizes=[len(i.class_names) if i.class_names else 1 for i in infos],
        head_positive_classes=[tuple(i.class_names.index(c) for c in i.positive_classes) if i.positive_classes
                               else None for i in infos],
        class_names=info.class_names, higher_is_better=info.higher_is_better, score_range=info.score_range,
        interpolation=info.interpolation,
    )


def model_config_kwargs(model_args, task: TrainingTask, test_resize_short: int | None = None) -> dict:
    """The `PerceptCLIPConfig` arguments a recipe describes, but the backbone (the config validates them); the
    resize filter is the training data's."""
    kwargs = {name: getattr(model_args, name) for name in MODEL_OPTIONS}
    kwargs.update(task=task.name, higher_is_better=task.higher_is_better, test_resize_short=test_resize_short,
                  resize_interpolation=task.interpolation,
                  heads=dict(zip(task.datasets, task.head_sizes)) if len(task.datasets) > 1 else None,
                  score_range=[float(v) for v in task.score_range] if task.score_range else None)
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
            raise ConfigurationError(f"--vision_config {vision!r}: not JSON ({err}); give a mapping such as "
                                     '\'{"model_type": "resnet", "hidden_sizes": [16, 32]}\'') from None
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
