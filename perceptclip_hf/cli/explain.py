"""`perceptclip explain`: attention-head importance and heatmaps (paper sec. 6), via `interpretability.explain`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, add_model_arguments, collect_images, echo, load_scorer, positive_int


NAME = "explain"
HELP = "attention-head importance and heatmaps (paper sec. 6)"
DESCRIPTION = ("Rank attention heads by how much the prediction changes when a head's CLS attention is made "
               "uniform (mean over the images), and write heatmaps of the top heads' CLS attention and of its "
               "difference from the base CLIP (LoRA disabled). Images are resized and center-cropped (whole-image view). "
               "Writes head_importance.json and, per image and top head, <image>_L<layer>_H<head>.png and "
               "..._diff.png to --out.")


WRITER = "perceptclip explain"


def check_out_folder(out: Path, report_file: str) -> None:
    """``--out`` is new, empty or an earlier output of this command (its report names it): created here, before the
    model loads; a folder holding other files is left untouched."""
    from ..errors import OutputError
    from ..score_files import check_own_json

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / report_file).exists():
            raise OutputError(f"--out {out} holds files not written by {WRITER}; they are left untouched: choose a "
                              "new or empty folder")
        check_own_json(out / report_file, WRITER, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {out}: cannot create it ({err.strerror}); choose another folder") from None


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--top-k", type=positive_int, default=4, help="heads to draw heatmaps for (default: 4)")
    add_model_arguments(parser, batch_size=64)


def run(args: argparse.Namespace) -> int:
    from ..data.images import open_image
    from ..interpretability import REPORT_FILE, explain

    check_out_folder(Path(args.out), REPORT_FILE)
    found = collect_images(args.images)
    paths = found.images
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)}")
    scorer = load_scorer(args, dtype="fp32", merge_lora=False)  # the probe compares with the adapters off
    images, names = [], []
    for path in paths:
        try:
            images.append(open_image(path))
            names.append(path)
        except Exception as err:  # report and go on with the readable images
            echo(f"error: {path}: {err}")
    if not images:
        raise UsageError("none of the images could be read")
    report = explain(scorer.model, images, names=names, top_k=args.top_k, out_dir=args.out,
                     batch_size=args.batch_size, progress=True, metadata={"writer": WRITER, "model": args.model})
    top = ", ".join(f"L{layer}H{head}" for layer, head in report["top_heads"])
    not_scored = f", {len(found.not_scored)} not images or duplicates ({found.reasons()})" if found.not_scored else ""
    echo(f"summary: {len(images)} images explained, {len(paths) - len(images)} unreadable{not_scored}; top heads {top}; "
         f"{len(report['heatmaps'])} heatmaps and {REPORT_FILE} in {Path(args.out)}")
    return 0
