"""`perceptclip demo`: the web demo (:mod:`perceptclip_hf.demo.app`) of one model or several, served by gradio."""

from __future__ import annotations

import argparse
import importlib.util
import socket

from .common import UsageError, add_model_arguments, add_tta_arguments, load_options, scorer_options

NAME = "demo"
HELP = "a web page (and a gradio_client API) that scores uploaded images (needs perceptclip-hf[demo])"
DESCRIPTION = (
    "Serve a gradio app: upload one image to see each model's score or label with what it means and a "
    "heatmap of what the first model looks at; upload many for a sortable table (the columns of "
    "`perceptclip predict`), a histogram and a CSV. gradio_client calls its endpoint /score with an image "
    'and gets PerceptScorer\'s result: {"score": s} or {"label": l, "probabilities": {...}} for one '
    "model, {name: that dict} for several (named as predict names them). Needs gradio: "
    "pip install 'perceptclip-hf[demo]'. Stop it with Ctrl-C."
)


def add_arguments(parser) -> None:
    add_model_arguments(parser, several=True)
    add_tta_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--port", type=port_number, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument(
        "--share",
        action="store_true",
        help="also serve through a temporary public gradio.live link (needs internet access)",
    )


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {value}")
    return value


def check_address(host: str, port: int | None) -> None:
    """Fail before the models load when ``host:port`` cannot be served (unknown address, port in use)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port or 0))
    except OSError as err:
        where = f"--host {host}" + (f" --port {port}" if port else "")
        raise UsageError(
            f"{where}: cannot serve there ({err.strerror or err}); choose another {'port' if port else 'address'}"
        ) from None


def run(args: argparse.Namespace) -> int:
    from ..hub.source import named_sources

    if importlib.util.find_spec("gradio") is None:
        raise UsageError("the demo needs gradio, which is not installed: pip install 'perceptclip-hf[demo]'")
    named = named_sources(args.model, args.task)
    check_address(args.host, args.port)
    from ..demo.app import build_demo, launch, load_models

    models = load_models(named, load_kwargs=load_options(args), **scorer_options(args))
    launch(build_demo(models), host=args.host, port=args.port, share=args.share)
    return 0
