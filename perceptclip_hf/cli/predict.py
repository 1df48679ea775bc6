"""`perceptclip predict`: score images (files, folders, globs, shards, tables) with one model or several into a
CSV / JSONL / Parquet file or stdout, resumable."""

from __future__ import annotations

import argparse
import sys
from operator import attrgetter

from .common import add_engine_arguments, add_input_arguments, add_model_arguments, add_tta_arguments, echo

NAME = "predict"
HELP = "score images (files, folders, globs, WebDataset shards, Parquet, datasets)"
DESCRIPTION = (
    "Score images with a trained model. Folders are searched recursively (symlinked folders once; images "
    "by extension or content); what is found but not scored is listed with its reason. Unreadable images "
    "become rows with an 'error' column and are counted in the final summary. Each row's 'id' names its "
    "input: the absolute path of a file, the __key__ of a shard sample, the --id-column value (default: "
    "the row index) of a table row. <output>.meta.json records the model, the settings and each run, and "
    "makes --resume / --overwrite refuse files this command did not write. "
    "Regression models write score, score_scale (calibrated: trained to the labels' values, with their "
    "range in score_min / score_max; relative: PLCC-trained, it ranks images on a scale of its own, no "
    "range), higher_is_better; emotion models the top "
    "label and one prob_<label> column per class. Several --model score in one pass, their columns "
    "prefixed with each model's name."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="INPUT",
        help="image files, folders or glob patterns; WebDataset shards (.tar, .tar.gz, brace patterns like "
        "shards/{000000..000099}.tar); Parquet files (.parquet, globs); save_to_disk folders",
    )
    add_model_arguments(parser, batch_size=None, several=True, backends=True)
    add_tta_arguments(parser)
    add_input_arguments(parser)
    tables = parser.add_argument_group("datasets (Parquet files, save_to_disk folders, --hf-dataset)")
    tables.add_argument(
        "--hf-dataset",
        metavar="NAME",
        default=None,
        help="a dataset datasets.load_dataset reads: a Hub id or a local dataset folder",
    )
    tables.add_argument(
        "--split", default=None, help="split of --hf-dataset or of a save_to_disk DatasetDict (default: its only split)"
    )
    tables.add_argument(
        "--streaming", action="store_true", help="stream --hf-dataset (read once in order, never downloaded whole)"
    )
    tables.add_argument("--image-column", default="image", help="column holding the images (default: image)")
    tables.add_argument(
        "--id-column",
        default=None,
        help="column whose values name the rows in the output (default: the row index, counted over "
        "all Parquet files in order)",
    )
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="results file, .csv, .jsonl or .parquet (default: CSV on stdout); with --engine ray a folder of "
        "Parquet files",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --output (written by this command with the same model and settings), "
        "skipping the inputs already in it",
    )
    parser.add_argument(
        "--retry-errors", action="store_true", help="with --resume: score again the inputs whose rows hold an error"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (only one this command wrote)"
    )
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigurationError

    names = ("resume", "retry_errors", "overwrite", "batch_size", "tta", "seed", "device", "dtype", "backend")
    names += ("fast_decode",)
    names += ("base_model", "task", "hf_dataset", "split", "streaming", "image_column", "id_column")
    settings = dict(zip(names, attrgetter(*names)(args)))
    if args.engine == "ray":
        from ..integrations.ray import score_with_ray

        if args.num_workers is not None:
            raise ConfigurationError("--num-workers is the local engine's; with --engine ray, Ray's read tasks decode")
        rows = {"rows_per_file": args.rows_per_file} if args.rows_per_file else {}
        on_ray = dict(address=args.ray_address, actors=args.ray_actors, **rows)
        summary = score_with_ray(args.paths, args.model, args.output, **on_ray, **settings, report=echo)
    else:
        from ..scoring.job import score

        if args.ray_address or args.ray_actors or args.rows_per_file:
            raise ConfigurationError("--ray-address, --ray-actors and --rows-per-file are --engine ray's: add it")
        output = sys.stdout if args.output is None else args.output
        summary = score(
            args.paths, args.model, output, num_workers=args.num_workers, **settings, report=echo, progress=True
        )
    if summary.process == 0:  # under a launcher, the main process reports the totals
        echo(str(summary))
    return 0
