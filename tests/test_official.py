"""The official PerceptCLIP checkpoints (`.pth` of `clip_lora_model`) as `--model`: converted once, cached, scored
as the official usage code scores them. Tiny CLIP (224 px input, 32 px patches) stands in for ViT-L/14."""

import csv
import hashlib
import os
import time

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from transformers import pipeline

from perceptclip_hf import EMOTION_LABELS
from perceptclip_hf.cli import main as cli_main
from perceptclip_hf.errors import ModelLoadError
from perceptclip_hf.hub import official as official_module
from perceptclip_hf.hub.official import official_model_dir
from perceptclip_hf.hub.source import OFFICIAL_REPOS, resolve_alias
from perceptclip_hf.preprocessing import stable_seed
from perceptclip_hf.scoring.scorer import PerceptScorer, load_model
from tests.helpers.cli import perceptclip
from tests.helpers.official import write_release

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """torchvision ToTensor + Normalize(CLIP mean/std)."""
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
    return (pixels - CLIP_MEAN) / CLIP_STD


def official_iqa_inputs(image: Image.Image, crops: int = 15, seed: int = 0) -> torch.Tensor:
    """The official IQA usage re-typed with PIL: `Resize((512, 384))`, then `crops` × `RandomCrop(224)` (top drawn
    before left, from the generator seeded per image as `IQATestTransform` seeds it)."""
    image = image.resize((384, 512), Image.Resampling.BILINEAR)
    key = hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()
    generator = torch.Generator().manual_seed(stable_seed(seed, key))
    boxes = []
    for _ in range(crops):
        top = int(torch.randint(0, 512 - 224 + 1, size=(1,), generator=generator))
        left = int(torch.randint(0, 384 - 224 + 1, size=(1,), generator=generator))
        boxes.append((left, top, left + 224, top + 224))
    return torch.stack([to_tensor(image.crop(box)) for box in boxes])


def official_center_input(image: Image.Image) -> torch.Tensor:
    """torchvision `Resize(224)` + `CenterCrop(224)` re-typed with PIL."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    size = (224, int(224 * long / short)) if width <= height else (int(224 * long / short), 224)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    return to_tensor(image.crop((left, top, left + 224, top + 224)))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The tiny CLIP (saved), and official-layout IQA and emotion folders (`.pth` + `modeling.py`) built on it."""
    root = tmp_path_factory.mktemp("release")
    _, modules = write_release(root)
    images = root / "images"
    images.mkdir()
    for seed, size in enumerate([(300, 200), (250, 400), (640, 480)]):
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{seed}.png")
    return root, modules


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_official_iqa_folder_scores_as_the_official_code_and_is_converted_once(release, tmp_path, hub_cache):
    """Acceptance: `perceptclip predict --model <official folder>`; the second call loads the cached conversion."""
    root, modules = release
    args = (
        "predict",
        root / "images",
        "--model",
        root / "quality",
        "--task",
        "quality",
        "--base-model",
        root / "clip",
        "--output",
    )
    timings, stderrs = [], []
    for run in (1, 2):
        start = time.perf_counter()
        result = perceptclip(*args, tmp_path / f"scores{run}.csv", cwd=tmp_path)
        timings.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr[-3000:]
        stderrs.append(result.stderr)
        if run == 1:
            (folder,) = (tmp_path / "hub" / "perceptclip-official").iterdir()
            before = (folder.stat().st_ino, folder.stat().st_mtime_ns, (folder / "config.json").stat().st_mtime_ns)
    print(f"official IQA predict: first call {timings[0]:.2f} s (converts), second {timings[1]:.2f} s (cached)")
    assert "Converting the official checkpoint" in stderrs[0]
    assert "Converting" not in stderrs[1]
    assert list((tmp_path / "hub" / "perceptclip-official").iterdir()) == [folder]  # no temporary left
    assert (folder.stat().st_ino, folder.stat().st_mtime_ns, (folder / "config.json").stat().st_mtime_ns) == before
    assert '"test_resize_size": [\n    512,\n    384\n  ]' in (folder / "config.json").read_text()
    assert "Resize((512, 384))" in (folder / "README.md").read_text()
    with (tmp_path / "scores2.csv").open() as handle:
        rows = {os.path.basename(row["id"]): float(row["score"]) for row in csv.DictReader(handle)}
    assert len(rows) == 3
    for name, score in rows.items():
        with torch.no_grad():
            expected = modules["quality"](official_iqa_inputs(Image.open(root / "images" / name))).mean().item()
        assert score == pytest.approx(expected, abs=1e-5), name


