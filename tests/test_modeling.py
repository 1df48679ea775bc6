"""The PerceptCLIP model classes: construction, LoRA identity, adapter-only storage, heads, TTA."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPVisionModelWithProjection

from perceptclip_hf import (
    EMOTION_LABELS,
    PerceptCLIPConfig,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
)
from tests.conftest import TINY_HEAD, randomize_lora, tiny_clip_config


def tiny_model(base, cls=PerceptCLIPForRegression, **kwargs):
    return cls.from_backbone(str(base), **TINY_HEAD, **kwargs).eval()


def test_task_presets_fill_problem_type_loss_and_labels():
    quality, memorability, emotion = (PerceptCLIPConfig(task=t) for t in ("quality", "memorability", "emotion"))
    assert (quality.problem_type, quality.loss, quality.num_labels) == ("regression", "plcc", 1)
    assert (memorability.loss, memorability.score_range) == ("mse", [0.0, 1.0])
    assert emotion.loss == "cross_entropy"
    assert [emotion.id2label[i] for i in range(8)] == list(EMOTION_LABELS)
    assert EMOTION_LABELS[:4] == ("amusement", "awe", "contentment", "excitement")


@pytest.mark.parametrize("field, value", [("adaptation", "partial"), ("head_type", "conv"), ("task", "beauty")])
def test_config_rejects_unknown_choices_naming_the_field(field, value):
    with pytest.raises(Exception, match=field):
        PerceptCLIPConfig(**{field: value})


def test_task_class_checks_problem_type():
    with pytest.raises(ValueError, match="PerceptCLIPForClassification"):
        PerceptCLIPForRegression(PerceptCLIPConfig(task="emotion", vision_config=tiny_clip_config().to_dict()))


def test_untrained_lora_is_exactly_the_base_backbone(tiny_clip_base, tmp_path):
    model = tiny_model(tiny_clip_base)
    base = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_base).eval()
    pixels = torch.randn(3, 3, 32, 32)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 2 * 3 and all(torch.count_nonzero(p) == 0 for p in lora_b)
    with torch.no_grad():
        assert torch.equal(model(pixels).image_embeds, base(pixel_values=pixels).image_embeds)
    model.save_pretrained(tmp_path)
    reloaded = PerceptCLIPForRegression.from_pretrained(tmp_path).eval()
    assert all(torch.count_nonzero(p) == 0 for n, p in reloaded.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).image_embeds, base(pixel_values=pixels).image_embeds)


def test_adapter_only_checkpoint_holds_only_lora_and_head_tensors(tiny_clip_base, tmp_path):
    model = tiny_model(tiny_clip_base)
    randomize_lora(model)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    expected = {k for k in model.state_dict() if "lora_" in k or k.startswith("heads.")}
    assert keys == expected
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["adapter_only"] is True and config["base_model_name_or_path"] == str(tiny_clip_base)
    assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification"} <= set(config["auto_map"])
    assert (tmp_path / "modeling_perceptclip.py").exists() and (tmp_path / "configuration_perceptclip.py").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pth"))


def test_reload_reproduces_outputs_and_loaded_lora_survives_initialisation(tiny_clip_base, tmp_path):
    model = tiny_model(tiny_clip_base)
    randomize_lora(model)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixels).logits
    model.save_pretrained(tmp_path)
    reloaded = PerceptCLIPForRegression.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).logits, expected)


def test_full_weights_save_needs_no_base(tiny_clip_base, tmp_path):
    model = tiny_model(tiny_clip_base)
    randomize_lora(model)
    model.config.base_model_name_or_path = "nonexistent-org/not-reachable"
    model.save_pretrained(tmp_path, adapter_only=False)
    assert json.loads((tmp_path / "config.json").read_text())["adapter_only"] is False
    reloaded = PerceptCLIPForRegression.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).logits, model(pixels).logits)


def test_unreachable_base_fails_naming_the_id_and_the_fix(tiny_clip_base, tmp_path):
    model = tiny_model(tiny_clip_base)
    model.config.base_model_name_or_path = "nonexistent-org/clip-that-is-not-here"
    model.save_pretrained(tmp_path)
    with pytest.raises(OSError) as excinfo:
        PerceptCLIPForRegression.from_pretrained(tmp_path, local_files_only=True)
    message = str(excinfo.value)
    assert "nonexistent-org/clip-that-is-not-here" in message and "base_model_name_or_path=" in message
    # ... and pointing at a local copy fixes it, in one call.
    PerceptCLIPForRegression.from_pretrained(tmp_path, base_model_name_or_path=str(tiny_clip_base))


def test_base_with_another_architecture_is_rejected(tiny_clip_base, tmp_path):
    other = CLIPVisionModelWithProjection(tiny_clip_config().__class__(**{**tiny_clip_config().to_dict(),
                                                                          "num_hidden_layers": 1}))
    other.save_pretrained(tmp_path / "other")
    model = tiny_model(tiny_clip_base)
    with pytest.raises(ValueError, match="does not match"):
        model.load_base_weights(str(tmp_path / "other"))


def test_vit_l14_parameter_budget_and_adapter_file_size(tmp_path):
    """The paper's default: < 3M trainable parameters with LoRA; adapter-only file <= 15 MB."""
    layers, width, r, proj = 24, 1024, 16, 768
    lora_params = layers * 3 * r * (width + width)
    head_params = (proj * 512 + 512) + (512 * 256 + 256) + (256 * 1 + 1)
    with torch.device("meta"):
        frozen = PerceptCLIPForRegression(PerceptCLIPConfig(adaptation="frozen"))
        full = PerceptCLIPForRegression(PerceptCLIPConfig(adaptation="full"))
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(frozen) == head_params
    assert trainable(full) == sum(p.numel() for p in full.parameters())
    lora = PerceptCLIPForRegression(PerceptCLIPConfig())
    assert trainable(lora) == lora_params + head_params == 2_884_609 < 3_000_000
    lora.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size <= 15_000_000


