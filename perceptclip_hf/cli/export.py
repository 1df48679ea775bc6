"""`perceptclip export`: a model folder with the model exported for ONNX Runtime or OpenVINO, validated against
PyTorch fp32 (:func:`perceptclip_hf.export.job.export_model`)."""

from __future__ import annotations

import argparse

from .common import echo

NAME = "export"
HELP = "export a model for ONNX Runtime or OpenVINO (LoRA merged), validated against PyTorch"
DESCRIPTION = (
    "Write OUT: the model folder (config, weights, image processor, remote code: it still loads with AutoModel) "
    "and the whole model (normalised pixels in, score or logits out, LoRA merged, dynamic batch) exported as "
    "onnx/model.onnx (fp32) and onnx/model_quantized.onnx (int8), or as OpenVINO IR openvino/openvino_model.xml "
    "(fp32, bf16, fp16). Each exported file is run at once on a calibration set and kept only if it agrees with "
    "PyTorch fp32: fp32 within max |Δ| 1e-4, a lower precision with a Spearman correlation ≥ 0.99 (and ≥ 98 % "
    "top-1 agreement for classifiers); else it is refused with the numbers and OUT is left as it was. "
    "perceptclip_export.json records each file's precision, sha256 and agreement; `perceptclip predict --model "
    "OUT --backend onnxruntime|openvino` runs them."
)


def add_arguments(parser) -> None:
    from ..backends.layout import FORMATS
    from ..hub.source import OFFICIAL_REPOS

    parser.add_argument("out", metavar="OUT", help="output folder (new, empty, or an earlier export to add to)")
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        help="a saved model folder, a Hub id, or an official checkpoint: quality, memorability, emotion, an "
        "official repo id or .pth",
    )
    parser.add_argument("--format", choices=tuple(FORMATS), required=True, help="onnx (ONNX Runtime) or openvino")
    precisions = "; ".join(f"{name}: {', '.join(kinds)}" for name, (_, kinds) in FORMATS.items())
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8", "bf16", "fp16"),
        default="fp32",
        help=f"precision of the export (default: fp32; {precisions}; int8: int8 weights, the fp32 file kept too)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        default=None,
        help="folder of images the export is validated on, like the ones you will score "
        "(default: 32 procedural images)",
    )
    parser.add_argument("--base-model", default=None, help="local copy of the base backbone of an adapter-only model")
    parser.add_argument(
        "--task", choices=sorted(OFFICIAL_REPOS), default=None, help="task of an official one-output .pth"
    )


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from ..export.job import export_model

    transformers_logging.disable_progress_bar()

    summary = export_model(
        args.model,
        args.out,
        format=args.format,
        precision=args.precision,
        calibration=args.calibration,
        base_model=args.base_model,
        task=args.task,
        report=echo,
    )
    for line in summary.lines():
        echo(line)
    echo(
        f"{summary.folder}: perceptclip predict --model {summary.folder} --backend "
        f"{'onnxruntime' if args.format == 'onnx' else 'openvino'} runs it"
    )
    return 0
