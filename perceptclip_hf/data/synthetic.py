"""The embedded default dataset: procedural images with synthetic distortions at graded levels.

It exists so that the quickstart runs with no network: every scene is drawn from a seed (gradients, shapes,
stripes), then degraded by one of five distortions at four levels, as the synthetic IQA benchmarks (LIVE, TID2013,
KADID-10k) do with real photographs. The score is a MOS-like value in [1, 5] (higher is better) that falls with
the distortion level; scenes play the role of reference images, so splits are content-disjoint (`group`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image, ImageDraw, ImageFilter

from .custom import load_table

# distortion → (function of (image, level 1..4, rng), how strongly it lowers quality)
LEVELS = (1, 2, 3, 4)


def _blur(image, level, rng):
    return image.filter(ImageFilter.GaussianBlur(radius=0.6 * level))


def _noise(image, level, rng):
    array = np.asarray(image, dtype=np.float32)
    array = array + rng.normal(0.0, 9.0 * level, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _jpeg(image, level, rng):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=(40, 20, 10, 4)[level - 1])
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _pixelate(image, level, rng):
    factor = 1 + level
    small = image.resize((image.width // factor, image.height // factor), Image.Resampling.BILINEAR)
    return small.resize(image.size, Image.Resampling.NEAREST)


def _contrast(image, level, rng):
    array = np.asarray(image, dtype=np.float32)
    mean = array.mean(axis=(0, 1), keepdims=True)
    return Image.fromarray(np.clip(mean + (array - mean) * (1 - 0.2 * level), 0, 255).astype(np.uint8))


DISTORTIONS = {
    "blur": (_blur, 1.0),
    "noise": (_noise, 0.9),
    "jpeg": (_jpeg, 0.8),
    "pixelate": (_pixelate, 0.9),
    "contrast": (_contrast, 0.6),
}


def natural_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Zero-mean colour texture with the 1/f amplitude spectrum of natural images, std ≈ 1."""
    frequencies = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    amplitude = 1.0 / np.maximum(frequencies, 1.0 / size)
    phases = np.exp(2j * np.pi * rng.random((3, size, size)))
    texture = np.real(np.fft.ifft2(amplitude * phases)).transpose(1, 2, 0)
    return (texture - texture.mean()) / (texture.std() + 1e-8)


def draw_scene(rng: np.random.Generator, size: int) -> Image.Image:
    """A procedural 'photograph': a colour gradient with natural (1/f) texture and a few filled shapes."""
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    start, end = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    background = start + (end - start) * t + rng.uniform(20, 40) * natural_texture(rng, size)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(6, size // 2), y0 + rng.integers(6, size // 2)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=color)
    return image


def quality_score(distortion: str | None, level: int) -> float:
    """MOS-like score in [1, 5]: 5 for a pristine scene, falling with level × the distortion's strength."""
    if distortion is None:
        return 5.0
    return round(5.0 - 4.0 * (level / max(LEVELS)) * DISTORTIONS[distortion][1], 4)


def procedural_images(count: int = 32, size: int = 256, seed: int = 0) -> list[Image.Image]:
    """``count`` procedural scenes, each pristine or with one distortion at a level (a spread of qualities), for when
    no real images are at hand (e.g. the calibration set of ``perceptclip export``)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        scene = draw_scene(rng, size)
        names = list(DISTORTIONS)
        if index % (len(names) + 1):
            function = DISTORTIONS[names[index % (len(names) + 1) - 1]][0]
            scene = function(scene, LEVELS[index % len(LEVELS)], rng)
        images.append(scene.convert("RGB"))
    return images


def generate_synthetic_iqa(out_dir: str | Path, num_scenes: int = 60, image_size: int = 64, seed: int = 0) -> Path:
    """Write the images and `labels.csv` (`path,score,group,distortion,level`) once; returns the csv path.

    Deterministic for `(num_scenes, image_size, seed)`; an existing complete dataset is reused."""
    out_dir = Path(out_dir)
    labels = out_dir / "labels.csv"
    expected_rows = num_scenes * (1 + len(DISTORTIONS) * len(LEVELS))
    if labels.exists() and labels.read_bytes().count(b"\n") == expected_rows + 1:
        return labels
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for scene_index in range(num_scenes):
        scene = draw_scene(rng, image_size)
        group = f"scene{scene_index:03d}"
        variants = [(None, 0, scene)] + [
            (name, level, function(scene, level, rng))
            for name, (function, _) in DISTORTIONS.items()
            for level in LEVELS
        ]
        for distortion, level, image in variants:
            path = f"images/{group}_{distortion or 'pristine'}_{level}.png"
            image.save(out_dir / path)
            rows.append(
                {
                    "path": path,
                    "score": quality_score(distortion, level),
                    "group": group,
                    "distortion": distortion or "pristine",
                    "level": level,
                }
            )
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return labels


def load_synthetic_iqa(data_dir: str | Path, **kwargs) -> Dataset:
    """The embedded dataset as a `datasets.Dataset` (generated into `data_dir` on first use), with a `group`
    column (scene) for content-disjoint splits. `kwargs` go to `generate_synthetic_iqa`."""
    labels = generate_synthetic_iqa(data_dir, **kwargs)
    ds = load_table(labels, image_column="path", label_column="score", name="synthetic_iqa")
    groups = [name.split("/")[-1].split("_")[0] for name in ds["image_name"]]
    return ds.add_column("group", groups)
