"""Head importance by CLS-attention masking, CLS attention maps (fine-tuned and base), Grad-CAM for CNN backbones,
heatmap PNGs (colour bar, title), and `explain` / `perceptclip explain` on CLIP, ViT, DINOv2 and ResNet models."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from transformers import CLIPVisionModelWithProjection

from perceptclip_hf import PerceptCLIPConfig, PerceptCLIPForClassification, PerceptCLIPForRegression
from perceptclip_hf.cli import main
from perceptclip_hf.cli.explain import WRITER as EXPLAIN_WRITER
from perceptclip_hf.explain.gradcam import grad_cam
from perceptclip_hf.explain.interpretability import (
    adapters_disabled,
    cls_attention_maps,
    explain,
    head_importance,
    masked_logits,
    rank_heads,
    save_heatmaps,
)
from perceptclip_hf.modeling.modeling_perceptclip import create_model
from perceptclip_hf.output_safety import check_own_folder
from perceptclip_hf.preprocessing import center_view_transform
from perceptclip_hf.scoring.scorer import merge_lora_weights
from tests.helpers.models import (
    TINY_HEAD,
    TINY_RESNET,
    TINY_VIT,
    hooked_masked_logits,
    random_image,
    randomize_lora,
    resnet_model,
    tiny_clip_config,
    trained_like,
)


@pytest.fixture(scope="module")
def model(tiny_clip_base):
    return trained_like(tiny_clip_base, task="quality")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_probe_masking_matches_an_independent_hook_reference(model, pixels):
    for layer, head in ((0, 1), (1, 3)):
        assert torch.allclose(
            masked_logits(model, pixels, layer, head), hooked_masked_logits(model, pixels, layer, head), atol=1e-5
        )


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
    change = lambda layer, head: (hooked_masked_logits(model, pixels, layer, head) - baseline).abs().mean()  # noqa: E731
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


# ----- heatmap PNGs ----------------------------------------------------------------------------------------------


def colour_bar_height(path, colormap: str) -> int:
    """The height of the tallest colour bar of ``colormap`` in the PNG: a vertical run of pixels that have the
    colour map's own colours, from its last colour at the top to its first at the bottom (0 if none)."""
    table = (colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)

    def columns_near(colours):
        return (np.linalg.norm(pixels[:, :, None, :] - colours, axis=-1).min(axis=2) < 8).any(axis=0)

    tallest = 0
    for column in np.flatnonzero(columns_near(table[:6]) & columns_near(table[-6:])):  # both ends of the map
        distances = np.linalg.norm(pixels[:, column, None, :] - table[None], axis=-1)
        on_map, position = distances.min(axis=1) < 8, distances.argmin(axis=1)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], on_map.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2]):  # runs of on-map pixels
            run = position[start:stop]
            if stop - start > tallest and run[0] >= 250 and run[-1] <= 5 and (np.diff(run) <= 2).all():
                tallest = stop - start
    return tallest


def png_title(path) -> str:
    with Image.open(path) as image:
        return image.text["Title"]


def test_save_heatmaps_writes_overlays_and_differences(model, pixels, tmp_path):
    tuned, base = cls_attention_maps(model, pixels[:1]), cls_attention_maps(model, pixels[:1], base=True)
    written = save_heatmaps(
        random_image(0, (60, 40)),
        tuned[:, 0],
        base[:, 0],
        [(1, 2), (0, 0)],
        tmp_path,
        "img",
        display_size=64,
        name="img.png",
        prediction="score 1.5",
    )
    assert [p.name for p in written] == ["img_L1_H2.png", "img_L1_H2_diff.png", "img_L0_H0.png", "img_L0_H0_diff.png"]
    for path in written:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.width > 64 and image.height > 64  # the overlay, plus colour bar, title and caption
    # A colour bar as tall as the 64-pixel overlay: blue→red for the maps, blue→white→red for the differences.
    assert colour_bar_height(written[0], "jet") >= 60 and colour_bar_height(written[0], "RdBu_r") == 0
    assert colour_bar_height(written[1], "RdBu_r") >= 60 and colour_bar_height(written[1], "jet") == 0
    assert png_title(written[0]) == "img.png · L1 H2 · score 1.5"
    assert png_title(written[1]) == "img.png · L1 H2 fine-tuned − base · score 1.5"


def test_without_a_base_no_difference_maps_are_written(model, pixels, tmp_path):
    tuned = cls_attention_maps(model, pixels[:1])
    written = save_heatmaps(random_image(0), tuned[:, 0], None, [(0, 1)], tmp_path, "img", display_size=32)
    assert [p.name for p in written] == ["img_L0_H1.png"] and sorted(tmp_path.iterdir()) == written


