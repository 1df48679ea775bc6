"""Scores that say what they are: a PLCC-trained score is relative, an MSE-trained one calibrated to its labels'
range; the CSV, the card and train.py say the same; the card describes the real backbone and adaptation."""

import pytest

from perceptclip_hf.cli import main
from perceptclip_hf.hub.model_card import render_model_card
from perceptclip_hf.modeling import PerceptCLIPConfig, create_model
from perceptclip_hf.tasks import score_meaning, score_scale
from tests.helpers.cli import read_rows
from tests.helpers.models import random_image

TINY_RESNET = dict(
    model_type="resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", image_size=32
)


def resnet_config(**kwargs) -> PerceptCLIPConfig:
    return PerceptCLIPConfig(
        vision_config=TINY_RESNET, base_model_name_or_path=None, adaptation="full", head_hidden_sizes=[8], **kwargs
    )


@pytest.mark.parametrize(
    "loss, scale, words",
    [
        ("plcc", "relative", "a relative score (higher is better): trained with the PLCC loss"),
        (
            "mse",
            "calibrated",
            "a calibrated score (higher is better): trained with MSE to the training labels' values, "
            "on their scale 1–5.",
        ),
    ],
)
def test_csv_card_and_meaning_agree_on_the_scale(loss, scale, words, tmp_path, capsys):
    config = resnet_config(task="quality", loss=loss, score_range=[1.0, 5.0])
    assert score_scale(config) == scale and words in score_meaning(config)
    card = str(render_model_card(config))
    assert f"The output is {score_meaning(config)}" in card
    assert ("on the range 1.0–5.0" in card) is False  # the old wording put any score on the labels' range

    model_dir = tmp_path / "model"
    create_model(config).save_pretrained(model_dir)
    random_image(0).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(model_dir), "-o", str(tmp_path / "s.csv")]) == 0
    row = read_rows(tmp_path / "s.csv")[0]
    expected_range = ("1.0", "5.0") if scale == "calibrated" else ("", "")
    assert (row["score_scale"], row["score_min"], row["score_max"]) == (scale, *expected_range)


def test_card_describes_the_real_backbone_and_adaptation(tiny_clip_base):
    resnet = render_model_card(resnet_config(task="quality"))
    assert "a `resnet` backbone (randomly initialised) fully fine-tuned and an MLP head (hidden 8)" in str(resnet)
    assert "LoRA" not in str(resnet).split("## Usage")[0] and "was\n> randomly initialised" in str(resnet)
    assert "lora" not in resnet.data.tags and "clip" not in resnet.data.tags
    clip = render_model_card(PerceptCLIPConfig(task="emotion", base_model_name_or_path="openai/clip-vit-large-patch14"))
    assert (
        "CLIP's vision encoder (openai/clip-vit-large-patch14) adapted with LoRA on the attention "
        "q_proj/k_proj/v_proj projections, its frozen visual projection, and an MLP head (hidden 512 → 256)"
        in str(clip)
    )
    assert {"lora", "clip"} <= set(clip.data.tags)
