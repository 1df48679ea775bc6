"""Shared fixtures: tiny backbones saved to disk, as transformers' own tests do (no Hub access here)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPForClassification, PerceptCLIPForRegression

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, projection_dim=24, num_hidden_layers=2, num_attention_heads=4,
    image_size=32, patch_size=8,
)
TINY_HEAD = dict(head_hidden_sizes=[16, 8])

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


@pytest.fixture(scope="session")
def tiny_clip_base(tmp_path_factory) -> Path:
    """A saved tiny CLIP vision tower: the local stand-in for `openai/clip-vit-large-patch14`."""
    path = tmp_path_factory.mktemp("tiny-clip-base")
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(tiny_clip_config()).save_pretrained(path)
    return path


def randomize_lora(model, seed: int = 0) -> None:
    """Give LoRA matrices non-zero values, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def run_python(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
    return result


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


def random_image(seed: int, size: tuple[int, int] = (44, 38)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def quality_dir(tiny_clip_base, tmp_path_factory) -> Path:
    return save_trained_like(tiny_clip_base, tmp_path_factory.mktemp("quality"), task="quality",
                             score_range=[1.0, 5.0])


@pytest.fixture(scope="session")
def emotion_dir(tiny_clip_base, tmp_path_factory) -> Path:
    return save_trained_like(tiny_clip_base, tmp_path_factory.mktemp("emotion"), PerceptCLIPForClassification,
                             task="emotion")