# ----- Grad-CAM on a convolutional backbone ------------------------------------------------------------------------


def reference_grad_cam(model, image: torch.Tensor) -> torch.Tensor:
    """Grad-CAM typed out for one image: the ResNet's last stage output A, y the score (or the top-class logit),
    relu(sum_c mean_hw(dy/dA_c) A_c)."""
    kept = {}
    hook = model.backbone.encoder.stages[-1].register_forward_hook(lambda module, args, output: kept.update(a=output))
    try:
        logits = model(image[None]).logits[0]
    finally:
        hook.remove()
    target = logits[logits.argmax()] if model.config.is_classification else logits[0]
    (gradient,) = torch.autograd.grad(target, kept["a"])
    return torch.relu((gradient[0].mean(dim=(1, 2))[:, None, None] * kept["a"][0]).sum(dim=0)).detach()


@pytest.mark.parametrize("task", ["quality", "emotion"])
def test_grad_cam_equals_a_typed_out_reference_per_image(task):
    model = resnet_model(task)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cam = grad_cam(model, images, batch_size=2)  # two passes
    assert cam.maps.shape == (3, 8, 8) and cam.module == "encoder.stages.1" and cam.channels == 16
    assert (cam.maps >= 0).all() and (cam.maps > 0).any()
    for index in range(3):
        assert torch.allclose(cam.maps[index], reference_grad_cam(model, images[index]), rtol=1e-4, atol=1e-7)


def test_a_cnn_with_lora_gets_grad_cam_difference_maps_against_its_base(tmp_path):
    torch.manual_seed(0)
    model = create_model(PerceptCLIPConfig(vision_config=TINY_RESNET, lora_target_modules=["convolution"], **TINY_HEAD))
    randomize_lora(model)
    model.eval()
    report = explain(model, [random_image(0, (64, 64))], out_dir=tmp_path)
    assert report["heatmaps"] == ["000_image_0_gradcam.png", "000_image_0_gradcam_diff.png"]
    assert colour_bar_height(tmp_path / report["heatmaps"][1], "RdBu_r") >= 200
    # The base is the backbone without its LoRA updates: the same model with every LoRA B matrix zeroed.
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with adapters_disabled(model):
        base = grad_cam(model, images).maps
    plain = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in plain.named_parameters():
            if "lora_B" in name:
                param.zero_()
    assert base.max() > 0 and torch.allclose(base, grad_cam(plain, images).maps, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(base, grad_cam(model, images).maps, rtol=1e-2, atol=0)


def test_explain_cli_on_a_resnet_model_writes_grad_cam_heatmaps(tmp_path):
    from tests.helpers.cli import perceptclip

    resnet_model().save_pretrained(tmp_path / "resnet")
    for index in range(2):
        random_image(index, size=(64, 48)).save(tmp_path / f"photo{index}.png")
    out = tmp_path / "explain"
    result = perceptclip(
        "explain", "photo0.png", "photo1.png", "--model", tmp_path / "resnet", "--out", out, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "head_importance.json").read_text())
    assert report["writer"] == "perceptclip explain" and report["method"] == "grad-cam"
    assert "ranking" not in report and "importance" not in report and report["target"] == "the score"
    assert report["feature_map"] == {"module": "encoder.stages.1", "channels": 16, "size": [8, 8]}
    assert (
        "no LoRA adapters (adaptation 'full')" in report["diff_maps"]
        and "Grad-CAM on encoder.stages.1" in result.stderr
    )
    assert report["heatmaps"] == ["000_photo0_gradcam.png", "001_photo1_gradcam.png"]
    assert sorted(path.name for path in out.iterdir()) == sorted(["head_importance.json", *report["heatmaps"]])
    saved = PerceptCLIPForRegression.from_pretrained(tmp_path / "resnet").eval()
    transform = center_view_transform(saved.config)
    for index, name in enumerate(report["heatmaps"]):
        with Image.open(out / name) as image:
            image.verify()
        with torch.no_grad():
            score = saved(transform.transform_image(Image.open(tmp_path / f"photo{index}.png"), None)[None]).logits
        assert png_title(out / name) == f"photo{index}.png · Grad-CAM · score {float(score):.4g}"
        assert colour_bar_height(out / name, "jet") >= 200  # beside the 224-pixel view
    check_own_folder(
        out, "head_importance.json", EXPLAIN_WRITER
    )  # recognised as this command's output: a rerun may overwrite it