def test_heads_multi_dataset_named_and_per_sample(tiny_clip_base):
    model = tiny_model(tiny_clip_base, heads={"koniq": 1, "livec": 1})
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([1.0, 2.0, 3.0, 5.0])
    head_ids = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        by_name = {name: model(pixels, head=name).logits for name in ("koniq", "livec")}
        mixed = model(pixels, head=head_ids, labels=labels)
    expected = torch.where(head_ids[:, None] == 0, by_name["koniq"], by_name["livec"])
    assert torch.allclose(mixed.logits, expected, atol=1e-6)
    from perceptclip_hf.modeling.loss_perceptclip import plcc_loss

    per_head = [plcc_loss(expected[head_ids == i], labels[head_ids == i]) for i in (0, 1)]
    assert torch.allclose(mixed.loss, torch.stack(per_head).mean())
    with pytest.raises(KeyError, match="livec"):
        model(pixels, head="spaq")


def test_crops_axis_averages_logits_in_one_pass(tiny_clip_base):
    model = tiny_model(tiny_clip_base)
    randomize_lora(model)
    crops = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        batched = model(crops).logits
        looped = torch.stack([torch.stack([model(c[None]).logits[0] for c in image]).mean(0) for image in crops])
    assert batched.shape == (2, 1) and torch.allclose(batched, looped, atol=1e-5)


def test_classification_loss_is_cross_entropy(tiny_clip_base):
    model = tiny_model(tiny_clip_base, cls=PerceptCLIPForClassification, task="emotion")
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 7, 3])
    with torch.no_grad():
        out = model(pixels, labels=labels)
    assert out.logits.shape == (3, 8)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_linear_head_and_strategies_set_trainable_parameters(tiny_clip_base):
    linear = tiny_model(tiny_clip_base, head_type="linear")
    assert len(linear.heads["default"].layers) == 1
    frozen = tiny_model(tiny_clip_base, adaptation="frozen")
    assert not any("lora_" in n for n, _ in frozen.named_parameters())
    assert {n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad} == {"heads"}
    lora = tiny_model(tiny_clip_base)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("heads.") for n in trainable)
    assert not lora.backbone.visual_projection.weight.requires_grad
