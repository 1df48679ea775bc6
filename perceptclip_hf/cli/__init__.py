"""The ``perceptclip`` command, one subcommand a module: predict, evaluate, explain, export, demo, train, push, list.
Each module has ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int`` (``PASSTHROUGH``
modules parse their own arguments: ``args.argv``).

    perceptclip predict photos/ extra/*.png --model ./perceptclip-koniq --output scores.csv
    perceptclip predict photos/ --model ./perceptclip-koniq --output scores.csv --resume
    perceptclip evaluate --model ./perceptclip-koniq --dataset koniq10k --data-dir /data/koniq --split-index 0
    perceptclip explain face.jpg --model ./perceptclip-emotions --out explain/ --top-k 4
    perceptclip export quality-onnx/ --model ./perceptclip-koniq --format onnx --precision int8
    perceptclip demo --model ./perceptclip-koniq --model emotion --port 7860       # web page + gradio_client /score
    perceptclip train --config configs/koniq10k.yaml --data_dir /data/koniq10k      # = python train.py ...
    perceptclip push --run-dir outputs/koniq --repo-id me/perceptclip-koniq         # = python push_to_hub.py ...
    perceptclip list
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from .. import __version__
from ..errors import DEBUG_ENV, run_command
from . import demo, evaluate, explain, export, listing, predict, push, train
from .common import PROG, UsageError, load_plugins

SUBCOMMANDS = (predict, evaluate, explain, export, demo, train, push, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PerceptCLIP: perceptual image scoring "
        "(quality, memorability, emotion) with CLIP + LoRA (arXiv 2503.13260).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of expected errors too (same as {DEBUG_ENV}=1)"
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable; the working directory is searched too): a module of "
        "yours that registers tasks and datasets "
        "(perceptclip_hf.tasks.register_task, perceptclip_hf.data.register_dataset); installed "
        "packages can use the entry-point group 'perceptclip_hf.plugins' instead",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        passthrough = getattr(module, "PASSTHROUGH", False)
        subparser = commands.add_parser(
            module.NAME, help=module.HELP, description=module.DESCRIPTION, add_help=not passthrough
        )
        if not passthrough:
            module.add_arguments(subparser)
        subparser.set_defaults(handler=module.run, passthrough=passthrough)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and not args.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.argv = passthrough
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # also for `train` / `push`, which report errors themselves

    def command() -> int:
        load_plugins(args.plugin)
        return args.handler(args)

    return command() if args.passthrough else run_command(f"{PROG} {args.command}", command)


__all__ = ["UsageError", "build_parser", "main"]
