"""What the subcommands share: usage errors, model and crop options, loading a scorer, progress and messages."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Sequence
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


def add_model_arguments(
    parser: argparse.ArgumentParser, batch_size: int | None = 16, several: bool = False, backends: bool = False
) -> None:
    """--model (repeatable with ``several``), --base-model, --task, --device, --dtype, --batch-size; with
    ``backends``, --backend (and --dtype int8)."""
    from ..backends.runtimes import CHOICES, PRECISIONS
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
        choices=("bf16", "fp16", "fp32", "int8") if backends else ("bf16", "fp16", "fp32"),
        default=None,
        help="compute precision, the same on every backend (default: bf16 autocast on GPU, fp32 on CPU)"
        + (
            "; "
            + "; ".join(f"{backend}: {', '.join(precisions)}" for backend, precisions in PRECISIONS.items())
            + " (int8: int8 weights)"
            if backends
            else ""
        ),
    )
    if backends:
        parser.add_argument(
            "--backend",
            choices=CHOICES,
            default="torch",
            help="where the forward pass runs: torch (default), or on the CPU the model exported with LoRA "
            "merged, for onnxruntime or openvino (extras [onnx], [openvino]): the export a `perceptclip export` "
            "folder holds, else one made once and cached; auto: the fastest backend and precision that agrees "
            "with fp32 on this machine (measured the first time a model runs here, then cached; with --dtype, "
            "among that precision's), printed; recorded with the output (--resume keeps it)",
        )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help=f"images per forward pass (default: {batch_size})"
        if batch_size
        else "images per forward pass (default: 16 on the CPU; on a GPU 16 per 10 GiB of its memory, at most 128; "
        "--engine ray: 16)",
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


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--engine local|ray and Ray's options (perceptclip_hf.integrations.ray)."""
    engines = parser.add_argument_group("engine")
    engines.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (several with accelerate launch); ray: Ray Data — reading and decoding in Ray "
        "tasks, the models in an actor pool, --output a folder of Parquet files (pip install "
        "'perceptclip-hf[ray]')",
    )
    engines.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="the Ray cluster to join (e.g. auto, or ray://HOST:10001; default: a running one, else a new one here)",
    )
    engines.add_argument(
        "--ray-actors",
        metavar="N",
        type=positive_int,
        default=None,
        help="model actors (default: one per GPU, else one per 4 CPUs of the cluster)",
    )
    engines.add_argument(
        "--rows-per-file",
        metavar="N",
        type=positive_int,
        default=None,
        help="--engine ray: at least N rows in each Parquet file (default: 1024; a killed run loses the rows not "
        "yet in a file)",
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

    from ..scoring.devices import check_device

    transformers_logging.disable_progress_bar()
    check_device(args.device)
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
    from ..scoring.job import progress_bar

    return progress_bar(iterable, **kwargs)


def echo(message: str) -> None:
    """A message on stderr that does not break a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
