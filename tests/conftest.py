"""Shared fixtures: tiny backbones saved to disk, as transformers' own tests do (no Hub access here), and data made
once per test session (shared by the pytest-xdist workers). Helpers live in tests/helpers/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from transformers import CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPForClassification
from tests.helpers.cli import tiny_recipe, train_command
from tests.helpers.models import save_trained_like, tiny_clip_config
from tests.helpers.paths import REPO_ROOT

DONE = ".complete"


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test session: the first pytest-xdist worker to ask builds it under a file lock, the
    others wait and reuse it (without xdist: the one process)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder = root / f"shared-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / DONE).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / DONE).touch()
    return folder


@pytest.fixture(scope="session")
def tiny_clip_base(tmp_path_factory) -> Path:
    """A saved tiny CLIP vision tower: the local stand-in for `openai/clip-vit-large-patch14`."""
    path = tmp_path_factory.mktemp("tiny-clip-base")
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(tiny_clip_config()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def quality_dir(tiny_clip_base, tmp_path_factory) -> Path:
    return save_trained_like(tiny_clip_base, tmp_path_factory.mktemp("quality"), task="quality", score_range=[1.0, 5.0])


@pytest.fixture(scope="session")
def emotion_dir(tiny_clip_base, tmp_path_factory) -> Path:
    return save_trained_like(
        tiny_clip_base, tmp_path_factory.mktemp("emotion"), PerceptCLIPForClassification, task="emotion"
    )


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """The embedded procedural IQA dataset (the quickstart's), generated once per session."""
    from perceptclip_hf.data.synthetic import generate_synthetic_iqa

    return built_once(tmp_path_factory, "synthetic_iqa", generate_synthetic_iqa)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_dir) -> Path:
    """`python train.py --config <the quickstart recipe, shortened for tests>` run once per session (a process of its
    own, as a user runs it): `recipe.yaml`, the run folder `run/`, and what it printed (`stdout.txt`, `stderr.txt`).
    Tests only read it."""

    def train(folder: Path) -> None:
        recipe = tiny_recipe(folder, synthetic_dir)
        result = subprocess.run(train_command(recipe), capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        (folder / "stdout.txt").write_text(result.stdout)
        (folder / "stderr.txt").write_text(result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]

    return built_once(tmp_path_factory, "trained_run", train)
