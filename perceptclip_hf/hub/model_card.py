"""Model cards of PerceptCLIP repos: Hub metadata, model-index eval results from a run's `results.json`, and prose
from the Jinja templates in `model_cards/` (installed as `perceptclip_hf.model_cards`).

A card's template is the task's file (`TaskSpec.card_template`: `quality.md`, `memorability.md`, `emotion.md`,
`custom.md`), then
`multi_dataset.md` for multi-dataset runs, then `layout.md`: the first ones only `{% set %}` the task's prose, the
layout arranges it around the shared sections (usage, results, training, citation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..metrics import aggregate_splits
from ..modeling import PerceptCLIPConfig
from ..tasks import TaskSpec, get_task, list_tasks, score_meaning, task_of_config
from .source import is_hub_model_id

TEMPLATES = files("perceptclip_hf.model_cards")
LAYOUT_TEMPLATE = "layout.md"
MULTI_DATASET_TEMPLATE = "multi_dataset.md"
REPO_ID_PLACEHOLDER = "REPO_ID"

DATASET_NAMES = {
    "koniq10k": "KonIQ-10k",
    "livec": "LIVE Challenge",
    "spaq": "SPAQ",
    "flive": "FLIVE (PaQ-2-PiQ)",
    "live": "LIVE",
    "tid2013": "TID2013",
    "kadid10k": "KADID-10k",
    "agiqa3k": "AGIQA-3K",
    "lamem": "LaMem",
    "things": "THINGS memorability",
    "emoset": "EmoSet-118K",
    "emotionroi": "EmotionROI",
}
METRIC_NAMES = {
    "srcc": "SRCC",
    "plcc": "PLCC",
    "krcc": "KRCC",
    "mse": "MSE",
    "accuracy": "Accuracy",
    "accuracy_2class": "2-class accuracy",
    "map": "mAP",
    "macro_f1": "Macro F1",
    "weighted_f1": "Weighted F1",
}


@dataclass
class DatasetResults:
    """One dataset's test metrics in a run: per split, and aggregated as the run reported them."""

    name: str
    task: str
    aggregation: str
    splits: list[tuple[str, dict[str, float]]]
    aggregate: dict[str, float]

    @property
    def title(self) -> str:
        return DATASET_NAMES.get(self.name, self.name)

    @property
    def metrics(self) -> list[str]:
        return list(self.aggregate)

    def summary_rows(self) -> list[tuple[str, dict[str, float]]]:
        """Median and mean over the splits (table footer), when there are several splits."""
        if len(self.splits) < 2:
            return []
        per_split = [metrics for _, metrics in self.splits]
        return [(how, aggregate_splits(per_split, how=how)) for how in ("median", "mean")]


def parse_results(results: Mapping, default_task: str) -> list[DatasetResults]:
    """The datasets of a `results.json` (single-dataset or multi-dataset `"datasets": {name: ...}` form)."""
    if "datasets" in results:
        return [dataset_results(name, entry, default_task) for name, entry in results["datasets"].items()]
    return [dataset_results(results["dataset"], results, default_task)]


def spec_of(task: str) -> TaskSpec:
    """A results file's task: the registered spec, else a generic one of that name (as `task_of_config`)."""
    return get_task(task) if task in list_tasks() else TaskSpec(name=task)


def dataset_results(name: str, entry: Mapping, default_task: str) -> DatasetResults:
    task = entry.get("task", default_task)
    aggregation = entry.get("metric_aggregation", spec_of(task).aggregation)
    splits = [
        (str(split.get("split", index)), dict(split["test"])) for index, split in enumerate(entry.get("splits", []))
    ]
    aggregate = entry.get("aggregate") or aggregate_splits([m for _, m in splits], how=aggregation)
    return DatasetResults(name, task, aggregation, splits, {k: float(v) for k, v in aggregate.items()})


def eval_results(datasets: list[DatasetResults]) -> list[EvalResult]:
    """model-index entries: each dataset's aggregate test metrics."""
    entries = []
    for dataset in datasets:
        for metric, value in dataset.aggregate.items():
            name = METRIC_NAMES.get(metric, metric)
            if len(dataset.splits) > 1:
                name = f"{name} ({dataset.aggregation} of {len(dataset.splits)} splits)"
            spec = spec_of(dataset.task)
            entries.append(
                EvalResult(
                    task_type=spec.card_task_type,
                    task_name=spec.title,
                    dataset_type=dataset.name,
                    dataset_name=dataset.title,
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=name,
                    metric_value=value,
                )
            )
    return entries


def architecture_rows(config: PerceptCLIPConfig) -> dict[str, str]:
    """The model's architecture and adaptation, for the card's training section."""
    vision = config.vision_config
    shape = [
        f"{label} {getattr(vision, field)}"
        for label, field in (
            ("hidden", "hidden_size"),
            ("widths", "hidden_sizes"),
            ("layers", "num_hidden_layers"),
            ("depths", "depths"),
            ("patch", "patch_size"),
            ("input", "image_size"),
        )
        if getattr(vision, field, None) is not None
    ]
    rows = {
        "backbone": f"`{vision.model_type}` ({', '.join(shape)})",
        "adaptation": config.adaptation,
    }
    if config.adaptation == "lora":
        rows["LoRA"] = (
            f"r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}, "
            f"targets {', '.join(config.lora_target_modules)}"
        )
    hidden = " → ".join(map(str, config.head_hidden_sizes)) if config.head_type == "mlp" else "none"
    rows["head"] = f"{config.head_type} (hidden {hidden}, dropout {config.head_dropout})"
    rows["heads"] = ", ".join(f"{name}: {size}" for name, size in config.head_sizes.items())
    rows["loss"] = config.loss
    return rows


