# Copyright 2026 The perceptclip-hf authors. Licensed under the MIT licence.
"""PerceptCLIP model configuration (remote code: imports only torch/transformers/peft and sibling files)."""

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# CLIP ViT-L/14 (`openai/clip-vit-large-patch14`) vision tower: the paper's default backbone.
VIT_L14_VISION_KWARGS = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
}

# Official emotion label order (EmoSet `info.json` label2idx; PerceptCLIP_Emotions release).
EMOTION_LABELS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")

# Task presets: what each built-in perceptual task means for the head, the loss and the score. The package's task
# table (`perceptclip_hf.tasks`) builds on them and adds tasks with `register_task`; a config of a task that is not
# here (a registered one, read by remote code) carries its `problem_type` and `loss` explicitly.
TASK_PRESETS = {
    "quality": {"problem_type": "regression", "loss": "plcc", "labels": ("quality",)},
    "memorability": {
        "problem_type": "regression",
        "loss": "mse",
        "labels": ("memorability",),
        "score_range": [0.0, 1.0],
    },
    "emotion": {"problem_type": "single_label_classification", "loss": "cross_entropy", "labels": EMOTION_LABELS},
    "custom": {},
}
CLASSIFICATION_PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")
# The allowed values of the architecture's choice fields: the one place they are validated.
CHOICES = {
    "adaptation": ("lora", "frozen", "full"),
    "head_type": ("mlp", "linear"),
    "loss": ("mse", "plcc", "cross_entropy"),
    "resize_interpolation": ("bilinear", "bicubic"),
}


