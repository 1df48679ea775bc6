"""Head importance by CLS-attention masking, CLS attention maps (fine-tuned and base), heatmap PNGs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPForClassification
from perceptclip_hf.interpretability import (
    cls_attention_maps,
    head_importance,
    masked_logits,
    rank_heads,
    save_heatmaps,
)
from tests.conftest import random_image, trained_like

HEAD_DIM = 8  # tiny CLIP: hidden 32, 4 heads


@pytest.fixture(scope="module")
def model(tiny_clip_base):
    return trained_like(tiny_clip_base, task="quality")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


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

    hooks = [attention.v_proj.register_forward_hook(keep_values),
             attention.out_proj.register_forward_pre_hook(replace_cls_output)]
    try:
        with torch.no_grad():
            return model(pixel_values).logits
    finally:
        for hook in hooks:
            hook.remove()


def test_probe_masking_matches_an_independent_hook_reference(model, pixels):
    for layer, head in ((0, 1), (1, 3)):
        assert torch.allclose(masked_logits(model, pixels, layer, head),
                              hooked_masked_logits(model, pixels, layer, head), atol=1e-5)


def test_most_important_head_changes_the_prediction_more_than_the_least(model, pixels):
    importance = head_importance(model, pixels, batch_size=7)  # 2 heads x 3 images per forward pass
    assert importance.shape == (2, 4) and (importance >= 0).all()
    with torch.no_grad():
        baseline = model(pixels).logits
    reference = torch.zeros(2, 4)
    for layer in range(2):
        for head in range(4):
            reference[layer, head] = (hooked_masked_logits(model, pixels, layer, head) - baseline).abs().mean()
    assert torch.allclose(importance, reference, atol=1e-5)
    (top_layer, top_head, _), *_, (low_layer, low_head, _) = rank_heads(importance)
    change = lambda l, h: (hooked_masked_logits(model, pixels, l, h) - baseline).abs().mean()  # noqa: E731
    assert change(top_layer, top_head) > change(low_layer, low_head)


def test_probe_restores_sdpa_and_leaves_outputs_unchanged(model, pixels):
    with torch.no_grad():
        before = model(pixels).logits
    head_importance(model, pixels)
    cls_attention_maps(model, pixels, base=True)
    with torch.no_grad():
        after = model(pixels).logits
    assert model.config._attn_implementation == "sdpa" and torch.equal(before, after)


def test_cls_maps_equal_eager_attentions_of_the_model_and_of_the_base(model, pixels, tiny_clip_base):
    tuned, base = cls_attention_maps(model, pixels), cls_attention_maps(model, pixels, base=True)
    assert tuned.shape == (2, 3, 4, 4, 4)  # layers, images, heads, 4x4 patches
    plain = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_base, attn_implementation="eager").eval()
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            tuned_reference = model(pixels, output_attentions=True).attentions
            base_reference = plain(pixel_values=pixels, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    for layer in range(2):
        assert torch.allclose(tuned[layer].flatten(-2), tuned_reference[layer][:, :, 0, 1:], atol=1e-6)
        assert torch.allclose(base[layer].flatten(-2), base_reference[layer][:, :, 0, 1:], atol=1e-6)
    assert not torch.allclose(tuned, base, atol=1e-3)


def test_classification_importance_uses_the_top_class_probability(tiny_clip_base, pixels):
    emotion = trained_like(tiny_clip_base, PerceptCLIPForClassification, task="emotion")
    importance = head_importance(emotion, pixels)
    with torch.no_grad():
        probabilities = emotion(pixels).logits.softmax(-1)
    top = probabilities.argmax(-1)
    masked = masked_logits(emotion, pixels, 1, 2).softmax(-1)
    expected = (masked.gather(1, top[:, None]) - probabilities.gather(1, top[:, None])).abs().mean()
    assert importance[1, 2] == pytest.approx(float(expected), abs=1e-6)


def test_save_heatmaps_writes_overlays_and_differences(model, pixels, tmp_path):
    tuned, base = cls_attention_maps(model, pixels[:1]), cls_attention_maps(model, pixels[:1], base=True)
    written = save_heatmaps(random_image(0, (60, 40)), tuned[:, 0], base[:, 0], [(1, 2), (0, 0)], tmp_path, "img",
                            display_size=64)
    assert [p.name for p in written] == ["img_L1_H2.png", "img_L1_H2_diff.png", "img_L0_H0.png", "img_L0_H0_diff.png"]
    for path in written:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
