"""What the subcommands share: usage errors, model and crop options, loading a scorer, finding images, progress."""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.metadata
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

PROG = "perceptclip"
# Installed packages may register tasks and datasets for the command line under this entry-point group.
PLUGIN_GROUP = "perceptclip_hf.plugins"


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


def add_model_arguments(parser: argparse.ArgumentParser, batch_size: int = 16, several: bool = False) -> None:
    """--model (repeatable with ``several``), --base-model, --task, --device, --dtype, --batch-size."""
    from ..hub.source import OFFICIAL_REPOS

    parser.add_argument(
        "--model",
        "-m",
        required=True,
        action="append" if several else "store",
        help="trained PerceptCLIP model: a local directory (save_pretrained) or a Hub id; or an "
        "official checkpoint, converted once and cached: quality, memorability, emotion (the "
        "official PerceptCLIP repos), an official repo id, or a folder holding its .pth"
        + (
            "; repeat it to score with several models in one pass (each image decoded once, models "
            "on the same base share its weights): columns are then prefixed with each model's name, "
            "NAME from --model NAME=MODEL, else its task (quality, memorability, emotion)"
            if several
            else ""
        ),
    )
    parser.add_argument(
        "--base-model",
        default=None,
        help="local copy of the base backbone for adapter-only checkpoints "
        "(default: the config's base_model_name_or_path; official: openai/clip-vit-large-patch14)",
    )
    parser.add_argument(
        "--task",
        choices=sorted(OFFICIAL_REPOS),
        default=None,
        help="task of an official .pth whose head has one output (quality or memorability cannot be "
        "told apart); aliases and official repo ids know theirs",
    )
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cuda, cuda:1, cpu (default: CUDA if available)"
    )
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        default=None,
        help="compute precision (default: bf16 autocast on GPU, fp32 on CPU)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help=f"images per forward pass (default: {batch_size})"
    )


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        type=positive_int,
        default=None,
        help="image quality models: random crops averaged per image (default: 15; 1 = center crop); "
        "ignored by other tasks (resize + center crop)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test-time crops (default: 0)")


def add_input_arguments(parser: argparse.ArgumentParser, fast_decode: bool = True) -> None:
    """--num-workers and (unless a benchmark protocol forbids other pixels) --fast-decode."""
    from ..scoring.workers import MAX_DEFAULT_WORKERS

    parser.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=None,
        help="processes that decode and crop images ahead of the model (default: the CPUs available, "
        f"at most {MAX_DEFAULT_WORKERS}; 0 = in this process)",
    )
    if not fast_decode:
        return
    parser.add_argument(
        "--fast-decode",
        action="store_true",
        help="decode JPEGs at 1/2, 1/4 or 1/8 size where the resize shrinks them anyway (PIL draft "
        "mode): faster, but scores differ slightly from a full decode (recorded with the output)",
    )


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def load_scorer(args: argparse.Namespace, **overrides: Any):
    """The :class:`PerceptScorer` the arguments describe; loading failures become usage errors."""
    from ..hub.source import ModelSource
    from ..scoring.scorer import PerceptScorer

    source = ModelSource.of(args.model, getattr(args, "task", None)).check()
    return PerceptScorer.from_pretrained(
        source, load_kwargs=load_options(args), **{**scorer_options(args), **overrides}
    )


def scorer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The scorer settings of the arguments (device checked); a command that asks for them loads models, whose
    transformers weight-loading bars are turned off (ours are tqdm)."""
    from transformers.utils import logging as transformers_logging

    from ..scoring.scorer import resolve_device

    transformers_logging.disable_progress_bar()

    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {args.device}: {err}") from err
    return dict(
        device=args.device,
        dtype=args.dtype,
        tta=getattr(args, "tta", None),
        seed=getattr(args, "seed", 0),
        batch_size=args.batch_size,
        num_workers=getattr(args, "num_workers", None),
        fast_decode=getattr(args, "fast_decode", False),
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """What model loading takes from the arguments: a local base backbone (the task is the source's)."""
    return {"base_model_name_or_path": args.base_model} if args.base_model else {}


def progress(iterable: Iterable, **kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


def echo(message: str) -> None:
    """A message on stderr that does not break a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


@dataclass
class Collected:
    """The images a command line names, and everything it found but will not score (with the reason)."""

    images: list[str] = field(default_factory=list)  # absolute paths, one per real file
    not_scored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def reasons(self) -> str:
        """``"2 not an image, 1 same file as another path"``."""
        counts = Counter(
            "same file as another path" if reason.startswith("same file as ") else reason
            for _, reason in self.not_scored
        )
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common())


def collect_images(arguments: Sequence[str]) -> Collected:
    """Files (scored whatever their extension), folders (recursive, symlinked folders once, images by extension or
    content) and globs → absolute image paths in order, one per real file; the rest is counted with its reason.
    A path met twice is scored once; another path to the same file is reported as such."""
    from ..data.files import NOT_AN_IMAGE, VISITED_FOLDER, is_image_file, walk_images
    from ..scoring.image_sources import GLOB_CHARS

    found, paths, walked = Collected(), [], []

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if any(real == root or real.startswith(root + os.sep) for root in walked):
            return  # a glob's sub-folder of a folder already walked
        walked.append(real)
        result = walk_images(folder)
        paths.extend(result.images)
        found.not_scored.extend((os.path.abspath(path), reason) for path, reason in result.not_scored)

    for argument in arguments:
        if os.path.isdir(argument):
            walk(argument)
        elif os.path.isfile(argument):
            paths.append(argument)
        elif GLOB_CHARS.search(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                echo(f"warning: {argument!r} matches no file")
            for match in matches:
                loop = loop_entry(match)
                if loop:  # `**` follows symlinks: paths through a loop repeat what was found
                    found.not_scored.append((loop, VISITED_FOLDER))
                elif os.path.isdir(match):
                    walk(match)
                elif is_image_file(match):
                    paths.append(match)
                else:
                    found.not_scored.append((os.path.abspath(match), NOT_AN_IMAGE))
        else:
            raise UsageError(f"{argument}: no such file or directory")
    first_of: dict[str, str] = {}
    for path in map(os.path.abspath, paths):
        real = os.path.realpath(path)
        if real not in first_of:
            first_of[real] = path
            found.images.append(path)
        elif path != first_of[real]:
            found.not_scored.append((path, f"same file as {first_of[real]}"))
    found.not_scored = list(dict.fromkeys(found.not_scored))
    return found


def loop_entry(path: str) -> str | None:
    """The first folder on ``path`` that leads back to a folder before it on the path (a symlink loop), if any."""
    seen: set[str] = set()
    prefix = os.path.abspath(path)
    parts = prefix.split(os.sep)
    for end in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:end])
        real = os.path.realpath(prefix)
        if real in seen:
            return prefix
        seen.add(real)
    return None
