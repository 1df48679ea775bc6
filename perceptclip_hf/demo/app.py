"""The PerceptCLIP web demo (``perceptclip demo``; the Space app that ``push_to_hub.py --space`` writes).

    >>> from perceptclip_hf.demo.app import build_demo, load_models
    >>> build_demo(load_models(["./perceptclip-koniq"])).launch()

One image: each model's score or label with what it means (:func:`..tasks.score_meaning`), and a heatmap of the first
model (CLS attention of the last layer, or Grad-CAM for convolutional backbones). Many images: a sortable table with
the columns of ``perceptclip predict``, a histogram of the scores and the CSV. The programmatic endpoint ``/score``
(``gradio_client``) takes an image and returns :class:`..scoring.scorer.PerceptScorer`'s dict for one model
(``{"score": s}`` or ``{"label": l, "probabilities": {...}}``), ``{name: that dict}`` for several: what the page
shows is rendered from that result. gradio is imported inside the functions (install ``perceptclip-hf[demo]``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..scoring.model_set import ScorerSet
from ..scoring.scorer import PerceptScorer

SCORE_API = "score"  # the endpoint gradio_client calls: api_name="/score"
FILES_API = "score_files"
DIGITS = 4  # decimals of the scores and probabilities shown on the page
# The interpretability probe swaps a model's attention function: one model call at a time across the app's threads.
MODEL_LOCK = threading.Lock()


def load_models(
    models: Sequence[str] | Mapping[str, str], *, load_kwargs: dict | None = None, **scorer_kwargs: Any
) -> ScorerSet:
    """The demo's models: ``{name: model}``, or a list of ``perceptclip predict --model`` values (``[NAME=]MODEL``,
    named as predict names them). Images are decoded in the server process (``num_workers=0``) unless told."""
    if not isinstance(models, Mapping):
        from ..hub.source import named_sources

        models = named_sources(list(models))
    if scorer_kwargs.get("num_workers") is None:  # also when the command line passes its unset value
        scorer_kwargs["num_workers"] = 0
    return ScorerSet.from_pretrained(models, load_kwargs=load_kwargs, **scorer_kwargs)


def as_scorer_set(models: ScorerSet | PerceptScorer | Mapping[str, PerceptScorer]) -> ScorerSet:
    if isinstance(models, ScorerSet):
        return models
    if isinstance(models, PerceptScorer):
        return ScorerSet({str(models.config.task): models})
    return ScorerSet(models)


def api_result(models: ScorerSet, result: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/score`` output of a :class:`ScorerSet` result: one model's own dict, else ``{name: dict}``."""
    return dict(next(iter(result.values()))) if len(models.scorers) == 1 else dict(result)


def score_image(models: ScorerSet, image: Image.Image | None) -> dict[str, Any]:
    """``/score``: one image → :func:`api_result` (each model as :class:`PerceptScorer` scores it)."""
    import gradio as gr

    if image is None:
        raise gr.Error("Upload an image first.")
    with MODEL_LOCK:
        return api_result(models, models(image))


def per_model(models: ScorerSet, result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: result}`` of an :func:`api_result`."""
    return {next(iter(models.scorers)): dict(result)} if len(models.scorers) == 1 else dict(result)


def prediction_line(name: str, result: Mapping[str, Any]) -> str:
    """``**quality**: score **3.2145**``, or the label with its probability (``DIGITS`` decimals)."""
    if "label" in result:
        probability = result["probabilities"][result["label"]]
        return f"**{name}**: **{result['label']}** (p = {probability:.{DIGITS}f})"
    scores = result["scores"] if "scores" in result else [result["score"]]
    return f"**{name}**: score **{', '.join(f'{score:.{DIGITS}f}' for score in scores)}**"


def describe(models: ScorerSet, result: Mapping[str, Any] | None) -> str:
    """The page's Markdown for a ``/score`` result: per model its prediction, then what the score means."""
    from ..tasks import score_meaning

    if not result:
        return ""
    lines = []
    for name, prediction in per_model(models, result).items():
        lines.append(f"{prediction_line(name, prediction)}  \n{score_meaning(models.scorers[name].config)}")
        if "probabilities" in prediction:
            lines.append(
                ", ".join(
                    f"{label} {p:.{DIGITS}f}"
                    for label, p in sorted(prediction["probabilities"].items(), key=lambda item: -item[1])
                )
            )
    return "\n\n".join(lines)


