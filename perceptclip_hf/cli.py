"""The ``perceptclip`` command: predict, evaluate, explain, list.

    perceptclip predict photos/ extra/*.png --model ./perceptclip-koniq --output scores.csv
    perceptclip predict photos/ --model ./perceptclip-koniq --output scores.csv --resume
    perceptclip evaluate --model ./perceptclip-koniq --dataset koniq10k --data-dir /data/koniq --split-index 0
    perceptclip explain face.jpg --model ./perceptclip-emotions --out explain/ --top-k 4
    perceptclip list
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

PROG = "perceptclip"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GLOB_CHARS = re.compile(r"[*?\[]")
OUTPUT_FORMATS = (".csv", ".jsonl")


class UsageError(Exception):
    """Bad arguments: reported as ``perceptclip <command>: error: ...`` with exit status 2."""


# ----- shared helpers ------------------------------------------------------------------------------------------

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
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise UsageError(f"--model {model}: directory has no config.json; point it at a folder written by "
                             "save_pretrained")
    elif os.path.exists(model) or not HUB_ID.match(model):
        raise UsageError(f"--model {model}: no such model directory (and not a Hub id like 'org/name')")


def load_scorer(args: argparse.Namespace, **overrides: Any):
    """The :class:`PerceptScorer` the arguments describe; loading failures become usage errors."""
    from .inference import PerceptScorer, resolve_device

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


# ----- predict -------------------------------------------------------------------------------------------------

def collect_images(arguments: Sequence[str]) -> list[str]:
    """Files, folders (recursive, image extensions) and globs → image paths, in order, without duplicates."""
    from .data.records import IMAGE_EXTENSIONS

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


def result_columns(scorer) -> list[str]:
    """CSV columns of a model's rows."""
    if scorer.is_classification:
        return ["path", "label", *(f"prob_{label}" for label in scorer.labels), "error"]
    return ["path", "score", "score_min", "score_max", "higher_is_better", "error"]


def result_row(scorer, path: str, result: dict[str, Any]) -> dict[str, Any]:
    """One output row: the path, the prediction (or error) and, for scores, their range and direction."""
    row = {"path": path, **result}
    if "error" not in result and not scorer.is_classification:
        low, high = scorer.score_range or (None, None)
        row.update(score_min=low, score_max=high, higher_is_better=scorer.higher_is_better)
    return row


class ResultWriter:
    """Appends rows to a ``.csv`` or ``.jsonl`` file (or CSV on stdout), flushing after each row."""

    def __init__(self, path: str | None, columns: list[str], append: bool):
        self.path, self.columns = path, columns
        self.is_jsonl = bool(path) and path.lower().endswith(".jsonl")
        self.handle = open(path, "a" if append else "w", newline="", encoding="utf-8") if path else sys.stdout
        self.csv = None if self.is_jsonl else csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore",
                                                            lineterminator="\n")
        if self.csv is not None and not (append and os.path.getsize(path) > 0):
            self.csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.is_jsonl:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            probabilities = row.pop("probabilities", {})
            self.csv.writerow({**row, **{f"prob_{label}": p for label, p in probabilities.items()}})
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not sys.stdout:
            self.handle.close()


