"""A training recipe: the model, data and experiment options of `train.py` / `perceptclip train` (YAML files in
`configs/` or installed with the package, overridable on the command line); what its datasets imply and the model
it builds are in :mod:`.task`. The model options are the config's own fields (`PerceptCLIPConfig`):
declared, documented and validated there once."""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import types
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..data import DatasetInfo, benchmark_splits, get_dataset_info
from ..data.own_data import OWN_DATA_TASKS, OWN_DATASETS, OwnData, own_dataset_info
from ..errors import ConfigurationError, one_line
from ..modeling import PerceptCLIPConfig
from ..tasks import get_task
from .recipe_help import TRAINER_GROUP, USAGE, group_options

# Config fields a recipe may set (the architecture and its adaptation); `loss` defaults to the task's.
MODEL_OPTIONS = (
    "adaptation",
    "head_type",
    "head_hidden_sizes",
    "head_dropout",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "loss",
)
TASK_FILLED_OPTIONS = ("loss",)
# Options that choose one thing in two ways (what, options): the command line's choice drops the recipe's other.
ALTERNATIVE_OPTIONS = (
    ("the backbone: pretrained weights, or a random one of that config", ("base_model_name_or_path", "vision_config")),
)

logger = logging.getLogger(__name__)


def _config_help(name: str) -> str:
    """A field's entry in the config's docstring (its `Args:` section), on one line."""
    match = re.search(
        rf"^\s+{name} \(`[^`]*`[^)]*\)(?:\s*,\s*\*optional\*[^:]*)?:\s*(.+?)(?=\n\s+\w+ \(`|\n\n)",
        PerceptCLIPConfig.__doc__,
        flags=re.M | re.S,
    )
    return " ".join(match.group(1).split()) if match else ""


def option(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its command-line help; a list default becomes a factory (a fresh list each)."""
    if isinstance(default, list):
        return field(default_factory=default.copy, metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _model_option(name: str, defaults: PerceptCLIPConfig) -> tuple[str, type, object]:
    config_field = PerceptCLIPConfig.__dataclass_fields__[name]
    annotation = float if name == "lora_alpha" else config_field.type  # `int | float`: a float on the command line
    default = None if name in TASK_FILLED_OPTIONS else getattr(defaults, name)
    return name, annotation, option(default, _config_help(name))


def _model_arguments_class() -> type:
    defaults = PerceptCLIPConfig()
    backbone = option(
        "openai/clip-vit-large-patch14",
        "Pretrained backbone (Hub id or local dir): CLIP ViT-B/32, B/16, L/14, DINOv2, ViT...",
    )
    random_backbone = option(
        None,
        "Backbone config (YAML mapping or JSON string) of a randomly initialised backbone (offline runs); "
        "used instead of base_model_name_or_path.",
    )
    doc = (
        "The model: a pretrained backbone (Hub id or local dir) or, offline, a randomly initialised `vision_config`; "
        "the other options are `PerceptCLIPConfig` fields."
    )
    options = [
        ("base_model_name_or_path", str | None, backbone),
        ("vision_config", dict | str | None, random_backbone),
        *(_model_option(name, defaults) for name in MODEL_OPTIONS),
    ]
    return make_dataclass("ModelArguments", options, namespace={"__doc__": doc, "__module__": __name__})


ModelArguments = _model_arguments_class()


@dataclass
class DataArguments:
    """The data: one dataset, or several for multi-dataset training (one head each), and the split protocol. Besides
    the registry's datasets, `table` (your CSV / TSV / JSON(L) of images and labels) and `imagefolder` (one
    sub-folder per class)."""

    dataset: list[str] = option(
        ["synthetic_iqa"],
        "Registry name(s) (see `perceptclip list`), or your own data: table (with --table) or imagefolder.",
    )
    data_dir: list[str] = option(
        ["outputs/synthetic_iqa"],
        "Folder of each dataset in its original layout (table: the folder its image paths start from).",
    )
    table: str | None = option(
        None, "--dataset table: the CSV / TSV / JSON / JSONL file of images and labels (in --data_dir, or a path)."
    )
    image_column: str = option("path", "--dataset table: the column of image paths.")
    label_column: str | None = option(
        None, "--dataset table: the column of labels (default: score, or label for a classification task)."
    )
    group_column: str | None = option(
        None,
        "--dataset table: a column of shared content (prompt, source photo): splits keep each group on one side "
        "(default: random 80/20 splits).",
    )
    task: str | None = option(
        None,
        "Your own data's task: quality (table's default), memorability, emotion (imagefolder's default) or a "
        "registered one.",
    )
    splits: list[int] = option([0], "Split indices to run (protocol).")
    validation_fraction: float = 0.1
    crop_size: int | None = option(None, "Default: the backbone's image size.")
    test_crops: int = option(15, "IQA test-time random crops averaged per image.")
    eval_crops: int = option(15, "IQA validation crops (model selection).")
    replicas: int | None = option(None, "IQA train replicas per epoch (default: dataset's).")
    resize_short: int | None = option(
        None, "IQA: resize the short side before cropping (default: the dataset's protocol, e.g. 384 for KonIQ)."
    )
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
                raise ConfigurationError(
                    "--dataset table: give --table FILE, your CSV / TSV / JSON(L) of images "
                    "and labels (image paths relative to --data_dir)"
                )
            task = get_task(self.task or OWN_DATA_TASKS[name])
            own = OwnData(name, data_dir, self.table, self.image_column, self.label_column, self.group_column)
            self._own_infos[name] = own_dataset_info(own, task.name, task.is_classification)
        return self._own_infos[name]

    def split_parts(self, name: str, data_dir: str, split: int) -> dict:
        """Dataset `name`'s parts (train / validation / test) of split `split`, read from `data_dir`."""
        info = self.dataset_info(name)
        return benchmark_splits(
            info, info.loader(data_dir), split, data_dir=data_dir, validation_fraction=self.validation_fraction
        )

    def check_own_data_options(self) -> None:
        """The own-data options go with their dataset: `--table` etc. with `--dataset table`, `--task` with either."""
        defaults = {f.name: f.default for f in fields(self)}
        table_options = [
            f"--{name}"
            for name in ("table", "image_column", "label_column", "group_column")
            if getattr(self, name) != defaults[name]
        ]
        if table_options and "table" not in self.dataset:
            raise ConfigurationError(
                f"{' '.join(table_options)}: read with --dataset table only, not with "
                f"--dataset {' '.join(self.dataset)}"
            )
        if self.task and not set(OWN_DATASETS) & set(self.dataset):
            raise ConfigurationError(
                f"--task {self.task}: the task of your own data (--dataset table or "
                f"imagefolder); {' '.join(self.dataset)} has its own task"
            )

    def resize_short_for(self, name: str) -> int | None:
        """IQA short-side resize of dataset `name`: the override, else its protocol's."""
        return self.resize_short or self.dataset_info(name).test_resize_short


