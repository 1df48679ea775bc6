"""A model source: what a `--model` value names, decided once where it enters and passed down.

A value is an alias (`quality`, `memorability`, `emotion`: the official PerceptCLIP repos), an official checkpoint
(an official repo id, a folder holding one `.pth` and no `config.json`, or the `.pth`), a folder written by
`save_pretrained`, or a Hub id. :meth:`ModelSource.of` is the one place that tells them apart (no network, no torch);
loading (`scoring.scorer.load_model`), the official conversion cache, the score files' column names and the
command line read its fields.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError, ModelLoadError

OFFICIAL_REPOS = {
    "quality": "PerceptCLIP/PerceptCLIP_IQA",
    "memorability": "PerceptCLIP/PerceptCLIP_Memorability",
    "emotion": "PerceptCLIP/PerceptCLIP_Emotions",
}
OFFICIAL_TASKS = {repo: task for task, repo in OFFICIAL_REPOS.items()}
OFFICIAL_BASE_MODEL = "openai/clip-vit-large-patch14"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `location`: the alias resolved (an official repo id, a local path or a Hub id);
    `official`: an official checkpoint (converted once and cached when loaded); `task`: the task asked for (an
    official `.pth` whose one-output head cannot tell quality from memorability), else an official repo's own;
    `given`: the value as written (what score files record)."""

    location: str
    official: bool
    task: str | None = None
    given: str = ""

    @classmethod
    def of(cls, model: str | os.PathLike | ModelSource, task: str | None = None) -> ModelSource:
        """The source a value names (a `ModelSource` is returned as it is)."""
        if isinstance(model, ModelSource):
            return model
        given = os.fspath(model)
        location = resolve_alias(given)
        return cls(location, is_official_source(location), task or OFFICIAL_TASKS.get(location), given)

    @property
    def name(self) -> str:
        """Its name in score files: its task (an official source's, a local folder config's), else its folder."""
        if self.location in OFFICIAL_TASKS:
            return OFFICIAL_TASKS[self.location]
        try:
            with open(os.path.join(self.location, "config.json"), encoding="utf-8") as handle:
                return str(json.load(handle)["task"])
        except (OSError, ValueError, KeyError, TypeError):
            return os.path.basename(os.path.normpath(self.location)) or self.location

    @property
    def hint(self) -> str:
        """What to add after `--model DIR` for a local copy of an official repo (its task, which a folder cannot
        tell); empty for other sources."""
        return f" --task {OFFICIAL_TASKS[self.location]}" if self.location in OFFICIAL_TASKS else ""

    def check(self) -> ModelSource:
        """Fail fast, before torch loads, on a value that is neither a saved folder, an official checkpoint nor a Hub
        id; returns the source."""
        if self.official:
            return self
        if os.path.isdir(self.location):
            if not os.path.isfile(os.path.join(self.location, "config.json")):
                raise ModelLoadError(
                    f"--model {self.location}: directory has no config.json nor exactly one official .pth; point it "
                    "at a folder written by save_pretrained, or at a copy of an official PerceptCLIP repo"
                )
        elif not is_hub_model_id(self.location):
            raise ModelLoadError(
                f"--model {self.location}: no such model directory (and not a Hub id like 'org/name', nor one of "
                f"{', '.join(OFFICIAL_REPOS)})"
            )
        return self


def named_sources(
    models: str | os.PathLike | ModelSource | Sequence[str | ModelSource] | Mapping[str, str | ModelSource],
    task: str | None = None,
) -> dict[str, ModelSource]:
    """``{name: source}``: a mapping keeps its names; values are named ``NAME=MODEL``, else by the model's
    :attr:`ModelSource.name`. Then each is checked (:meth:`ModelSource.check`), before anything loads. ``task``: of
    one official checkpoint."""
    if isinstance(models, (str, os.PathLike, ModelSource)):
        models = [models]
    if isinstance(models, Mapping):
        named = {name: ModelSource.of(model, task) for name, model in models.items()}
    else:
        named = {}
        for value in models:
            name, model = None, value
            if isinstance(value, str):
                given, _, path = value.partition("=")
                if path and NAME_PATTERN.fullmatch(given) and not os.path.exists(value):
                    name, model = given, path
            source = ModelSource.of(model, task)
            name = name or source.name
            if name in named:
                raise ConfigurationError(
                    f"--model {value}: another --model is also named {name!r}; name them apart with --model NAME=MODEL"
                )
            named[name] = source
    if len(named) > 1 and task:
        raise ConfigurationError(
            "--task names the task of one official checkpoint; with several --model, use their aliases "
            "(quality, memorability, emotion) or folders"
        )
    for source in named.values():
        source.check()
    return named


def resolve_alias(name: str) -> str:
    """`quality` / `memorability` / `emotion` → the official repo id, unless a local path of that name exists."""
    return OFFICIAL_REPOS[name] if name in OFFICIAL_REPOS and not os.path.exists(name) else name


def is_hub_model_id(name: str | None) -> bool:
    """Whether `name` names a Hub repo (`org/name`) rather than a local directory."""
    return bool(name) and not os.path.exists(name) and HUB_ID.match(name) is not None


def is_official_source(source: str) -> bool:
    """Whether `source` (alias resolved) is an official checkpoint: a `.pth` file, a local folder with exactly one
    `.pth` and no `config.json`, or an official repo id. No network: another Hub repo in the official layout is
    used through a local copy (`hf download REPO --local-dir DIR`)."""
    if os.path.isfile(source):
        return source.endswith(CHECKPOINT_SUFFIXES)
    if os.path.isdir(source):
        names = os.listdir(source)
        return "config.json" not in names and len(checkpoint_files(names)) == 1
    return source in OFFICIAL_TASKS


def checkpoint_files(names) -> list[str]:
    return sorted(name for name in names if name.endswith(CHECKPOINT_SUFFIXES))


__all__ = [
    "OFFICIAL_REPOS",
    "OFFICIAL_TASKS",
    "ModelSource",
    "is_hub_model_id",
    "named_sources",
    "resolve_alias",
]