def test_official_emotion_folder_in_process_matches_and_uses_the_cache(release, hub_cache, monkeypatch):
    root, modules = release
    scorer = PerceptScorer.from_pretrained(
        root / "emotion", load_kwargs={"base_model_name_or_path": str(root / "clip")}, device="cpu"
    )
    assert scorer.labels == list(EMOTION_LABELS) and scorer.config.test_resize_size is None
    paths = sorted((root / "images").iterdir())
    results = scorer(paths)
    with torch.no_grad():
        expected = modules["emotion"](torch.stack([official_center_input(Image.open(p)) for p in paths])).softmax(-1)
    for result, probabilities in zip(results, expected):
        assert [result["probabilities"][label] for label in EMOTION_LABELS] == pytest.approx(
            probabilities.tolist(), abs=1e-5
        )
    # The second load finds the converted folder: no conversion runs.
    monkeypatch.setattr(official_module, "convert_into_cache", lambda *a, **k: pytest.fail("converted again"))
    folder = official_model_dir(str(root / "emotion"), base_model=str(root / "clip"))
    assert folder.parent == hub_cache / "perceptclip-official"
    load_model(root / "emotion", base_model_name_or_path=str(root / "clip"))
    # The cached folder is an ordinary Hub-style repo: the transformers pipeline runs it.
    image = Image.open(paths[0])
    pipe = pipeline("image-classification", model=str(folder), trust_remote_code=True)
    top = pipe(image, top_k=8)
    assert sorted(r["label"] for r in top) == sorted(EMOTION_LABELS)
    assert sum(r["score"] for r in top) == pytest.approx(1.0, abs=1e-5)


def test_a_one_output_checkpoint_needs_its_task_and_a_failed_conversion_leaves_nothing(release, hub_cache):
    root, _ = release
    with pytest.raises(ModelLoadError, match="--task quality|memorability") as caught:
        load_model(root / "quality", base_model_name_or_path=str(root / "clip"))
    assert "\n" not in str(caught.value)
    assert list((hub_cache / "perceptclip-official").iterdir()) == []


def test_aliases_name_the_official_repos_and_a_local_path_wins(tmp_path, monkeypatch):
    assert resolve_alias("quality") == OFFICIAL_REPOS["quality"] == "PerceptCLIP/PerceptCLIP_IQA"
    assert resolve_alias("memorability") == "PerceptCLIP/PerceptCLIP_Memorability"
    assert resolve_alias("emotion") == "PerceptCLIP/PerceptCLIP_Emotions"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quality").mkdir()
    assert resolve_alias("quality") == "quality"


def test_offline_aliases_fail_with_one_line_naming_the_repo_and_the_local_copy(
    hub_cache, monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        PerceptScorer.from_pretrained("quality")
    message = str(caught.value)
    assert "\n" not in message and "PerceptCLIP/PerceptCLIP_IQA" in message
    assert "hf download PerceptCLIP/PerceptCLIP_IQA --local-dir DIR" in message and "--task quality" in message
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert cli_main(["predict", str(image), "--model", "memorability"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if ": error: " in line]
    assert "hf download PerceptCLIP/PerceptCLIP_Memorability --local-dir DIR" in line