@dataclass
class ExperimentArguments:
    """Protocol options around the Trainer."""

    learning_rates: list[float] | None = option(None, "LR sweep chosen on validation (paper: 5e-5 1e-4 5e-4 1e-3).")
    early_stopping_patience: int = 12
    resume: bool = option(
        False, "Resume each run from its newest complete checkpoint; a run without one starts from scratch."
    )
    stage2_epochs: float = option(0, "Multi-dataset stage 2: epochs of head-only tuning.")
    cross_eval_dataset: list[str] = option(
        [], "Datasets to test each trained model on (cross-dataset generalisation, paper Table 2)."
    )
    cross_eval_data_dir: list[str] = field(default_factory=list)
    save_model: bool = True
    report: bool = option(
        True,
        "Write the run's reports: report/ (curves, sweep, per-split metrics) and split_<k>/report/ (test figures and "
        "worst cases), each as PNGs, report.html and report.md.",
    )


DATACLASSES = (ModelArguments, DataArguments, ExperimentArguments, TrainingArguments)


def packaged_recipes() -> list[str]:
    """Names of the recipes installed with the package (the repository's `configs/`)."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in files("perceptclip_hf.configs").iterdir()
        if entry.name.endswith(".yaml")
    )


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
        raise ConfigurationError(
            f"--config {path}: cannot read it ({err.strerror or err}); give the path of a "
            "recipe YAML or the name of an installed one "
            f"({', '.join(packaged_recipes())})"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        cause = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigurationError(f"{path}: not valid YAML{where} ({cause}); fix the syntax there") from None
    if not isinstance(values, dict):
        raise ConfigurationError(
            f"{path}: expected a mapping of option: value, got a {type(values).__name__}; "
            "write one `option: value` per line"
        )
    known = {f.name for cls in DATACLASSES for f in fields(cls) if f.init}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        hints = [f"{close[0]} for {name}" for name in unknown if (close := difflib.get_close_matches(name, known, 1))]
        raise ConfigurationError(
            f"{path}: unknown option(s) {unknown}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + "; see `python train.py --help` for the options"
        )
    return values


class RecipeParser(HfArgumentParser):
    """The recipe's `HfArgumentParser` (and `--config`); a usage error is a :class:`ConfigurationError` (one line,
    exit 2), prefixed with `source` (`<recipe>: <option>`) for a recipe's value."""

    def __init__(self, prog: str | None = None, source: str | None = None, **kwargs):
        super().__init__(DATACLASSES, prog=prog, usage=USAGE, **kwargs)
        self.add_argument("--config", help="YAML recipe (configs/<dataset>.yaml); command-line options override it.")
        self.source = source
        if self.add_help:
            group_options(
                self,
                [
                    ("Model", ModelArguments),
                    ("Data", DataArguments),
                    ("Experiment", ExperimentArguments),
                    (TRAINER_GROUP, TrainingArguments),
                ],
            )

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
        tokens = [
            str(v).lower() if isinstance(v, bool) else str(v) for v in (value if isinstance(value, list) else [value])
        ]
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
            raise ConfigurationError(
                f"{where}{' and '.join('--' + n for n in chosen)} both choose {what}; give only one of them"
            )
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
        *outputs, unused = parser.parse_args_into_dataclasses(
            args=rest, look_for_args_file=False, return_remaining_strings=True
        )
    except ConfigurationError:
        raise
    except ValueError as err:  # a dataclass's own validation (e.g. TrainingArguments.__post_init__)
        raise ConfigurationError(one_line(err)) from None
    if unused:
        parser.error(f"unrecognized arguments: {' '.join(unused)}")
    return outputs[: len(DATACLASSES)]  # the rest is the namespace holding `config`
