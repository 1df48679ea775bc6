"""Tiny models as after training, built locally (no Hub), and the official release's module re-typed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForRegression
from perceptclip_hf.modeling.modeling_perceptclip import create_model

# The tiny transformer every test backbone is built from (CLIP, ViT, SigLIP, DINOv2 towers): 2 layers, 4 heads.
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_VIT = dict(TINY_TOWER, image_size=32, patch_size=8)
TINY_CLIP = dict(TINY_VIT, projection_dim=24)


TINY_HEAD = dict(head_hidden_sizes=[16, 8])
HEAD_DIM = TINY_CLIP["hidden_size"] // TINY_CLIP["num_attention_heads"]  # 8


# A finder that hides perceptclip_hf, so a subprocess sees only what a Hub user has (the remote code).
BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "perceptclip_hf":
                raise ImportError("perceptclip_hf is hidden in this process")
    sys.meta_path.insert(0, _Block())
    """
)


# The official emotion label order, typed out (EmoSet label2idx = PerceptCLIP_Emotions): every label check compares
# with this literal, never with the list the labels were built from.
OFFICIAL_EMOTIONS = ("amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")


def tiny_clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(**TINY_CLIP)


def randomize_lora(model, seed: int = 0) -> None:
    """Give LoRA matrices non-zero values, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def trained_like(base: Path, cls=PerceptCLIPForRegression, seed: int = 0, **config):
    """A tiny model with non-zero LoRA and an O(1)-output head, as after training."""
    model = cls.from_backbone(str(base), **TINY_HEAD, **config)
    randomize_lora(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.heads.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def save_trained_like(base: Path, directory: Path, cls=PerceptCLIPForRegression, **config) -> Path:
    trained_like(base, cls, **config).save_pretrained(directory)
    return directory


TINY_RESNET = dict(
    model_type="resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", image_size=64
)


def resnet_model(task: str = "quality", seed: int = 0):
    """A tiny ResNet-backbone model, fully fine-tuned (no LoRA), with an O(1)-output head."""
    torch.manual_seed(seed)
    model = create_model(PerceptCLIPConfig(vision_config=TINY_RESNET, adaptation="full", task=task, **TINY_HEAD))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.heads.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def random_image(seed: int, size: tuple[int, int] = (44, 38)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def hooked_masked_logits(model, pixel_values, layer: int, head: int) -> torch.Tensor:
    """Reference without the probe (plain hooks, SDPA): a uniform CLS attention row makes the head's CLS output
    the mean of its values over all tokens."""
    attention = model.backbone.vision_model.encoder.layers[layer].self_attn
    values = {}
    columns = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)

    def keep_values(module, args, output):
        values["v"] = output

    def replace_cls_output(module, args):
        heads_output = args[0].clone()
        heads_output[:, 0, columns] = values["v"][:, :, columns].mean(dim=1)
        return (heads_output,)

    hooks = [
        attention.v_proj.register_forward_hook(keep_values),
        attention.out_proj.register_forward_pre_hook(replace_cls_output),
    ]
    try:
        with torch.no_grad():
            return model(pixel_values).logits
    finally:
        for hook in hooks:
            hook.remove()


class OfficialMLP(torch.nn.Module):
    """The official release's head, re-implemented with its module names (fc1/relu1/dropout/fc2/relu2/fc3)."""

    def __init__(self, input_dim, hidden1, hidden2, output_dim, dropout_rate=0.5):
        super().__init__()
        self.fc1, self.relu1 = torch.nn.Linear(input_dim, hidden1), torch.nn.ReLU()
        self.dropout = torch.nn.Dropout(dropout_rate)
        self.fc2, self.relu2 = torch.nn.Linear(hidden1, hidden2), torch.nn.ReLU()
        self.fc3 = torch.nn.Linear(hidden2, output_dim)

    def forward(self, x):
        return self.fc3(self.dropout(self.relu2(self.fc2(self.dropout(self.relu1(self.fc1(x)))))))


class OfficialCLIPLoRAModel(torch.nn.Module):
    """The official `clip_lora_model` structure on a tiny CLIP: peft-wrapped `vision_model`, `proj`, `mlp`."""

    def __init__(self, output_dim):
        from peft import LoraConfig, get_peft_model

        super().__init__()
        config = tiny_clip_config()
        vision_transformer = CLIPVisionModel(config)  # transformers 5: the former `CLIPModel.vision_model` module
        self.proj = torch.nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        lora = LoraConfig(
            r=16, lora_alpha=8, target_modules=["k_proj", "v_proj", "q_proj"], lora_dropout=0.1, bias="none"
        )
        self.model = get_peft_model(vision_transformer, lora)
        self.mlp = OfficialMLP(config.projection_dim, 16, 8, output_dim)

    def forward(self, x):
        return self.mlp(self.proj(self.model(x)[1]))


def accumulating_arguments(output_dir: Path, **overrides):
    """`TrainingArguments` of the tiny Trainer checks: CPU, batches of 4 accumulated over 2 micro-batches, nothing
    saved, logged or reported; `overrides` set the steps, learning rate, optimiser."""
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=True,
        logging_strategy="no",
    )
    return TrainingArguments(**{**settings, **overrides})
