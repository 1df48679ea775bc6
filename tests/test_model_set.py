"""Several models in one pass: the same values as separate runs, columns prefixed by model name, one copy of a
shared base in memory (its bytes checked against the models' own tensors), and a file of one set of models is
never continued with another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from perceptclip_hf import PerceptCLIPForClassification
from perceptclip_hf.scoring.model_set import ScorerSet, share_base_weights
from perceptclip_hf.scoring.scorer import PerceptScorer, load_model
from tests.helpers.cli import assert_clean_failure, perceptclip, read_rows
from tests.helpers.models import random_image, save_trained_like


@pytest.fixture(scope="module")
def three_models(tiny_clip_base, tmp_path_factory) -> dict[str, Path]:
    """Quality (15-crop IQA transform), memorability and emotion (resize + center crop) on one tiny base."""
    root = tmp_path_factory.mktemp("three_models")
    return {
        "quality": save_trained_like(tiny_clip_base, root / "quality", task="quality", score_range=[1.0, 5.0]),
        "memorability": save_trained_like(tiny_clip_base, root / "memorability", task="memorability", seed=3),
        "emotion": save_trained_like(
            tiny_clip_base, root / "emotion", PerceptCLIPForClassification, task="emotion", seed=5
        ),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(14):
        random_image(index, size=(40 + index, 36 + 2 * index)).save(folder / f"im{index:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def base_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's tensors that are not trained (not LoRA, not head)."""
    trained = set(model.adapter_state_dict())
    tensors = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    return sum(t.numel() * t.element_size() for name, t in tensors.items() if name not in trained)


def test_three_models_in_one_pass_equal_three_separate_runs(three_models, photos, tmp_path):
    arguments = ["--tta", "3", "--batch-size", "4", "--num-workers", "2"]
    separate = {}
    for name, model in three_models.items():
        output = tmp_path / f"{name}.jsonl"
        result = perceptclip("predict", photos, "--model", model, "--output", output, *arguments, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        separate[name] = read_rows(output)
    output = tmp_path / "together.csv"
    models = [value for model in three_models.values() for value in ("--model", model)]
    result = perceptclip("predict", photos, *models, "--output", output, *arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "14 scored, 1 failed" in result.stderr and "3 models share their base weights" in result.stderr
    rows = read_rows(output)
    assert list(rows[0])[:3] == ["id", "quality_score", "quality_score_scale"] and list(rows[0])[-1] == "error"
    assert [row["id"] for row in rows] == [row["id"] for row in separate["quality"]]
    for index, row in enumerate(rows):
        if row["error"]:
            assert all("error" in separate[name][index] for name in three_models)
            continue
        for name in ("quality", "memorability"):
            assert abs(float(row[f"{name}_score"]) - separate[name][index]["score"]) < 1e-5
        alone = separate["emotion"][index]
        assert row["emotion_label"] == alone["label"]
        assert max(abs(float(row[f"emotion_prob_{label}"]) - p) for label, p in alone["probabilities"].items()) < 1e-5
    record = json.loads(Path(f"{output}.meta.json").read_text())
    run = record["runs"][-1]
    expected_shared = 2 * base_bytes(load_model(three_models["quality"]))
    assert run["shared_base_bytes"] == expected_shared > 0
    assert run["lora_merged"] == {"quality": 0, "memorability": 0, "emotion": 0}  # a shared base stays unmerged
    assert set(record["models"]) == set(three_models)

    other = perceptclip(
        "predict",
        photos,
        "--model",
        three_models["quality"],
        "--model",
        three_models["emotion"],
        "--output",
        output,
        "--resume",
        *arguments,
        cwd=tmp_path,
    )
    line = assert_clean_failure(other, str(output), "another model or settings")
    assert "models quality, memorability, emotion → quality, emotion" in line and len(line) < 300  # names, no dump


def test_one_pass_in_python_shares_the_base_and_keeps_saved_models(three_models):
    images = [random_image(index, size=(50, 41 + index)) for index in range(5)]
    models = ScorerSet.from_pretrained(three_models, tta=2, batch_size=2, num_workers=0)
    together = models(images)
    for name, model in three_models.items():
        alone = PerceptScorer.from_pretrained(model, tta=2, batch_size=2, num_workers=0)
        assert alone.lora_merged > 0  # a model of its own is merged
        for result, expected in zip(together, alone(images)):
            got = result[name]
            if "score" in expected:
                assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
            else:
                assert got["label"] == expected["label"]
    first, second = (scorer.model for scorer in list(models.scorers.values())[:2])
    shared = {
        name
        for name, tensor in first.state_dict(keep_vars=True).items()
        if tensor is second.state_dict(keep_vars=True)[name]
    }
    assert shared and not shared & set(first.adapter_state_dict())  # the base is one copy, LoRA and heads are not
    assert models.transforms.slot == [0, 1, 1]  # memorability and emotion crop alike: one transform for both
    reloaded = load_model(three_models["quality"])
    assert share_base_weights([reloaded, load_model(three_models["quality"])]) == base_bytes(reloaded) + sum(
        t.numel() * t.element_size() for t in reloaded.adapter_state_dict().values()
    )  # the same model: all shared


@pytest.mark.parametrize(
    "models, fragments",
    [
        (["quality", "quality"], ["another --model is also named 'quality'", "--model NAME=MODEL"]),
    ],
)
def test_models_named_alike_exit_2(three_models, photos, tmp_path, models, fragments):
    arguments = [value for name in models for value in ("--model", three_models[name])]
    assert_clean_failure(perceptclip("predict", photos, *arguments, cwd=tmp_path), *fragments)


def test_named_models_prefix_their_columns(three_models, photos, tmp_path):
    output = tmp_path / "named.jsonl"
    result = perceptclip(
        "predict",
        photos,
        "--model",
        f"a={three_models['quality']}",
        "--model",
        f"b={three_models['quality']}",
        "--output",
        output,
        "--tta",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = [row for row in read_rows(output) if "error" not in row]
    assert rows and all(row["a_score"] == row["b_score"] for row in rows)
