"""What the subcommands share: usage errors, model and crop options, loading a scorer, finding images, progress."""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import UserError

PROG = "perceptclip"
# Installed packages may register tasks and datasets for the command line under this entry-point group.
PLUGIN_GROUP = "perceptclip_hf.plugins"
GLOB_CHARS = re.compile(r"[*?\[]")


class UsageError(UserError):
    """Bad arguments: reported as ``perceptclip <command>: error: ...`` with exit status 2."""


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Import the entry points of ``PLUGIN_GROUP`` and the ``--plugin`` modules (found on ``sys.path`` and in the
    working directory): where a user's ``register_task`` / ``register_dataset`` calls live, so every subcommand
    knows their tasks and datasets."""
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()
    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise UsageError(f"--plugin {module}: {err}; put the module on PYTHONPATH (or install it)") from None


def add_model_arguments(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    parser.add_argument("--model", "-m", required=True,
                        help="trained PerceptCLIP model: a local directory (save_pretrained) or a Hub id")
    parser.add_argument("--base-model", default=None,
                        help="local copy of the base backbone for adapter-only checkpoints "
                             "(default: the config's base_model_name_or_path)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu (default: CUDA if available)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="compute precision (default: bf16 autocast on GPU, fp32 on CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"images per forward pass (default: {batch_size})")


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", type=positive_int, default=None,
                        help="image quality models: random crops averaged per image (default: 15; 1 = center crop); "
                             "ignored by other tasks (resize + center crop)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test-time crops (default: 0)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def check_model_argument(model: str) -> None:
    """Fail fast, before loading torch models, on a model that is neither a saved directory nor a Hub id."""
    from ..model_card import is_hub_model_id

    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise UsageError(f"--model {model}: directory has no config.json; point it at a folder written by "
                             "save_pretrained")
    elif not is_hub_model_id(model):
        raise UsageError(f"--model {model}: no such model directory (and not a Hub id like 'org/name')")


def load_scorer(args: argparse.Namespace, **overrides: Any):
    """The :class:`PerceptScorer` the arguments describe; loading failures become usage errors."""
    from ..inference import PerceptScorer, resolve_device

    check_model_argument(args.model)
    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {args.device}: {err}") from err
    options = dict(device=args.device, dtype=args.dtype, tta=getattr(args, "tta", None),
                   seed=getattr(args, "seed", 0), batch_size=args.batch_size)
    options.update(overrides)
    load_kwargs = {"base_model_name_or_path": args.base_model} if args.base_model else None
    try:
        return PerceptScorer.from_pretrained(args.model, load_kwargs=load_kwargs, **options)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise UsageError(f"cannot load model {args.model!r}: {err}") from err


def progress(iterable: Iterable, **kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


def echo(message: str) -> None:
    """A message on stderr that does not break a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def collect_images(arguments: Sequence[str]) -> list[str]:
    """Files, folders (recursive, image extensions) and globs → image paths, in order, without duplicates."""
    from ..data.records import IMAGE_EXTENSIONS

    def is_image(path: str) -> bool:
        return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS

    def walk(folder: str) -> list[str]:
        found = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if is_image(f) and not f.startswith(".")]
        return found

    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            paths += walk(argument)
        elif os.path.isfile(argument):
            paths.append(argument)
        elif GLOB_CHARS.search(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                echo(f"warning: {argument!r} matches no file")
            for match in matches:
                paths += walk(match) if os.path.isdir(match) else [match] if is_image(match) else []
        else:
            raise UsageError(f"{argument}: no such file or directory")
    seen: set[str] = set()
    unique = []
    for path in paths:
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            unique.append(path)
    return unique
