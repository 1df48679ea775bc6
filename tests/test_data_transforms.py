"""Transforms (torchvision-exact geometry, shapes, normalisation, determinism), replicas, pre-resize cache and
image-mode handling.

torchvision is not installed: its formulas (``torchvision.transforms.functional``, PIL path) are re-typed below as
literal references, independent of the package's code."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN as CLIP_MEAN
from transformers.image_utils import OPENAI_CLIP_STD as CLIP_STD

from perceptclip_hf import PerceptCLIPConfig
from perceptclip_hf.data import get_dataset_info, load_koniq10k, open_image, repeat_dataset
from perceptclip_hf.geometry import (
    center_crop,
    center_crop_box,
    random_crop_box,
    random_resized_crop_box,
    resize_exact,
    resize_short_side,
)
from perceptclip_hf.preprocessing import (
    IQACenterCropTransform,
    IQATestTransform,
    IQATrainTransform,
    ResizeCenterCropTransform,
    build_inference_transform,
    preresize,
    stable_seed,
    to_normalized_tensor,
    transform_kwargs,
    with_image_transform,
)
from perceptclip_hf.tasks import build_transform, get_task
from tests.helpers.datasets import make_flive, make_koniq, write_image


@pytest.fixture
def koniq(tmp_path):
    make_koniq(tmp_path, n=4)
    return load_koniq10k(tmp_path)


def test_test_crops_deterministic_per_seed(koniq):
    same_a = with_image_transform(koniq, IQATestTransform(32, seed=1))[0:2]["pixel_values"]
    same_b = with_image_transform(koniq, IQATestTransform(32, seed=1))[0:2]["pixel_values"]
    other = with_image_transform(koniq, IQATestTransform(32, seed=2))[0:2]["pixel_values"]
    assert same_a[0].shape == (15, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(same_a, same_b))
    assert not torch.equal(same_a[0], other[0])
    assert not torch.equal(same_a[0][0], same_a[0][1])  # the 15 crops differ
    # per image, not per batch position: image 1 alone gets the same crops as in the batch
    alone = with_image_transform(koniq, IQATestTransform(32, seed=1))[1]["pixel_values"]
    assert torch.equal(alone, same_a[1])


def test_replicas_multiply_epoch_length(koniq):
    train = with_image_transform(koniq, build_transform("quality", train=True, crop_size=32))
    replicas = get_dataset_info("koniq10k").replicas
    repeated = repeat_dataset(train, replicas)
    assert len(repeated) == len(koniq) * replicas == 12
    item = repeated[len(koniq) + 1]  # transform kept; copy 2 of image 1
    assert item["pixel_values"].shape == (3, 32, 32) and item["labels"].dtype == torch.float32
    assert item["labels"] == pytest.approx(koniq[1]["label"])
    assert repeated.with_format(None)["image_name"][:][len(koniq) + 1] == koniq["image_name"][1]
    assert len(repeat_dataset(koniq, 1)) == len(koniq)


def test_train_transform_flips_crops_and_upsizes_small_images():
    """Exact pixels of seeded training crops: upsizing (``Resize(16)`` of a 20x10 image), then torchvision's
    ``RandomHorizontalFlip``, ``RandomVerticalFlip`` and ``RandomCrop`` draws in that order from one stream."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (10, 20, 3), dtype=np.uint8))  # (w, h) = (20, 10) < crop
    large = Image.fromarray(rng.integers(0, 256, (21, 26, 3), dtype=np.uint8))  # (26, 21): cropped as is
    seen_flips = set()
    for image, fitted in ((small, small.resize((32, 16), Image.Resampling.BILINEAR)), (large, large)):
        for seed in range(6):
            transform = IQATrainTransform(16, seed=seed)
            reference = torch.Generator().manual_seed(seed)
            for _ in range(3):  # one generator across images: the draws continue the stream
                pixels = np.array(fitted)
                flips = (bool(torch.rand(1, generator=reference) < 0.5), bool(torch.rand(1, generator=reference) < 0.5))
                if flips[0]:
                    pixels = pixels[:, ::-1]
                if flips[1]:
                    pixels = pixels[::-1]
                top, left, _, _ = tv_random_crop_params(*pixels.shape[:2], 16, 16, reference)
                expected = Image.fromarray(np.ascontiguousarray(pixels[top : top + 16, left : left + 16]))
                out = transform.transform_image(image, None)
                assert torch.equal(out, to_normalized_tensor(expected, CLIP_MEAN, CLIP_STD)), (seed, flips)
                seen_flips.add(flips)
    assert seen_flips == {(False, False), (False, True), (True, False), (True, True)}