@strict
class PerceptCLIPConfig(PreTrainedConfig):
    r"""
    Configuration of a PerceptCLIP model: a vision encoder (CLIP ViT-L/14 by default) adapted with LoRA on the
    attention q/k/v projections, the frozen CLIP visual projection, and a task head (arXiv 2503.13260, sec. 3).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            The backbone's config. Any `model_type` of `clip_vision_model`, `dinov2`, `vit` (defaults to the CLIP
            ViT-L/14 vision tower). CLIP backbones keep their visual projection; others feed the CLS token.
        base_model_name_or_path (`str`, *optional*, defaults to `"openai/clip-vit-large-patch14"`):
            Hub id or local directory of the pretrained backbone whose weights an adapter-only checkpoint builds on.
        base_model_revision (`str`, *optional*):
            Revision of `base_model_name_or_path` to download.
        adapter_only (`bool`, *optional*, defaults to `False`):
            Set by `save_pretrained`: `True` when the checkpoint stores only the trainable tensors (LoRA + heads)
            and `from_pretrained` must bring the backbone weights from `base_model_name_or_path`.
        adaptation (`str`, *optional*, defaults to `"lora"`):
            Training strategy of the backbone: `"lora"` (paper), `"frozen"` (head only) or `"full"` fine-tuning.
        lora_r (`int`, *optional*, defaults to 16): LoRA rank.
        lora_alpha (`float`, *optional*, defaults to 8): LoRA scaling numerator (scale = alpha / r).
        lora_dropout (`float`, *optional*, defaults to 0.1): dropout on the LoRA input.
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "k_proj", "v_proj"]`):
            Attention projections that get LoRA (suffix match, as peft).
        head_type (`str`, *optional*, defaults to `"mlp"`): `"mlp"` (768→512→256→out, ReLU, dropout) or `"linear"`.
        head_hidden_sizes (`list[int]`, *optional*, defaults to `[512, 256]`): hidden widths of the MLP head.
        head_dropout (`float`, *optional*, defaults to 0.5): dropout after each hidden layer of the MLP head.
        heads (`dict[str, int]`, *optional*):
            Named heads of a multi-dataset model (name → number of outputs), all over one shared encoder. Without
            it the model has one head, `"default"`, with `num_labels` outputs.
        task (`str`, *optional*, defaults to `"quality"`):
            `"quality"` (IQA regression, PLCC loss), `"memorability"` (regression, MSE), `"emotion"`
            (8-way classification, cross-entropy), `"custom"`, or a task registered with
            `perceptclip_hf.tasks.register_task`. Fills `problem_type`, `loss` and labels when unset.
        loss (`str`, *optional*): `"mse"`, `"plcc"` or `"cross_entropy"`; defaults to the task's loss.
        score_range (`list[float]`, *optional*): `[low, high]` of the scores the model was trained on (documentation).
        higher_is_better (`bool`, *optional*, defaults to `True`): direction of the score (LIVE DMOS: `False`).
        test_resize_short (`int`, *optional*):
            IQA test protocol: the short side images are resized to before the random test crops, as in training
            (384 for KonIQ/SPAQ/FLIVE/KADID/LIVE); `None` crops at native resolution (LIVEC, TID2013).
        test_resize_size (`list[int]`, *optional*):
            IQA test protocol: a fixed `[height, width]` every image is resized to before the test crops, aspect
            ratio not kept (torchvision `Resize((h, w))`; the official PerceptCLIP_IQA usage: `[512, 384]`).
            Exclusive with `test_resize_short`.
        resize_interpolation (`str`, *optional*, defaults to `"bilinear"`):
            PIL filter of every resize of this model's images: `"bilinear"` (the official release, most datasets)
            or `"bicubic"` (LoDa's protocol for FLIVE and LIVE).
        image_size (`int`, *optional*):
            Side of the square crops the model reads. Defaults to the backbone's declared
            `vision_config.image_size` (CLIP, ViT, SigLIP: fixed by their position embeddings; a CNN config that
            sets one), else 224, the paper's; DINOv2 gets 224 too (its declared 518 is its pretraining resolution).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the head's weight initialisation.

    Example:

    ```python
    >>> from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
    >>> config = PerceptCLIPConfig(task="quality")  # CLIP ViT-L/14, LoRA r=16 alpha=8, MLP head
    >>> model = PerceptCLIPForRegression(config)  # random backbone; use `from_backbone` for pretrained CLIP
    ```"""

    model_type = "perceptclip"
    keys_to_ignore_at_inference = ["image_embeds"]  # Trainer predictions: keep only the logits
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=VIT_L14_VISION_KWARGS
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    base_model_name_or_path: str | None = "openai/clip-vit-large-patch14"
    base_model_revision: str | None = None
    adapter_only: bool = False
    adaptation: str = "lora"
    lora_r: int = 16
    lora_alpha: int | float = 8
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    head_type: str = "mlp"
    head_hidden_sizes: list[int] | None = None
    head_dropout: float = 0.5
    heads: dict[str, int] | None = None
    task: str = "quality"
    loss: str | None = None
    score_range: list[float] | None = None
    higher_is_better: bool = True
    test_resize_short: int | None = None
    test_resize_size: list[int] | None = None
    resize_interpolation: str = "bilinear"
    image_size: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.task not in TASK_PRESETS and self.problem_type is None:
            raise ValueError(
                f"PerceptCLIPConfig.task={self.task!r}: expected one of {sorted(TASK_PRESETS)}, or give "
                "problem_type (and loss) for a task of your own (perceptclip_hf.tasks.register_task)."
            )
        preset = TASK_PRESETS.get(self.task, {})
        if self.problem_type is None:
            self.problem_type = preset.get("problem_type")
        if self.loss is None:
            self.loss = preset.get("loss") or ("cross_entropy" if self.is_classification else "mse")
        if self.score_range is None and "score_range" in preset:
            self.score_range = list(preset["score_range"])
        if self.id2label is None and kwargs.get("num_labels") is None and "labels" in preset:
            self.id2label = dict(enumerate(preset["labels"]))
            self.label2id = {label: i for i, label in self.id2label.items()}
        if self.lora_target_modules is None:
            self.lora_target_modules = ["q_proj", "k_proj", "v_proj"]
        if self.head_hidden_sizes is None:
            self.head_hidden_sizes = [512, 256]
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: reject unknown choices with the allowed values."""
        for field, allowed in CHOICES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"PerceptCLIPConfig.{field}={value!r}: expected one of {list(allowed)}.")
        if (self.loss == "cross_entropy") != self.is_classification:
            raise ValueError(
                f"PerceptCLIPConfig.loss={self.loss!r} does not fit problem_type={self.problem_type!r} "
                f"(task {self.task!r})."
            )
        if self.test_resize_size is not None:
            if len(self.test_resize_size) != 2 or min(self.test_resize_size) < 1:
                raise ValueError(
                    f"PerceptCLIPConfig.test_resize_size={self.test_resize_size!r}: expected [height, "
                    "width], two positive integers."
                )
            if self.test_resize_short is not None:
                raise ValueError(
                    "PerceptCLIPConfig: give test_resize_short (short side, aspect kept) or "
                    "test_resize_size ([height, width]), not both."
                )
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"PerceptCLIPConfig.image_size={self.image_size!r}: expected a positive integer.")
        if self.heads is not None and (not self.heads or any(n < 1 for n in self.heads.values())):
            raise ValueError(f"PerceptCLIPConfig.heads={self.heads!r}: give at least one head, each with ≥ 1 output.")

    @property
    def is_classification(self) -> bool:
        return self.problem_type in CLASSIFICATION_PROBLEM_TYPES

    @property
    def head_sizes(self) -> dict[str, int]:
        """Name → number of outputs of every head (a single `"default"` head unless `heads` is set)."""
        return dict(self.heads) if self.heads else {"default": self.num_labels}

    @property
    def default_head(self) -> str:
        return next(iter(self.head_sizes))


def check_config(**kwargs) -> PerceptCLIPConfig:
    """`PerceptCLIPConfig(**kwargs)`, with a validation failure raised as the config's own `ValueError` (the strict
    dataclass wraps it): the check callers use before any work."""
    try:
        return PerceptCLIPConfig(**kwargs)
    except StrictDataclassError as err:
        raise (err.__cause__ if isinstance(err.__cause__, ValueError) else ValueError(str(err))) from None


__all__ = [
    "CHOICES",
    "CLASSIFICATION_PROBLEM_TYPES",
    "EMOTION_LABELS",
    "TASK_PRESETS",
    "VIT_L14_VISION_KWARGS",
    "PerceptCLIPConfig",
    "check_config",
]

PerceptCLIPConfig.register_for_auto_class()