def heatmap(scorer: PerceptScorer, image: Image.Image | None, name: str = "") -> Image.Image | None:
    """What the model looks at in ``image`` (its whole-image view): the CLS attention of the last layer (mean over
    heads) for attention backbones, Grad-CAM of the prediction for convolutional ones; drawn as ``perceptclip
    explain`` draws its heatmaps."""
    from ..explain.gradcam import grad_cam, target_description
    from ..explain.heatmaps import VIEW, Panel, display_view, grad_cam_panels, heatmap_figure
    from ..explain.interpretability import ATTENTION_METHOD, cls_attention_maps, explanation_method
    from ..preprocessing import center_view_transform

    if image is None:
        return None
    model = scorer.model
    pixels = center_view_transform(model.config).transform_image(image.convert("RGB"), None)[None]
    pixels = pixels.to(next(model.parameters()).device)
    with MODEL_LOCK:
        if explanation_method(model) == ATTENTION_METHOD:
            maps = cls_attention_maps(model, pixels)[-1, 0].mean(0).float().cpu()  # last layer, image 0, heads
            panel = Panel(
                "",
                maps.numpy(),
                "CLS attention, last layer (mean over heads)",
                "Colour: the share of the "
                f"CLS token's attention that goes to each image patch (red = most attended), {VIEW}.",
                "CLS attention weight",
            )
        else:
            cam = grad_cam(model, pixels)
            panel = grad_cam_panels(cam.maps[0], None, target_description(model), "the last feature map")[0]
    title = " · ".join(part for part in (name, panel.subject) if part)
    figure = heatmap_figure(
        display_view(image),
        panel.heat,
        title=title,
        caption=panel.caption,
        colorbar_label=panel.colorbar_label,
        scale=panel.scale,
    )
    return figure_image(figure)


def figure_image(figure) -> Image.Image:
    """A matplotlib ``Figure`` (with its Agg canvas) as an RGB image."""
    canvas = figure.canvas
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def score_files(models: ScorerSet, paths: Sequence[str] | None, out_dir: Path):
    """Many images → (the table: ``perceptclip predict``'s columns, ``id`` the file name; the histogram; the CSV)."""
    import pandas as pd

    from ..scoring.score_formats import csv_row
    from ..scoring.score_rows import result_columns, result_row

    if not paths:
        import gradio as gr

        raise gr.Error("Upload one or more images first.")
    with MODEL_LOCK:
        results = models([str(path) for path in paths], on_error="record")
    rows = [csv_row(result_row(models, Path(path).name, result)) for path, result in zip(paths, results)]
    table = pd.DataFrame(rows, columns=result_columns(models))
    out_dir.mkdir(parents=True, exist_ok=True)
    handle, csv_path = tempfile.mkstemp(prefix="scores-", suffix=".csv", dir=out_dir)
    os.close(handle)
    table.to_csv(csv_path, index=False)
    return table, histogram(models, table), csv_path


