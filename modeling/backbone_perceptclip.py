# Copyright 2026 The perceptclip-hf authors. Licensed under the MIT licence.
"""The vision backbone of a PerceptCLIP model (remote code): its class, its config read from a pretrained
checkpoint (a two-tower checkpoint's vision tower), and copying its pretrained weights under the LoRA layers with
every tensor checked; failures are one clear error naming the checkpoint and the fix."""

import os
from contextlib import contextmanager

import torch
from transformers import (
    MODEL_MAPPING,
    AutoConfig,
    AutoModel,
    CLIPVisionModelWithProjection,
    PreTrainedConfig,
    PreTrainedModel,
    ViTModel,
)
from transformers.utils import logging as hf_logging

# Parameter-name marker of the LoRA matrices (not part of a pretrained backbone).
LORA_KEY_MARKER = "lora_"


def backbone_class_and_kwargs(vision_config) -> tuple[type, dict]:
    """The backbone class for `vision_config` and its constructor kwargs: CLIP keeps its visual projection; ViT
    drops its (unused) pooler since the head reads the CLS token."""
    if vision_config.model_type == "clip_vision_model":
        return CLIPVisionModelWithProjection, {}
    if vision_config.model_type == "vit":
        return ViTModel, {"add_pooling_layer": False}
    return AutoModel, {}


def backbone_vision_config(source: str, revision: str | None = None, **hub_kwargs) -> PreTrainedConfig:
    """The vision config of checkpoint `source`: its own config, or the vision tower's of a two-tower checkpoint
    (CLIP, SigLIP, ...: a config with a `vision_config`). A full CLIP checkpoint's `visual_projection` has the
    top-level `projection_dim`, which its `vision_config.projection_dim` need not repeat."""
    config = AutoConfig.from_pretrained(source, revision=revision, **hub_kwargs)
    vision_config = getattr(config, "vision_config", None)
    if vision_config is None:
        return config
    if config.model_type == "clip":
        vision_config.projection_dim = config.projection_dim
    return vision_config


@contextmanager
def explain_backbone_failure(source: str):
    """Turn a failure to read the backbone checkpoint `source` (unreachable Hub, missing files) into one `OSError`
    naming it, the cause and the fix."""
    try:
        yield
    except (OSError, ValueError) as err:
        cause = " ".join(str(err).split())[:300]
        fix = (
            "check that it holds the backbone's config.json and weights, or pass a DIR that does"
            if os.path.isdir(source)
            else f"without access to the Hub, make a local copy where it is reachable, `hf download {source} "
            "--local-dir DIR`, and pass DIR"
        )
        raise OSError(
            f"PerceptCLIP could not load the backbone {source!r} ({type(err).__name__}: {cause}). The backbone "
            f"weights come from {source!r}, a Hub id or a local directory; {fix}: `from_backbone(DIR)`, or for an "
            "adapter-only checkpoint `from_pretrained(model_dir, base_model_name_or_path=DIR)`."
        ) from None


def shape_mismatch_error(source: str, key: str, found, expected) -> ValueError:
    """The one report of a backbone tensor whose shape does not fit the model's `vision_config`."""
    return ValueError(
        f"Base backbone {source!r}: {key} has shape {tuple(found)} in the checkpoint, but this model's vision_config "
        f"expects {tuple(expected)}. Give the model a vision_config that matches the checkpoint's tensors (e.g. its "
        f"projection_dim); `from_backbone({source!r})` reads it from the checkpoint."
    )


def build_backbone(vision_config) -> PreTrainedModel:
    """A randomly initialised vision backbone for `vision_config` (weights come from `load_base_weights`)."""
    backbone_class, kwargs = backbone_class_and_kwargs(vision_config)
    if backbone_class is AutoModel:
        if not getattr(MODEL_MAPPING[type(vision_config)], "_supports_sdpa", False):
            vision_config._attn_implementation_internal = None  # let a backbone without SDPA choose its own
        return AutoModel.from_config(vision_config, **kwargs)
    return backbone_class(vision_config, **kwargs)


def copy_pretrained_backbone(
    backbone: PreTrainedModel, expected, source: str, revision: str | None = None, **hub_kwargs
) -> None:
    """Copy the weights of checkpoint `source` (Hub id or local dir; the vision tower of a two-tower checkpoint) into
    `backbone` (built for vision config `expected`, LoRA layers left as they are), checking every tensor."""
    _, backbone_kwargs = backbone_class_and_kwargs(expected)
    with explain_backbone_failure(source):
        vision_config = backbone_vision_config(source, revision=revision, **hub_kwargs)
    expected_type = expected.model_type
    if vision_config.model_type != expected_type:
        raise ValueError(
            f"Base backbone {source!r} does not match this model's vision_config: it is a "
            f"{vision_config.model_type!r} model, this model needs {expected_type!r}."
        )
    # transformers' load report lists a two-tower checkpoint's text tower as unexpected: the checks below
    # replace it (a tensor missing from the checkpoint, or of another shape, is an error).
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with explain_backbone_failure(source):
            base, loading_info = type(backbone).from_pretrained(
                source,
                config=vision_config,
                revision=revision,
                dtype=backbone.dtype,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                **backbone_kwargs,
                **hub_kwargs,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    if loading_info["mismatched_keys"]:  # the checkpoint's tensors contradict its own config
        raise shape_mismatch_error(source, *min(loading_info["mismatched_keys"]))
    if loading_info["missing_keys"]:
        missing = sorted(loading_info["missing_keys"])
        raise ValueError(
            f"Base backbone {source!r} lacks {len(missing)} tensor(s) of its "
            f"{vision_config.model_type} vision tower, e.g. {missing[:3]}: it is not a complete "
            "checkpoint of this backbone; pass the checkpoint the model was built on."
        )
    base_state = base.state_dict()
    own_state = {k: v for k, v in backbone.state_dict().items() if LORA_KEY_MARKER not in k}
    mapping = {k: k.replace(".base_layer.", ".") for k in own_state}
    missing = sorted(k for k, base_key in mapping.items() if base_key not in base_state)
    unused = sorted(set(base_state) - set(mapping.values()))
    if missing or unused:
        raise ValueError(
            f"Base backbone {source!r} does not match this model's vision_config: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, unused {unused[:5]}"
            f"{'…' if len(unused) > 5 else ''}."
        )
    with torch.no_grad():
        for key, base_key in mapping.items():
            if own_state[key].shape != base_state[base_key].shape:
                raise shape_mismatch_error(source, base_key, base_state[base_key].shape, own_state[key].shape)
            own_state[key].copy_(base_state[base_key])


__all__ = [
    "LORA_KEY_MARKER",
    "backbone_class_and_kwargs",
    "backbone_vision_config",
    "build_backbone",
    "copy_pretrained_backbone",
    "explain_backbone_failure",
]