def model_description(config: PerceptCLIPConfig) -> str:
    """The real architecture in words: backbone and its source, adaptation, head (`CLIP's vision encoder
    (openai/clip-vit-large-patch14) adapted with LoRA on the attention q_proj/k_proj/v_proj projections, its frozen
    visual projection, and an MLP head (hidden 512 → 256)`)."""
    model_type = config.vision_config.model_type
    clip = model_type == "clip_vision_model"
    source = config.base_model_name_or_path or "randomly initialised"
    backbone = f"CLIP's vision encoder ({source})" if clip else f"a `{model_type}` backbone ({source})"
    adaptation = {
        "lora": f"adapted with LoRA on the attention {'/'.join(config.lora_target_modules)} projections",
        "full": "fully fine-tuned",
        "frozen": "kept frozen",
    }[config.adaptation]
    head = (
        f"an MLP head (hidden {' → '.join(map(str, config.head_hidden_sizes))})"
        if config.head_type == "mlp"
        else "a linear head"
    )
    return f"{backbone} {adaptation}{', its frozen visual projection,' if clip else ''} and {head}"


def preprocessing_text(config: PerceptCLIPConfig, spec: TaskSpec) -> str:
    """How this model's images are prepared at test time (`perceptclip predict`, `PerceptScorer`), in one paragraph."""
    from ..modeling import default_image_processor

    crop = default_image_processor(config).crop_size["height"]
    if not spec.multi_crop_test:
        return (
            f"Each image's short side is resized to {crop} px (bilinear, aspect kept), then the center "
            f"{crop}×{crop} crop is scored (the official `Resize({crop})` + `CenterCrop({crop})`); the image "
            "processor and the pipeline do the same."
        )
    if config.test_resize_size:
        height, width = config.test_resize_size
        resize = (
            f"resized to {width}×{height} px (width × height, aspect ratio not kept, bilinear; the official "
            f"`Resize(({height}, {width}))`)"
        )
    elif config.test_resize_short:
        resize = f"resized so its short side is {config.test_resize_short} px (bilinear, aspect kept)"
    else:
        resize = "kept at its native resolution"
    return (
        f"Each image is {resize}; the score is the mean over 15 random {crop}×{crop} crops, seeded per image "
        "(`perceptclip predict`, `PerceptScorer`; `--tta 1` takes the center crop), the official test protocol. "
        "The image processor and the pipeline score a single resized center crop instead: close, not identical."
    )


def template_text(spec: TaskSpec, multi_dataset: bool) -> str:
    names = [spec.card_template, *([MULTI_DATASET_TEMPLATE] if multi_dataset else []), LAYOUT_TEMPLATE]
    return "".join(TEMPLATES.joinpath(name).read_text(encoding="utf-8") for name in names)


def render_model_card(
    config: PerceptCLIPConfig,
    results: Mapping | None = None,
    repo_id: str | None = None,
    notes: str | None = None,
    peft_adapter: bool = False,
    report: str | None = None,
) -> ModelCard:
    """The model card of a PerceptCLIP repo. `results`: a run's `results.json` content (model-index, tables and
    recipe); `notes`: an extra paragraph (provenance); `peft_adapter`: the repo has an `adapter/` folder; `report`: the
    repo's folder holding the run's summary report (embedded and linked)."""
    spec = task_of_config(config)
    datasets = parse_results(results, config.task) if results else []
    multi_dataset = len(datasets) > 1 or bool(config.heads and len(config.heads) > 1)
    base = config.base_model_name_or_path
    repo_id = repo_id or REPO_ID_PLACEHOLDER
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base if is_hub_model_id(base) else None,
        datasets=[d.name for d in datasets] or None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="mit",
        tags=[
            "perceptclip",
            *(["clip"] if config.vision_config.model_type == "clip_vision_model" else []),
            *(["lora"] if config.adaptation == "lora" else []),
            *spec.card_tags,
        ],
        metrics=sorted({m for d in datasets for m in d.metrics}) or None,
        eval_results=eval_results(datasets) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_str=template_text(spec, multi_dataset),
        repo_id=repo_id,
        model_name=model_name,
        config=config,
        labels=[config.id2label[i] for i in sorted(config.id2label)],
        head_names=list(config.head_sizes),
        backbone_source=base,
        base_on_hub=is_hub_model_id(base),
        backbone_class="CLIPVisionModelWithProjection"
        if config.vision_config.model_type == "clip_vision_model"
        else "AutoModel",
        results_by_dataset=datasets,
        metric_names=METRIC_NAMES,
        training=(results or {}).get("training") or {},
        architecture=architecture_rows(config),
        notes=notes,
        peft_adapter=peft_adapter,
        task_title=spec.title,
        preprocessing=preprocessing_text(config, spec),
        model_description=model_description(config),
        report=report,
        score_meaning=score_meaning(config),
    )


__all__ = ["DatasetResults", "eval_results", "parse_results", "render_model_card"]
