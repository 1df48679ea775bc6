"""`train.py --help`: the recipe's options in groups, the essentials first, then the model, data and experiment
options; transformers' `TrainingArguments` (over a hundred) are listed by `--help-all` only, and are accepted either
way. Display only: parsing is the `HfArgumentParser`'s."""

from __future__ import annotations

import argparse
from dataclasses import fields

ESSENTIALS = (
    "config",
    "dataset",
    "data_dir",
    "table",
    "image_column",
    "label_column",
    "splits",
    "output_dir",
    "base_model_name_or_path",
    "vision_config",
    "learning_rate",
    "learning_rates",
    "num_train_epochs",
    "per_device_train_batch_size",
    "resume",
)
TRAINER_GROUP = "Trainer options (transformers.TrainingArguments)"
USAGE = "%(prog)s --config RECIPE.yaml [--option value ...]"


class HelpAll(argparse.Action):
    """`--help-all`: the help with every Trainer option."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.show_trainer_options = True
        parser.print_help()
        parser.exit()


def group_options(parser: argparse.ArgumentParser, dataclass_groups: list[tuple[str, type]]) -> None:
    """Move the parser's options into titled groups: essentials, then one per `(title, dataclass)`; options of
    the last dataclass (`TrainingArguments`) are hidden from `--help` unless `parser.show_trainer_options`."""
    parser.add_argument("--help-all", action=HelpAll, help="show the help with every Trainer option, and exit")
    owner = {f.name: title for title, cls in dataclass_groups for f in fields(cls) if f.init}
    groups = {title: parser.add_argument_group(title) for title in ("Essentials", *(t for t, _ in dataclass_groups))}
    for action in list(parser._optionals._group_actions):
        if action.dest in ("help", "help_all"):
            continue
        title = "Essentials" if action.dest in ESSENTIALS else owner.get(action.dest)
        if title:
            parser._optionals._group_actions.remove(action)
            groups[title]._group_actions.append(action)
    groups["Essentials"]._group_actions.sort(key=lambda action: ESSENTIALS.index(action.dest))
    parser.show_trainer_options = False
    trainer_group = groups[dataclass_groups[-1][0]]
    hidden = len(trainer_group._group_actions)
    parser.epilog = (
        f"The {hidden} other Trainer options (transformers.TrainingArguments: logging, saving, mixed "
        "precision, ...) are accepted as well: --help-all lists them."
    )
    format_help = parser.format_help

    def format_help_without_trainer() -> str:
        if parser.show_trainer_options:
            return format_help()
        parser._action_groups.remove(trainer_group)
        try:
            return format_help()
        finally:
            parser._action_groups.append(trainer_group)

    parser.format_help = format_help_without_trainer


__all__ = ["ESSENTIALS", "USAGE", "group_options"]
