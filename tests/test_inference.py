"""PerceptScorer: inputs, test-time crops in one forward pass, determinism, output formats, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from datasets import Image as ImageFeature

from perceptclip_hf.data import DatasetFormatError
from perceptclip_hf.preprocessing import to_normalized_tensor
from perceptclip_hf.scoring.scorer import PerceptScorer
from tests.helpers.models import random_image, trained_like


def test_batched_tta_equals_a_per_crop_loop(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=6, batch_size=4)
    images = [random_image(i, size=(40 + 3 * i, 36 + i)) for i in range(3)]
    batched = [r["score"] for r in scorer(images)]
    with torch.no_grad():
        looped = [
            torch.stack([scorer.model(crop[None]).logits[0, 0] for crop in scorer.preprocess(image)]).mean().item()
            for image in images
        ]
    assert scorer.num_crops == 6 and scorer.preprocess(images[0]).shape == (6, 3, 32, 32)
    assert max(abs(a - b) for a, b in zip(batched, looped)) < 1e-5


def test_all_crops_of_a_batch_go_through_one_forward_pass(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=5, batch_size=8)
    shapes = []
    hook = scorer.model.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    try:
        scorer([random_image(i) for i in range(3)])
    finally:
        hook.remove()
    assert shapes == [(3, 5, 3, 32, 32)]


def test_iqa_defaults_to_15_seeded_crops_deterministic_across_scorers(quality_dir):
    image = random_image(0, size=(60, 50))
    first, second = PerceptScorer.from_pretrained(quality_dir), PerceptScorer.from_pretrained(quality_dir)
    other_seed = PerceptScorer.from_pretrained(quality_dir, seed=1)
    assert first.num_crops == 15
    assert first(image) == second(image) == first(image)
    assert not torch.equal(first.preprocess(image), other_seed.preprocess(image))


def test_tta_1_is_a_native_center_crop(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=1)
    image = random_image(3, size=(48, 40))
    expected = to_normalized_tensor(image.crop((8, 4, 40, 36)), scorer.transform.mean, scorer.transform.std)
    assert torch.equal(scorer.preprocess(image), expected)


def test_every_input_kind_gives_the_same_score(quality_dir, tmp_path):
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=3)
    image = random_image(5)
    path = tmp_path / "image.png"
    image.save(path)
    dataset = Dataset.from_dict({"image": [str(path)]}).cast_column("image", ImageFeature())
    expected = scorer(image)["score"]
    results = [
        scorer(str(path)),
        scorer(path),
        scorer(np.asarray(image)),
        scorer(np.asarray(image, dtype=np.float32) / 255.0),
        *scorer([image, path]),
        *scorer(dataset),
    ]
    assert all(abs(result["score"] - expected) < 1e-6 for result in results)


def test_regression_output_and_score_metadata(quality_dir):
    scorer = PerceptScorer.from_pretrained(quality_dir)
    result = scorer(random_image(1))
    assert set(result) == {"score"} and isinstance(result["score"], float)
    assert scorer.score_range == (1.0, 5.0) and scorer.higher_is_better is True
    assert scorer.device.type == "cpu" and scorer.dtype == torch.float32


def test_classification_gives_top_label_and_probabilities(emotion_dir):
    scorer = PerceptScorer.from_pretrained(emotion_dir, tta=15)
    assert scorer.num_crops == 1  # emotion: resize + center crop, no crops
    results = scorer([random_image(i, size=(50, 40)) for i in range(2)])
    for result in results:
        probabilities = result["probabilities"]
        assert list(probabilities) == scorer.labels and len(probabilities) == 8
        assert abs(sum(probabilities.values()) - 1) < 1e-5
        assert result["label"] == max(probabilities, key=probabilities.get)


def test_unreadable_image_raises_naming_it_or_is_recorded(quality_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=2)
    with pytest.raises(DatasetFormatError, match="broken.jpg"):
        scorer(bad)
    results = scorer([random_image(0), bad, random_image(1)], on_error="record")
    assert "score" in results[0] and "score" in results[2] and "broken.jpg" in results[1]["error"]


def test_bad_arguments_are_explained(quality_dir):
    with pytest.raises(ValueError, match="tta"):
        PerceptScorer.from_pretrained(quality_dir, tta=0)
    with pytest.raises(ValueError, match="dtype"):
        PerceptScorer.from_pretrained(quality_dir, dtype="int8")


def test_iqa_crops_follow_the_resize_the_model_was_trained_with(tiny_clip_base, tmp_path):
    """`config.test_resize_short` (set by training from the dataset protocol) is the scorer's default resize."""
    model = trained_like(tiny_clip_base, task="quality", test_resize_short=40)
    model.save_pretrained(tmp_path / "m")
    image = random_image(7, size=(90, 70))
    default = PerceptScorer.from_pretrained(tmp_path / "m", tta=4)
    assert default.transform.resize_short == 40
    explicit = PerceptScorer.from_pretrained(tmp_path / "m", tta=4, resize_short=40)(image)["score"]
    other_scale = PerceptScorer.from_pretrained(tmp_path / "m", tta=4, resize_short=90)(image)["score"]
    assert default(image)["score"] == pytest.approx(explicit, abs=1e-6)
    assert abs(other_scale - explicit) > 1e-6
