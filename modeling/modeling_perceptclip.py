# Copyright 2026 The perceptclip-hf authors. Licensed under the MIT licence.
"""PyTorch PerceptCLIP models (arXiv 2503.13260). Remote code: imports only torch, transformers, peft and siblings."""

import math
import os
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbone_perceptclip import (
    LORA_KEY_MARKER,
    backbone_vision_config,
    build_backbone,
    copy_pretrained_backbone,
    explain_backbone_failure,
)
from .configuration_perceptclip import PerceptCLIPConfig
from .image_processing_perceptclip import default_image_processor
from .loss_perceptclip import task_loss

HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies")
# Parameter-name markers of the adapter-only checkpoint: LoRA matrices and task heads.
ADAPTER_KEY_MARKERS = (LORA_KEY_MARKER, "heads.")


def lora_config(config: PerceptCLIPConfig, **extra) -> LoraConfig:
    """The peft `LoraConfig` of a PerceptCLIP backbone (r, alpha, dropout, q/k/v targets, no bias); `extra` adds
    peft fields (e.g. `base_model_name_or_path`, `inference_mode` for an exported adapter)."""
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        **extra,
    )


@dataclass
class PerceptCLIPOutput(ModelOutput):
    r"""
    Output of the PerceptCLIP task models.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the task loss, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_outputs)`):
            Raw head outputs: the predicted scores for regression (no sigmoid), class logits for classification.
            With `(batch, crops, C, H, W)` input, the mean over the crops (test-time augmentation).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, embed_dim)`):
            The features the head reads: CLIP's projected embedding, or the backbone's CLS token.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the backbone's hidden states, if asked for.
        attentions (`tuple(torch.FloatTensor)`, *optional*): the backbone's attention maps, if asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class PerceptCLIPHead(nn.Module):
    """The task head: an MLP (in→512→256→out, ReLU, dropout 0.5, as the official `MLP`) or one linear layer."""

    def __init__(self, in_features: int, out_features: int, config: PerceptCLIPConfig):
        super().__init__()
        widths = [in_features, *(config.head_hidden_sizes if config.head_type == "mlp" else []), out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(config.head_dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            features = self.dropout(self.activation(layer(features)))
        return self.layers[-1](features)


class PerceptCLIPPreTrainedModel(PreTrainedModel):
    """Shared machinery: the adapted backbone, the heads, adapter-only save/load and weight initialisation."""

    config_class = PerceptCLIPConfig
    config: PerceptCLIPConfig
    base_model_prefix = "perceptclip"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # PLCC is a per-batch statistic: the Trainer must not rescale the loss by a number of items.
    accepts_loss_kwargs = False

    def __init__(self, config: PerceptCLIPConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.vision_config)
        if config.adaptation == "lora":
            inject_adapter_in_model(lora_config(config), self.backbone)
        is_clip = config.vision_config.model_type == "clip_vision_model"
        vision = config.vision_config
        embed_dim = (
            vision.projection_dim if is_clip else getattr(vision, "hidden_size", None) or vision.hidden_sizes[-1]
        )
        self.heads = nn.ModuleDict(
            {name: PerceptCLIPHead(embed_dim, size, config) for name, size in config.head_sizes.items()}
        )
        self._set_trainable()
        if config.adapter_only:
            # The backbone comes from `base_model_name_or_path` after loading (`load_base_weights` checks it all).
            self._keys_to_ignore_on_load_missing = [rf"^backbone\.(?!.*{LORA_KEY_MARKER})"]
        self.post_init()

    def _set_trainable(self):
        """LoRA: only LoRA + heads train; frozen: only heads; full: everything (paper sec. 7)."""
        for name, param in self.named_parameters():
            param.requires_grad = self.config.adaptation == "full" or any(m in name for m in ADAPTER_KEY_MARKERS)
        self.backbone_frozen = self.config.adaptation == "frozen"

    def freeze_backbone(self):
        """Freeze the whole encoder, LoRA included (multi-dataset stage 2): no gradients, and kept in eval mode so
        that no dropout or normalisation statistic of the encoder changes while the heads train."""
        for param in self.backbone.parameters():
            param.requires_grad = False
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "backbone_frozen", False):
            self.backbone.eval()
        return self

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)

    def initialize_weights(self):
        """Initialise, then give LoRA peft's own start (A: kaiming-uniform, B: zeros) so an untrained adapter is the
        identity. The backbone's `_init_weights` re-draws every `nn.Linear`, LoRA ones included; the
        `transformers.initialization` helpers skip tensors loaded from a checkpoint."""
        super().initialize_weights()
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, LoraLayer):
                    for adapter in module.lora_A:
                        init.kaiming_uniform_(module.lora_A[adapter].weight, a=math.sqrt(5))
                        init.zeros_(module.lora_B[adapter].weight)

    # ----- features -------------------------------------------------------------------------------------------

    def get_image_features(self, pixel_values: torch.Tensor, **backbone_kwargs):
        """Backbone outputs and the features the head reads: CLIP's projected pooled output, else the backbone's
        pooled output (SigLIP: attention-pooled, as `SiglipModel.get_image_features`; DINOv2: normalised CLS; CNNs:
        pooled map), else the CLS token (ViT)."""
        outputs = self.backbone(pixel_values=pixel_values, return_dict=True, **backbone_kwargs)
        if getattr(outputs, "image_embeds", None) is not None:
            return outputs, outputs.image_embeds
        if getattr(outputs, "pooler_output", None) is not None:  # e.g. DINOv2's CLS, a CNN's pooled map
            return outputs, outputs.pooler_output.flatten(1)
        return outputs, outputs.last_hidden_state[:, 0]

    # ----- adapter-only storage -------------------------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors of a LoRA/frozen model: LoRA matrices and heads (≈ 11 MiB for ViT-L/14)."""
        return {k: v for k, v in self.state_dict().items() if any(m in k for m in ADAPTER_KEY_MARKERS)}

    def save_pretrained(self, save_directory, *args, adapter_only: bool | None = None, **kwargs):
        """Save config, remote code, weights (adapter-only by default unless `adaptation="full"`) and the
        inference image processor. `adapter_only=False` writes the full weights (offline / edge use)."""
        if adapter_only is None:
            adapter_only = self.config.adaptation != "full"
        if adapter_only and self.config.adaptation == "full":
            raise ValueError(
                "adapter_only=True needs adaptation 'lora' or 'frozen': a fully fine-tuned backbone "
                "differs from its base everywhere."
            )
        self.config.adapter_only = adapter_only
        module = type(self).__module__.split(".")[-1]
        self.config.auto_map = {
            "AutoConfig": f"{PerceptCLIPConfig.__module__.split('.')[-1]}.PerceptCLIPConfig",
            "AutoModel": f"{module}.{type(self).__name__}",
            "AutoModelForImageClassification": f"{module}.{type(self).__name__}",
        }
        if adapter_only:
            kwargs["state_dict"] = self.adapter_state_dict()
        super().save_pretrained(save_directory, *args, **kwargs)
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            default_image_processor(self.config).save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, base_model_name_or_path=None, **kwargs):
        """Load a PerceptCLIP model. For an adapter-only checkpoint the backbone weights come from
        `base_model_name_or_path` (argument, else the config's): a Hub id or a local directory."""
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.config.adapter_only:
            source = base_model_name_or_path or model.config.base_model_name_or_path
            model.load_base_weights(source, revision=model.config.base_model_revision, **hub_kwargs)
        return loaded

    @classmethod
    def from_backbone(cls, base_model_name_or_path: str, revision: str | None = None, **config_kwargs):
        """A new (untrained) PerceptCLIP model on a pretrained backbone, e.g.
        `PerceptCLIPForRegression.from_backbone("openai/clip-vit-large-patch14", task="quality")`. The source is a
        vision model or a two-tower checkpoint (CLIP, SigLIP, ...), whose vision tower becomes the backbone."""
        with explain_backbone_failure(base_model_name_or_path):
            vision_config = backbone_vision_config(base_model_name_or_path, revision=revision)
        config = PerceptCLIPConfig(
            vision_config=vision_config.to_dict(),
            base_model_name_or_path=base_model_name_or_path,
            base_model_revision=revision,
            **config_kwargs,
        )
        model = create_model(config)
        if not isinstance(model, cls):
            raise ValueError(
                f"{cls.__name__}.from_backbone: the config describes a {type(model).__name__} "
                f"(problem_type={config.problem_type!r})."
            )
        model.load_base_weights(base_model_name_or_path, revision=revision)
        return model

    def load_base_weights(self, source: str, revision: str | None = None, **hub_kwargs):
        """Copy the pretrained backbone `source` (Hub id or local dir; the vision tower of a two-tower checkpoint)
        under the adapters, checking every tensor against this model's `vision_config`."""
        copy_pretrained_backbone(self.backbone, self.config.vision_config, source, revision=revision, **hub_kwargs)

    # ----- forward --------------------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        head: str | torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> PerceptCLIPOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)` or `(batch, crops, 3, H, W)`):
            Images; with a crops axis all crops go through the backbone in one pass and logits are averaged.
        labels (`torch.Tensor` of shape `(batch,)`, *optional*): scores (regression) or class ids (classification).
        head (`str` or `torch.LongTensor` of shape `(batch,)`, *optional*):
            Which head of a multi-dataset model to use: a name, or one head index per sample (order of
            `config.head_sizes`). Defaults to the first head. With per-sample heads the loss is the mean of the
            per-head losses (paper sec. 3.2), and a smaller head's missing logits are -inf.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        num_crops = pixel_values.shape[1] if pixel_values.dim() == 5 else None
        if num_crops is not None:
            pixel_values = pixel_values.flatten(0, 1)
        outputs, features = self.get_image_features(
            pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        head_names = list(self.config.head_sizes)
        if isinstance(head, torch.Tensor):
            head_ids = head.reshape(-1).to(features.device)
            if num_crops is not None:
                head_ids = head_ids.repeat_interleave(num_crops)
            logits = self._per_sample_heads(features, head_ids, head_names)
        else:
            name = head or head_names[0]
            if name not in self.heads:
                raise KeyError(f"Unknown head {name!r}; this model has heads {head_names}.")
            logits = self.heads[name](features)
        if num_crops is not None:
            logits = logits.unflatten(0, (-1, num_crops)).mean(dim=1)
            features = features.unflatten(0, (-1, num_crops)).mean(dim=1)
        loss = None
        if labels is not None:
            if isinstance(head, torch.Tensor):
                head_ids, sizes = head.reshape(-1).to(logits.device), list(self.config.head_sizes.values())
                loss = torch.stack(
                    [
                        task_loss(self.config.loss, logits[head_ids == i, : sizes[i]], labels[head_ids == i])
                        for i in head_ids.unique().tolist()
                    ]
                ).mean()
            else:
                loss = task_loss(self.config.loss, logits, labels)
        output = PerceptCLIPOutput(
            loss=loss,
            logits=logits,
            image_embeds=features,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )
        return output if return_dict else output.to_tuple()

    def _per_sample_heads(self, features, head_ids, head_names):
        """Each row through its own head. Heads of different sizes (e.g. 8 and 6 emotions) fill the first
        columns of each row; the rest is -inf (probability 0 after a softmax)."""
        sizes = [self.config.head_sizes[n] for n in head_names]
        logits = features.new_full((features.shape[0], max(sizes)), float("-inf"))
        for index in head_ids.unique().tolist():
            if not 0 <= index < len(head_names):
                raise IndexError(f"Head index {index} out of range for heads {head_names}.")
            rows = head_ids == index
            logits[rows, : sizes[index]] = self.heads[head_names[index]](features[rows]).to(logits.dtype)
        return logits


class PerceptCLIPForRegression(PerceptCLIPPreTrainedModel):
    """PerceptCLIP for score prediction (image quality, memorability): raw scores in `logits`, shape
    `(batch, num_outputs)`. Loss: `config.loss` (`"plcc"` for IQA, `"mse"` for memorability)."""

    def __init__(self, config: PerceptCLIPConfig):
        if config.is_classification:
            raise ValueError(
                f"PerceptCLIPForRegression got problem_type={config.problem_type!r}; use PerceptCLIPForClassification."
            )
        super().__init__(config)


class PerceptCLIPForClassification(PerceptCLIPPreTrainedModel):
    """PerceptCLIP for perceptual classification (visual emotion): class logits in `logits`; loss cross-entropy."""

    def __init__(self, config: PerceptCLIPConfig):
        if not config.is_classification:
            raise ValueError(
                f"PerceptCLIPForClassification got problem_type={config.problem_type!r}; use PerceptCLIPForRegression."
            )
        super().__init__(config)


def create_model(config: PerceptCLIPConfig) -> PerceptCLIPPreTrainedModel:
    """The one model factory: the task class the config's `problem_type` calls for (classification or
    regression), randomly initialised (untrained LoRA = the base backbone). `from_backbone` and `from_pretrained`
    bring pretrained weights."""
    model_class = PerceptCLIPForClassification if config.is_classification else PerceptCLIPForRegression
    return model_class(config)


# `save_pretrained` then copies these files next to the weights, for `trust_remote_code` users.
PerceptCLIPForRegression.register_for_auto_class("AutoModel")
PerceptCLIPForClassification.register_for_auto_class("AutoModel")

__all__ = [
    "ADAPTER_KEY_MARKERS",
    "PerceptCLIPForClassification",
    "PerceptCLIPForRegression",
    "PerceptCLIPHead",
    "PerceptCLIPOutput",
    "PerceptCLIPPreTrainedModel",
    "create_model",
    "lora_config",
]
