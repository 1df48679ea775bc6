"""`perceptclip explain`: attention-head importance and heatmaps (paper sec. 6), or Grad-CAM for convolutional
backbones, via `interpretability.explain`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..output_safety import check_own_folder
from .common import (
    UsageError,
    add_model_arguments,
    echo,
    load_scorer,
    positive_int,
)

NAME = "explain"
HELP = "attention-head importance and heatmaps (paper sec. 6); Grad-CAM for CNN backbones"
DESCRIPTION = (
    "Attention backbones with a CLS token (CLIP, ViT, DINOv2): rank attention heads by how much the "
    "prediction changes when a head's CLS attention is made uniform (mean over the images), and write "
    "heatmaps of the top heads' CLS attention, per image <image>_L<layer>_H<head>.png, and for LoRA models "
    "of its difference from the base backbone (LoRA disabled), ..._diff.png. Convolutional backbones "
    "(ResNet, ConvNeXt): one Grad-CAM heatmap of the prediction per image, <image>_gradcam.png. Images are "
    "resized and center-cropped (whole-image view); each heatmap has a title (image, head or Grad-CAM, "
    "prediction), a colour bar and a caption. Writes head_importance.json (method, ranking or Grad-CAM "
    "details, the heatmaps) to --out."
)


WRITER = "perceptclip explain"


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=4,
        help="heads to draw heatmaps for (default: 4; attention backbones only)",
    )
    add_model_arguments(parser, batch_size=64)


def run(args: argparse.Namespace) -> int:
    from ..data.images import open_image
    from ..explain.interpretability import ATTENTION_METHOD, REPORT_FILE, UnsupportedBackbone, explain
    from ..scoring.inputs import collect_images

    check_own_folder(Path(args.out), REPORT_FILE, WRITER)
    found = collect_images(args.images, echo)
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
    try:
        report = explain(
            scorer.model,
            images,
            names=names,
            top_k=args.top_k,
            out_dir=args.out,
            batch_size=args.batch_size,
            progress=True,
            metadata={"writer": WRITER, "model": args.model},
        )
    except UnsupportedBackbone as err:
        raise UsageError(f"--model {args.model}: {err}") from None
    if report["method"] == ATTENTION_METHOD:
        method = "top heads " + ", ".join(f"L{layer}H{head}" for layer, head in report["top_heads"])
    else:
        method = f"Grad-CAM on {report['feature_map']['module'] or 'the backbone output'}"
    not_scored = f", {len(found.not_scored)} not images or duplicates ({found.reasons()})" if found.not_scored else ""
    echo(
        f"summary: {len(images)} images explained, {len(paths) - len(images)} unreadable{not_scored}; {method}; "
        f"{len(report['heatmaps'])} heatmaps and {REPORT_FILE} in {Path(args.out)} ({report['diff_maps']})"
    )
    return 0