def histogram(models: ScorerSet, table) -> Any:
    """One panel per model: the distribution of its scores, or the count of each predicted label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..scoring.score_rows import column_prefixes

    prefixes = column_prefixes(models)
    figure = Figure(figsize=(5, 2.6 * len(models.scorers)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (name, scorer) in zip(
        figure.subplots(len(models.scorers), 1, squeeze=False)[:, 0], models.scorers.items()
    ):
        values = table[prefixes[name] + ("label" if scorer.is_classification else "score")].dropna()
        if scorer.is_classification:
            axes.bar(scorer.labels, values.value_counts().reindex(scorer.labels, fill_value=0).tolist())
            axes.tick_params(axis="x", labelrotation=45)
            axes.set_ylabel("images")
        else:
            axes.hist(list(values), bins=min(20, max(1, len(values))))
            axes.set_xlabel("score (higher is better)" if scorer.higher_is_better else "score (lower is better)")
            axes.set_ylabel("images")
        axes.set_title(f"{name}: {len(values)} images", fontsize=10)
    return figure


def header(models: ScorerSet) -> str:
    lines = [
        "# PerceptCLIP",
        "Perceptual image scoring with CLIP + LoRA ([arXiv 2503.13260]"
        "(https://arxiv.org/abs/2503.13260)). What each model's output means:",
    ]
    from ..tasks import score_meaning

    lines += [
        f"- **{name}**"
        + (f" ({scorer.config.task})" if name != scorer.config.task else "")
        + f": {score_meaning(scorer.config)}"
        for name, scorer in models.scorers.items()
    ]
    return "\n".join(lines)


def build_demo(models: ScorerSet | PerceptScorer | Mapping[str, PerceptScorer], title: str = "PerceptCLIP"):
    """The app (a ``gr.Blocks``; call ``.launch()``). ``models``: a :class:`ScorerSet`, one :class:`PerceptScorer`
    or ``{name: PerceptScorer}``."""
    import gradio as gr

    models = as_scorer_set(models)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(header(models))
        with gr.Tab("One image"):
            one_image_tab(gr, models)
        with gr.Tab("Many images"):
            many_images_tab(gr, models)
    return demo


def one_image_tab(gr, models: ScorerSet) -> None:
    """Image → ``/score`` (the JSON result), then the page's text from that result and the first model's heatmap."""
    first_name, first = next(iter(models.scorers.items()))
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image")
            button = gr.Button("Score", variant="primary", elem_id="score-button")
        with gr.Column():
            summary = gr.Markdown(elem_id="scores")
            result = gr.JSON(label="/score result (gradio_client)", elem_id="result")
            heat = gr.Image(label=f"Heatmap ({first_name})", type="pil", interactive=False, elem_id="heatmap")
    scored = gr.on(
        [image.upload, button.click],
        lambda picture: score_image(models, picture),
        inputs=image,
        outputs=result,
        api_name=SCORE_API,
    )
    scored.then(lambda output: describe(models, output), inputs=result, outputs=summary, api_visibility="private")
    scored.then(
        lambda picture: heatmap(first, picture, first_name), inputs=image, outputs=heat, api_visibility="private"
    )


def many_images_tab(gr, models: ScorerSet) -> None:
    """Files → ``/score_files``: the table, the histogram and the CSV."""
    out_dir = Path(tempfile.mkdtemp(prefix="perceptclip-demo-"))
    files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="files")
    button = gr.Button("Score all", variant="primary")
    table = gr.Dataframe(label="Scores (click a column to sort)", interactive=False, elem_id="table")
    plot = gr.Plot(label="Histogram")
    csv = gr.File(label="CSV", interactive=False)
    button.click(
        lambda paths: score_files(models, paths, out_dir), inputs=files, outputs=[table, plot, csv], api_name=FILES_API
    )


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False, block: bool = True):
    """Serve ``demo`` at ``host:port`` (``share``: also through a public gradio.live link); ``block=False``
    returns at once (the server runs in a thread; ``demo.close()`` stops it)."""
    demo.queue()
    return demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block, footer_links=["api", "gradio"]
    )


__all__ = [
    "FILES_API",
    "SCORE_API",
    "api_result",
    "build_demo",
    "describe",
    "heatmap",
    "launch",
    "load_models",
    "score_files",
    "score_image",
]