def test_explain_refuses_a_backbone_without_cls_attention_or_feature_map(tmp_path, capsys):
    siglip = dict(TINY_VIT, model_type="siglip_vision_model")
    create_model(PerceptCLIPConfig(vision_config=siglip, adaptation="full", **TINY_HEAD)).save_pretrained(
        tmp_path / "m"
    )
    random_image(0).save(tmp_path / "a.png")
    assert main(["explain", str(tmp_path / "a.png"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "explain supports backbones with a CLS token and attention (CLIP, ViT, DINOv2" in error
    assert "convolutional backbones (ResNet, ConvNeXt" in error and "SiglipVisionModel" in error


# ----- explain on attention backbones --------------------------------------------------------------------------------

ATTENTION_BACKBONES = {  # all with q_proj / k_proj / v_proj, the default LoRA targets
    "clip": tiny_clip_config().to_dict(),
    "vit": {"model_type": "vit", **TINY_VIT},
    "dinov2": {"model_type": "dinov2", **TINY_VIT, "mlp_ratio": 2},  # reads 224-pixel crops unless told (image_size)
}


def attention_model(kind: str, adaptation: str = "lora"):
    torch.manual_seed(0)
    model = create_model(
        PerceptCLIPConfig(vision_config=ATTENTION_BACKBONES[kind], adaptation=adaptation, image_size=32, **TINY_HEAD)
    )
    randomize_lora(model)
    return model.eval()


@pytest.mark.parametrize("kind", sorted(ATTENTION_BACKBONES))
def test_explain_ranks_heads_and_draws_cls_attention_of_each_attention_backbone(kind, tmp_path):
    model = attention_model(kind)
    images = [random_image(0, (48, 40)), random_image(1, (40, 56))]
    report = explain(model, images, names=["a.png", "b.png"], top_k=1, out_dir=tmp_path)
    assert report["method"] == "attention-head masking" and (report["num_layers"], report["num_heads"]) == (2, 4)
    assert np.asarray(report["importance"]).shape == (2, 4) and len(report["ranking"]) == 8
    heads = [f"_L{layer}_H{head}" for layer, head in report["top_heads"]]
    assert report["heatmaps"] == [
        f"{stem}{head}{suffix}.png" for stem in ("000_a", "001_b") for head in heads for suffix in ("", "_diff")
    ]
    assert report["diff_maps"].startswith("_diff maps: the fine-tuned model minus the base backbone")
    # The drawn maps are the model's eager attentions (CLS row over the 4x4 patches).
    pixels = torch.stack([center_view_transform(model.config).transform_image(image, None) for image in images])
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            output = model(pixels, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    maps = cls_attention_maps(model, pixels)
    for layer in range(2):
        assert torch.allclose(maps[layer].flatten(-2), output.attentions[layer][:, :, 0, -16:], atol=1e-6)
    top = tmp_path / report["heatmaps"][0]
    assert png_title(top) == f"a.png · {heads[0][1:].replace('_', ' ')} · score {float(output.logits[0]):.4g}"
    assert colour_bar_height(top, "jet") >= 200


def test_difference_maps_only_with_lora_adapters(tmp_path):
    images = [random_image(0, (40, 40))]
    full = explain(attention_model("clip", adaptation="full"), images, top_k=1, out_dir=tmp_path / "full")
    assert not any("_diff" in name for name in full["heatmaps"]) and len(full["heatmaps"]) == 1
    assert sorted(path.name for path in (tmp_path / "full").iterdir()) == [*full["heatmaps"], "head_importance.json"]
    assert full["diff_maps"] == (
        "no _diff maps: the model has no LoRA adapters (adaptation 'full'), so there is no base to compare with"
    )
    assert json.loads((tmp_path / "full" / "head_importance.json").read_text())["diff_maps"] == full["diff_maps"]
    lora = attention_model("clip")
    report = explain(lora, images, top_k=1, out_dir=tmp_path / "lora")
    assert [name.endswith("_diff.png") for name in report["heatmaps"]] == [False, True]
    # Merged adapters still have a base: peft unmerges a LoRA layer when it is switched off.
    pixels = torch.stack([center_view_transform(lora.config).transform_image(images[0], None)])
    base = cls_attention_maps(lora, pixels, base=True)
    assert merge_lora_weights(lora) > 0
    assert torch.allclose(cls_attention_maps(lora, pixels, base=True), base, atol=1e-5)
