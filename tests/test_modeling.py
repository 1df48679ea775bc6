"""The PerceptCLIP model classes: construction on vision and two-tower backbones, backbone errors, LoRA identity,
adapter-only storage, heads, TTA, the image processor."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from scipy.stats import pearsonr
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from perceptclip_hf import (
    PerceptCLIPConfig,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
    default_image_processor,
)
from perceptclip_hf.modeling.modeling_perceptclip import PerceptCLIPHead
from tests.helpers.cli import run_python
from tests.helpers.models import (
    BLOCK_PACKAGE,
    OFFICIAL_EMOTIONS,
    TINY_CLIP,
    TINY_HEAD,
    TINY_TOWER,
    randomize_lora,
    tiny_clip_config,
    trained_like,
)

TINY_TEXT = dict(
    **TINY_TOWER, vocab_size=64, max_position_embeddings=16, pad_token_id=1, bos_token_id=2, eos_token_id=3
)
TINY_VISION = dict(**TINY_TOWER, image_size=32, patch_size=8)


def tiny_model(base, cls=PerceptCLIPForRegression, **kwargs):
    return cls.from_backbone(str(base), **TINY_HEAD, **kwargs).eval()


def test_task_presets_fill_problem_type_loss_and_labels():
    quality, memorability, emotion = (PerceptCLIPConfig(task=t) for t in ("quality", "memorability", "emotion"))
    assert (quality.problem_type, quality.loss, quality.num_labels) == ("regression", "plcc", 1)
    assert (memorability.loss, memorability.score_range) == ("mse", [0.0, 1.0])
    assert emotion.loss == "cross_entropy"
    assert tuple(emotion.id2label[i] for i in range(8)) == OFFICIAL_EMOTIONS


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
    other = CLIPVisionModelWithProjection(
        tiny_clip_config().__class__(**{**tiny_clip_config().to_dict(), "num_hidden_layers": 1})
    )
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
    model = trained_like(tiny_clip_base, heads={"koniq": 1, "livec": 1})
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(10, 3, 32, 32, generator=generator), torch.rand(10, generator=generator) * 4 + 1
    head_ids = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 0, 1])  # 5 items per head: PLCC is not a trivial ±1
    with torch.no_grad():
        by_name = {name: model(pixels, head=name).logits for name in ("koniq", "livec")}
        mixed = model(pixels, head=head_ids, labels=labels)
    expected = torch.where(head_ids[:, None] == 0, by_name["koniq"], by_name["livec"])
    assert torch.allclose(mixed.logits, expected, atol=1e-6)
    # Independent reference: the paper's PLCC loss (1 - r) / 2 of each head's items, then the mean over heads.
    predictions, targets, ids = expected[:, 0].double().numpy(), labels.double().numpy(), head_ids.numpy()
    per_head = [(1 - pearsonr(predictions[ids == i], targets[ids == i]).statistic) / 2 for i in (0, 1)]
    assert all(0.01 < loss < 0.99 for loss in per_head)
    assert mixed.loss.item() == pytest.approx(np.mean(per_head), abs=1e-5)
    pooled = (1 - pearsonr(predictions, targets).statistic) / 2  # one PLCC over both datasets: not the paper's
    assert abs(pooled - np.mean(per_head)) > 1e-3
    with pytest.raises(KeyError, match="livec"):
        model(pixels, head="spaq")


def test_mlp_head_is_the_official_mlp_with_dropout_half_in_training():
    """The head is the official `MLP`: fc3(dropout(relu(fc2(dropout(relu(fc1(x))))))), dropout p=0.5 in train
    mode only (the same RNG draws as `torch.nn.functional.dropout`)."""
    head = PerceptCLIPHead(24, 1, PerceptCLIPConfig())
    fc1, fc2, fc3 = head.layers
    features = torch.randn(64, 24, generator=torch.Generator().manual_seed(0))

    def reference(training):
        dropout = lambda x: torch.nn.functional.dropout(x, p=0.5, training=training)  # noqa: E731
        return fc3(dropout(torch.relu(fc2(dropout(torch.relu(fc1(features)))))))

    with torch.no_grad():
        torch.manual_seed(1)
        train_output = head.train()(features)
        torch.manual_seed(1)
        assert torch.equal(train_output, reference(training=True))
        eval_output = head.eval()(features)
        assert torch.equal(eval_output, reference(training=False))
    assert not torch.allclose(train_output, eval_output)


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


DINOV2_518 = Dinov2Config(**{**TINY_VISION, "image_size": 518})


@pytest.mark.parametrize(
    "vision_config, config_kwargs, size, mean, std",
    [
        (DINOV2_518, {}, 224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),  # interpolates: the paper's 224, not 518
        (DINOV2_518, {"image_size": 112}, 112, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        (SiglipVisionConfig(**TINY_VISION), {}, 32, [0.5] * 3, [0.5] * 3),  # fixed by its position embeddings
        (tiny_clip_config(), {"image_size": 48}, 48, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ],
)
def test_image_processor_crop_size_and_normalisation_are_the_backbones(vision_config, config_kwargs, size, mean, std):
    processor = default_image_processor(PerceptCLIPConfig(vision_config=vision_config.to_dict(), **config_kwargs))
    assert processor.crop_size == {"height": size, "width": size} and processor.size == {"shortest_edge": size}
    assert (processor.image_mean, processor.image_std) == (pytest.approx(mean), pytest.approx(std))


def test_dinov2_model_saves_a_224_processor(tmp_path):
    config = PerceptCLIPConfig(vision_config=DINOV2_518.to_dict(), **TINY_HEAD)
    PerceptCLIPForRegression(config).save_pretrained(tmp_path)
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 224, "width": 224} and processor["size"] == {"shortest_edge": 224}


def test_full_siglip_checkpoint_backbone_reload_and_remote_code(tmp_path):
    """A two-tower SiglipModel checkpoint (the Hub layout): its vision tower is the backbone, the head reads its
    pooled output, and an adapter-only save reloads with and without the package."""
    torch.manual_seed(0)
    siglip = SiglipModel(SiglipConfig(vision_config=TINY_VISION, text_config=TINY_TEXT)).eval()
    siglip.save_pretrained(tmp_path / "siglip")
    model = PerceptCLIPForRegression.from_backbone(str(tmp_path / "siglip"), task="quality", **TINY_HEAD).eval()
    assert model.config.vision_config.model_type == "siglip_vision_model"
    tower = siglip.state_dict()
    backbone = {k.replace(".base_layer.", "."): v for k, v in model.backbone.state_dict().items() if "lora_" not in k}
    assert backbone and all(torch.equal(v, tower[f"vision_model.{k}"]) for k, v in backbone.items())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = siglip.get_image_features(pixel_values=pixels).pooler_output
        assert torch.allclose(model(pixels).image_embeds, features, atol=1e-6)
    model = trained_like(tmp_path / "siglip", task="quality")
    with torch.no_grad():
        expected = model(pixels).logits
    model.save_pretrained(tmp_path / "model")
    processor = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == processor["image_std"] == [0.5] * 3
    reloaded = PerceptCLIPForRegression.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(pixels).logits, expected, atol=1e-5)
    torch.save({"pixels": pixels, "expected": expected}, tmp_path / "io.pt")
    run_python(
        BLOCK_PACKAGE
        + f"""
