"""Transforms (shapes, normalisation, determinism), replicas, pre-resize cache and image-mode handling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image as ImageFeature, Value
from PIL import Image

from transformers.image_utils import OPENAI_CLIP_MEAN as CLIP_MEAN
from transformers.image_utils import OPENAI_CLIP_STD as CLIP_STD

from perceptclip_hf.data import get_dataset_info, load_koniq10k, open_image, repeat_dataset
from perceptclip_hf.preprocessing import (
    IQATestTransform,
    IQATrainTransform,
    build_transform,
    preresize,
    with_image_transform,
)

from tests.test_data_fixtures import make_koniq, write_image


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
    image = Image.fromarray(np.arange(20 * 10 * 3, dtype=np.uint8).reshape(10, 20, 3))
    transform = IQATrainTransform(16, seed=0)
    outputs = [transform.transform_image(image, None) for _ in range(8)]
    assert all(o.shape == (3, 16, 16) for o in outputs)
    assert len({o.sum().item() for o in outputs}) > 1
    seeded = [IQATrainTransform(16, seed=0).transform_image(image, None) for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1])


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
    small = preresize(koniq, short_side=20, cache_dir=tmp_path / "cache")
    assert small[0]["image"].size == (27, 20) and small["image_name"] == koniq["image_name"]
    files = sorted((tmp_path / "cache").glob("*.arrow"))
    assert len(files) == 1
    again = preresize(koniq, short_side=20, cache_dir=tmp_path / "cache")
    assert sorted((tmp_path / "cache").glob("*.arrow")) == files and again[0]["image"].size == (27, 20)
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
    ds = Dataset.from_dict({"image": [{"bytes": _png_bytes(image), "path": None}], "label": [1.0]},
                           features=Features({"image": ImageFeature(), "label": Value("float32")}))
    transform = IQATestTransform(32, num_crops=3)
    via_helper = with_image_transform(ds, transform)[0]["pixel_values"]
    ds.set_transform(transform)  # images decoded by datasets first: still accepted
    assert torch.equal(ds[0]["pixel_values"], via_helper)


def test_test_crops_equal_per_crop_pil_crops():
    """The vectorised crops (one normalisation per image) equal cropping each box with PIL."""
    import numpy as np
    import torch
    from PIL import Image

    from perceptclip_hf.preprocessing import IQATestTransform, random_crop_box, stable_seed, to_normalized_tensor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    transform = IQATestTransform(32, num_crops=5, seed=3)
    generator = torch.Generator().manual_seed(stable_seed(3, "key"))
    expected = torch.stack([to_normalized_tensor(image.crop(random_crop_box(image.size, 32, generator)),
                                                 transform.mean, transform.std) for _ in range(5)])
    assert torch.equal(transform.transform_image(image, "key"), expected)