def drop_partial_last_line(path: str) -> None:
    """Cut a last line left unfinished by an interrupted run (no final newline)."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def done_paths(path: str, columns: list[str]) -> set[str]:
    """Absolute paths of the images already in a previous output file (checked to have our columns)."""
    drop_partial_last_line(path)
    with open(path, newline="", encoding="utf-8") as handle:
        if path.lower().endswith(".jsonl"):
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            reader = csv.DictReader(handle)
            if reader.fieldnames and reader.fieldnames != columns:
                raise UsageError(f"--resume: {path} has columns {reader.fieldnames}, but this model writes "
                                 f"{columns}; use another --output")
            rows = list(reader)
    return {os.path.abspath(row["path"]) for row in rows if row.get("path")}


def check_output_argument(args: argparse.Namespace) -> None:
    if args.output is None:
        if args.resume:
            raise UsageError("--resume needs --output (the file of the interrupted run)")
        return
    if not args.output.lower().endswith(OUTPUT_FORMATS):
        raise UsageError(f"--output {args.output}: use a .csv or .jsonl file")
    if os.path.exists(args.output) and not (args.resume or args.overwrite):
        raise UsageError(f"--output {args.output} exists; pass --resume to continue it or --overwrite to replace it")


def run_predict(args: argparse.Namespace) -> int:
    check_output_argument(args)
    check_model_argument(args.model)
    images = collect_images(args.paths)
    if not images:
        raise UsageError(f"no images found in {' '.join(args.paths)} (extensions: jpg, jpeg, png, bmp, tif, tiff, "
                         "webp, gif)")
    scorer = load_scorer(args)
    columns = result_columns(scorer)
    append = bool(args.resume and args.output and os.path.exists(args.output))
    done = done_paths(args.output, columns) if append else set()
    todo = [path for path in images if os.path.abspath(path) not in done]
    skipped = len(images) - len(todo)
    writer = ResultWriter(args.output, columns, append)
    failed = 0
    try:
        results = scorer.iter_predictions(todo, on_error="record")
        for path, result in zip(todo, progress(results, total=len(todo), desc="predict", unit="img")):
            if "error" in result:
                failed += 1
                echo(f"error: {path}: {result['error']}")
            writer.write(result_row(scorer, path, result))
    finally:
        writer.close()
    already = f" (already in {args.output})" if args.output else ""
    echo(f"summary: {len(todo) - failed} scored, {failed} failed, {skipped} skipped{already}; {len(images)} images; "
         f"results in {args.output or 'stdout'}")
    return 0


# ----- evaluate ------------------------------------------------------------------------------------------------

def run_evaluate(args: argparse.Namespace) -> int:
    from .data import get_dataset_info
    from .protocol import evaluate_benchmark

    try:
        info = get_dataset_info(args.dataset)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    if not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    scorer = load_scorer(args, resize_short=info.test_resize_short)
    try:
        metrics, num_images = evaluate_benchmark(scorer, info.name, args.data_dir, args.split_index, args.split,
                                                 progress=lambda it, total: progress(it, total=total,
                                                                                     desc="evaluate", unit="img"))
    except ValueError as err:
        raise UsageError(str(err)) from None
    report = {"model": args.model, "dataset": info.name, "split_index": args.split_index, "split": args.split,
              "num_images": num_images, "metrics": metrics}
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


# ----- explain -------------------------------------------------------------------------------------------------

def run_explain(args: argparse.Namespace) -> int:
    import torch

    from .data.images import open_image
    from .inference import center_view_transform
    from .interpretability import cls_attention_maps, head_importance, rank_heads, save_heatmaps

    paths = collect_images(args.images)
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)}")
    scorer = load_scorer(args, dtype="fp32")
    transform = center_view_transform(scorer.config)
    images, names = [], []
    for path in paths:
        try:
            images.append(open_image(path))
            names.append(path)
        except Exception as err:  # report and go on with the readable images
            echo(f"error: {path}: {err}")
    if not images:
        raise UsageError("none of the images could be read")
    model = scorer.model
    pixel_values = torch.stack([transform.transform_image(image, None) for image in images]).to(scorer.device)
    importance = head_importance(model, pixel_values, batch_size=max(args.batch_size, len(images)), progress=True)
    ranking = rank_heads(importance)
    top_heads = [(layer, head) for layer, head, _ in ranking[:args.top_k]]
    tuned = cls_attention_maps(model, pixel_values)
    base = cls_attention_maps(model, pixel_values, base=True)
    out_dir = Path(args.out)
    written = []
    for index, (image, path) in enumerate(zip(images, names)):
        stem = f"{index:03d}_{Path(path).stem}"
        written += save_heatmaps(image, tuned[:, index], base[:, index], top_heads, out_dir, stem)
    report = {
        "model": args.model,
        "images": names,
        "num_layers": importance.shape[0],
        "num_heads": importance.shape[1],
        "measure": ("mean |change of the score|" if not scorer.is_classification
                    else "mean |change of the baseline top-class probability|")
                   + " when a head's CLS attention row is replaced by a uniform map",
        "importance": importance.tolist(),
        "ranking": [{"layer": layer, "head": head, "importance": value} for layer, head, value in ranking],
        "heatmaps": [path.name for path in written],
    }
    (out_dir / "head_importance.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    echo(f"summary: {len(images)} images explained, {len(paths) - len(images)} unreadable; top heads "
         f"{', '.join(f'L{l}H{h}' for l, h in top_heads)}; {len(written)} heatmaps and head_importance.json in {out_dir}")
    return 0


# ----- list ----------------------------------------------------------------------------------------------------

def run_list(args: argparse.Namespace) -> int:
    from .data import get_dataset_info, list_datasets

    rows = [("dataset", "task", "splits", "score range", "direction")]
    for name in list_datasets(args.task):
        info = get_dataset_info(name)
        score_range = "-" if info.score_range is None else f"{info.score_range[0]:g}-{info.score_range[1]:g}"
        direction = ("classes: " + ", ".join(info.class_names) if info.class_names
                     else "higher is better" if info.higher_is_better else "lower is better")
        rows.append((name, info.task, f"{info.split_protocol} x{info.num_splits}", score_range, direction))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


# ----- parser --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="PerceptCLIP: perceptual image scoring "
                                     "(quality, memorability, emotion) with CLIP + LoRA (arXiv 2503.13260).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict", help="score images (files, folders, globs)",
        description="Score images with a trained model. Folders are searched recursively for image files. "
                    "Unreadable images become rows with an 'error' column and are counted in the final summary. "
                    "Regression models write score, score_min, score_max, higher_is_better; emotion models the top "
                    "label and one prob_<label> column per class.")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    add_model_arguments(predict)
    add_tta_arguments(predict)
    predict.add_argument("--output", "-o", default=None,
                         help="results file, .csv or .jsonl (default: CSV on stdout)")
    predict.add_argument("--resume", action="store_true",
                         help="append to --output, skipping images already in it (after an interrupted run)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    predict.set_defaults(handler=run_predict)

    evaluate = commands.add_parser(
        "evaluate", help="metrics on a benchmark's test split",
        description="Predict a benchmark split (original dataset layout in --data-dir, see 'perceptclip list') and "
                    "print the paper's metrics as JSON: SRCC/PLCC (4PL)/KRCC/MSE for scores, accuracy/mAP/F1 "
                    "for emotions.")
    evaluate.add_argument("--dataset", "-d", required=True, help="benchmark name (see 'perceptclip list')")
    evaluate.add_argument("--data-dir", required=True, help="folder of the dataset in its original layout")
    evaluate.add_argument("--split-index", type=int, default=0, help="which of the benchmark's splits (default: 0)")
    evaluate.add_argument("--split", default="test", help="part of the split to evaluate (default: test)")
    evaluate.add_argument("--output", "-o", default=None, help="also write the metrics JSON to this file")
    add_model_arguments(evaluate)
    add_tta_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    explain = commands.add_parser(
        "explain", help="attention-head importance and heatmaps (paper sec. 6)",
        description="Rank attention heads by how much the prediction changes when a head's CLS attention is made "
                    "uniform (mean over the images), and write heatmaps of the top heads' CLS attention and of its "
                    "difference from the base CLIP (LoRA disabled). Images are resized and center-cropped (whole-image view). "
                    "Writes head_importance.json and, per image and top head, <image>_L<layer>_H<head>.png and "
                    "..._diff.png to --out.")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    explain.add_argument("--out", required=True, help="output folder")
    explain.add_argument("--top-k", type=positive_int, default=4, help="heads to draw heatmaps for (default: 4)")
    add_model_arguments(explain, batch_size=64)
    explain.set_defaults(handler=run_explain)

    listing = commands.add_parser("list", help="the benchmark registry",
                                  description="List the benchmarks 'perceptclip evaluate' knows.")
    listing.add_argument("--task", choices=("quality", "memorability", "emotion"), default=None,
                         help="only this task's datasets")
    listing.set_defaults(handler=run_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # weight-loading bars; ours are tqdm
    try:
        return args.handler(args)
    except UsageError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
