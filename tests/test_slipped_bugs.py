"""Scoring behaviours that the rest of the suite could not tell from a plausible one-line bug: a resume skips inputs by
id (not by how many rows are done, nor by the path that named them), the normal path decodes JPEGs fully, an id that
an input repeats is scored once, and the Python API normalises each kind of pixels exactly once. Every expectation
is computed independently of the code under test (by hand, or from a fresh run)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from perceptclip_hf.scoring import PerceptScorer, score
from tests.helpers.cli import read_rows
from tests.helpers.datasets import add_member
from tests.helpers.models import random_image

OPTIONS = dict(tta=2, batch_size=2, num_workers=0)
DUPLICATE = "duplicate id (an earlier input has it)"
# CLIP's normalisation (openai/clip-vit-large-patch14's preprocessor_config.json), typed out.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def save_png(path: Path, seed: int) -> Path:
    random_image(seed, size=(40, 36)).save(path)
    return path


def scores_by_id(path: Path) -> dict[str, float]:
    """The output's rows as ``{id: score}``; fails on an id written twice."""
    rows = read_rows(path)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), f"an id written twice: {sorted(ids)}"
    return {row["id"]: row["score"] for row in rows}


# ----------------------------------------------------------------------------- 1. resume skips by id, not by count
def test_resume_scores_new_images_that_sort_before_and_after_the_done_ones(quality_dir, tmp_path):
    """Images added to a scored folder are scored on --resume wherever their names sort (here one before every done
    image, one after), each image once: the file equals an uninterrupted run's, id by id."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate(["m1.png", "m2.png", "m3.png"]):
        save_png(folder / name, seed)
    output = tmp_path / "scores.jsonl"
    first = score([str(folder)], quality_dir, output, **OPTIONS)
    assert (first.scored, first.skipped) == (3, 0)

    save_png(folder / "a0.png", 10)  # sorts before every done image
    save_png(folder / "z9.png", 11)  # and one after them
    resumed = score([str(folder)], quality_dir, output, resume=True, **OPTIONS)
    assert (resumed.scored, resumed.failed, resumed.skipped) == (2, 0, 3)

    fresh = score([str(folder)], quality_dir, tmp_path / "fresh.jsonl", **OPTIONS)
    assert fresh.scored == 5
    rows, expected = scores_by_id(output), scores_by_id(tmp_path / "fresh.jsonl")
    assert sorted(rows) == sorted(expected) == sorted(str(path) for path in folder.iterdir())
    assert all(abs(rows[id_] - expected[id_]) <= 1e-6 for id_ in expected), (rows, expected)


# ----------------------------------------------------------------------------- 2. full decodes stay full
def test_a_large_jpeg_is_decoded_fully_unless_fast_decode_is_asked(emotion_dir, tmp_path):
    """Without fast_decode a large JPEG scores as its full PIL decode does (no draft reduction), through score()
    and the scorer; with fast_decode it scores differently (so the comparison can tell the two apart)."""
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:768, 0:1024]
    pattern = np.stack([(xs * 7 + ys * 3) % 256, (xs ^ ys) % 256, (xs * ys // 97) % 256], axis=-1)
    pixels = np.clip(pattern + rng.normal(0, 40, pattern.shape), 0, 255).astype(np.uint8)
    jpeg = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(jpeg, quality=92)

    scorer = PerceptScorer.from_pretrained(emotion_dir, num_workers=0)
    with Image.open(jpeg) as opened:
        full = opened.convert("RGB")  # every pixel decoded: no draft
    assert full.size == (1024, 768)
    expected = np.array(list(scorer(full)["probabilities"].values()))

    def probabilities(result: dict) -> np.ndarray:
        return np.array(list(result["probabilities"].values()))

    assert np.abs(probabilities(scorer(str(jpeg))) - expected).max() <= 1e-6
    output = tmp_path / "emotions.jsonl"
    score([str(jpeg)], emotion_dir, output, num_workers=0)
    (row,) = read_rows(output)
    assert np.abs(probabilities(row) - expected).max() <= 1e-6

    fast = PerceptScorer.from_pretrained(emotion_dir, num_workers=0, fast_decode=True)
    assert np.abs(probabilities(fast(str(jpeg))) - expected).max() > 1e-4


# ----------------------------------------------------------------------------- 3. repeated ids in one input
def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(seed, size=(40, 36)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_table(path: Path, names: list[str], seeds: list[int]) -> None:
    images = [{"bytes": png_bytes(seed), "path": None} for seed in seeds]
    pq.write_table(pa.table({"image": images, "name": names}), path)


def write_shard(path: Path, samples: list[tuple[str, int]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, seed in samples:
            add_member(tar, f"{key}.png", png_bytes(seed))


def check_scored_once(output: Path, expected: dict[str, float]) -> None:
    """Each id once, with the score of its first input."""
    rows = scores_by_id(output)
    assert sorted(rows) == sorted(expected)
    assert all(abs(rows[id_] - expected[id_]) <= 1e-6 for id_ in expected), (rows, expected)


@pytest.mark.parametrize("kind", ["parquet", "shards"])
def test_an_id_repeated_within_one_input_is_scored_once_and_reported(kind, quality_dir, tmp_path):
    """A Parquet table (--id-column) or WebDataset shards that repeat an id: the first input of each id is scored,
    each repeat is listed as not scored (a duplicate id), and a --resume, even one that meets new repeats, writes no
    id twice."""
    seeds = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}  # each id's first input's image; a repeat holds another
    if kind == "parquet":
        first_run = (["a", "b", "a", "c", "b"], [1, 2, 21, 3, 22])
        second_run = (["a", "b", "a", "c", "b", "d", "e", "d"], [1, 2, 21, 3, 22, 4, 5, 24])
        inputs, id_column = [str(tmp_path / "table.parquet")], "name"
        write_table(tmp_path / "table.parquet", *first_run)
    else:
        inputs, id_column = [str(tmp_path / "shards" / "{000000..000001}.tar")], None
        (tmp_path / "shards").mkdir()
        write_shard(tmp_path / "shards" / "000000.tar", [("a", 1), ("b", 2), ("a", 21)])  # a repeat in the shard
        write_shard(tmp_path / "shards" / "000001.tar", [("c", 3), ("b", 22)])  # and one in the next shard
    scorer = PerceptScorer.from_pretrained(quality_dir, tta=2, num_workers=0)
    expected = {id_: scorer(random_image(seed, size=(40, 36)))["score"] for id_, seed in seeds.items()}

    output = tmp_path / "scores.jsonl"
    summary = score(inputs, quality_dir, output, id_column=id_column, **OPTIONS)
    assert (summary.scored, summary.failed, summary.skipped) == (3, 0, 0)
    assert summary.not_scored == [("a", DUPLICATE), ("b", DUPLICATE)]
    check_scored_once(output, {id_: expected[id_] for id_ in "abc"})

    if kind == "parquet":
        write_table(tmp_path / "table.parquet", *second_run)
    else:
        write_shard(tmp_path / "shards" / "000001.tar", [("c", 3), ("b", 22), ("d", 4), ("e", 5), ("d", 24)])
    resumed = score(inputs, quality_dir, output, resume=True, id_column=id_column, **OPTIONS)
    # a repeat is a duplicate on a resume too (not also "skipped": the counts add up to the inputs, 8)
    assert (resumed.scored, resumed.failed, resumed.skipped) == (2, 0, 3)
    assert resumed.not_scored == [("a", DUPLICATE), ("b", DUPLICATE), ("d", DUPLICATE)]
    check_scored_once(output, expected)


# ----------------------------------------------------------------------------- 4. pixels normalised once
def test_the_python_api_normalises_each_kind_of_pixels_once(emotion_dir):
    """A PIL image, a uint8 array, a float array (0..1) and an already preprocessed float tensor all give the logits
    of the model on the image resized and cropped by hand and normalised with CLIP's mean/std, once."""
    scorer = PerceptScorer.from_pretrained(emotion_dir, num_workers=0)
    image = random_image(5, size=(48, 40))
    # Resize(32): short side 40 → 32, long side int(32 * 48 / 40) = 38; CenterCrop(32): left round(6 / 2) = 3.
    view = np.array(image.resize((38, 32), Image.Resampling.BILINEAR))[:, 3:35]
    assert view.shape == (32, 32, 3)
    normalised = (view.astype(np.float32) / 255.0 - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    pixel_values = torch.from_numpy(normalised).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        expected = scorer.model(pixel_values).logits.float()
    expected_probabilities = expected.softmax(-1)[0]

    def close(logits: torch.Tensor) -> bool:
        return logits.shape == expected.shape and (logits - expected).abs().max().item() <= 1e-5

    assert close(scorer.predict_logits(pixel_values))  # (c) already preprocessed floats: used as they are
    assert close(scorer.predict_logits(scorer.preprocess(image)[None]))
    assert close(scorer.predict_logits(torch.from_numpy(view).permute(2, 0, 1)[None].contiguous()))  # uint8 pixels
    array = np.asarray(image)
    for source in (image, array, array / 255.0):  # (a) PIL, (b) uint8 array, a float array in 0..1
        assert close(scorer.predict_logits(scorer.preprocess(source)[None]))
        probabilities = torch.tensor(list(scorer(source)["probabilities"].values()))
        assert (probabilities - expected_probabilities).abs().max().item() <= 1e-5


# ----------------------------------------------------------------------------- 5. a symlinked folder is the folder
@pytest.mark.parametrize("first_through", ["folder", "link"])
def test_resume_through_a_symlink_to_the_scored_folder_skips_what_is_done(first_through, quality_dir, tmp_path):
    """Scored through a folder, resumed through a symlink to it after two images were added (or the reverse): the
    done images are skipped, the new ones scored, and no image is in the file twice."""
    folder, link = tmp_path / "photos", tmp_path / "link"
    folder.mkdir()
    os.symlink(folder, link, target_is_directory=True)
    for seed in range(3):
        save_png(folder / f"im{seed}.png", seed)
    first, then = (folder, link) if first_through == "folder" else (link, folder)
    output = tmp_path / "scores.csv"
    assert score([str(first)], quality_dir, output, **OPTIONS).scored == 3

    save_png(folder / "a0.png", 10)
    save_png(folder / "z9.png", 11)
    resumed = score([str(then)], quality_dir, output, resume=True, **OPTIONS)
    assert (resumed.scored, resumed.failed, resumed.skipped) == (2, 0, 3)
    ids = [row["id"] for row in read_rows(output)]
    assert len(ids) == 5
    assert sorted(os.path.realpath(id_) for id_ in ids) == sorted(str(path.resolve()) for path in folder.iterdir())


def test_a_shard_repeating_a_member_name_back_to_back_is_scored_once_and_reported(quality_dir, tmp_path):
    """A shard holding ``d.png`` twice in a row (the same __key__, back to back; webdataset's grouping raises on
    it): the job finishes, each id once with its first image's score, the repeat reported as a duplicate id."""
    write_shard(tmp_path / "000000.tar", [("a", 1), ("d", 4), ("d", 24), ("e", 5)])
    write_shard(tmp_path / "expected.tar", [("a", 1), ("d", 4), ("e", 5)])
    output, expected = tmp_path / "scores.jsonl", tmp_path / "expected.jsonl"
    summary = score([str(tmp_path / "000000.tar")], quality_dir, output, **OPTIONS)
    score([str(tmp_path / "expected.tar")], quality_dir, expected, **OPTIONS)
    check_scored_once(output, scores_by_id(expected))
    assert summary.not_scored == [("d", DUPLICATE)]


def test_a_gzipped_shard_is_read_as_a_shard(quality_dir, tmp_path):
    """``.tar.gz`` / ``.tgz`` shards are shards (read by webdataset as they stream), not files taken for images."""
    write_shard(tmp_path / "000000.tar", [("a", 1), ("b", 2), ("c", 3)])
    data = (tmp_path / "000000.tar").read_bytes()
    for name in ("000001.tar.gz", "000002.TGZ"):
        (tmp_path / name).write_bytes(gzip.compress(data))
    expected = tmp_path / "expected.jsonl"
    score([str(tmp_path / "000000.tar")], quality_dir, expected, **OPTIONS)
    for name in ("000001.tar.gz", "000002.TGZ"):
        output = tmp_path / f"{name}.jsonl"
        summary = score([str(tmp_path / name)], quality_dir, output, **OPTIONS)
        assert (summary.scored, summary.failed, summary.not_scored) == (3, 0, [])
        check_scored_once(output, scores_by_id(expected))