def test_resize_center_crop_normalises_with_clip_stats():
    color = (200, 100, 50)
    image = Image.new("RGB", (48, 32), color)
    transform = build_transform("memorability", train=False, crop_size=24)
    out = transform({"image": [image], "label": [0.7]})
    expected = (torch.tensor(color) / 255.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert out["pixel_values"][0].shape == (3, 24, 24)
    assert torch.allclose(out["pixel_values"][0][:, 5, 5], expected, atol=1e-5)


def test_emotion_transforms_give_class_labels():
    image = Image.new("RGB", (50, 40), (10, 20, 30))
    for train in (True, False):
        out = build_transform("emotion", train, crop_size=24, seed=0)({"image": [image], "label": [3]})
        assert out["pixel_values"][0].shape == (3, 24, 24)
        assert out["labels"][0].dtype == torch.long and out["labels"][0].item() == 3
    only_images = build_transform("emotion", False, crop_size=24)({"image": [image]})
    assert set(only_images) == {"pixel_values"}


def test_preresize_cache_writes_once(koniq, tmp_path):
    small = preresize(koniq, short_side=20, cache_dir=tmp_path / "cache")  # 40x30: int(20 * 40 / 30) = 26
    assert small[0]["image"].size == (26, 20) and small["image_name"] == koniq["image_name"]
    files = sorted((tmp_path / "cache").glob("*.arrow"))
    assert len(files) == 1
    again = preresize(koniq, short_side=20, cache_dir=tmp_path / "cache")
    assert sorted((tmp_path / "cache").glob("*.arrow")) == files and again[0]["image"].size == (26, 20)
    out = with_image_transform(small, IQATestTransform(16, num_crops=2))[0]
    assert out["pixel_values"].shape == (2, 3, 16, 16)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_open_image_converts_modes_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert open_image(_png_bytes(rgba)).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 1
    assert open_image(_png_bytes(palette)).getpixel((0, 0)) == (255, 255, 255)
    gray16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert gray16.mode.startswith("I")
    assert open_image(gray16).getpixel((0, 0)) == (255, 255, 255)
    cmyk = write_image(tmp_path / "c.jpg", mode="CMYK")
    assert open_image(cmyk).mode == "RGB"
    gray = write_image(tmp_path / "g.png", mode="L")
    assert open_image(str(gray)).mode == "RGB"
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = write_image(tmp_path / "r.jpg", exif=exif)
    assert open_image(rotated).size == (30, 40)


def test_dataset_image_column_works_with_bytes_and_decoded_images(tmp_path):
    image = Image.new("RGB", (40, 40), (1, 2, 3))
    ds = Dataset.from_dict(
        {"image": [{"bytes": _png_bytes(image), "path": None}], "label": [1.0]},
        features=Features({"image": ImageFeature(), "label": Value("float32")}),
    )
    transform = IQATestTransform(32, num_crops=3)
    via_helper = with_image_transform(ds, transform)[0]["pixel_values"]
    ds.set_transform(transform)  # images decoded by datasets first: still accepted
    assert torch.equal(ds[0]["pixel_values"], via_helper)


def test_test_crops_equal_per_crop_pil_crops():
    """The vectorised crops (one normalisation per image) equal cropping each box with PIL."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    transform = IQATestTransform(32, num_crops=5, seed=3)
    generator = torch.Generator().manual_seed(stable_seed(3, "key"))
    expected = torch.stack(
        [
            to_normalized_tensor(image.crop(random_crop_box(image.size, 32, generator)), transform.mean, transform.std)
            for _ in range(5)
        ]
    )
    assert torch.equal(transform.transform_image(image, "key"), expected)


# ----------------------------------------------------------------------------- torchvision-exact geometry
# torchvision's formulas, re-typed (transforms.functional._compute_resized_output_size, center_crop,
# RandomCrop.get_params, RandomResizedCrop.get_params), with an explicit generator.
def tv_resize_output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``Resize(size)`` of a ``(width, height)`` image → ``(new_width, new_height)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def tv_center_crop_offsets(width: int, height: int, crop: int) -> tuple[int, int]:
    """``CenterCrop(crop)`` → ``(top, left)``."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def tv_random_crop_params(h: int, w: int, th: int, tw: int, generator) -> tuple[int, int, int, int]:
    if w == tw and h == th:
        return 0, 0, h, w
    i = torch.randint(0, h - th + 1, size=(1,), generator=generator).item()
    j = torch.randint(0, w - tw + 1, size=(1,), generator=generator).item()
    return i, j, th, tw


def tv_random_resized_crop_params(height, width, generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    import math

    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


SIZES = [
    (224, 224),
    (225, 224),
    (300, 200),
    (200, 300),
    (641, 427),
    (427, 641),
    (1024, 768),
    (768, 1024),
    (333, 333),
    (500, 223),
    (223, 500),
    (1023, 511),
    (40, 30),
    (229, 230),
]


@pytest.mark.parametrize("size", SIZES)
def test_resize_and_center_crop_match_torchvision(size):
    image = Image.new("RGB", size)
    for target in (224, 384, 100):
        resized = resize_short_side(image, target)
        assert resized.size == tv_resize_output_size(*size, target)
        assert (resized is image) == (resized.size == size)  # torchvision returns an image of that size as is
        top, left = tv_center_crop_offsets(*resized.size, 100)
        assert center_crop_box(resized.size, 100) == (left, top, left + 100, top + 100)
    assert resize_exact(image, (512, 384)).size == (384, 512)


def test_resize_and_center_crop_literal_values():
    assert resize_short_side(Image.new("RGB", (641, 427)), 224).size == (336, 224)  # int(224 * 641 / 427) = 336
    assert resize_short_side(Image.new("RGB", (40, 30)), 20).size == (26, 20)  # int(26.67): truncated, not rounded
    assert resize_short_side(Image.new("RGB", (223, 500)), 224).size == (224, 502)  # int(502.24)
    assert center_crop_box((336, 224), 224) == (56, 0, 280, 224)
    assert center_crop_box((229, 224), 224) == (2, 0, 226, 224)  # round(2.5) = 2 (half to even)
    assert center_crop_box((231, 227), 224) == (4, 2, 228, 226)  # round(3.5) = 4, round(1.5) = 2
    assert center_crop_box((225, 225), 224) == (0, 0, 224, 224)  # round(0.5) = 0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (227, 231, 3), dtype=np.uint8))
    assert np.array_equal(np.array(center_crop(image, 224)), np.array(image)[2:226, 4:228])


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_random_crop_boxes_match_torchvision_get_params(seed):
    ours, reference = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for width, height in SIZES:
        for crop in (min(width, height) // 2, min(width, height)):  # a square at its side: no draw
            top, left, th, tw = tv_random_crop_params(height, width, crop, crop, reference)
            assert random_crop_box((width, height), crop, ours) == (left, top, left + tw, top + th)
    with torch.random.fork_rng():  # the global RNG under torch.manual_seed(seed) draws the same boxes
        torch.manual_seed(seed)
        top, left, _, _ = tv_random_crop_params(641, 427, 224, 224, None)
    assert random_crop_box((427, 641), 224, torch.Generator().manual_seed(seed)) == (left, top, left + 224, top + 224)


@pytest.mark.parametrize("seed", [0, 3, 99])
def test_random_resized_crop_boxes_match_torchvision_get_params(seed):
    ours, reference = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for width, height in SIZES + [(1000, 10), (10, 1000)]:  # extreme aspects: the center-crop fallback
        top, left, h, w = tv_random_resized_crop_params(height, width, reference)
        assert random_resized_crop_box((width, height), ours) == (left, top, left + w, top + h)


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_emotion_train_transform_is_random_resized_crop_then_flip():
    """torchvision ``RandomResizedCrop(24)`` (crop, then resize the crop alone) + ``RandomHorizontalFlip()``."""
    image = _random_image(50, 40)
    for seed in range(4):
        reference = torch.Generator().manual_seed(seed)
        top, left, h, w = tv_random_resized_crop_params(40, 50, reference)
        expected = image.crop((left, top, left + w, top + h)).resize((24, 24), Image.Resampling.BILINEAR)
        if torch.rand(1, generator=reference) < 0.5:
            expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = build_transform("emotion", True, crop_size=24, seed=seed).transform_image(image, None)
        assert torch.equal(out, to_normalized_tensor(expected, CLIP_MEAN, CLIP_STD))


def test_fixed_test_resize_crops_from_the_resized_image():
    """``test_resize_size=[512, 384]`` (official PerceptCLIP_IQA: ``Resize((512, 384))`` then ``RandomCrop(224)``):
    crops come from the 384x512 (w x h) image, whatever the input's aspect."""
    config = PerceptCLIPConfig(task="quality", test_resize_size=[512, 384])
    image = _random_image(300, 200)
    resized = image.resize((384, 512), Image.Resampling.BILINEAR)
    transform = build_inference_transform(config, get_task("quality"), tta=3, seed=5)
    assert transform.resize_size == (512, 384) and transform.resize_short is None
    reference = torch.Generator().manual_seed(stable_seed(5, "key"))
    expected = []
    for _ in range(3):
        top, left, _, _ = tv_random_crop_params(512, 384, 224, 224, reference)
        expected.append(to_normalized_tensor(resized.crop((left, top, left + 224, top + 224)), CLIP_MEAN, CLIP_STD))
    assert torch.equal(transform.transform_image(image, "key"), torch.stack(expected))
    single = build_inference_transform(config, get_task("quality"), tta=1)
    center = resized.crop((80, 144, 304, 368))  # round((384 - 224) / 2) = 80, round((512 - 224) / 2) = 144
    assert torch.equal(single.transform_image(image, None), to_normalized_tensor(center, CLIP_MEAN, CLIP_STD))
    # an explicit short-side resize (a dataset's protocol) replaces the model's fixed size
    assert build_inference_transform(config, get_task("quality"), resize_short=384).resize_size is None
    # a fixed size below the crop is still enlarged (aspect kept) so the crop fits
    assert IQACenterCropTransform(224, resize_size=(100, 300)).fit(image).size == (672, 224)
    with pytest.raises(ValueError, match="not both"):
        IQATestTransform(224, resize_short=384, resize_size=(512, 384))


def test_bicubic_interpolation_is_pil_bicubic():
    image = _random_image(90, 70)
    bicubic = image.resize((41, 32), Image.Resampling.BICUBIC)  # int(32 * 90 / 70) = 41
    assert np.array_equal(np.array(resize_short_side(image, 32, Image.Resampling.BICUBIC)), np.array(bicubic))
    out = ResizeCenterCropTransform(32, interpolation="bicubic").transform_image(image, None)
    assert torch.equal(out, to_normalized_tensor(bicubic.crop((4, 0, 36, 32)), CLIP_MEAN, CLIP_STD))
    bilinear = ResizeCenterCropTransform(32).transform_image(image, None)
    assert not torch.equal(out, bilinear)
    iqa = IQACenterCropTransform(32, resize_size=(40, 50), interpolation="bicubic").transform_image(image, None)
    expected = image.resize((50, 40), Image.Resampling.BICUBIC).crop((9, 4, 41, 36))
    assert torch.equal(iqa, to_normalized_tensor(expected, CLIP_MEAN, CLIP_STD))
    with pytest.raises(ValueError, match="interpolation"):
        ResizeCenterCropTransform(32, interpolation="nearest")


def test_model_config_sets_crop_size_and_interpolation():
    config = PerceptCLIPConfig(task="quality", image_size=196, resize_interpolation="bicubic")
    assert transform_kwargs(config)["crop_size"] == 196
    assert transform_kwargs(PerceptCLIPConfig(task="quality"))["crop_size"] == 224  # the backbone's (ViT-L/14)
    assert build_inference_transform(config, get_task("quality")).interpolation == "bicubic"
    assert build_inference_transform(config, get_task("quality"), interpolation="bilinear").interpolation == "bilinear"
    assert build_inference_transform(config, get_task("memorability")).interpolation == "bicubic"
    assert {name: get_dataset_info(name).interpolation for name in ("flive", "live", "koniq10k", "livec")} == {
        "flive": "bicubic",
        "live": "bicubic",
        "koniq10k": "bilinear",
        "livec": "bilinear",
    }


@pytest.mark.parametrize(
    "name, make, interpolation", [("flive", make_flive, "bicubic"), ("koniq10k", make_koniq, "bilinear")]
)
def test_dataset_interpolation_reaches_transforms_and_model_config(tmp_path, monkeypatch, name, make, interpolation):
    """LoDa's protocol: FLIVE and LIVE are resized with bicubic, the others bilinear, in every split's transform
    and in the config of a model trained on them."""
    from types import SimpleNamespace

    from perceptclip_hf.training import trainer
    from perceptclip_hf.training.recipe import DataArguments, ModelArguments
    from perceptclip_hf.training.task import model_config_kwargs, resolve_task

    make(tmp_path)
    task = resolve_task([name])
    config = PerceptCLIPConfig(**model_config_kwargs(ModelArguments(), task, test_resize_short=384))
    assert config.resize_interpolation == interpolation
    built = []

    def recording_build_transform(*args, **kwargs):
        built.append(build_transform(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer, "build_transform", recording_build_transform)
    data = trainer.prepare_splits(
        task,
        DataArguments(dataset=[name], data_dir=[str(tmp_path)]),
        0,
        SimpleNamespace(config=PerceptCLIPConfig(task="quality")),
        seed=0,
    )
    assert len(built) == len(data) >= 2 and {t.interpolation for t in built} == {interpolation}