import torch
from transformers import AutoModel
io = torch.load({str(tmp_path / "io.pt")!r})
model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    delta = (model(io["pixels"]).logits - io["expected"]).abs().max().item()
assert delta < 1e-5, delta
"""
    )


def test_full_clip_checkpoint_uses_the_top_level_projection_dim(tmp_path):
    config = CLIPConfig(vision_config={**TINY_CLIP, "projection_dim": 16}, text_config=TINY_TEXT, projection_dim=24)
    torch.manual_seed(0)
    clip = CLIPModel(config)
    clip.save_pretrained(tmp_path)
    model = PerceptCLIPForRegression.from_backbone(str(tmp_path), **TINY_HEAD)
    assert model.config.vision_config.projection_dim == 24
    assert torch.equal(model.backbone.visual_projection.weight, clip.visual_projection.weight)
    assert model.heads["default"].layers[0].in_features == 24


def test_projection_that_cannot_fit_is_one_clear_error(tiny_clip_base, tmp_path):
    # A vision tower (projection 24) under a model whose config asks for 16.
    config = PerceptCLIPConfig(vision_config={**TINY_CLIP, "projection_dim": 16}, **TINY_HEAD)
    with pytest.raises(ValueError) as excinfo:
        PerceptCLIPForRegression(config).load_base_weights(str(tiny_clip_base))
    message = str(excinfo.value)
    assert str(tiny_clip_base) in message and "visual_projection.weight" in message
    assert "(24, 32)" in message and "(16, 32)" in message and "from_backbone(" in message
    # A full CLIP checkpoint whose config contradicts its own weights.
    CLIPModel(CLIPConfig(vision_config=TINY_CLIP, text_config=TINY_TEXT, projection_dim=24)).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "projection_dim": 20}))
    with pytest.raises(ValueError, match=r"visual_projection.weight has shape \(24, 32\).*expects \(20, 32\)"):
        PerceptCLIPForRegression.from_backbone(str(tmp_path), **TINY_HEAD)


def test_offline_hub_id_is_one_error_with_the_local_copy_fix(tmp_path):
    hub_id = "openai/clip-vit-large-patch14"
    out = run_python(
        f"""
from perceptclip_hf import PerceptCLIPForRegression
try:
    PerceptCLIPForRegression.from_backbone({hub_id!r})
except OSError as err:
    assert err.__cause__ is None and err.__suppress_context__, "the network traceback is not chained"
    print(err)
else:
    raise SystemExit("no error")
""",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)},
    ).stdout
    assert hub_id in out and f"hf download {hub_id} --local-dir DIR" in out and "pass DIR" in out
