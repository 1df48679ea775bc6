"""Loading the official PerceptCLIP release (`clip_lora_model` state dicts in pickled `.pth` files).

The official module (PerceptCLIP_IQA / _Memorability / _Emotions on the Hub) is
`model` = `get_peft_model(CLIPModel.vision_model, LoRA r=16 alpha=8 q/k/v)`, `proj` = CLIP's visual projection and
`mlp` = `fc1/fc2/fc3`. Its state dict maps onto our classes by renaming only.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import ModelLoadError
from .modeling import PerceptCLIPConfig, PerceptCLIPPreTrainedModel, create_model

OFFICIAL_REPOS = {
    "quality": "PerceptCLIP/PerceptCLIP_IQA",
    "memorability": "PerceptCLIP/PerceptCLIP_Memorability",
    "emotion": "PerceptCLIP/PerceptCLIP_Emotions",
}
_PREFIXES = (("model.base_model.model.", "backbone.vision_model."), ("proj.", "backbone.visual_projection."))
_MLP_KEY = re.compile(r"^mlp\.fc(\d+)\.(weight|bias)$")


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], head: str = "default") -> dict[str, torch.Tensor]:
    """Rename official keys to ours: `model.base_model.model.*` → `backbone.vision_model.*`,
    `proj.*` → `backbone.visual_projection.*`, `mlp.fcN.*` → `heads.<head>.layers.<N-1>.*`."""
    converted = {}
    for key, tensor in state_dict.items():
        match = _MLP_KEY.match(key)
        if match:
            converted[f"heads.{head}.layers.{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
            continue
        for old, new in _PREFIXES:
            if key.startswith(old):
                converted[new + key[len(old):]] = tensor
                break
        else:
            raise KeyError(f"Unexpected key {key!r} in the official state dict (expected model.base_model.model.*, "
                           "proj.*, mlp.fc*).")
    return converted


def resolve_official_checkpoint(source: str, **hub_kwargs) -> str:
    """A local `.pth` path, or the single `.pth` file of a local copy of an official repo or of the repo itself
    (downloaded)."""
    if os.path.isfile(source):
        return source
    local = os.path.isdir(source)
    if not local:
        from huggingface_hub import HfApi, hf_hub_download
    files = sorted(os.listdir(source)) if local else HfApi().list_repo_files(source, **hub_kwargs)
    files = [f for f in files if f.endswith((".pth", ".pt", ".bin"))]
    if len(files) != 1:
        raise ModelLoadError(f"{source}: expected exactly one .pth checkpoint in the repo, found {files}.")
    return os.path.join(source, files[0]) if local else hf_hub_download(source, files[0], **hub_kwargs)


def load_official_checkpoint(
    source: str,
    task: str,
    config: PerceptCLIPConfig | None = None,
    **hub_kwargs,
) -> PerceptCLIPPreTrainedModel:
    """Build our model from an official checkpoint (`task` = quality | memorability | emotion).

    The file is read with `torch.load(weights_only=True)`: tensors only, no code runs. `config` overrides the
    architecture (tests use tiny ones); the default is the release's: CLIP ViT-L/14, LoRA r=16 alpha=8, MLP head.
    Emotion labels are in the official order (amusement, awe, contentment, excitement, anger, disgust, fear, sadness).
    """
    path = resolve_official_checkpoint(source, **hub_kwargs)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(state_dict).__name__}.")
    config = config or PerceptCLIPConfig(task=task)
    model = create_model(config)
    converted = convert_official_state_dict(state_dict, head=config.default_head)
    result = model.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: official checkpoint does not fit the config: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}.")
    return model.eval()
