"""Hub-native use: remote code in a process without perceptclip_hf, Auto classes, pipeline, official checkpoints,
other backbones."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTModel,
    pipeline,
)

from perceptclip_hf import (
    EMOTION_LABELS,
    PerceptCLIPConfig,
    PerceptCLIPForClassification,
    PerceptCLIPForRegression,
)
from perceptclip_hf.hub.official import load_official_checkpoint
from tests.helpers.cli import run_python
from tests.helpers.models import (
    BLOCK_PACKAGE,
    OFFICIAL_EMOTIONS,
    TINY_HEAD,
    TINY_VIT,
    OfficialCLIPLoRAModel,
    OfficialMLP,
    randomize_lora,
    tiny_clip_config,
)


def save_trained(base, path, cls, **config):
    model = cls.from_backbone(str(base), **TINY_HEAD, **config).eval()
    randomize_lora(model, seed=1)
    model.save_pretrained(path)
    return model


def test_remote_code_reproduces_outputs_without_the_package(tiny_clip_base, tmp_path):
    """A Hub user's process: `perceptclip_hf` cannot be imported; only the files in the model dir exist."""
    pixels = torch.randn(2, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = {}
    for name, cls, task in (
        ("reg", PerceptCLIPForRegression, "quality"),
        ("cls", PerceptCLIPForClassification, "emotion"),
    ):
        model = save_trained(tiny_clip_base, tmp_path / name, cls, task=task)
        with torch.no_grad():
            expected[name] = model(pixels).logits
        torch.save(expected[name], tmp_path / f"{name}.pt")
    code = (
        BLOCK_PACKAGE
        + f"""
import torch
from transformers import AutoModel, AutoModelForImageClassification
try:
    import perceptclip_hf
    raise SystemExit("package should be hidden")
except ImportError:
    pass
root = {str(tmp_path)!r}
pixels = torch.load(root + "/pixels.pt")
for name, expected_class in (("reg", "PerceptCLIPForRegression"), ("cls", "PerceptCLIPForClassification")):
    for auto in (AutoModel, AutoModelForImageClassification):
        model = auto.from_pretrained(f"{{root}}/{{name}}", trust_remote_code=True).eval()
        assert type(model).__name__ == expected_class, type(model)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            delta = (model(pixels).logits - torch.load(f"{{root}}/{{name}}.pt")).abs().max().item()
        assert delta < 1e-6, (name, auto.__name__, delta)
        print(name, auto.__name__, delta)
"""
    )
    out = run_python(code).stdout
    assert out.count("\n") == 4


def test_local_auto_classes_pick_the_saved_task_class(tiny_clip_base, tmp_path):
    save_trained(tiny_clip_base, tmp_path / "cls", PerceptCLIPForClassification, task="emotion")
    save_trained(tiny_clip_base, tmp_path / "reg", PerceptCLIPForRegression, task="memorability")
    assert isinstance(AutoModel.from_pretrained(tmp_path / "cls"), PerceptCLIPForClassification)
    assert isinstance(AutoModelForImageClassification.from_pretrained(tmp_path / "reg"), PerceptCLIPForRegression)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "reg")
    assert processor.size == {"shortest_edge": 32} and processor.crop_size == {"height": 32, "width": 32}
    assert int(processor.resample) == int(Image.Resampling.BILINEAR)


def _image(seed=0, size=(45, 37)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def test_pipeline_softmax_for_emotion_and_raw_score_for_regression(tiny_clip_base, tmp_path):
    emotion = save_trained(tiny_clip_base, tmp_path / "emo", PerceptCLIPForClassification, task="emotion")
    quality = save_trained(tiny_clip_base, tmp_path / "iqa", PerceptCLIPForRegression, task="quality")
    image = _image()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "iqa")
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emotion_probs = emotion(pixels).logits.softmax(-1)[0]
        quality_score = quality(pixels).logits[0, 0].item()

    emo = pipeline("image-classification", model=str(tmp_path / "emo"), trust_remote_code=True)(image, top_k=8)
    assert sorted(r["label"] for r in emo) == sorted(OFFICIAL_EMOTIONS)
    assert sum(r["score"] for r in emo) == pytest.approx(1.0, abs=1e-5)
    for r in emo:
        assert r["score"] == pytest.approx(emotion_probs[EMOTION_LABELS.index(r["label"])].item(), abs=1e-5)

    iqa = pipeline("image-classification", model=str(tmp_path / "iqa"), trust_remote_code=True)(image)
    assert iqa == [{"label": "quality", "score": pytest.approx(quality_score, abs=1e-5)}]
    sigmoid = 1 / (1 + np.exp(-quality_score))
    assert abs(sigmoid - quality_score) > 1e-3  # the pipeline's score is the raw head output, not its sigmoid


@pytest.mark.parametrize("task, output_dim", [("quality", 1), ("emotion", 8)])
def test_official_layout_state_dict_loads_and_matches(tmp_path, task, output_dim):
    torch.manual_seed(0)
    official = OfficialCLIPLoRAModel(output_dim).eval()
    randomize_lora(official, seed=3)
    keys = list(official.state_dict())
    assert any(k.startswith("model.base_model.model.encoder.layers.0.self_attn.q_proj.lora_A") for k in keys)
    torch.save(official.state_dict(), tmp_path / "official.pth")
    config = PerceptCLIPConfig(task=task, vision_config=tiny_clip_config().to_dict(), **TINY_HEAD)
    ours = load_official_checkpoint(str(tmp_path / "official.pth"), task=task, config=config)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        delta = (ours(pixels).logits - official(pixels)).abs().max().item()
    assert delta < 1e-5
    if task == "emotion":
        assert tuple(ours.config.id2label[i] for i in range(8)) == OFFICIAL_EMOTIONS


def test_official_checkpoint_with_pickled_code_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(1), "evil": OfficialMLP(2, 2, 2, 1)}, tmp_path / "code.pth")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_official_checkpoint(
            str(tmp_path / "code.pth"),
            task="quality",
            config=PerceptCLIPConfig(vision_config=tiny_clip_config().to_dict()),
        )


@pytest.mark.parametrize(
    "config_class, model_class, extra",
    [
        (Dinov2Config, Dinov2Model, {"mlp_ratio": 2}),
        (ViTConfig, ViTModel, {}),
    ],
)
def test_other_backbones_get_lora_on_qkv_and_start_as_the_base(tmp_path, config_class, model_class, extra):
    vision_config = config_class(**{**TINY_VIT, **extra})
    torch.manual_seed(0)
    base = model_class(vision_config, **({"add_pooling_layer": True} if model_class is ViTModel else {})).eval()
    base.save_pretrained(tmp_path / "base")
    model = PerceptCLIPForRegression.from_backbone(str(tmp_path / "base"), task="memorability", **TINY_HEAD).eval()
    lora_targets = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert lora_targets == {"q_proj", "k_proj", "v_proj"}
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(pixels).image_embeds, base(pixel_values=pixels).last_hidden_state[:, 0])
    randomize_lora(model)
    model.save_pretrained(tmp_path / "model")
    reloaded = PerceptCLIPForRegression.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).logits, model(pixels).logits)
    processor = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    expected_mean = [0.5, 0.5, 0.5] if model_class is ViTModel else [0.485, 0.456, 0.406]  # the backbone's own
    assert processor["image_mean"] == pytest.approx(expected_mean)
